#!/bin/sh
# SPDX-License-Identifier: MIT
# Build tests/embed against every CPython in tests/pythons.sh and run them.
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-embed: no CPython 3.9-3.13 with python3-config found" >&2; exit 1; }
status=0
for cfg in $PYTHONS; do
    ver=$(py_tag "$cfg")
    bin=build/test_embed-$ver
    # libgilshim ahead of libpython: the whole process sees the shim, as
    # with LD_PRELOAD.
    cc -std=c11 -O1 -g -Wall -Wextra ${WERROR:+-Werror} -Iinclude $($cfg --includes) \
        tests/embed/test_embed.c src/shim/port/versions.c -o "$bin" \
        -Lbuild -Wl,-rpath,"$PWD/build" -lgilshim $($cfg --ldflags --embed) -lcriterion -pthread -ldl
    echo "== embed tests, CPython $ver"
    "$bin" --jobs 2 --filter 'embed/*' || status=1
    # suites that need a setting in the environment from the start
    log=$PWD/build/embed-$ver.log
    rm -f "$log"
    GILSHIM_LOG=$log "$bin" --filter 'logged/*' || status=1
    if ! grep -q 'no PyGILState_Ensure is open on this thread; doing what stock CPython does' "$log"; then
        echo "[FAIL] logged: no diagnostic line before stock's outcome for a Release without Ensure"
        status=1
    fi
    # what correct clients do: nothing may be logged
    rm -f "$log"
    GILSHIM_LOG=$log "$bin" --filter 'silent/*' || status=1
    if [ -s "$log" ]; then
        echo "[FAIL] silent: logged $(head -c 300 "$log")"
        status=1
    fi
    GILSHIM_MODE=off "$bin" --filter 'mode_off/*' || status=1
    rm -f "$log"
    GILSHIM_LOG=$log GILSHIM_ON_FINALIZE=sometimes GILSHIM_MODE=sideways GILSHIM_DRAIN_MS=soon \
        GILSHIM_LOG_LEVEL=loud GILSHIM_PATCH=maybe GILSHIM_LOG_FORMAT=yaml "$bin" --filter 'bogus_setting/*' || status=1
    rm -f "$log"
done
exit $status
