#!/bin/sh
# SPDX-License-Identifier: MIT
# The debug-build tier (make debug): the other tiers against CPython's debug
# builds (--with-pydebug: every assert of CPython's on), which check what a
# release build takes on trust, e.g. that a thread state's gilstate flag and
# its thread's gilstate slot agree (docs/thread-states.md). GILSHIM_DEBUG=1
# makes tests/pythons.sh pick python3.11d on the host and python3.13d-3.15d
# inside the sid root (make debug runs this script in both places).
#   tests/run-debug.sh [TIER...]
# Tiers: embed lifecycle e2e legacy pep788 faults stress conformance (the
# default is all of them). Debug builds are several times slower, so this is
# the short form of each: stress for DEBUG_STRESS_SECONDS (1), faults without
# valgrind, conformance-ci on DEBUG_CONFORMANCE_TESTS (test_capi's
# thread-state, pending-call and sub-interpreter parts, and test_atexit;
# test_threading and the interpreter suites take a quarter of an hour on a
# debug build), e2e as its key programs (tests/run-e2e-key.sh, which
# compares each run's stderr with stock's). e2e and legacy run on every
# debug build; the tiers that compile a program per CPython or run
# CPython's suites (embed, lifecycle, pep788, faults, stress, conformance)
# on the newest of each place (3.11d, 3.15d) unless DEBUG_ALL=1.
# Each tier judges stock against gilshim as it always does; then every
# CPython assertion failure and "Fatal Python error" line in the tier's
# output that does not come from a stock process fails it too (stock's own
# are expected: a debug build asserts where a release build crashes). Logs:
# build/debug-<host|sid>/TIER.log. Exit 1 if any tier failed.
set -eu
cd "$(dirname "$0")/.."
GILSHIM_DEBUG=1
export GILSHIM_DEBUG
. tests/pythons.sh
[ -f /etc/gilshim-sid-root ] && where=sid || where=host
if [ -z "$PYTHONS" ]; then
    echo "run-debug ($where): no debug CPython (/usr/bin/python3.Xd-config); tools/deps.sh test installs it" >&2
    exit 1
fi
out=build/debug-$where
mkdir -p "$out"
tiers=${*:-embed lifecycle e2e legacy pep788 faults stress conformance}
: "${DEBUG_STRESS_SECONDS:=1}"
: "${DEBUG_CONFORMANCE_TESTS:=test_capi test_atexit}"
echo "run-debug ($where): $(for c in $PYTHONS; do basename "${c%-config}"; done | paste -sd' ')"
newest=
for cfg in $PYTHONS; do newest=$cfg; done
[ "${DEBUG_ALL:-0}" = 1 ] || embedding="GILSHIM_PYTHONS=$newest"
status=0
for tier in $tiers; do
    log=$out/$tier.log
    start=$(date +%s)
    rc=0
    case $tier in
        embed) env ${embedding:-} tests/run-embed.sh >"$log" 2>&1 || rc=$? ;;
        lifecycle) env ${embedding:-} tests/run-lifecycle.sh >"$log" 2>&1 || rc=$? ;;
        e2e) tests/run-e2e-key.sh >"$log" 2>&1 || rc=$? ;;
        legacy) tests/run-legacy.sh >"$log" 2>&1 || rc=$? ;;
        pep788) env ${embedding:-} tests/run-pep788.sh >"$log" 2>&1 || rc=$? ;;
        faults) env ${embedding:-} FAULTS_VALGRIND=0 tests/run-faults.sh >"$log" 2>&1 || rc=$? ;;
        stress) env ${embedding:-} tests/run-stress.sh plain "$DEBUG_STRESS_SECONDS" >"$log" 2>&1 || rc=$? ;;
        conformance)
            env ${embedding:-} CONFORMANCE_TESTS="$DEBUG_CONFORMANCE_TESTS" CONFORMANCE_OUT=$out/conformance \
                tests/run-conformance.sh ci >"$log" 2>&1 || rc=$?
            # regrtest's own logs, stock's and gilshim's apart
            for f in $(find "$out/conformance" -type f -path '*shim*' 2>/dev/null); do
                grep -H -E "Assertion .* failed|Fatal Python error" "$f" >>"$log" 2>/dev/null || true
            done ;;
        *) echo "run-debug: unknown tier $tier" >&2; exit 2 ;;
    esac
    # CPython's own complaints not from a stock process: stock scenarios and
    # runs name themselves (scenario-stock-*, "stock" lines); embed's
    # logged/* test ends in stock's fatal error on purpose (run-embed.sh).
    bad=$(grep -E "Assertion .* failed|Fatal Python error" "$log" |
          grep -v -E "scenario-stock-|stock:|^ *(ok|info) +stock|/stock/|auto-releasing thread-state, but no thread-state for this thread" || true)
    secs=$(($(date +%s) - start))
    if [ $rc -ne 0 ] || [ -n "$bad" ]; then
        status=1
        echo "  FAIL $tier (${secs}s, exit $rc): see $log"
        grep -E "FAIL|Failing: [1-9]|unexpected" "$log" | head -20 | sed 's/^/       /'
        [ -z "$bad" ] || printf '%s\n' "$bad" | head -20 | sed 's/^/       CPython: /'
    else
        echo "  ok   $tier (${secs}s)"
    fi
done
exit $status
