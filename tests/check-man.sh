#!/bin/sh
# SPDX-License-Identifier: MIT
# The man pages render without a single groff or man warning, name every
# option, variable, function and error they document, and agree with the
# gilshim command's --help and --version.
#   tests/check-man.sh [GILSHIM_COMMAND [LIBRARY]]
# GILSHIM_COMMAND is the command as make install installs it (default
# build/gilshim), run with GILSHIM_LIB=LIBRARY (default build/libgilshim.so).
set -eu
cd "$(dirname "$0")/.."
cmd=${1:-build/gilshim}
lib=${2:-build/libgilshim.so}
if ! command -v man >/dev/null 2>&1; then
    echo "check-man: man is not installed (apt-get install man-db groff-base)" >&2
    exit 1
fi
version=$(sed -n 's/^#define GILSHIM_VERSION_[A-Z]* //p' include/gilshim.h | paste -sd.)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); printf '  ok   %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf '  FAIL %s\n' "$1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       /'; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "want: $2
got:  $3"; fi; }
# missing LABEL TEXTFILE NAME...: the names TEXTFILE does not contain
missing() {
    _label=$1 _file=$2; shift 2
    _miss=
    for _n in "$@"; do grep -qF -- "$_n" "$_file" || _miss="$_miss $_n"; done
    if [ -z "$_miss" ]; then ok "$_label"; else bad "$_label" "not there:$_miss"; fi
}

for page in man/gilshim.1 man/gilshim.3; do
    LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 "$page" \
        >"$tmp/out" 2>"$tmp/err" || true
    if [ -s "$tmp/err" ]; then
        bad "$page renders without warnings" "$(cat "$tmp/err")"
    elif [ ! -s "$tmp/out" ]; then
        bad "$page renders without warnings" "no output"
    else
        ok "$page renders without warnings"
    fi
    # the text as a reader sees it, for the checks below
    LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$page" 2>/dev/null | col -b | tr -s ' ' >"$tmp/$(basename "$page").txt"
    whatis=$(lexgrog "$page" 2>&1) && ok "$page has a NAME line for whatis" ||
        bad "$page has a NAME line for whatis" "$whatis"
    check "$page is of version $version" "$version" \
        "$(sed -n 's/^\.TH .*"gilshim \([0-9.]*\)".*/\1/p' "$page")"
done
txt1=$tmp/gilshim.1.txt txt3=$tmp/gilshim.3.txt

# What the library reads (src/shim/base/config.c), in both pages.
vars=$(grep -o '"GILSHIM_[A-Z_]*"' src/shim/base/config.c | tr -d '"' | sort -u)
missing "gilshim.1 describes every GILSHIM_ variable of config.c" "$txt1" $vars
missing "gilshim.3 lists every GILSHIM_ variable of config.c" "$txt3" $vars
missing "gilshim.1 describes GILSHIM_LIB" "$txt1" GILSHIM_LIB

# Every function, error and version macro of the headers, and every name
# redirect.h maps, in gilshim.3.
funcs=$(sed -n 's/^[a-z].*[ *]\(gilshim_[A-Za-z_]*\)(.*/\1/p' include/gilshim.h | sort -u)
[ -n "$funcs" ] || bad "functions found in include/gilshim.h" "none"
missing "gilshim.3 names every function of gilshim.h" "$txt3" $funcs
missing "gilshim.3 names every error and version macro of gilshim.h" "$txt3" \
    $(grep -o 'GILSHIM_\(E[A-Z]*\|OK\|VERSION_[A-Z]*\)\b' include/gilshim.h | sort -u)
missing "gilshim.3 names every name redirect.h maps" "$txt3" \
    $(sed -n 's/^#undef \([A-Za-z_]*\)/\1/p' include/gilshim/redirect.h)

# The command: --help, and the options it lists against gilshim.1.
out=$("$cmd" --help 2>"$tmp/err") && rc=0 || rc=$?
check "gilshim --help: exit 0, usage first, nothing on stderr" "0 usage: gilshim " \
    "$rc $(printf '%s\n' "$out" | head -1 | cut -c1-15)$(cat "$tmp/err")"
opts=$(printf '%s\n' "$out" | grep -o -- '--[a-z][a-z-]*' | sort -u)
[ -n "$opts" ] || bad "options found in gilshim --help" "none"
missing "gilshim.1 describes every option of gilshim --help" "$txt1" $opts
documented=$(sed -n 's/^\.B[IR]* \\-\\-\([a-z\\-]*\).*/--\1/p' man/gilshim.1 | sed 's/\\-/-/g' | sort -u)
printf '%s\n' "$out" >"$tmp/help"
missing "gilshim --help lists every option of gilshim.1's OPTIONS" "$tmp/help" $documented
out=$(GILSHIM_LIB=$lib "$cmd" --version 2>&1) && rc=0 || rc=$?
check "gilshim --version: exit 0, version, library" "0 gilshim $version
library: $lib" "$rc $out"
out=$(GILSHIM_LIB=/nonexistent/libgilshim.so.0 "$cmd" --version 2>/dev/null) && rc=0 || rc=$?
check "gilshim --version, library missing: exit 127, version still printed" "127 gilshim $version" "$rc $out"
code() { "$@" >/dev/null 2>&1 && echo 0 || echo $?; }
check "gilshim with no command: exit 2" 2 "$(GILSHIM_LIB=$lib code "$cmd")"
check "gilshim --bogus: exit 2" 2 "$(GILSHIM_LIB=$lib code "$cmd" --bogus true)"
out=$(GILSHIM_LIB=$lib LD_PRELOAD= "$cmd" sh -c 'echo "$LD_PRELOAD"' 2>&1) && rc=0 || rc=$?
check "gilshim runs the command with the library preloaded" "0 $lib" "$rc $out"

echo "check-man: $pass passed, $fail failed"
[ $fail -eq 0 ]
