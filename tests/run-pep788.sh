#!/bin/sh
# SPDX-License-Identifier: MIT
# PEP 788's API from an extension's own threads (examples/pep788_ext, driven
# by tests/pep788/test_pep788.py) on every CPython of tests/pythons.sh:
#   3.9-3.14  through <gilshim/pep788.h>: gilshim `make install`ed into a
#             scratch prefix, the example built with pkg-config, run without
#             LD_PRELOAD (GILSHIM_DRAIN_MS=100: the end's wait for a guard is
#             reported, in the JSON schema), then again with libgilshim also
#             preloaded;
#   3.15+     the same source built without gilshim and run on CPython
#             alone, which holds the test itself to 3.15's behaviour, then
#             again with libgilshim preloaded; and <gilshim/pep788.h> is
#             checked to add nothing there.
# Ends with "pep788: N passed, M failed" (checks of every run); exit 1 on
# a failure.
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
[ -n "$PYTHONS" ] || { echo "run-pep788: no CPython found" >&2; exit 1; }
prefix=$PWD/build/prefix
make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pass=0 fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run LABEL COMMAND...: one run of the test; its counts added to ours
run() {
    label=$1; shift
    echo "== pep788, $label"
    status=0
    timeout 180 "$@" >"$tmp/out" 2>&1 || status=$?
    cat "$tmp/out"
    counts=$(sed -n 's/^pep788: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$tmp/out")
    if [ -z "$counts" ]; then
        echo "  FAIL the test did not finish (exit $status)"
        fail=$((fail + 1))
        return
    fi
    set -- $counts
    pass=$((pass + $1)) fail=$((fail + $2))
    if [ "$2" = 0 ] && [ $status != 0 ]; then
        echo "  FAIL exit $status with no check failed"
        fail=$((fail + 1))
    fi
}

# ok_if LABEL CONDITION-STATUS: a check of this script's own
ok_if() {
    if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "  ok   $1"
    else fail=$((fail + 1)); echo "  FAIL $1"; fi
}

for cfg in $PYTHONS; do
    py=${cfg%-config}
    tag=$(py_tag "$cfg")
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    native=$("$py" -c 'import sys; print(int(sys.version_info >= (3, 15)))')
    out=$PWD/build/pep788-$tag
    mkdir -p "$out"
    make -s -C examples/pep788_ext PYTHON_CONFIG="$cfg" PYTHON="$py" OUT="$out" \
        CFLAGS="-O2 -g -Wall -Wextra ${WERROR:+-Werror}" >/dev/null
    so=$(ls "$out"/pep788_ext*.so)
    if [ "$native" = 1 ]; then
        echo "== pep788, CPython $ver ($py): <gilshim/pep788.h> adds nothing, no gilshim linked"
        printf '#include <Python.h>\n' >"$tmp/a.c"
        printf '#include <Python.h>\n#include <gilshim/pep788.h>\n' >"$tmp/b.c"
        st=0
        for f in a b; do
            cc -E -P $($cfg --includes) -Iinclude "$tmp/$f.c" | grep -v '^$' >"$tmp/$f.i" || st=1
        done
        cmp -s "$tmp/a.i" "$tmp/b.i" || st=1
        ok_if "Python.h with and without <gilshim/pep788.h> preprocess to the same text" $st
        st=0
        ! ldd "$so" | grep -q gilshim || st=1
        ok_if "the example links no libgilshim" $st
        run "CPython $ver ($py): CPython's own PEP 788, no gilshim" env -u LD_PRELOAD "$py" tests/pep788/test_pep788.py "$out"
        run "CPython $ver ($py): CPython's own PEP 788, gilshim preloaded" tools/inject.sh "$py" tests/pep788/test_pep788.py "$out"
    else
        st=0
        ldd "$so" | grep -q "$prefix/lib/libgilshim.so.0" || st=1
        ok_if "CPython $ver: the example links the installed libgilshim" $st
        # every name, in C under the limited API of 3.9, and in C++
        cat >"$tmp/names.c" <<'C'
#include <Python.h>
#include <gilshim/pep788.h>
int names(void);
int names(void)
{
    PyInterpreterView *v = PyInterpreterView_FromMain(), *c = PyInterpreterView_FromCurrent();
    PyInterpreterGuard *g = PyInterpreterGuard_FromView(v), *h = PyInterpreterGuard_FromCurrent();
    PyThreadStateToken *t = PyThreadState_EnsureFromView(c), *u = PyThreadState_Ensure(g);
    PyThreadState_Release(u);
    PyThreadState_Release(t);
    PyInterpreterGuard_Close(h);
    PyInterpreterGuard_Close(g);
    PyInterpreterView_Close(c);
    PyInterpreterView_Close(v);
    return 0;
}
C
        cp "$tmp/names.c" "$tmp/names.cpp"
        st=0
        cc -std=c99 -Wall -Wextra -pedantic -Werror -DPy_LIMITED_API=0x03090000 -fsyntax-only \
            $($cfg --includes) $(pkg-config --cflags gilshim) "$tmp/names.c" || st=1
        c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only $($cfg --includes) \
            $(pkg-config --cflags gilshim) "$tmp/names.cpp" || st=1
        ok_if "CPython $ver: <gilshim/pep788.h> builds with Py_LIMITED_API=3.9 (C99) and as C++11" $st
        # the worker of check 3 holds its guard 300 ms: past GILSHIM_DRAIN_MS=100, said so
        rm -f "$tmp/guard.log"
        run "CPython $ver ($py): <gilshim/pep788.h>, explicit linking" env -u LD_PRELOAD \
            GILSHIM_DRAIN_MS=100 GILSHIM_LOG="$tmp/guard.log" GILSHIM_LOG_FORMAT=json \
            "$py" tests/pep788/test_pep788.py "$out"
        st=0
        "$py" tests/e2e/check_report.py --events "$tmp/guard.log" guard_wait message >"$tmp/report" 2>&1 || st=1
        [ $st = 0 ] || cat "$tmp/report"
        ok_if "CPython $ver: the end waiting past GILSHIM_DRAIN_MS for the guard says so (guard_wait, message)" $st
        run "CPython $ver ($py): <gilshim/pep788.h>, explicit linking, gilshim also preloaded" tools/inject.sh "$py" tests/pep788/test_pep788.py "$out"
    fi
done
echo "pep788: $pass passed, $fail failed"
[ $fail -eq 0 ]
