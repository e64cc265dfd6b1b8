#!/bin/sh
# SPDX-License-Identifier: MIT
# A real suite no one here wrote, in a legacy sub-interpreter through the
# runner: Debian 12's python3-apsw and its `python3 -m apsw.tests` (101
# tests) on /usr/bin/python3.11, in main, stock in a sub-interpreter
# (deadlocks in its first call: expected to time out), and with gilshim
# (runs to its end, exits with its own status). Outside make test (about
# 2 minutes); docs/python.md#apsw has the results.
#   python/tests/run-apsw.sh WHEEL
set -eu
wheel=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
py=/usr/bin/python3.11
$py -c 'import apsw' 2>/dev/null || { echo "run-apsw: no apsw for $py (python3-apsw)"; exit 1; }
d=$(mktemp -d /tmp/gilshim-apsw.XXXXXX)
trap 'rm -rf "$d"' EXIT
$py -m venv --system-site-packages "$d/venv"
"$d/venv/bin/python" -m pip install -q --no-index --disable-pip-version-check "$wheel"
cd "$d"
fail=0
run() {  # NAME TIMEOUT ARGS...
    name=$1 t=$2; shift 2
    rc=0; timeout "$t" "$d/venv/bin/python" "$@" > "$d/$name.out" 2>&1 || rc=$?
    ran=$(sed -n 's/^Ran \([0-9]*\) tests.*/\1/p' "$d/$name.out")
    echo "apsw, $name: status $rc, ran ${ran:-no} tests; $(grep -E '^(OK|FAILED)' "$d/$name.out" || echo 'no result line')"
    grep -E '^(FAIL|ERROR): ' "$d/$name.out" | sed 's/^/    /' || true
}
run main 600 -m apsw.tests
grep -q '^OK' "$d/main.out" || fail=1
run stock-legacy-sub 30 -m gilshim --no-shim --subinterpreter=legacy -m apsw.tests
# Killed by the timeout after reaching apsw.initialize() (the header is
# printed before it), with no test run.
[ "$rc" = 124 ] && grep -q '^SQLite headers version' "$d/stock-legacy-sub.out" && [ -z "$ran" ] ||
    { echo "run-apsw: stock in a sub-interpreter no longer deadlocks in apsw.initialize(): update docs/python.md"; fail=1; }
run gilshim-legacy-sub 600 -m gilshim --subinterpreter=legacy -m apsw.tests
[ "$ran" = 101 ] && [ "$rc" = 1 ] && [ "$(grep -cE '^(FAIL|ERROR): ' "$d/gilshim-legacy-sub.out")" = 1 ] &&
    grep -q '^FAIL: testzzForkChecker' "$d/gilshim-legacy-sub.out" || { cat "$d/gilshim-legacy-sub.out"; fail=1; }
[ $fail = 0 ] && echo "run-apsw: as documented" || { echo "run-apsw: FAILED"; exit 1; }
