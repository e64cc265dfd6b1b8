#!/bin/sh
# SPDX-License-Identifier: MIT
# End to end: real Python programs, unmodified, run as they are (stock) and
# through tools/inject.sh, on every CPython of tests/pythons.sh. Each line
# prints both outcomes; a wrong-interpreter result under the shim fails.
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
cc -shared -fPIC -O2 -pthread tests/e2e/cbthread.c -o build/libcbthread.so
lib=$PWD/build/libcbthread.so
pass=0 fail=0
# Every run a check judges is captured (command, exit status, stdout,
# stderr) under a tag; a failed check prints its runs in full, so a failure
# seen once, even one in a hundred, can be understood from the output.
logs=build/e2e-logs.$$
rm -rf "$logs"
mkdir -p "$logs"
trap 'rm -rf "$logs"' EXIT
# capture TAG SECONDS CMD...: CMD under a timeout, kept as $logs/TAG.*
capture() {
    _t=$1 _s=$2
    shift 2
    printf '%s\n' "$*" >"$logs/$_t.cmd"
    timeout "$_s" "$@" >"$logs/$_t.out" 2>"$logs/$_t.err" && _rc=0 || _rc=$?
    echo $_rc >"$logs/$_t.rc"
    return $_rc
}
# show TAG...: the captured runs (up to 300 lines of each stream)
show() {
    for _t; do
        [ -f "$logs/$_t.cmd" ] || continue
        printf '       run: %s (exit %s%s)\n' "$(cat "$logs/$_t.cmd")" "$(cat "$logs/$_t.rc")" \
            "$([ "$(cat "$logs/$_t.rc")" = 124 ] && echo ': timed out')"
        for _f in out err; do
            if [ -s "$logs/$_t.$_f" ]; then
                echo "       std$_f:"
                sed -n '1,300s/^/       | /p' "$logs/$_t.$_f"
                [ "$(wc -l <"$logs/$_t.$_f")" -le 300 ] || echo "       | ..."
            else
                echo "       std$_f: empty"
            fi
        done
    done
}
expect() {  # label want got [TAG...]: on a failure, the runs TAG... in full
    if [ "$2" = "$3" ]; then pass=$((pass + 1)); st=ok; else fail=$((fail + 1)); st=FAIL; fi
    printf '  %-4s %-32s want %-20s got %s\n' "$st" "$1" "$2" "$3"
    if [ $st = FAIL ] && [ $# -gt 3 ]; then
        shift 3
        show "$@"
    fi
}
run() {  # TAG CMD...: the probe's answer, and how the process ended if not cleanly
    _tag=$1
    shift
    # GILSHIM_E2E_TIMEOUT: longer under emulation (tests/arm64/run.sh)
    capture "$_tag" "${GILSHIM_E2E_TIMEOUT:-15}" "$@" && rc=0 || rc=$?
    ans=$(sed -n '1s/.*: //p' "$logs/$_tag.out")
    case $rc in
        0) echo "$ans" ;;
        124) echo "$ans+deadlock" ;;
        *) echo "$ans+exit$rc" ;;
    esac
}
# inject.sh's own failure paths: one line on stderr, a documented exit code
code() { "$@" >/dev/null 2>&1 && echo 0 || echo $?; }
expect "inject.sh unknown option" 2 "$(code tools/inject.sh --bogus true)"
expect "inject.sh unknown policy" 2 "$(code tools/inject.sh --on-finalize sometimes true)"
expect "inject.sh command not found" 127 "$(code tools/inject.sh gilshim-no-such-command)"
expect "inject.sh shim missing" 127 "$(GILSHIM_LIB=/nonexistent/libgilshim.so code tools/inject.sh true)"
some_py=$(echo $PYTHONS | cut -d' ' -f1); some_py=${some_py%-config}
expect "inject.sh --check, shim not loaded" 4 \
    "$(GILSHIM_LIB=$(ldd "$some_py" | awk '/libm\.so/{print $3}') code tools/inject.sh --check "$some_py")"
