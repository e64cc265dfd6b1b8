#!/bin/sh
# SPDX-License-Identifier: MIT
# Install what `make test` / `make demo` / `make sanitize` need and lack
# (Debian packages), and the Debian sid root that carries CPython 3.14 and
# 3.15 (tests/sid.sh).
#   tools/deps.sh test|demo|sanitize|sid|packages|arm64
# GILSHIM_SID=0: no sid root (3.14/3.15 skipped). GILSHIM_SID_ROOT: where it
# is kept (default /var/cache/gilshim/sid), outside the clone so that later
# runs on the same machine reuse it; it is made again when SID_PACKAGES
# below changes. `arm64`: qemu-user, the cross compiler and two arm64
# roots for make test-arm64 (see make_arm64_root); GILSHIM_ARM64=0 skips
# them.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
SID_PACKAGES="python3.14 python3.15 python3.14-dev python3.15-dev
 libpython3.14-testsuite libpython3.15-testsuite gcc g++ libc6-dev make pkg-config
 libcriterion-dev valgrind python3-cffi cython3 python3-apsw python3-gi gir1.2-glib-2.0
 python3-grpcio pybind11-dev python3-nanobind
 python3.13-dbg python3.14-dbg python3.15-dbg libpython3.13-dbg libpython3.14-dbg libpython3.15-dbg
 python3.13-dev apache2 libapache2-mod-wsgi-py3
 python3-pytest python3-build python3-setuptools python3-wheel python3-pip python3.14-venv python3.15-venv"

install_packages() {
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing: $*; install them (as root: apt-get install $*)" >&2
        exit 1
    fi
    echo "deps.sh: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$@" >/dev/null
}

# Removes a root only when nothing is mounted inside it: a bind mount of a
# work tree (tests/sid.sh makes them, in a namespace of their own) would
# otherwise be emptied with it.
remove_root() {
    [ -e "$1" ] || return 0
    if awk -v r="$1" '$2 == r || index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "deps.sh: something is mounted inside $1; not removing it (see /proc/mounts)" >&2
        exit 1
    fi
    rm -rf --one-file-system "$1"
}

