#!/bin/sh
# SPDX-License-Identifier: MIT
# Secure-execution mode (docs/security.md). A setuid-root program linked
# with libgilshim, run by an unprivileged user with every GILSHIM_*
# variable set to something harmful, keeps every default: no log file is
# created or appended to, nothing is printed, the mode stays route and a
# late Ensure parks instead of aborting. The same program run outside
# secure mode takes the variables, so each check can fail.
#   tests/check-secure.sh [build/libgilshim.so]
set -u
cd "$(dirname "$0")/.." || exit 1
lib=${1:-build/libgilshim.so}
if [ "$(id -u)" != 0 ]; then
    echo "check-secure: skipped: needs root, to make a setuid-root program and run it as another user"
    exit 0
fi
user=nobody
if ! id "$user" >/dev/null 2>&1; then
    user=gilshimtest
    id "$user" >/dev/null 2>&1 || useradd -M -r -s /usr/sbin/nologin "$user"
fi
group=$(id -gn "$user")
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "  ok   $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL $1"; }
verdict() {  # "condition; verdict LABEL": the condition's status decides
    if [ $? -eq 0 ]; then ok "$1"; else bad "$1"; fi
}

# What config.c reads, and the harmful value each gets here. A variable
# added there without a value here fails the first check.
harm="GILSHIM_MODE=off GILSHIM_PATCH=always GILSHIM_ON_FINALIZE=abort GILSHIM_DRAIN_MS=3600000
GILSHIM_COUNT_INTERVAL_MS=0
GILSHIM_LOG_LEVEL=debug GILSHIM_LOG_FORMAT=json GILSHIM_LOG"
# (src/registry/alloc.c's GILSHIM_TEST_FAIL_ALLOC is compiled only into the
# fault-injection build of tests/run-faults.sh: checked absent below.)
read_by_shim=$(grep -ho '"GILSHIM_[A-Z_]*"' src/shim/*/*.c $(ls src/registry/*.c | grep -v alloc.c) |
               tr -d '"' | sort -u)
set_here=$(for v in $harm; do echo "${v%%=*}"; done | sort -u)
[ "$read_by_shim" = "$set_here" ]
verdict "every variable config.c reads is set here ($(echo $read_by_shim))"
# The only getenv of a GILSHIM_ variable is the gate's; LD_PRELOAD, which
# glibc removes in secure mode, only decides GOT patching.
others=$(grep -n 'getenv(' src/*/*.c src/shim/*/*.c | grep -v '^src/registry/alloc.c:' |
         grep -v 'getenv(var)' | grep -v 'getenv("LD_PRELOAD")')
[ -z "$others" ]
verdict "no getenv in src/ bypasses config.c's setting()"
! grep -q GILSHIM_TEST_FAIL_ALLOC "$lib"
verdict "the library has no fault injection (GILSHIM_TEST_FAIL_ALLOC is the test build's)"

dir=$(mktemp -d /tmp/gilshim-secure.XXXXXX)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
# root-only: where a log opened with root's rights would land
mkdir -m 755 "$dir/rootonly"
mkdir -m 1777 "$dir/open"
printf 'kept\n' > "$dir/rootonly/existing.log"
cp "$lib" "$dir/libgilshim.so.0"
ln -s libgilshim.so.0 "$dir/libgilshim.so"
cc_flags="-std=c11 -O1 -g -Wall -Wextra -Iinclude"

# run OUT_PREFIX AS LOG [ARG...]: AS is root or the unprivileged user;
# env -i leaves only the harmful variables and PATH.
run() {
    out=$1 as=$2 log=$3; shift 3
    envs=
    for v in $harm; do
        case $v in
            GILSHIM_LOG) envs="$envs GILSHIM_LOG=$log" ;;
            GILSHIM_MODE=*) [ -n "${KEEP_MODE:-}" ] || envs="$envs $v" ;;
            *) envs="$envs $v" ;;
        esac
    done
    if [ "$as" = root ]; then
        timeout 30 env -i PATH=/usr/bin:/bin $envs "$@" >"$out.out" 2>"$out.err"
    else
        timeout 30 setpriv --reuid="$user" --regid="$group" --clear-groups -- \
            env -i PATH=/usr/bin:/bin $envs "$@" >"$out.out" 2>"$out.err"
    fi
    echo $? > "$out.rc"
}
rc() { cat "$1.rc"; }
has() { grep -q -- "$2" "$1.out"; }
quiet() { [ ! -s "$1.err" ]; }
untouched() {  # no new log anywhere, the existing one as it was
    [ -z "$(ls -A "$dir/open")" ] && [ "$(ls "$dir/rootonly")" = existing.log ] &&
        [ "$(cat "$dir/rootonly/existing.log")" = kept ]
}
reset_logs() {
    rm -rf "$dir/open"/* "$dir/rootonly/new.log"
    printf 'kept\n' > "$dir/rootonly/existing.log"
}

# --- without Python: the settings are read on the first gilshim_mode() ---
echo "== check-secure, no CPython"
cc $cc_flags tests/secure/secure.c -o "$dir/secure-nopy" -L"$dir" -Wl,-rpath,"$dir" -lgilshim
cp "$dir/secure-nopy" "$dir/plain-nopy"
chown root:root "$dir/secure-nopy" "$dir/plain-nopy"
chmod 4755 "$dir/secure-nopy"
chmod 755 "$dir/plain-nopy"
o=$dir/r
for log in "$dir/rootonly/new.log" "$dir/rootonly/existing.log"; do
    reset_logs
    run "$o" "$user" "$log" "$dir/secure-nopy"
    if ! has "$o" 'at_secure: 1'; then
        bad "setuid-root program run by $user: AT_SECURE is not set ($(cat "$o.out" "$o.err"))"
        continue
    fi
    [ "$(rc "$o")" = 0 ] && has "$o" "mode: route" && quiet "$o" && untouched
    verdict "setuid, GILSHIM_LOG=$(basename "$log"): exit 0, mode route, silent, no file touched"
done
reset_logs
run "$o" "$user" "$dir/open/honoured.log" "$dir/plain-nopy"
has "$o" "at_secure: 0" && has "$o" "mode: off" && [ -f "$dir/open/honoured.log" ]
verdict "the same program without setuid takes the variables: mode off, log created"
reset_logs

# --- with each CPython: a callback, and an Ensure after Py_FinalizeEx ---
. tests/pythons.sh
for cfg in $PYTHONS; do
    py=${cfg%-config}
    tag=$(py_tag "$cfg")
    echo "== check-secure, CPython $tag"
    libdir=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    bin=$dir/secure-$tag
    # libgilshim ahead of libpython, as in tests/run-lifecycle.sh
    if ! cc $cc_flags -DWITH_PYTHON $($cfg --includes) tests/secure/secure.c -o "$bin" \
        -L"$dir" -Wl,-rpath,"$dir" -lgilshim $($cfg --ldflags --embed) -Wl,-rpath,"$libdir" -pthread; then
        bad "build against CPython $tag"
        continue
    fi
    chown root:root "$bin"
    chmod 4755 "$bin"
    run "$o" "$user" "$dir/rootonly/new.log" "$bin" plain
    [ "$(rc "$o")" = 0 ] && has "$o" "at_secure: 1" && has "$o" "mode: route" &&
        has "$o" "callback: ran" && quiet "$o" && untouched
    verdict "setuid, a foreign callback: exit 0, mode route, no debug lines, no file"
    run "$o" "$user" "$dir/rootonly/existing.log" "$bin" late
    # park, the default: one warning, in text, on stderr
    [ "$(rc "$o")" = 0 ] && has "$o" "late: parked" && [ "$(wc -l < "$o.err")" = 1 ] &&
        grep -q '^gilshim\[[0-9]*:[0-9]*\]: PyGILState_Ensure after Py_FinalizeEx.*GILSHIM_ON_FINALIZE=park' "$o.err" &&
        untouched
    verdict "setuid, Ensure after Py_FinalizeEx: parked, not aborted; one text line on stderr"
    # Run by root the same file is not in secure mode.
    run "$o" root "$dir/open/honoured.log" "$bin" plain
    has "$o" "at_secure: 0" && has "$o" "mode: off" && [ -f "$dir/open/honoured.log" ]
    verdict "run by root (no AT_SECURE): mode off, log created"
    reset_logs
    KEEP_MODE=1 run "$o" root "$dir/open/honoured.log" "$bin" late
    [ "$(rc "$o")" = 134 ] && grep -q '"level":"debug"' "$dir/open/honoured.log" &&
        grep -q '"event":"fail_safe".*"policy":"abort"' "$dir/open/honoured.log"
    verdict "run by root, mode left route: JSON debug lines in the log, then abort"
    reset_logs
done
echo "check-secure: $pass passed, $fail failed"
[ $fail -eq 0 ]
