#!/bin/sh
# SPDX-License-Identifier: MIT
# Run make targets (tiers) side by side, two at a time, for `make test`.
#   tests/run-tiers.sh [VAR=VALUE...] TIER...
# A TIER is a make target, or targets joined by + (a+b), which run one after
# the other in one job: tiers that write the same files go together. Each
# VAR=VALUE is passed to every make. Tiers start in the order given (put the
# longest first). Each tier's output goes to build/tiers/TIER.log and is
# printed whole when the tier ends, never interleaved with another's, then
# one line with its status and time. At the end: one line per tier, then the
# log of each failed tier again.
# Environment: TIERS_JOBS, how many tiers at a time (default 2; 1: one
# after the other); MAKE (default make). Exit status: 0 if every tier
# passed, 1 if any failed, 2 on a usage error.
set -eu
cd "$(dirname "$0")/.."
make=${MAKE:-make}
jobs=${TIERS_JOBS:-2}
case $jobs in ''|*[!0-9]*|0) echo "run-tiers: TIERS_JOBS must be a positive number, not '$jobs'" >&2; exit 2 ;; esac
vars= tiers=
for a; do
    case $a in
        *=*) vars="$vars $a" ;;
        *[!A-Za-z0-9_+.-]*|+*|*+|'') echo "run-tiers: not a tier name: '$a'" >&2; exit 2 ;;
        *) tiers="$tiers $a" ;;
    esac
done
[ -n "$tiers" ] || { echo "usage: tests/run-tiers.sh [VAR=VALUE...] TIER..." >&2; exit 2; }
dir=build/tiers
mkdir -p "$dir"
for t in $tiers; do rm -f "$dir/$t.log" "$dir/$t.rc" "$dir/$t.time" "$dir/$t.pgid"; done

now() { date +%s; }
dur() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Each tier's make leads a session (and process group) of its own, so that
# an interrupted run stops every process it started, and only those.
running= pids=
stop() {
    for t in $running; do
        [ -s "$dir/$t.pgid" ] && kill -s TERM -- "-$(cat "$dir/$t.pgid")" 2>/dev/null || true
    done
    echo "run-tiers: interrupted; stopped:$running" >&2
    exit 130
}
trap stop INT TERM HUP

start() {  # TIER
    _t=$1
    (
        s=$(now)
        # shellcheck disable=SC2086 # vars and the + list split on purpose
        setsid sh -c 'echo $$ >"$0"; exec "$@"' "$dir/$_t.pgid" \
            $make --no-print-directory $vars $(echo "$_t" | tr + ' ') >"$dir/$_t.log" 2>&1 && rc=0 || rc=$?
        echo $(($(now) - s)) >"$dir/$_t.time"
        echo $rc >"$dir/$_t.rc"
    ) </dev/null &
    pids="$pids $!"
    running="$running $_t"
    echo "run-tiers: $_t started"
}

# a finished tier: its log whole, then one line
report() {  # TIER
    _t=$1 _rc=$(cat "$dir/$1.rc") _s=$(cat "$dir/$1.time")
    echo "==== $_t ($dir/$_t.log)"
    cat "$dir/$_t.log"
    if [ "$_rc" = 0 ]; then
        echo "==== $_t: ok in $(dur "$_s")"
    else
        echo "==== $_t: FAILED (exit $_rc) in $(dur "$_s")"
    fi
}

begin=$(now)
queue=$tiers
while [ -n "$queue" ] || [ -n "$running" ]; do
    # start as many as there are free slots
    set -- $running
    while [ $# -lt "$jobs" ] && [ -n "$queue" ]; do
        set -- $queue
        next=$1
        shift
        queue=$*
        start "$next"
        set -- $running
    done
    # the tiers that ended since the last look
    still= stillp=
    set -- $pids
    for t in $running; do
        p=$1
        shift
        if [ -f "$dir/$t.rc" ]; then
            wait "$p" 2>/dev/null || true
            report "$t"
        else
            still="$still $t" stillp="$stillp $p"
        fi
    done
    running=$still pids=$stillp
    [ -z "$running" ] || sleep 1
done

total=$(($(now) - begin))
failed= n=0
echo "run-tiers: every tier ended, $(dur $total) in all, $jobs at a time"
for t in $tiers; do
    n=$((n + 1))
    rc=$(cat "$dir/$t.rc")
    if [ "$rc" = 0 ]; then st=ok; else st=FAILED failed="$failed $t"; fi
    printf '  %-7s %-28s %s\n' "$st" "$t" "$(dur "$(cat "$dir/$t.time")")"
done
for t in $failed; do
    echo "==== log of the failed tier $t ($dir/$t.log)"
    cat "$dir/$t.log"
done
if [ -n "$failed" ]; then
    echo "run-tiers: failed:$failed"
    exit 1
fi
