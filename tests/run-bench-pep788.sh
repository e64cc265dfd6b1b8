#!/bin/sh
# SPDX-License-Identifier: MIT
# CPython 3.15's own PEP 788 cycle against gilshim's (make bench; numbers in
# docs/pep788.md "Speed"). For every CPython 3.15+ of tests/pythons.sh,
# tests/bench/pep788.c runs RUNS times with libgilshim preloaded; each key
# keeps its best run. Every loop of a ratio runs in the same process. Then
# callgrind instruction counts for the same loops.
#   run-bench-pep788.sh [RUNS [SCALE]]    BENCH_IR=0 skips callgrind
set -eu
cd "$(dirname "$0")/.."
runs=${1:-3}
scale=${2:-1}
lib=$PWD/build/libgilshim.so
. tests/pythons.sh
out=build/bench
mkdir -p "$out"
best() { awk -v k="$2" '$1 == k { if (!n++ || $2 < b) b = $2 } END { if (n) print b; else print "nan" }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2f", a / b }'; }
keys="native_guard native_view stock_gilstate gilshim_gilstate gilshim_ensure gilshim_guard gilshim_guarded limit native_nested gilshim_nested"
found=0
for cfg in $PYTHONS; do
    py=${cfg%-config}
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 15))' || continue
    found=1
    tag=$(py_tag "$cfg")
    bin=build/bench-pep788-$tag
    cc -std=c11 -O2 -g -Wall -Wextra ${WERROR:+-Werror} $($cfg --includes) tests/bench/pep788.c -o "$bin" \
        $($cfg --ldflags --embed) -ldl -pthread
    r=$out/pep788-$tag
    : >"$r"
    i=0
    while [ $i -lt "$runs" ]; do
        LD_PRELOAD=$lib "$bin" "$scale" >>"$r"
        i=$((i + 1))
    done
    echo "CPython $tag, a foreign thread attaching to main and detaching, ns per cycle (best of $runs runs):"
    for k in $keys; do printf '  %-17s %7.1f\n' "$k" "$(best "$r" "$k")"; done
    echo "  3.15's Ensure makes a new thread state every cycle: $(best "$r" native_creates | sed 's/1/yes/; s/0/no/')"
    ng=$(best "$r" native_guard) nv=$(best "$r" native_view)
    echo "  native PyThreadState_Ensure(guard) / gilshim's PyGILState_Ensure: $(ratio "$ng" "$(best "$r" gilshim_gilstate)")"
    echo "  native PyThreadState_Ensure(guard) / gilshim_ensure:              $(ratio "$ng" "$(best "$r" gilshim_ensure)")"
    echo "  native PyThreadState_Ensure(guard) / gilshim_guard_ensure:        $(ratio "$ng" "$(best "$r" gilshim_guard)")"
    echo "  native PyThreadState_EnsureFromView / gilshim_ensure_guarded:     $(ratio "$nv" "$(best "$r" gilshim_guarded)")"
    echo "  native PyThreadState_Ensure(guard) / stock PyGILState_Ensure:     $(ratio "$ng" "$(best "$r" stock_gilstate)")"
    echo "  gilshim_ensure / the persistent-state limit:                      $(ratio "$(best "$r" gilshim_ensure)" "$(best "$r" limit)")"
    echo "  nested, attached: gilshim_ensure / native PyThreadState_Ensure:   $(ratio "$(best "$r" gilshim_nested)" "$(best "$r" native_nested)")"
    if [ "${BENCH_IR:-1}" != 0 ] && command -v valgrind >/dev/null 2>&1; then
        echo "  instructions per cycle (callgrind, 20000 cycles after 20000 warm):"
        for k in $keys; do
            ir=$(LD_PRELOAD=$lib valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=timed \
                "$bin" ir "$k" 20000 2>&1 | awk '/Collected :/ { printf "%.0f", $NF / 20000 }')
            printf '    %-17s %7s\n' "$k" "$ir"
        done
    fi
done
[ $found = 1 ] || echo "run-bench-pep788: no CPython 3.15+ here (tests/sid.sh runs it where there is)"
