#!/bin/sh
# SPDX-License-Identifier: MIT
# The wheel's tier (make python): builds the wheel on the host with
# Debian's python3 -m build --no-isolation (no network), checks that its
# platform tag claims no older glibc than the library's symbol versions
# need, then on each CPython (tests/pythons.sh: pyenv's 3.9-3.13 and
# Debian's 3.11 here; 3.14 and 3.15 in the sid root) installs it with
# pip --no-index into a fresh venv and runs check_package.py (the command,
# python -m gilshim, status(), the sub-interpreter runner) and, where a
# pytest imports, check_plugin.py on examples/pytest_callback.
#   python/tests/run.sh          build, then test here
#   python/tests/run.sh WHEEL    test WHEEL here (what make runs in sid)
set -eu
[ $# -eq 0 ] || wheel=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
cd "$(dirname "$0")/../.."
top=$PWD
. tests/pythons.sh
version=$(sed -n 's/^#define GILSHIM_VERSION_[A-Z]* //p' include/gilshim.h | paste -sd.)
if [ $# -eq 0 ]; then
    rm -rf build/python
    /usr/bin/python3 -m build --no-isolation --wheel --outdir build/python/dist . > build/python-build.log 2>&1 ||
        { cat build/python-build.log; echo "python: the wheel did not build"; exit 1; }
    wheel=$(ls "$top"/build/python/dist/gilshim-"$version"-*.whl)
    /usr/bin/python3 python/tests/check_tag.py "$wheel"
fi
scratch=$(mktemp -d /tmp/gilshim-python.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
fail=0
for cfg in $PYTHONS; do
    py=${cfg%-config}
    tag=$(py_tag "$cfg")
    # As run-e2e.sh: a libpython of its own, or the executable's.
    if ldd "$py" | grep -q libpython; then how="symbol interposition"; else how="GOT patching"; fi
    echo "== python: CPython $tag ($py), expects $how"
    d=$scratch/$tag
    mkdir -p "$d/work" "$d/ticker/multi" "$d/ticker/single"
    # --system-site-packages: Debian's pytest where there is one; the
    # package checks do not use it.
    "$py" -m venv --system-site-packages "$d/venv"
    "$d/venv/bin/python" -m pip install -q --no-index --disable-pip-version-check "$wheel"
    "$d/venv/bin/python" examples/pytest_callback/build.py "$d/ticker/multi" > /dev/null
    "$d/venv/bin/python" examples/pytest_callback/build.py --single-phase "$d/ticker/single" > /dev/null
    (cd "$d/work" && "$d/venv/bin/python" "$top/python/tests/check_package.py" "$version" "$how" "$d/work" "$d/ticker") > "$d/package.log" 2>&1 ||
        { cat "$d/package.log"; fail=1; }
    grep -c '^ok' "$d/package.log" | sed 's/^/   package checks passed: /'
    # Debian's pytest: the venv sees it on Debian's own Pythons; the pyenv
    # ones get it on PYTHONPATH, and are tested where it imports.
    pp=
    "$d/venv/bin/python" -c 'import pytest' 2>/dev/null ||
        { pp=/usr/lib/python3/dist-packages; PYTHONPATH=$pp "$d/venv/bin/python" -c 'import pytest' 2>/dev/null || pp=none; }
    if [ "$pp" = none ]; then
        echo "   pytest: Debian's does not import on $tag: plugin not tested here"
        continue
    fi
    (cd "$d/work" && PYTHONPATH=$pp "$d/venv/bin/python" "$top/python/tests/check_plugin.py" "$top/examples/pytest_callback" "$d/ticker/multi" "$d/work") > "$d/plugin.log" 2>&1 ||
        { cat "$d/plugin.log"; fail=1; }
    grep -c '^ok' "$d/plugin.log" | sed "s|^|   plugin checks passed (pytest $(PYTHONPATH=$pp "$d/venv/bin/python" -c 'import pytest; print(pytest.__version__)')${pp:+ from PYTHONPATH}): |"
done
[ $fail = 0 ] || { echo "python: FAILED"; exit 1; }
echo "python: passed"
