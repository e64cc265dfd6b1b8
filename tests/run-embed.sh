#!/bin/sh
# Build tests/embed against every CPython in tests/pythons.sh and run them.
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-embed: no CPython 3.9-3.13 with python3-config found" >&2; exit 1; }
status=0
for cfg in $PYTHONS; do
    ver=$("${cfg%-config}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    bin=build/test_embed-$ver
    # libgilshim ahead of libpython: the whole process sees the shim, as
    # with LD_PRELOAD.
    cc -std=c11 -O1 -g -Wall -Wextra ${WERROR:+-Werror} -Iinclude $($cfg --includes) \
        tests/embed/test_embed.c -o "$bin" \
        -Lbuild -Wl,-rpath,"$PWD/build" -lgilshim $($cfg --ldflags --embed) -lcriterion -pthread -ldl
    echo "== embed tests, CPython $ver"
    "$bin" --jobs 2 || status=1
done
exit $status
