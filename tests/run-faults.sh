#!/bin/sh
# SPDX-License-Identifier: MIT
# Every allocation the shim makes, failed in turn (docs/failure-paths.md):
# tests/faults/faults.c linked with the fault-injection build of the shim
# (build/fault/, -DGILSHIM_FAULT_INJECTION, never the shipped library), on
# every CPython of tests/pythons.sh, in route and in diagnose mode, plain
# and under valgrind memcheck; then, where the python executable carries
# libpython, the GOT patching list failed at load.
#   tests/run-faults.sh          (tests/sid.sh tests/run-faults.sh: 3.14/3.15)
# FAULTS_VALGRIND=0 leaves valgrind out; FAULTS_JOBS CPythons run at once
# (default: the number of CPUs, at most 4).
# Each site named in src/ (gs_malloc("site", ...), gs_fault("site")...) must
# have failed, with its outcome checked, on every CPython. Valgrind fails a
# run on a definite or indirect leak, or an invalid access, whose stack
# passes through libgilshim (as tests/run-stress.sh judges).
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-faults: no CPython with python3-config found" >&2; exit 1; }
start=$(date +%s)
dir=build/fault
# built by another compiler inside the sid root (tests/sid.sh): apart
[ -z "${GILSHIM_IN_SID:-}" ] || dir=build/sid/fault
mkdir -p "$dir"
warn="-Wall -Wextra ${WERROR:+-Werror}"
cc -std=c11 -fPIC -fvisibility=hidden -pthread -O1 -g $warn -DGILSHIM_FAULT_INJECTION \
    src/registry/*.c src/shim/*/*.c -o "$dir/libgilshim.so" -shared \
    -Wl,-soname,libgilshim.so.0 -Wl,-z,defs -Wl,--version-script=src/shim/exports.map -ldl
ln -sf libgilshim.so "$dir/libgilshim.so.0"
lib=$PWD/$dir/libgilshim.so
cc -shared -fPIC -O2 -pthread tests/e2e/cbthread.c -o "$dir/libcbthread.so"
valgrind=${FAULTS_VALGRIND:-1}
if [ "$valgrind" != 0 ] && ! command -v valgrind >/dev/null; then
    echo "run-faults: valgrind not found (tools/deps.sh test installs it; FAULTS_VALGRIND=0 leaves it out)"
    exit 1
fi
jobs=${FAULTS_JOBS:-$(nproc 2>/dev/null || echo 2)}
[ "$jobs" -le 4 ] || jobs=4

# The sites: every name given to alloc.h's wrappers in src/.
sites=$(grep -rhoE 'gs_(malloc|calloc|realloc|aligned_alloc|fault)\("[^"]+"' src |
        sed 's/^[^"]*"//; s/"$//' | sort -u)

# vg_clean LOG: no report block (blank-line separated) through the shim
vg_clean() {
    ! sed 's/^==[0-9]*== \{0,1\}//' "$1" | awk 'BEGIN{RS=""}
        /src\/(shim|registry)\/|libgilshim/ &&
        /(lost in loss record|Invalid (read|write)|uninitialised|Invalid free|Mismatched free|Conditional jump)/ {n++}
        END{exit n == 0}'
}
VG="valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect --fullpath-after=$PWD/"

# one_python CONFIG: every check on one CPython, its lines on stdout as
# "ok ..." / "FAIL ..."; the rest is commentary.
one_python() {
    cfg=$1
    tag=$(py_tag "$cfg")
    minor=$(echo "$tag" | sed 's/^3\.\([0-9]*\).*/\1/')
    bin=$dir/faults-$tag
    if ! cc -std=c11 -O1 -g $warn -Iinclude $($cfg --includes) tests/faults/faults.c -o "$bin" \
         -L"$dir" -Wl,-rpath,"$PWD/$dir" -lgilshim $($cfg --ldflags --embed) -pthread 2>&1; then
        echo "FAIL $tag: faults.c does not build"
        return
    fi
    echo "== faults, CPython $tag"
    seen=
    for mode in route diagnose; do
        case $mode in
            route) env="GILSHIM_ON_FINALIZE=exit" ;;
            diagnose) env="GILSHIM_MODE=diagnose GILSHIM_LOG_FORMAT=json" ;;
        esac
        runs="plain"
        [ "$valgrind" = 0 ] || runs="plain valgrind"
        for how in $runs; do
            log=$PWD/$dir/faults-$tag-$mode-$how.log
            out=$dir/faults-$tag-$mode-$how.out
            err=$dir/faults-$tag-$mode-$how.err
            rm -f "$log"
            case $how in
                plain) wrap= ;;
                valgrind) wrap="$VG --log-file=$PWD/$dir/faults-$tag-$mode.valgrind" ;;
            esac
            rc=0
            env GILSHIM_LOG="$log" PYTHONMALLOC=malloc $env $wrap "$bin" $mode >"$out" 2>"$err" || rc=$?
            sed "s/^\(ok\|FAIL\) /\1 $tag $mode $how: /" "$out" | grep -E '^(ok|FAIL) '
            [ $rc = 0 ] && echo "ok $tag $mode $how: exit 0" ||
                { echo "FAIL $tag $mode $how: exit $rc"; tail -5 "$err" | sed 's/^/    /'; }
            seen="$seen
