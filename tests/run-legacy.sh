#!/bin/sh
# SPDX-License-Identifier: MIT
# The explicitly linked path: `make install` into a scratch prefix, build
# examples/legacy_ext with pkg-config against each CPython, and run it in a
# sub-interpreter with no LD_PRELOAD. Its callback must run in the
# sub-interpreter; an extension that does not link gilshim keeps stock
# behaviour in the same kind of process.
set -eu
cd "$(dirname "$0")/.."
. tests/pythons.sh
prefix=$PWD/build/prefix
make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pass=0 fail=0
for cfg in $PYTHONS; do
    py=${cfg%-config}
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    out=$PWD/build/legacy-$ver-$(echo "$py" | md5sum | cut -c1-8)
    mkdir -p "$out"
    make -s -C examples/legacy_ext PYTHON_CONFIG="$cfg" PYTHON="$py" OUT="$out" >/dev/null
    got=$(env -u LD_PRELOAD timeout 30 "$py" tests/e2e/probe.py legacy "$out" 2>&1 | sed 's/.*: //')
    how=$(env -u LD_PRELOAD "$py" -c "import sys; sys.path.insert(0, '$out'); import legacy; print(legacy.redirection())")
    if [ "$got" = sub ] && [ "$how" = "explicit linking" ]; then
        pass=$((pass + 1)); st=ok
    else
        fail=$((fail + 1)); st=FAIL
    fi
    printf '  %-4s CPython %s (%s): legacy extension callback in %s, gilshim reached by %s\n' \
        $st "$ver" "$py" "$got" "$how"
done
echo "legacy: $pass passed, $fail failed"
[ $fail -eq 0 ]
