#!/bin/sh
# SPDX-License-Identifier: MIT
# The Debian packages, cross-built for arm64 and used in the arm64 Debian 12
# root as a user would:
#  1. dpkg-buildpackage -aarm64 -b on a copy of the tree (build/arm64/deb/,
#     log build.log there): crossbuild-essential-arm64, and libc6:arm64
#     for dpkg-shlibdeps (tools/deps.sh arm64);
#  2. the three .debs are arm64 and the library is AArch64 code;
#  3. in a user and mount namespace of this run's own, with qemu-aarch64
#     registered in its binfmt_misc: a copy of the root (the root itself
#     is never changed; removed after), the root's own dpkg -i under chroot, then gilshim
#     --version, gilshim --check python3.11 (GOT patching), the demo stock
#     and under gilshim, dpkg -r.
# The root is mmdebstrap's extract variant, which leaves dpkg's database
# empty: dpkg -i runs with --force-depends, and the packages' Depends are
# checked here against the root's libc6 instead.
# GILSHIM_ARM64=0 skips. Exit status: 0 all passed, 1 a check failed.
set -eu
cd "$(dirname "$0")/../.."
top=$PWD
if [ "${GILSHIM_ARM64:-1}" = 0 ]; then
    echo "arm64 packages: skipped (GILSHIM_ARM64=0)"
    exit 0
