#!/bin/sh
# SPDX-License-Identifier: MIT
# The key end-to-end programs (tests/e2e: probe.py, clients.py, stdlib.py,
# smoke.py), stock and through tools/inject.sh, on every CPython of
# tests/pythons.sh, with CPython's own checks as strict as they go: the debug
# tier runs it on the debug builds (tests/run-debug.sh), and on release
# builds it runs with -X dev and PYTHONMALLOC=debug (KEY_PYFLAGS, KEY_ENV).
# Each gilshim run must give its answer, and its stderr must hold no CPython
# assertion failure or "Fatal Python error" that stock's run of the same
# program does not also print.
#   tests/run-e2e-key.sh
# Environment: KEY_PYFLAGS (Python options, e.g. "-X dev"), KEY_ENV
# (settings for both runs, e.g. "PYTHONMALLOC=debug"), KEY_LABEL, KEY_SET
# (all, the default, or short: one program of each kind, for make debug's
# pass over every release CPython).
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-e2e-key: no CPython found" >&2; exit 1; }
flags=${KEY_PYFLAGS:-}
label=${KEY_LABEL:-key e2e}
mkdir -p build
cc -shared -fPIC -O2 -pthread tests/e2e/cbthread.c -o build/libcbthread.so
lib=$PWD/build/libcbthread.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
complaints='Assertion .* failed|Fatal Python error'

# one LABEL WANT PROGRAM ARGS...: stock, then gilshim; the answer is what
# follows ": " on the last line of stdout
one() {
    what=$1 want=$2 t0=$(date +%s)
    shift 2
    # stock only for its stderr: a wrong-interpreter callback may hang it
    # shellcheck disable=SC2086
    env ${KEY_ENV:-} timeout 10 "$py" $flags "$@" >"$tmp/stock.out" 2>"$tmp/stock.err" || true
    # shellcheck disable=SC2086
    rc=0
    env ${KEY_ENV:-} timeout 60 tools/inject.sh "$py" $flags "$@" >"$tmp/shim.out" 2>"$tmp/shim.err" || rc=$?
    got=$(tail -1 "$tmp/shim.out" | sed 's/.*: //')
    [ $rc -eq 0 ] || got="$got+exit$rc"
    new=$(grep -E "$complaints" "$tmp/shim.err" | sort -u | while IFS= read -r l; do
              grep -qxF -- "$l" "$tmp/stock.err" || printf '%s\n' "$l"
          done)
    if [ "$got" = "$want" ] && [ -z "$new" ]; then
        pass=$((pass + 1))
        printf '  ok   %-34s %-6s %ss\n' "$what" "$got" $(($(date +%s) - t0))
    else
        fail=$((fail + 1))
        printf '  FAIL %-34s want %s got %s\n' "$what" "$want" "$got"
        [ -z "$new" ] || printf '%s\n' "$new" | head -5 | sed 's/^/         gilshim only: /'
        if [ -s "$tmp/shim.err" ]; then head -c 600 "$tmp/shim.err" | sed 's/^/         stderr: /'; fi
    fi
}

for cfg in $PYTHONS; do
    py=${cfg%-config}
    minor=$("$py" -c 'import sys; print(sys.version_info[1])')
    dir=$PWD/build/key-$(py_tag "$cfg")
    mkdir -p "$dir"
    cp "$lib" "$dir/"
    echo "== $label, CPython 3.$minor ($py${flags:+ $flags}${KEY_ENV:+, ${KEY_ENV:-}})"
    if [ "${KEY_SET:-all}" = short ]; then
        probes="ctypes-thread" clients="ctypes-threads" cffi=cffi-threads stdlib=pool
    else
        probes="ctypes-thread ctypes-sync sqlite3" stdlib="pool call-thread"
        clients="ctypes-thread ctypes-threads ctypes-pool sqlite3-function" cffi="cffi-thread cffi-threads"
    fi
    for s in $probes; do
        one "probe $s (sub)" sub tests/e2e/probe.py $s "$lib"
    done
    if "$py" -c 'import cffi, _cffi_backend' 2>/dev/null; then
        clients="$clients $cffi"
    else
        echo "  skip cffi-*: cffi is not installed for this CPython"
    fi
    for c in $clients; do
        for place in main sub; do
            # 3.9-3.11: a pool's worker keeps its state in the sub, which
            # destroy() refuses (README, Known limits)
            [ $c = ctypes-pool ] && [ $place = sub ] && [ "$minor" -le 11 ] && continue
            one "clients $c ($place)" $place tests/e2e/clients.py $c $place "$dir"
        done
    done
    if "$py" -c 'import concurrent.interpreters' 2>/dev/null; then
        export PYTHONPATH=$PWD/tests/e2e
        for s in $stdlib; do
            one "stdlib $s" own tests/e2e/stdlib.py $s "$lib"
        done
        unset PYTHONPATH
    fi
    one "smoke (main)" ok tests/e2e/smoke.py "$lib"
done
echo "$label: $pass passed, $fail failed"
[ $fail -eq 0 ]
