#!/bin/sh
# SPDX-License-Identifier: MIT
# Build tests/lifecycle/scenario.c twice per CPython in tests/pythons.sh,
# stock and with gilshim, and run the lifecycle tests against each pair;
# then the Python programs of tests/lifecycle/programs.sh (quiet_exit.py
# GILSHIM_QUIET_RUNS times with gilshim, default 50).
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-lifecycle: no CPython 3.9-3.13 with python3-config found" >&2; exit 1; }
warn="-Wall -Wextra ${WERROR:+-Werror}"
cc -std=c11 -O1 -g $warn tests/lifecycle/test_lifecycle.c src/shim/port/versions.c \
    -o build/test_lifecycle -lcriterion
status=0
for cfg in $PYTHONS; do
    tag=$(py_tag "$cfg")
    flags="-std=c11 -O1 -g $warn -Iinclude $($cfg --includes)"
    libs="$($cfg --ldflags --embed) -pthread"
    cc $flags tests/lifecycle/scenario.c -o build/scenario-stock-$tag $libs
    # libgilshim ahead of libpython, as under LD_PRELOAD
    cc $flags -DWITH_GILSHIM tests/lifecycle/scenario.c -o build/scenario-shim-$tag \
        -Lbuild -Wl,-rpath,"$PWD/build" -lgilshim $libs
    echo "== lifecycle tests, CPython $tag"
    minor=$(${cfg%-config} -c 'import sys; print(sys.version_info[1])')
    case $tag in *d|*d-system) debug=1 ;; *) debug=0 ;; esac
    GILSHIM_SCENARIOS=build/scenario-%s-$tag GILSHIM_PY_MINOR=$minor GILSHIM_PY_DEBUG=$debug \
        build/test_lifecycle --jobs 2 || status=1
    # a sub destroyed under a library thread; a daemon thread through the end
    tests/lifecycle/programs.sh "${cfg%-config}" "${GILSHIM_QUIET_RUNS:-50}" || status=1
done
exit $status
