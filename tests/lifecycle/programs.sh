#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/lifecycle/programs.sh PYTHON RUNS: the lifecycle cases best told as
# Python programs, each run stock and with gilshim preloaded; one line per
# case, exit 1 if one fails (with the failed run's output).
#   destroy_sub.py  a sub-interpreter whose library thread outlived its call
#                   is run again and destroyed; the thread's next callback;
#                   and one never destroyed, left to the runtime's end
#   atexit_lib.py   a library's atexit function joins its thread, which calls
#                   back once more: in main, a sub (destroyed), and on 3.14+
#                   Interpreter.close() and InterpreterPoolExecutor shutdown;
#                   registered before and after the first callback
#   atexit_thread.py  an atexit function starts a thread that calls back
#                   with the GIL released after the atexit run (3.15 joins
#                   it in a further round; 3.12 refuses the thread, stock
#                   too): as stock, exit 0, no message of gilshim's
#   quiet_exit.py   a daemon thread calling back through the end: RUNS runs
#                   with gilshim, RUNS/5 stock, 2 at a time; every one must
#                   exit 0 with an empty stderr (or, where stock crashes too,
#                   crash as stock does, without a message of gilshim's)
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

# run KIND NAME PROGRAM ARGS... (the library first, as above)
run_args() {
    kind=$1 name=$2 prog=$3
    shift 3
    set +e
    if [ "$kind" = shim ]; then
        timeout 60 env LD_PRELOAD="$PWD/build/libgilshim.so" "$py" "$prog" build/libticker.so "$@" \
            >"$dir/$name.$kind.out" 2>"$dir/$name.$kind.err"
    else
        timeout 60 "$py" "$prog" build/libticker.so "$@" >"$dir/$name.$kind.out" 2>"$dir/$name.$kind.err"
    fi
    echo $? >"$dir/$name.$kind.rc"
    set -e
}

run_args stock keep tests/lifecycle/destroy_sub.py keep
run_args shim keep tests/lifecycle/destroy_sub.py keep
if [ "$(cat "$dir/keep.stock.rc")" != 0 ] || ! has keep stock "main: exit" out; then
    fail keep stock "expected exit 0"
elif [ "$(cat "$dir/keep.shim.rc")" != 0 ] || ! has keep shim "main: exit" out ||
    has keep shim "Fatal Python error" err; then
    fail keep shim "expected exit 0, no fatal error"
else
    echo "programs $ver: destroy_sub keep (never destroyed): stock and gilshim exit 0"
fi

# A library's atexit function joins its thread, which calls back once more.
wheres="main sub"
"$py" -c 'import concurrent.interpreters' 2>/dev/null && wheres="$wheres close pool"
for where in $wheres; do
    for order in before after; do
        name=atexit-$where-$order
        run_args stock $name tests/lifecycle/atexit_lib.py $where $order
        run_args shim $name tests/lifecycle/atexit_lib.py $where $order
        owner=sub
        [ $where = main ] && owner=main
        got() {  # KIND: where callback 2 ran, whether joined, exit status
            c=$(sed -n 's/^callback 2 runs in //p' "$dir/$name.$1.out" | head -1)
            j=no
            has $name $1 "atexit: joined the library thread" out && j=yes
            echo "last callback in ${c:-nothing}, joined $j, exit $(cat "$dir/$name.$1.rc")"
        }
        case $where in
        main | sub)
            if [ "$(got stock)" != "last callback in main, joined yes, exit 0" ]; then
                fail $name stock "expected the last callback in main, the join, exit 0"
                continue
            fi ;;
        esac
        if [ "$(got shim)" != "last callback in $owner, joined yes, exit 0" ] ||
            [ -s "$dir/$name.shim.err" ]; then
            fail $name shim "expected the last callback in $owner, the join, exit 0, no message"
        else
            echo "programs $ver: atexit_lib $where $order: stock: $(got stock); gilshim: $(got shim)"
        fi
    done
done

run stock late tests/lifecycle/atexit_thread.py
run shim late tests/lifecycle/atexit_thread.py
ran() { has late $1 "late thread sorted [1, 2, 3, 4, 5]" out && echo yes || echo no; }
if [ "$(cat "$dir/late.stock.rc")" != 0 ] || ! has late stock "main returns" out; then
    fail late stock "expected exit 0"
elif [ "$(cat "$dir/late.shim.rc")" != 0 ] || has late shim "gilshim[" err ||
    [ "$(ran shim)" != "$(ran stock)" ]; then
    fail late shim "expected exit 0, no message, the late callback run as stock's ($(ran stock))"
else
    echo "programs $ver: atexit_thread: the late thread's callback ran: stock $(ran stock), gilshim $(ran shim); exit 0"
fi

# Stock first: where it crashes itself (3.14: a libffi closure called from
# the thread while exit() unmaps it), a gilshim run may crash the same way,
# never with a word of gilshim's.
stock_crashes=0
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
    silent=0 crashed=0 other=0
    i=0
    while [ $i -lt $n ]; do
        rc=$(cat "$dir/quiet$i.$kind.rc")
        if [ "$rc" = 0 ] && [ ! -s "$dir/quiet$i.$kind.err" ]; then
            silent=$((silent + 1))
        elif [ "$rc" = 139 ] && ! grep -q "gilshim\[" "$dir/quiet$i.$kind.err"; then
            crashed=$((crashed + 1))
            [ $kind = shim ] && [ $stock_crashes = 0 ] &&
                fail quiet$i $kind "a crash where stock exits 0"
        elif [ $kind = shim ]; then
            fail quiet$i $kind "expected exit 0 and an empty stderr"
        else
            other=$((other + 1))  # stock's own outcome, reported
        fi
        i=$((i + 1))
    done
    [ $kind = stock ] && stock_crashes=$crashed
    echo "programs $ver: quiet_exit $kind: $silent of $n runs exit 0 and silent, $crashed SIGSEGV" \
        "$([ $other = 0 ] || echo ", $other otherwise (exit $(cat "$dir"/quiet*.$kind.rc | sort -u | tr '\n' ' '))")"
done
exit $status
