#!/bin/sh
# A first benchmark (issue 6 will grow it): one foreign thread cycling
# PyGILState_Ensure/Release, per CPython, in three processes run
# alternately: GILSHIM_MODE=off (stock), route and diagnose, next to one
# persistent thread state attached/detached (the limit). Best of 5 rounds
# per process, best of RUNS processes; the table gives ratios.
#   run-bench.sh [CYCLES [RUNS]]
set -eu
cd "$(dirname "$0")/.."
cycles=${1:-200000}
runs=${2:-3}
. tests/pythons.sh
printf '%-14s %9s %9s %9s %11s  %-16s %-18s %-16s\n' CPython "stock ns" "route ns" "diag ns" "persist ns" \
    "stock/route" "route/persistent" "diagnose/stock"
for cfg in $PYTHONS; do
    tag=$(py_tag "$cfg")
    bin=build/cycle-$tag
    cc -std=c11 -O2 -g -Wall -Wextra -Iinclude $($cfg --includes) tests/bench/cycle.c -o "$bin" \
        -Lbuild -Wl,-rpath,"$PWD/build" -lgilshim $($cfg --ldflags --embed) -pthread
    off=1e9 route=1e9 diag=1e9 pers=1e9
    i=0
    while [ $i -lt "$runs" ]; do
        for m in off route diagnose; do
            set -- $(GILSHIM_MODE=$m "$bin" "$cycles")
            case $m in
                off) off=$(echo "$off $2" | awk '{print ($2<$1)?$2:$1}')
                     pers=$(echo "$pers $4" | awk '{print ($2<$1)?$2:$1}') ;;
                route) route=$(echo "$route $2" | awk '{print ($2<$1)?$2:$1}') ;;
                diagnose) diag=$(echo "$diag $2" | awk '{print ($2<$1)?$2:$1}') ;;
            esac
        done
        i=$((i + 1))
    done
    echo "$tag $off $route $diag $pers" | awk '{printf "%-14s %9.0f %9.0f %9.0f %11.0f  %-16.2f %-18.2f %-16.2f\n", $1, $2, $3, $4, $5, $2/$3, $3/$5, $4/$2}'
done