fi
root=${GILSHIM_ARM64_ROOTS:-/var/cache/gilshim}/arm64-bookworm
version=$(sed -n 's/^#define GILSHIM_VERSION_[A-Z]* //p' include/gilshim.h | paste -sd.)
out=$top/build/arm64/deb
pkgs="libgilshim0 libgilshim-dev gilshim"
pass=0 fail=0
ok() { pass=$((pass + 1)); printf '  ok   %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf '  FAIL %s\n' "$1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       /'; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "want: $2
got:  $3"; fi; }
finish() {
    echo "arm64 packages: $pass passed, $fail failed"
    [ $fail -eq 0 ]
    exit
}

if [ -z "${GILSHIM_ARM64_NS:-}" ]; then
    [ -f "$root/etc/gilshim-arm64-root" ] || { echo "arm64 packages: no root at $root; run tools/deps.sh arm64" >&2; exit 1; }
    echo "== arm64 packages: dpkg-buildpackage -aarm64 (build/arm64/deb/)"
    rm -rf "$out"
    src=$out/gilshim-$version
    mkdir -p "$src"
    tar -C "$top" --exclude=./build --exclude=./.git --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
    if (cd "$src" && dpkg-buildpackage -aarm64 -us -uc -b) >"$out/build.log" 2>&1; then
        ok "dpkg-buildpackage -aarm64 -us -uc -b"
    else
        bad "dpkg-buildpackage -aarm64 -us -uc -b" "$(tail -20 "$out/build.log")"
        finish
    fi
    for p in $pkgs; do
        f=$out/${p}_${version}_arm64.deb
        if [ -f "$f" ]; then
            expect "$p: Architecture" arm64 "$(dpkg-deb -f "$f" Architecture)"
        else
            bad "$p: $(basename "$f") built"
        fi
    done
    [ $fail -eq 0 ] || finish
    rm -rf "$out/x" && dpkg-deb -x "$out/libgilshim0_${version}_arm64.deb" "$out/x"
    expect "libgilshim.so.0 is AArch64 code" AArch64 \
        "$(readelf -h "$out/x/usr/lib/aarch64-linux-gnu/libgilshim.so.0" | sed -n 's/^ *Machine: *//p')"
    # what dpkg --force-depends will not check: the root's libc6 is new enough
    have=$(zcat "$root/usr/share/doc/libc6/changelog.Debian.gz" | sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p')
    deps=$(dpkg-deb -f "$out/libgilshim0_${version}_arm64.deb" Depends)
    need=$(echo "$deps" | sed -n 's/.*libc6 (>= \([^)]*\)).*/\1/p')
    if [ -n "$need" ] && dpkg --compare-versions "$have" ge "$need"; then
        ok "libgilshim0 Depends ($deps): the root's libc6 is $have"
    else
        bad "libgilshim0 Depends ($deps) against the root's libc6 $have"
    fi
    echo "arm64 packages: $pass passed, $fail failed so far; into a copy of the root"
    [ $fail -eq 0 ] || finish
    # a copy, made out here where every owner in it is mapped: dpkg renames
    # directories, which an overlay on the root refuses (EXDEV); its /dev
    # is the host's, bound inside
    rm -rf "$out/root" && mkdir -p "$out/root"
    tar -C "$root" --exclude=./dev -cf - . | tar -C "$out/root" -xf -
    mkdir -p "$out/root/dev"
    st=0
    env GILSHIM_ARM64_NS=1 unshare --user --map-root-user --mount --propagation private sh "$0" "$@" || st=$?
    rm -rf --one-file-system "$out/root"
    exit $st
fi

# 3. Inside the namespace.
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
    echo "arm64 packages: cannot mount a binfmt_misc of this user namespace (needs Linux 6.7 or later)" >&2
    exit 1
}
grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
r=$out/root
mount --rbind /proc "$r/proc" 2>/dev/null || { mkdir -p "$r/proc" && mount --rbind /proc "$r/proc"; }
mount --rbind /dev "$r/dev"
mkdir -p "$r/tmp/gilshim"
cp "$out"/*_arm64.deb tests/e2e/probe.py tests/e2e/subinterp.py demo/demo.py "$r/tmp/gilshim/"
aarch64-linux-gnu-gcc --sysroot="$root" -shared -fPIC -O2 -pthread tests/e2e/cbthread.c -o "$r/tmp/gilshim/libcbthread.so"
# QEMU_CPU: as tests/arm64/run.sh
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root QEMU_CPU=${QEMU_CPU:-neoverse-n1} chroot "$r" "$@"; }

if in_root dpkg --force-depends -i $(for p in $pkgs; do echo /tmp/gilshim/${p}_${version}_arm64.deb; done) \
        >"$out/install.log" 2>&1; then
    ok "dpkg -i in the arm64 root (its own dpkg, under qemu)"
else
    bad "dpkg -i in the arm64 root" "$(tail -10 "$out/install.log")"
    finish
fi
expect "gilshim --version" "gilshim $version" "$(in_root gilshim --version 2>&1 | head -1)"
check=$(in_root gilshim --check /usr/bin/python3.11 2>&1 || true)
case $check in
    *"redirection by GOT patching"*) ok "gilshim --check python3.11: GOT patching ($check)" ;;
    *) bad "gilshim --check python3.11: GOT patching" "$check" ;;
esac
expect "stock python3.11: a library thread's callback from a sub-interpreter" \
    "ctypes-thread: main" "$(in_root python3.11 /tmp/gilshim/probe.py ctypes-thread /tmp/gilshim/libcbthread.so 2>&1 | tail -1)"
expect "gilshim python3.11: the same callback" \
    "ctypes-thread: sub" "$(in_root gilshim python3.11 /tmp/gilshim/probe.py ctypes-thread /tmp/gilshim/libcbthread.so 2>&1 | tail -1)"
echo "  the demo, stock then under gilshim, in the arm64 root:"
in_root python3.11 /tmp/gilshim/demo.py /tmp/gilshim/libcbthread.so 2>&1 | sed 's/^/       /'
in_root gilshim python3.11 /tmp/gilshim/demo.py /tmp/gilshim/libcbthread.so 2>&1 | sed 's/^/       /'
if in_root dpkg -r $pkgs >"$out/remove.log" 2>&1 && [ ! -e "$r/usr/lib/aarch64-linux-gnu/libgilshim.so.0" ] &&
        [ ! -e "$r/usr/bin/gilshim" ]; then
    ok "dpkg -r: library and command gone"
else
    bad "dpkg -r" "$(tail -5 "$out/remove.log")"
fi
finish