old_py=$(ls -d "${PYENV_ROOT:-/root/.pyenv}"/versions/3.8*/bin/python3 2>/dev/null | head -1 || true)
if [ -n "$old_py" ]; then
    expect "inject.sh --check, CPython 3.8" 3 "$(code tools/inject.sh --check "$old_py")"
else
    echo "  skip inject.sh --check on an unsupported CPython: none installed"
fi
for cfg in $PYTHONS; do
    py=${cfg%-config}
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    echo "== end to end, CPython $ver ($py)"
    ext=build/ext-$ver-$(echo "$py" | md5sum | cut -c1-8)
    mkdir -p "$ext"
    suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    cc -shared -fPIC -O2 -pthread $($cfg --includes) tests/e2e/cbext.c -Wl,-z,lazy \
        -o "$ext/cbext$suffix"
    cc -shared -fPIC -O2 -pthread $($cfg --includes) -DMODNAME=cbext_relro tests/e2e/cbext.c \
        -Wl,-z,relro,-z,now -o "$ext/cbext_relro$suffix"
    for s in ctypes-thread ctypes-sync sqlite3 ext-thread ext-relro; do
        arg=$lib
        case $s in ext-*) arg=$PWD/$ext ;; esac
        stock=$(run stock "$py" tests/e2e/probe.py $s "$arg")
        shim=$(run shim tools/inject.sh "$py" tests/e2e/probe.py $s "$arg")
        # stock: a library-made thread always lands in main; a synchronous
        # callback does on <= 3.11 (3.12+ gilstate follows the last state)
        case $s in ctypes-sync|sqlite3) [ "${ver#3.}" -le 11 ] && want_stock=main || want_stock=sub ;;
                   *) want_stock=main ;; esac
        # 3.14+: the callback in main frees the own-GIL sub-interpreter's
        # objects there, and the process crashes after the answer
        case $stock in main+exit134|main+exit139) [ "${ver#3.}" -ge 14 ] && stock=main ;; esac
        expect "stock   $s" $want_stock "$stock" stock
        expect "gilshim $s" sub "$shim" shim
    done
    # tracemalloc's allocator hook calls PyGILState_Ensure from inside the
    # PyThreadState_New of the shim's own Ensure (CPython gh-96071). Stock
    # deadlocks here on 3.9-3.11; gilshim, reached by the hook's call
    # through libpython's PLT, nests it instead.
    if ldd "$py" | grep -q libpython; then
        tm_shim=$(run tm_shim tools/inject.sh "$py" -X tracemalloc tests/e2e/probe.py ctypes-thread "$lib")
        expect "gilshim -X tracemalloc ctypes-thread" sub "$tm_shim" tm_shim
    else
        # libpython in the executable: its internal calls never reach a
        # shim. Judged in a legacy sub-interpreter, where stock's own
        # synchronous callback survives tracemalloc (3.14's own-GIL one
        # crashes, stock, with no foreign thread at all). Where even that
        # fails, CPython itself does (Debian's 3.11.2 deadlocks inside
        # Py_NewInterpreter: the hook's PyGILState_Ensure waits for the GIL
        # its own thread holds): gilshim must then change nothing.
        export GILSHIM_PROBE_LEGACY=1
        tm_sync=$(run tm_sync "$py" -X tracemalloc tests/e2e/probe.py ctypes-sync "$lib")
        tm_stock=$(run tm_stock "$py" -X tracemalloc tests/e2e/probe.py ctypes-thread "$lib")
        tm_shim=$(run tm_shim tools/inject.sh "$py" -X tracemalloc tests/e2e/probe.py ctypes-thread "$lib")
        unset GILSHIM_PROBE_LEGACY
        if [ "$tm_sync" = sub ]; then
            expect "gilshim -X tracemalloc ctypes-thread (legacy sub)" sub "$tm_shim" tm_shim
        else
            expect "gilshim -X tracemalloc as stock (CPython fails: $tm_sync)" "$tm_stock" "$tm_shim" \
                tm_sync tm_stock tm_shim
        fi
    fi
    # the standard library's own sub-interpreters (own GIL each), 3.14+:
    # stock runs a library thread's callback in main, which frees the
    # worker's objects there and aborts the process
    if "$py" -c 'import concurrent.interpreters' 2>/dev/null; then
        for s in pool call-thread exec-thread call-sync call-sqlite; do
            stock=$(PYTHONPATH=$PWD/tests/e2e run stock "$py" tests/e2e/stdlib.py $s "$lib")
            shim=$(PYTHONPATH=$PWD/tests/e2e run shim tools/inject.sh "$py" tests/e2e/stdlib.py $s "$lib")
            case $stock in *+exit134|*+exit139) stock=crash ;; esac  # abort or SIGSEGV
            case $s in *-thread|pool) want_stock=crash ;; *) want_stock=own ;; esac
            expect "stock   concurrent.interpreters $s" $want_stock "$stock" stock
            expect "gilshim concurrent.interpreters $s" own "$shim" shim
        done
    fi
    out=$(tools/inject.sh "$py" tests/e2e/smoke.py "$lib" 2>&1) || true
    expect "gilshim main-interpreter smoke" ok "$out"
    # how the calls reach the shim: a libpython of its own, or the executable's
    if ldd "$py" | grep -q libpython; then want="symbol interposition"; else want="GOT patching"; fi
    how=$(tools/inject.sh --check "$py" | sed 's/.*redirection by \(.*\), CPython.*/\1/')
    expect "inject.sh --check" "$want" "$how"
    # --diagnose: stock behaviour kept, the wrong-interpreter call site reported
    # in a legacy sub-interpreter, where stock's wrong-interpreter callback
    # does not crash the process before diagnose mode's summary (3.14+)
    export GILSHIM_PROBE_LEGACY=1
    d=$(tools/inject.sh --diagnose "$py" tests/e2e/probe.py ctypes-thread "$lib" 2>build/e2e-diag.$$ | sed 's/.*: //')
    rep=$(grep -c 'wrong interpreter: PyGILState_Ensure at _ctypes.*owner is interpreter [1-9].*rule 4: creating thread' build/e2e-diag.$$ || true)
    expect "inject.sh --diagnose" "main 1" "$d $rep"
    [ $st = ok ] || sed -n '1,300s/^/       | /p' build/e2e-diag.$$
    clean=$(tools/inject.sh --diagnose "$py" tests/e2e/smoke.py "$lib" 2>&1)
    expect "--diagnose on a clean program" "ok" "$clean"
    # --json: five callbacks from one call site; the log parses, matches the
    # schema, and the summary counts five; a clean program logs nothing
    json=build/e2e-json.$$
    rm -f "$json"
    d=$(tools/inject.sh --diagnose --json --log "$json" "$py" tests/e2e/probe.py ctypes-thread-x5 "$lib" | sed 's/.*: //')
    chk=$("$py" tests/e2e/check_report.py "$json" 5 _ctypes 2>&1 | tr '\n' ' ')
    expect "inject.sh --diagnose --json" "main ok " "$d $chk"
    rm -f "$json"
    tools/inject.sh --diagnose --json --log "$json" "$py" tests/e2e/smoke.py "$lib" >/dev/null 2>&1
    expect "--diagnose --json on a clean program: empty log" "0" "$(cat "$json" 2>/dev/null | wc -l)"
    unset GILSHIM_PROBE_LEGACY
    rm -f "$json"
    rm -f build/e2e-diag.$$
    log=build/e2e-log.$$
    rm -f "$log"
    err=$(GILSHIM_LOG_LEVEL=debug tools/inject.sh --log "$log" "$py" tests/e2e/probe.py ctypes-thread "$lib" 2>&1 >/dev/null)
    got=$(grep -c 'rule 4: creating thread' "$log" 2>/dev/null || true)
    expect "inject.sh --log (rule-4 lines, stderr)" "1 quiet" "$got ${err:-quiet}"
    rm -f "$log"
