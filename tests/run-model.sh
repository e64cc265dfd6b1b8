#!/bin/sh
# SPDX-License-Identifier: MIT
# Model-check the row protocol (tests/model/rows.pml, docs/row-protocol-model.md)
# with spin, exhaustively: the model as the C code is must show no error, and
# each seeded bug must show one, so that a pass cannot be vacuous.
#   tests/run-model.sh
# Work files go to build/model/<check>/; MODEL_JOBS checks run at once (2).
set -u
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$self")/.." || exit 1
model=$PWD/tests/model/rows.pml
out=build/model

# name|spin -D flags|pan run: safety or ltl|wanted: clean or error|what
checks() {
    cat <<'EOF'
real-ltl||ltl|clean|P4, sweep() returns (ltl ender_ends, weak fairness)
real-safety||safety|clean|P1-P3, P5, no deadlock
seed-early-idle|-DSEED_BUG_EARLY_IDLE|safety|error|seeded: row IDLE before SaveThread returns (P1)
seed-reap-no-claim|-DSEED_BUG_REAP_NO_CLAIM|safety|error|seeded: reaper loads and stores, no CAS (P2)
seed-check-before-claim|-DSEED_BUG_CHECK_BEFORE_CLAIM|safety|error|seeded: interpreter checked before the claim (P3)
seed-no-deadline|-DSEED_BUG_NO_DEADLINE|ltl|error|seeded: drain without a deadline (P4)
seed-give-up-on-setup|-DSEED_BUG_GIVE_UP_ON_SETUP|safety|error|seeded: the drain gives up on a row being made (P3)
seed-reap-skips-ending|-DSEED_BUG_REAP_SKIPS_ENDING|safety|error|seeded: the reaper leaves its state in an ending interpreter (P5)
seed-dead-before-push|-DSEED_BUG_DEAD_BEFORE_PUSH|safety|error|seeded: an exiting owner's row DEAD before its state is an orphan (P5)
seed-mailbox-once|-DSEED_BUG_MAILBOX_ONCE|safety|error|seeded: an exiting owner reads its mailbox only before it pushes its state (P2)
EOF
}

# One check in its own directory; "ok|..." or "FAIL|..." into its result.
one() {
    name=$1 defs=$2 kind=$3 want=$4
    d=$out/$name
    rm -rf "$d" && mkdir -p "$d" && cd "$d" || exit 1
    # shellcheck disable=SC2086
    if ! spin -a $defs "$model" >spin.log 2>&1; then
        echo "FAIL|spin -a failed, see $d/spin.log" >result
        return
    fi
    # a search that stops at its first error is over before -O1 pays off
    opt=-O1
    [ "$want" = error ] && opt=-O0
    if [ "$kind" = ltl ]; then
        # weak fairness: the sweep waits for a row being made, which
        # needs its owner to be scheduled
        ${CC:-gcc} $opt -w -o pan pan.c 2>cc.log && ./pan -m100000 -a -f -N ender_ends >pan.log 2>&1
    else
        ${CC:-gcc} $opt -w -DSAFETY -DNOCLAIM -o pan pan.c 2>cc.log && ./pan -m100000 >pan.log 2>&1
    fi
    [ -x pan ] || { echo "FAIL|pan did not compile, see $d/cc.log" >result; return; }
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' pan.log | tail -1)
    states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' pan.log | tail -1)
    what=$(sed -n 's/^pan:1: \(.*\) (at depth.*/\1/p' pan.log | head -1)
    if [ -z "$errors" ] || [ -z "$states" ]; then
        r="FAIL|no verdict from pan, see $d/pan.log"
    elif grep -q 'max search depth too small\|Search not completed' pan.log && [ "$errors" -eq 0 ]; then
        r="FAIL|search cut short after $states states, see $d/pan.log"
    elif [ "$want" = clean ] && [ "$errors" -eq 0 ]; then
        r="ok|0 errors, $states states"
    elif [ "$want" = error ] && [ "$errors" -ge 1 ]; then
        r="ok|caught after $states states: $what"
    elif [ "$want" = clean ]; then
        r="FAIL|$what after $states states; trail: cd $d && spin -t -k rows.pml.trail -p $defs $model"
    else
        r="FAIL|no error in $states states: the seeded bug went unseen"
    fi
    echo "$r" >result
}

case "${1:-}" in
--one) shift; one "$@"; exit 0 ;;
'') ;;
*) echo "usage: tests/run-model.sh" >&2; exit 2 ;;
esac

if ! command -v spin >/dev/null 2>&1; then
    echo "run-model: spin not found; install it: apt-get install spin" >&2
    exit 1
fi
mkdir -p "$out"
start=$(date +%s)
# in the order listed: the two long checks first, side by side
checks | while IFS='|' read -r name defs kind want _; do
    printf '%s\0%s\0%s\0%s\0' "$name" "$defs" "$kind" "$want"
done | xargs -0 -n 4 -P "${MODEL_JOBS:-2}" sh "$self" --one
pass=0 fail=0
while IFS='|' read -r name _ _ _ what; do
    r=$(cat "$out/$name/result" 2>/dev/null || echo "FAIL|no result")
    case $r in
    ok*) pass=$((pass + 1)); printf 'ok   %-23s %s: %s\n' "$name" "$what" "${r#*|}" ;;
    *) fail=$((fail + 1)); printf 'FAIL %-23s %s: %s\n' "$name" "$what" "${r#*|}" ;;
    esac
done <<EOF
$(checks)
EOF
echo "run-model: $(spin -V | sed -n 's/^Spin Version \([^ ]*\).*/spin \1/p'), $(($(date +%s) - start)) s"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