# The root: made by mmdebstrap next to its final place and moved there
# whole, so that an interrupted run never leaves a half-made root in use.
make_sid_root() {
    root=${GILSHIM_SID_ROOT:-/var/cache/gilshim/sid}
    want=$(echo $SID_PACKAGES | tr ' ' '\n' | sort | tr '\n' ' ')
    if [ -f "$root/etc/gilshim-sid-root" ] && [ "$(cat "$root/etc/gilshim-sid-root")" = "$want" ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: the CPython 3.14/3.15 root ($root) needs root to make; or set GILSHIM_SID=0" >&2
        exit 1
    fi
    command -v mmdebstrap >/dev/null 2>&1 || install_packages mmdebstrap
    echo "deps.sh: making the Debian sid root for CPython 3.14/3.15 at $root (about a minute)"
    mkdir -p "$(dirname "$root")"
    remove_root "$root.new"
    if ! mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
            --include="$(echo $SID_PACKAGES | tr ' ' ',')" sid "$root.new" >"$root.log" 2>&1; then
        echo "deps.sh: mmdebstrap could not make the sid root (log: $root.log); set GILSHIM_SID=0 to test without 3.14/3.15" >&2
        remove_root "$root.new"
        exit 1
    fi
    printf '%s' "$want" > "$root.new/etc/gilshim-sid-root"
    remove_root "$root.old"
    [ ! -d "$root" ] || mv "$root" "$root.old"
    mv "$root.new" "$root"
    remove_root "$root.old"
}

# The arm64 roots of make test-arm64 (tests/arm64/run.sh): Debian 12's
# CPython 3.11 and sid's 3.14/3.15, for aarch64, unpacked by mmdebstrap's
# extract variant (no maintainer script runs, so no emulation is needed to
# make them; about 10 s and 200 MB each) into GILSHIM_ARM64_ROOTS (default
# /var/cache/gilshim), named arm64-bookworm and arm64-sid. Remade, like the
# sid root, when their package list changes.
ARM64_COMMON="libc6-dev libcriterion-dev dash coreutils dpkg sed grep mawk"
# dpkg needs diff and ldconfig on PATH (tests/arm64/packages.sh installs there)
ARM64_BOOKWORM_PACKAGES="python3.11 libpython3.11-dev python3.11-dev python3 python3-cffi diffutils libc-bin $ARM64_COMMON"
ARM64_SID_PACKAGES="python3.14 python3.15 libpython3.14-dev libpython3.15-dev python3.14-dev python3.15-dev $ARM64_COMMON"
make_arm64_root() {  # SUITE PACKAGES
    root=${GILSHIM_ARM64_ROOTS:-/var/cache/gilshim}/arm64-$1
    want=$(echo $2 | tr ' ' '\n' | sort | tr '\n' ' ')
    if [ -f "$root/etc/gilshim-arm64-root" ] && [ "$(cat "$root/etc/gilshim-arm64-root")" = "$want" ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: the arm64 root ($root) needs root to make; or set GILSHIM_ARM64=0" >&2
        exit 1
    fi
    echo "deps.sh: making the arm64 Debian $1 root at $root (about 20 s)"
    mkdir -p "$(dirname "$root")"
    remove_root "$root.new"
    if ! mmdebstrap --quiet --arch=arm64 --variant=extract --aptopt='Acquire::Check-Valid-Until "false"' \
            --include="$(echo $2 | tr ' ' ',')" "$1" "$root.new" >"$root.log" 2>&1; then
        echo "deps.sh: mmdebstrap could not make the arm64 $1 root (log: $root.log); set GILSHIM_ARM64=0 to test without arm64" >&2
        remove_root "$root.new"
        exit 1
    fi
    # the extract variant runs no hook: no apt sources worth keeping, and
    # no merged-/usr links where the packages do not ship them
    rm -f "$root.new/etc/apt/sources.list" "$root.new/etc/apt/sources.list.d/"*
    for d in bin sbin lib; do
        [ -e "$root.new/$d" ] || [ -L "$root.new/$d" ] || ln -s "usr/$d" "$root.new/$d"
    done
    # nor the alternatives mawk's postinst makes (gilshim's command uses awk)
    [ -e "$root.new/usr/bin/awk" ] || ln -s mawk "$root.new/usr/bin/awk"
    printf '%s' "$want" > "$root.new/etc/gilshim-arm64-root"
    remove_root "$root.old"
    [ ! -d "$root" ] || mv "$root" "$root.old"
    mv "$root.new" "$root"
    remove_root "$root.old"
}

need=
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
case ${1:-test} in
    test) have_pkg libcriterion-dev || need="$need libcriterion-dev"
          have_pkg python3-dev || need="$need python3-dev"
          command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
          # tests/check-man.sh renders the man pages
          command -v man >/dev/null 2>&1 || need="$need man-db"
          # real callback clients (tests/e2e/clients.py) on Debian's python3.11
          have_pkg python3-cffi || need="$need python3-cffi"
          have_pkg cython3 || need="$need cython3"
          # the row protocol's model (tests/run-model.sh)
          command -v spin >/dev/null 2>&1 || need="$need spin"
          # every allocation failed under memcheck (tests/run-faults.sh)
          command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
          # Debian 12's CPython debug build (the debug tier); a real server
          # (Apache + mod_wsgi); Debian 12's own apsw, whose API predates
          # the names sid's apsw uses; pytest, build and venv for the wheel
          # and the pytest plugin (exceptiongroup: that pytest on pyenv's
          # 3.9/3.10); qemu-user and a cross compiler for arm64
          for p in python3.11-dbg libpython3.11-dbg apache2 libapache2-mod-wsgi-py3 python3-apsw \
                   python3-pytest python3-exceptiongroup python3-build python3-venv python3-setuptools python3-wheel python3-pip \
                   qemu-user-static gcc-aarch64-linux-gnu; do
              have_pkg $p || need="$need $p"
          done ;;
    sanitize) have_pkg libcriterion-dev || need="$need libcriterion-dev"
          have_pkg python3-dev || need="$need python3-dev"
          command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
          # gcc's sanitizer runtimes
          have_pkg libasan8 || need="$need libasan8"
          have_pkg libtsan2 || need="$need libtsan2"
          have_pkg libubsan1 || need="$need libubsan1" ;;
    # make packages (tests/run-packages.sh)
    packages) for p in debhelper dpkg-dev lintian fakeroot man-db pkg-config python3-dev mmdebstrap; do
              have_pkg $p || need="$need $p"
          done ;;
    # make test-arm64 (tests/arm64/run.sh): qemu-user, the cross
    # compiler and binutils, mmdebstrap for the roots; for the cross-built
    # packages, dpkg-dev's cross tools and arm64 as a foreign architecture,
    # so that dpkg-shlibdeps finds libc6:arm64
    arm64) for p in qemu-user-static gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu \
                   mmdebstrap debhelper dpkg-dev crossbuild-essential-arm64; do
              have_pkg $p || need="$need $p"
          done
          if [ "${GILSHIM_ARM64:-1}" != 0 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
              [ "$(id -u)" = 0 ] || { echo "deps.sh: arm64 is not a dpkg architecture here (as root: dpkg --add-architecture arm64)" >&2; exit 1; }
              dpkg --add-architecture arm64
          fi
          have_pkg libc6:arm64 || need="$need libc6:arm64" ;;
    demo|sid) ;;
    *) echo "usage: tools/deps.sh test|demo|sanitize|sid|packages|arm64" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
[ -z "$need" ] || install_packages $need
case ${1:-test} in
    test|sanitize|sid) [ "${GILSHIM_SID:-1}" = 0 ] || make_sid_root ;;
    arm64) if [ "${GILSHIM_ARM64:-1}" != 0 ]; then
               make_arm64_root bookworm "$ARM64_BOOKWORM_PACKAGES"
               make_arm64_root sid "$ARM64_SID_PACKAGES"
           fi
           exit 0 ;;
esac
[ "${1:-test}" != sid ] || exit 0
. "$here/tests/pythons.sh"
if [ -z "$PYTHONS" ]; then
    echo "deps.sh: no CPython 3.9-3.13 with a shared libpython found (pyenv versions, or GILSHIM_PYTHONS)" >&2
    exit 1
fi
