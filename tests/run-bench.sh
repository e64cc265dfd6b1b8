#!/bin/sh
# SPDX-License-Identifier: MIT
# Issue 6's benchmark (make bench). For every CPython, tests/bench/bench.c
# runs RUNS times without the shim and RUNS times with libgilshim preloaded,
# alternately; each key keeps its best run. Every ratio with a tight target
# divides two loops measured in the same process, round by round (bench.c
# reaches libpython's and libc's own definitions through their handles).
# Then callgrind instruction counts for the same loops, which this shared
# machine cannot make noisy, and pthread_create in a process without Python.
#   run-bench.sh [RUNS [SCALE]]    BENCH_IR=0 skips callgrind
set -eu
cd "$(dirname "$0")/.."
runs=${1:-3}
scale=${2:-1}
lib=$PWD/build/libgilshim.so
. tests/pythons.sh
out=build/bench
mem=
mkdir -p "$out"

best() {  # best FILE KEY [max]: the smallest (or largest) value of KEY
    awk -v k="$2" -v m="${3:-min}" '$1 == k { if (!n++ || (m == "max" ? $2 > b : $2 < b)) b = $2 }
        END { if (n) print b; else print "nan" }' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo "gilshim benchmark: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%d); best of $runs runs per side"
echo
fmt='%-12s %7s %7s %7s | %-6s %-6s %-6s %-6s %-6s %-6s %-6s %-6s %-6s %-6s %-6s\n'
printf "$fmt" CPython stock gilshim limit speed cycle floor nested sub flat flat pass thread par par
printf "$fmt" "" "ns" "ns" "ns" "x" "/lim" "/lim" "/stock" "/lim" "8000/1" "byhand" "Save/R" "create" "2/1" "stock"
printf "$fmt" "target" "" "" "" ">=4" "<=1.15" "" "<=1.25" "<=1.15" "<=1.2" "" "<=1.10" "<=1.10" ">=1.7" ""
for cfg in $PYTHONS; do
    tag=$(py_tag "$cfg")
    bin=build/bench-$tag
    cc -std=c11 -O2 -g -Wall -Wextra ${WERROR:+-Werror} $($cfg --includes) tests/bench/bench.c -o "$bin" \
        $($cfg --ldflags --embed) -Wl,-rpath,"$($cfg --prefix)/lib" -ldl -pthread
    floor=$PWD/build/bench-floor-$tag.so
    cc -std=c11 -O2 -g -Wall -Wextra ${WERROR:+-Werror} -shared -fPIC $($cfg --includes) \
        tests/bench/floor.c -o "$floor" -ldl
    : >"$out/plain-$tag"
    : >"$out/shim-$tag"
    : >"$out/floor-$tag"
    i=0
    while [ $i -lt "$runs" ]; do
        "$bin" all "$scale" >>"$out/plain-$tag"
        LD_PRELOAD=$lib "$bin" all "$scale" >>"$out/shim-$tag"
        LD_PRELOAD=$floor "$bin" cycles "$scale" >>"$out/floor-$tag"
        i=$((i + 1))
    done
    p=$out/plain-$tag s=$out/shim-$tag f=$out/floor-$tag
    stock=$(best "$p" cycle) cyc=$(best "$s" cycle) lim=$(best "$s" persistent_real)
    printf "$fmt" "$tag" "$(printf %.0f "$stock")" "$(printf %.0f "$cyc")" "$(printf %.0f "$lim")" \
        "$(ratio "$stock" "$cyc")" "$(ratio "$cyc" "$lim")" \
        "$(ratio "$(best "$f" cycle)" "$(best "$f" persistent_real)")" \
        "$(ratio "$(best "$s" nested)" "$(best "$s" nested_real)")" \
        "$(ratio "$(best "$s" sub_cycle)" "$(best "$s" sub_persistent_real)")" \
        "$(ratio "$(best "$s" flat_1000x8)" "$(best "$s" flat_1x1)")" \
        "$(ratio "$(best "$s" flat_real_1000x8)" "$(best "$s" flat_real_1x1)")" \
        "$(ratio "$(best "$s" persistent)" "$lim")" \
        "$(ratio "$(best "$s" create_sub)" "$(best "$s" create_sub_real)")" \
        "$(ratio "$(best "$s" parallel_2 max)" "$(best "$s" parallel_1 max)")" \
        "$(ratio "$(best "$p" parallel_2 max)" "$(best "$p" parallel_1 max)")"
    mem="$mem$tag: $(best "$s" mem_bytes_per_row) bytes per row held ($(best "$s" mem_rows) rows), after the threads exit: $(best "$s" mem_rows_after) rows, $(best "$s" mem_bytes_after) bytes
"
done
cat <<'EOF'

  stock, gilshim: one foreign thread's PyGILState_Ensure/Release cycle (main
  interpreter) without and with the shim; limit: one persistent thread state
  attached with PyEval_RestoreThread and detached with PyEval_SaveThread.
  speed = stock/gilshim; cycle = gilshim/limit; floor = the same cycle
  through the cheapest interposer there can be (tests/bench/floor.c: one
  cached state per thread, nothing else) / limit, in its own process:
  what interposing costs before any bookkeeping; nested = Ensure/Release with
  the GIL held, gilshim/stock; sub = the cycle routed into a sub-interpreter
  (rule 4) / that interpreter's persistent loop; flat = gilshim_ensure with
  1000 threads x 8 interpreters taking turns, each cycle the next
  interpreter / 1 thread x 1, and byhand, the same pattern written with
  one thread state per (thread x interpreter): what CPython itself pays
  for 8000 thread states in 8 interpreters; pass = the
  persistent loop through the shim's Save/Restore / without; thread =
  pthread_create+join from a thread attached to a sub-interpreter, shim /
  libc; par = cycles per second (each with ~1 us of Python work) of 2
  threads in 2 own-GIL interpreters / 1 thread (3.12+): with gilshim, and
  stock, which sends both threads to main.
