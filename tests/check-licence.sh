#!/bin/sh
# SPDX-License-Identifier: MIT
# The project is MIT-licensed: LICENSE says so, debian/copyright agrees, and
# every source, script and build file git tracks names the licence by its
# SPDX identifier in its first three lines. Prose and data (Markdown, .txt,
# Debian's control files) are left out: they carry no code.
#   tests/check-licence.sh
set -eu
cd "$(dirname "$0")/.."
pass=0 fail=0
ok() { pass=$((pass + 1)); printf '  ok   %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf '  FAIL %s\n' "$1"; }
if head -1 LICENSE | grep -qx 'MIT License' && grep -q 'Permission is hereby granted, free of charge' LICENSE; then
    ok "LICENSE is the MIT licence"
else
    bad "LICENSE is the MIT licence"
fi
if grep -q '^License: Expat$' debian/copyright && ! grep -qi 'not-yet-licensed' debian/copyright; then
    ok "debian/copyright: Expat (Debian's name for MIT)"
else
    bad "debian/copyright: Expat (Debian's name for MIT)"
fi
if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files)
else  # a copy without git (run-packages.sh's tarball): every file
    files=$(find . -path ./build -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||')
fi
missing=
for f in $files; do
    case $f in
        *.md|*.txt|LICENSE|.gitignore|debian/changelog|debian/control|debian/copyright|debian/source/*) continue ;;
        debian/*.install|debian/*.docs|debian/*.examples|debian/*.symbols) continue ;;
        *.json|*.png|*.svg) continue ;;
    esac
    [ -f "$f" ] || continue
    head -3 "$f" | grep -q 'SPDX-License-Identifier: MIT' || missing="$missing $f"
done
if [ -z "$missing" ]; then
    ok "every source file names SPDX-License-Identifier: MIT"
else
    bad "every source file names SPDX-License-Identifier: MIT; not:$missing"
fi
echo "check-licence: $pass passed, $fail failed"
[ "$fail" = 0 ]
