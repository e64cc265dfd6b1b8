#!/bin/sh
# SPDX-License-Identifier: MIT
# make demo: one real wrong-interpreter callback, under stock CPython and
# under gilshim, on the newest CPython of tests/pythons.sh.
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
cfg=$(echo $PYTHONS | tr ' ' '\n' | tail -1)
py=${cfg%-config}
cc -shared -fPIC -O2 -pthread tests/e2e/cbthread.c -o build/libcbthread.so
echo "CPython: $("$py" -c 'import sys; print(sys.version.split()[0])') ($py)"
echo
echo "1. stock CPython:"
"$py" demo/demo.py "$PWD/build/libcbthread.so"
echo
echo "2. the same program through tools/inject.sh (gilshim preloaded):"
tools/inject.sh "$py" demo/demo.py "$PWD/build/libcbthread.so"
echo
echo "PyGILState_Ensure on a thread that never ran Python gives it the main"
echo "interpreter; gilshim gives it the interpreter of the thread that created it."