done

# Real callback clients (tests/e2e/clients.py), each in the main
# interpreter (unchanged by the shim) and in a sub-interpreter (routed).
# Stock's answer in a sub-interpreter is printed, not judged: it is the bug.
# A client whose module does not import, or whose extension does not build,
# for a CPython is skipped with the reason.
# build_ext OUT SRC CMD...: build OUT from SRC with CMD unless OUT is newer
build_ext() {
    _out=$1 _src=$2
    shift 2
    [ "$_out" -nt "$_src" ] || "$@" -o "$_out" 2>/dev/null
}
for cfg in $PYTHONS; do
    py=${cfg%-config}
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    minor=${ver#3.}
    dir=build/clients-$(py_tag "$cfg")
    mkdir -p "$dir"
    cp build/libcbthread.so "$dir/"
    echo "== real clients, CPython $ver ($py)"
    clients="ctypes-thread ctypes-sync ctypes-threads ctypes-pool sqlite3-function sqlite3-aggregate
             sqlite3-progress sqlite3-authorizer readline-completer"
    # GILSHIM_NO_PTY: why there is no pty here (qemu-user, tests/arm64/run.sh)
    [ -z "${GILSHIM_NO_PTY:-}" ] || { clients=${clients%readline-completer}; echo "  skip readline-completer: $GILSHIM_NO_PTY"; }
    if "$py" -c 'import cffi' 2>/dev/null; then
        clients="$clients cffi-thread cffi-sync cffi-threads"
    else
        echo "  skip cffi-*: cffi is not installed for this CPython"
    fi
    suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    if command -v cython3 >/dev/null 2>&1 &&
        cython3 -3 tests/e2e/cyclient.pyx -o "$dir/cyclient.c" 2>/dev/null &&
        cc -shared -fPIC -O2 -pthread $($cfg --includes) "$dir/cyclient.c" \
            -o "$dir/cyclient$suffix" 2>/dev/null; then
        clients="$clients cython-thread"
    else
        echo "  skip cython-thread: no cython3, or its C does not build for $ver"
    fi
    if "$py" -c 'import apsw' 2>/dev/null; then
        clients="$clients apsw-function apsw-collation apsw-sorter apsw-busy apsw-update-hook
                 apsw-commit-hook"
    else
        echo "  skip apsw-*: apsw is not installed for this CPython"
    fi
    # pybind11 3.x (pybind11/subinterpreter.h) and nanobind, from their
    # Debian packages' headers
    if command -v c++ >/dev/null 2>&1 &&
        build_ext "$dir/pbclient$suffix" tests/e2e/pbclient.cpp \
            c++ -std=c++17 -shared -fPIC -O2 -pthread $($cfg --includes) tests/e2e/pbclient.cpp; then
        clients="$clients pybind11-thread pybind11-activate"
    else
        echo "  skip pybind11-*: no pybind11 3.x headers (pybind11-dev), or pbclient.cpp does not build for $ver"
    fi
    nb=/usr/share/nanobind
    if command -v c++ >/dev/null 2>&1 && [ -f $nb/src/nb_combined.cpp ] &&
        build_ext "$dir/nbclient$suffix" tests/e2e/nbclient.cpp \
            c++ -std=c++17 -shared -fPIC -O2 -pthread $($cfg --includes) -I$nb/include \
                tests/e2e/nbclient.cpp $nb/src/nb_combined.cpp; then
        clients="$clients nanobind-thread"
    else
        echo "  skip nanobind-thread: no nanobind (nanobind-dev), or nbclient.cpp does not build for $ver"
    fi
    if "$py" -c 'from gi.repository import GLib, Gio' 2>/dev/null; then
        clients="$clients gi-thread gi-task"
    else
        echo "  skip gi-*: PyGObject (gi) with GLib and Gio is not installed for this CPython"
    fi
    if "$py" -c 'import grpc' 2>/dev/null; then
        clients="$clients grpc-done grpc-connectivity grpc-metadata"
    else
        echo "  skip grpc-*: grpcio is not installed for this CPython"
    fi
    # GILSHIM_E2E_CLIENTS: only these (a shorter run: tests/arm64/run.sh)
    [ -z "${GILSHIM_E2E_CLIENTS:-}" ] || clients=$(for c in $clients; do case " $GILSHIM_E2E_CLIENTS " in *" $c "*) echo $c ;; esac; done)
    err=$logs/shim.err
    for c in $clients; do
        for place in main sub; do
            # stock is judged only in main, where every client answers in
            # seconds; in a sub-interpreter some hang (gi-* on 3.9-3.11)
            capture stock 20 "$py" tests/e2e/clients.py $c $place "$PWD/$dir" || true
            stock=$(tail -1 "$logs/stock.out")
            [ -n "$stock" ] || stock="$c $place: no answer (hung or crashed)"
            capture shim 60 tools/inject.sh "$py" tests/e2e/clients.py $c $place "$PWD/$dir" || true
            shim=$(tail -1 "$logs/shim.out")
            want=$place
            # 3.12+ reads lines with stdio, not GNU readline, outside the
            # main interpreter: no completer runs there, stock or shim
            [ $c = readline-completer ] && [ $place = sub ] && [ $minor -ge 12 ] && want=none
            if [ $place = main ]; then
                expect "stock   $c in main" "main" "${stock#*: }" stock
            else
                printf '  info %-32s stock: %s\n' "stock   $c in a sub" "${stock#*: }"
            fi
            expect "gilshim $c in $place" "$want" "${shim#*: }" shim
            # nothing to report for a correct client: for cffi nothing at
            # all on stderr (its pinning Ensure once drew a warning and
            # left the GIL held), for the others no line of gilshim's
            case $c in
                cffi-*) expect "gilshim $c in $place: stderr" "empty" \
                            "$([ -s "$err" ] && head -c 200 "$err" | tr '\n' ' ' || echo empty)" shim
                        # diagnose mode matches Releases the same way
                        if [ $place = main ]; then
                            capture diag 60 tools/inject.sh --diagnose "$py" tests/e2e/clients.py $c main \
                                "$PWD/$dir" || true
                            expect "--diagnose $c in main: stderr" "empty" \
                                "$([ -s "$logs/diag.err" ] && head -c 200 "$logs/diag.err" | tr '\n' ' ' || echo empty)" diag
                        fi ;;
                # 3.9-3.11: GLib's pool thread drops the task's Python
                # references after the sub-interpreter is destroyed, by an
                # Ensure that stock runs in main on the ended interpreter's
                # objects; gilshim refuses it with its warning (sometimes:
                # the drop races the destroy). Nothing else may be said.
                gi-task) expect "gilshim $c in $place: messages" "0" \
                             "$(grep 'gilshim\[' "$err" | if [ $place = sub ] && [ $minor -le 11 ]; then
                                    grep -vc 'PyGILState_Ensure for an interpreter that has ended'; else grep -c .; fi || true)" shim ;;
                *) expect "gilshim $c in $place: messages" "0" "$(grep -c 'gilshim\[' "$err" || true)" shim ;;
            esac
        done
    done
    # pybind11's own way into a sub-interpreter against gilshim's, per
    # enter+leave on one C++ thread (tests/e2e/cycle.py): timed, not judged
    case $clients in *pybind11-activate*)
        printf '  info %-32s %s\n' "cycle, gilshim" \
            "$(PYTHONPATH=$PWD/tests/e2e timeout 120 tools/inject.sh "$py" tests/e2e/cycle.py "$PWD/$dir" 2>&1)" ;;
    esac
done
echo "e2e: $pass passed, $fail failed"
[ $fail -eq 0 ]
