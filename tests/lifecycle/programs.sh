#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/lifecycle/programs.sh PYTHON RUNS: the lifecycle cases best told as
# Python programs, each run stock and with gilshim preloaded; one line per
# case, exit 1 if one fails (with the failed run's output).
#   destroy_sub.py  a sub-interpreter whose library thread outlived its call
#                   is run again and destroyed; the thread's next callback
#   quiet_exit.py   a daemon thread calling back through the end: RUNS runs
#                   with gilshim, RUNS/5 stock, 2 at a time; every one must
#                   exit 0 with an empty stderr
set -eu
cd "$(dirname "$0")/../.."
py=$1 runs=$2
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cc -shared -fPIC -O2 -pthread tests/lifecycle/ticker.c -o build/libticker.so
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
status=0

# run KIND NAME PROGRAM: stdout, stderr and status into $dir/NAME.KIND.*
run() {
    set +e
    if [ "$1" = shim ]; then
        timeout 60 env LD_PRELOAD="$PWD/build/libgilshim.so" "$py" "$3" build/libticker.so \
            >"$dir/$2.$1.out" 2>"$dir/$2.$1.err"
    else
        timeout 60 "$py" "$3" build/libticker.so >"$dir/$2.$1.out" 2>"$dir/$2.$1.err"
    fi
    echo $? >"$dir/$2.$1.rc"
    set -e
}

# expect NAME KIND WHAT TEST...: report a failed check with the run's output
fail() {
    echo "programs $ver: $1 $2: $3" >&2
    echo "--- exit $(cat "$dir/$1.$2.rc"), stdout" >&2
    cat "$dir/$1.$2.out" >&2
    echo "--- stderr" >&2
    head -c 3000 "$dir/$1.$2.err" >&2
    status=1
}
has() { grep -qF "$3" "$dir/$1.$2.$4"; }

run stock destroy tests/lifecycle/destroy_sub.py
run shim destroy tests/lifecycle/destroy_sub.py
if [ "$(cat "$dir/destroy.stock.rc")" != 0 ] || ! has destroy stock "main: destroyed" out ||
    ! has destroy stock "worker: callback from main runs" out; then
    fail destroy stock "expected destroyed, then the worker's callback in main"
elif [ "$(cat "$dir/destroy.shim.rc")" != 0 ] || ! has destroy shim "worker: callback runs in sub" out ||
    ! has destroy shim "main: run_string again works" out || ! has destroy shim "main: destroyed" out ||
    ! has destroy shim "main: exit" out || has destroy shim "worker: callback from main runs" out ||
    ! has destroy shim "PyGILState_Ensure for an interpreter that has ended" err ||
    has destroy shim "Fatal Python error" err; then
    fail destroy shim "expected the sub run again and destroyed, the worker's next callback refused, exit 0"
else
    echo "programs $ver: destroy_sub: stock destroys and runs the next callback in main; gilshim destroys, refuses it (its interpreter has ended), exit 0"
fi

for kind in stock shim; do
    n=$runs
    [ $kind = stock ] && n=$(( (runs + 4) / 5 ))
    i=0
    while [ $i -lt $n ]; do
        run $kind quiet$i tests/lifecycle/quiet_exit.py &
        [ $(( i % 2 )) = 1 ] && wait
        i=$((i + 1))
    done
    wait
    bad=0
    i=0
    while [ $i -lt $n ]; do
        if [ "$(cat "$dir/quiet$i.$kind.rc")" != 0 ] || [ -s "$dir/quiet$i.$kind.err" ]; then
            bad=$((bad + 1))
            fail quiet$i $kind "expected exit 0 and an empty stderr"
        fi
        i=$((i + 1))
    done
    echo "programs $ver: quiet_exit $kind: $((n - bad)) of $n runs silent, exit 0"
done
exit $status
