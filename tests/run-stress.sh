#!/bin/sh
# SPDX-License-Identifier: MIT
# The stress run of tests/stress/stress.c against every CPython in
# tests/pythons.sh, with the shim built one of four ways:
#   run-stress.sh plain|asan|tsan|valgrind [SECONDS]
# plain: build/libgilshim.so; asan: ASan+UBSan (any report aborts); tsan:
# ThreadSanitizer; valgrind: memcheck on the plain build, failing on any
# leak or invalid access whose stack passes through libgilshim.
# CPython itself is not instrumented: the sanitizers judge the shim's code.
set -eu
cd "$(dirname "$0")/.."
kind=${1:-plain}
seconds=${2:-${STRESS_SECONDS:-2}}
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-stress: no CPython 3.9-3.13 with python3-config found" >&2; exit 1; }

case $kind in
    plain|valgrind) san= ; dir=build ;;
    asan) san="-fsanitize=address,undefined -fno-sanitize-recover=all" ; dir=build/asan ;;
    tsan) san="-fsanitize=thread" ; dir=build/tsan ;;
    *) echo "usage: run-stress.sh plain|asan|tsan|valgrind [SECONDS]" >&2; exit 2 ;;
esac
# built by another compiler inside the sid root (tests/sid.sh): apart
[ -z "${GILSHIM_IN_SID:-}" ] || [ -z "$san" ] || dir=build/sid/${dir#build/}
if [ -n "$san" ]; then
    mkdir -p "$dir"
    cc -std=c11 -fPIC -fvisibility=hidden -pthread -O1 -g -fno-omit-frame-pointer $san \
        src/registry/*.c src/shim/*/*.c -o "$dir/libgilshim.so" -shared \
        -Wl,-soname,libgilshim.so.0 -Wl,-z,defs -Wl,--version-script=src/shim/exports.map -ldl
    ln -sf libgilshim.so "$dir/libgilshim.so.0"
fi
# Python's own allocations are not the shim's to judge.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
export GILSHIM_ON_FINALIZE=exit  # so that the PyGILState threads can be joined
export GILSHIM_LOG_LEVEL=info  # their stops, as stock's, are info (docs/messages.md)
status=0
for cfg in $PYTHONS; do
    tag=$(py_tag "$cfg")
    bin=$dir/stress-$tag
    cc -std=c11 -O1 -g -fno-omit-frame-pointer $san -Wall -Wextra ${WERROR:+-Werror} -Iinclude \
        $($cfg --includes) tests/stress/stress.c -o "$bin" \
        -L"$dir" -Wl,-rpath,"$PWD/$dir" -lgilshim $($cfg --ldflags --embed) -pthread
    log=$PWD/$dir/stress-$tag.log
    rm -f "$log"
    echo "== stress ($kind), CPython $tag, ${seconds}s"
    if [ "$kind" = valgrind ]; then
        vlog=$PWD/$dir/stress-$tag.valgrind
        # pymalloc's reads are valgrind noise; the shim uses malloc anyway
        PYTHONMALLOC=malloc GILSHIM_LOG=$log valgrind --quiet --leak-check=full \
            --show-leak-kinds=definite,indirect,possible --log-file="$vlog" --fullpath-after="$PWD/" \
            "$bin" "$seconds" 200 || status=1
        # every report block (blank-line separated) that runs through the shim
        if sed 's/^==[0-9]*== \{0,1\}//' "$vlog" | awk 'BEGIN{RS=""} /src\/(shim|registry)\/|libgilshim/ && /(lost in loss record|Invalid (read|write)|uninitialised|Invalid free|Mismatched free|Conditional jump)/ {print; n++} END{exit n>0}'; then
            echo "valgrind: no leak or invalid access in libgilshim"
        else
            echo "[FAIL] valgrind found the shim's own memory at fault (full log: $vlog)"
            status=1
        fi
    else
        GILSHIM_LOG=$log "$bin" "$seconds" || status=1
    fi
    # the 16 PyGILState threads, each stopped once with its message (a slow
    # one may come only after Py_FinalizeEx returned)
    n=$(grep -Ec 'PyGILState_Ensure (while the runtime finalizes|after Py_FinalizeEx) \(at stress-' "$log" || true)
    if [ "$n" != 16 ]; then
        echo "[FAIL] expected 16 threads stopped at finalization with a message, log has $n"
        status=1
    fi
done
exit $status