EOF
echo
printf '%s' "$mem"

cc -std=c11 -O2 -Wall -Wextra tests/bench/nopy.c -o build/nopy -ldl -pthread
LD_PRELOAD=$lib build/nopy >"$out/nopy"
echo "no Python: pthread_create+join with the shim preloaded / without: $(ratio "$(best "$out/nopy" create)" "$(best "$out/nopy" create_real)") (target <= 1.05)"

if [ "${BENCH_IR:-1}" = 0 ] || ! command -v valgrind >/dev/null 2>&1; then
    echo "(callgrind counts skipped: ${BENCH_IR:+BENCH_IR=0}$(command -v valgrind >/dev/null 2>&1 || echo 'no valgrind'))"
    exit 0
fi
echo
echo "Instructions per cycle (callgrind, 20000 cycles counted after 2000 warm):"
printf '%-12s %7s %7s %7s %7s %7s %7s %7s | %-6s %-6s %-6s %-6s\n' CPython stock gilshim floor limit pass \
    nested n.stock cycle floor nested pass
ir() {  # ir BIN WHAT [preload]: only the timed round counts, not the warm-up
    LD_PRELOAD=${3:-} valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=timed_round \
        "$1" ir "$2" 20000 2>&1 | awk '/Collected :/ { printf "%.0f", $NF / 20000 }'
}
for cfg in $PYTHONS; do
    tag=$(py_tag "$cfg")
    bin=build/bench-$tag
    stock=$(ir "$bin" cycle)
    cyc=$(ir "$bin" cycle "$lib")
    flo=$(ir "$bin" cycle "$PWD/build/bench-floor-$tag.so")
    lim=$(ir "$bin" persistent_real "$lib")
    pass=$(ir "$bin" persistent "$lib")
    nest=$(ir "$bin" nested "$lib")
    nstock=$(ir "$bin" nested_real "$lib")
    printf '%-12s %7s %7s %7s %7s %7s %7s %7s | %-6s %-6s %-6s %-6s\n' "$tag" "$stock" "$cyc" "$flo" "$lim" \
        "$pass" "$nest" "$nstock" "$(ratio "$cyc" "$lim")" "$(ratio "$flo" "$lim")" "$(ratio "$nest" "$nstock")" \
        "$(ratio "$pass" "$lim")"
done