$(sed -n 's/^ok [a-z]* [0-9]*\/[0-9]* \(.*\): as documented$/\1/p' "$out")"
            if [ $mode = diagnose ]; then
                # the summary at exit, whose table could not be allocated
                if grep -q 'call 1: diagnose summary, fails' "$err" &&
                   grep -q '"event":"summary"' "$log" && grep -q 'out of memory for the site table' "$log"; then
                    echo "ok $tag $mode $how: diagnose summary: the busiest sites that fit, the rest counted as lost"
                    seen="$seen
diagnose summary"
                else
                    echo "FAIL $tag $mode $how: diagnose summary: no summary event after its table failed"
                fi
                # every line, that summary's too, as docs/messages.md has it
                r=$(python3 tests/e2e/check_report.py --events "$log" wrong_interpreter message summary 2>&1 || true)
                [ "$r" = ok ] && echo "ok $tag $mode $how: the JSON log follows the schema" ||
                    echo "FAIL $tag $mode $how: the JSON log: $(echo $r)"
            fi
            if [ $how = valgrind ]; then
                v=$PWD/$dir/faults-$tag-$mode.valgrind
                vg_clean "$v" && echo "ok $tag $mode valgrind: no leak or invalid access in libgilshim" ||
                    echo "FAIL $tag $mode valgrind: the shim's own memory at fault (log: $v)"
            fi
        done
    done
    # the GOT patching list: only where the executable defines CPython's
    # names, and the first allocation of the process (the constructor's)
    py=${cfg%-config}
    if ! ldd "$py" | grep -q libpython; then
        g=$(got "$py" "$tag")
        printf '%s\n' "$g" | grep -v '^site '
        seen="$seen
$(printf '%s\n' "$g" | sed -n 's/^site //p')"
    fi
    # every site failed here at least once
    echo "$sites" | while IFS= read -r s; do
        [ -n "$s" ] || continue
        case $s in
            "GOT patching list") ldd "$py" | grep -q libpython && continue ;;
            "PyThreadState_New for a sweep") [ "$minor" -ge 13 ] || continue ;;
        esac
        if printf '%s\n' "$seen" | grep -qxF "$s"; then
            echo "ok $tag coverage: $s failed, outcome checked"
        else
            echo "FAIL $tag coverage: $s never failed (no phase of tests/faults/faults.c reaches it)"
        fi
    done
}

# got PYTHON TAG: the probe of tests/e2e with the first allocation failing;
# its lines, and "site GOT patching list" when that failed as it should
got() {
    py=$1 tag=$2
    runs="plain"
    [ "$valgrind" = 0 ] || runs="plain valgrind"
    ok=1
    for how in $runs; do
        log=$PWD/$dir/got-$tag-$how.log
        rm -f "$log"
        case $how in
            plain) wrap= ;;
            valgrind) wrap="$VG --log-file=$PWD/$dir/got-$tag.valgrind" ;;
        esac
        ans=$(env GILSHIM_TEST_FAIL_ALLOC=1 GILSHIM_LOG="$log" LD_PRELOAD="$lib" PYTHONMALLOC=malloc \
              $wrap "$py" tests/e2e/probe.py ctypes-thread "$PWD/$dir/libcbthread.so" 2>"$dir/got-$tag-$how.err" ||
              echo "exit $?")
        if grep -q 'call 1: GOT patching list, fails' "$dir/got-$tag-$how.err" &&
           grep -q 'out of memory for the GOT patching list' "$log" && [ "$ans" = "ctypes-thread: sub" ]; then
            echo "ok $tag got $how: GOT patching list: patched all the same, callback in sub"
        else
            echo "FAIL $tag got $how: GOT patching list: answer '$ans'"
            ok=0
        fi
        if [ $how = valgrind ]; then
            vg_clean "$PWD/$dir/got-$tag.valgrind" &&
                echo "ok $tag got valgrind: no leak or invalid access in libgilshim" >&2 ||
                { echo "FAIL $tag got valgrind: the shim's own memory at fault"; ok=0; }
        fi
    done
    [ $ok = 0 ] || echo "site GOT patching list"
}

# The CPythons, FAULTS_JOBS at a time; each one's lines printed together.
n=0
for cfg in $PYTHONS; do
    n=$((n + 1))
    (one_python "$cfg" >"$dir/report-$n" 2>&1) &
    if [ $((n % jobs)) = 0 ]; then wait; fi
done
wait
pass=0 fail=0
i=0
for cfg in $PYTHONS; do
    i=$((i + 1))
    cat "$dir/report-$i"
    pass=$((pass + $(grep -c '^ok ' "$dir/report-$i" || true)))
    fail=$((fail + $(grep -c '^FAIL ' "$dir/report-$i" || true)))
done
echo "run-faults: $(( $(date +%s) - start ))s"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
