#!/bin/sh
# SPDX-License-Identifier: MIT
# CPython's own regression suites (test_threading, test_thread, test_capi,
# test_sqlite3, test_ctypes, test_embed, test_atexit and the sub-interpreter
# suites), stock and with gilshim preloaded, compared test by test, on every
# CPython in tests/pythons.sh. See docs/conformance.md.
#   tests/run-conformance.sh [full|ci]
# Exit status: 0 no unexpected difference, 1 unexpected differences,
# 2 setup error (no library, no CPython, a pyenv CPython without its tests).
# Environment: CONFORMANCE_RERUNS (3), CONFORMANCE_TIMEOUT (seconds per test
# file: 180 full, 120 ci), CONFORMANCE_TESTS (only these test files),
# CONFORMANCE_OUT (build/conformance).
set -eu
cd "$(dirname "$0")/.."
mode=${1:-full}
case $mode in
    full|ci) ;;
    *) echo "usage: tests/run-conformance.sh [full|ci]" >&2; exit 2 ;;
esac
[ -f "${GILSHIM_LIB:-build/libgilshim.so}" ] ||
    { echo "run-conformance: no ${GILSHIM_LIB:-build/libgilshim.so}; run make" >&2; exit 2; }
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-conformance: no CPython 3.9-3.13 with python3-config found" >&2; exit 2; }
out=${CONFORMANCE_OUT:-build/conformance}/$mode
rm -rf "$out"
mkdir -p "$out"
# The shim every run uses, copied: a rebuild meanwhile must not mix two
# builds in one comparison.
cp "${GILSHIM_LIB:-build/libgilshim.so}" "$out/libgilshim.so"
GILSHIM_LIB=$(cd "$out" && pwd)/libgilshim.so
export GILSHIM_LIB
echo "run-conformance: $mode, shim $(sha256sum "$GILSHIM_LIB" | cut -c1-12) ($(git log -1 --format=%h 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src include 2>/dev/null || echo ', src modified'))"
status=0
summaries=
first=
for cfg in $PYTHONS; do
    py=${cfg%-config}
    tag=$(py_tag "$cfg")
    first=${first:-$py}
    # Debian's own CPython ships its test package separately: skipped without
    # it. Any other CPython must have its tests.
    case $tag in *-system) required= ;; *) required=--required ;; esac
    echo "== conformance ($mode), CPython $tag"
    rc=0
    "$py" tests/conformance/conformance.py run --mode "$mode" --tag "$tag" \
        --out "$out/$tag" --expected tests/conformance/expected.txt \
        --hangs tests/conformance/stock-hangs.txt $required || rc=$?
    case $rc in
        0|3) ;;
        1) [ $status -eq 2 ] || status=1 ;;
        *) status=2 ;;
    esac
    [ -f "$out/$tag/summary.json" ] && summaries="$summaries $out/$tag/summary.json"
done
echo
echo "== conformance ($mode): stock CPython against gilshim, per test"
# shellcheck disable=SC2086
"$first" tests/conformance/conformance.py table $summaries || status=2
case $status in
    0) echo "run-conformance: no unexpected difference" ;;
    1) echo "run-conformance: unexpected differences (above); see $out" ;;
    *) echo "run-conformance: setup errors (above)" ;;
esac
exit $status
