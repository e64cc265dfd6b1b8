#!/bin/sh
# SPDX-License-Identifier: MIT
# Run a command inside the Debian sid root that carries CPython 3.14 and
# 3.15 (tools/deps.sh sid makes it), with this tree bind-mounted at the same
# path, in a mount namespace of its own: the mounts end with the command,
# and nothing outside ever sees them.
#   tests/sid.sh COMMAND [ARGS...]
# Environment: GILSHIM_SID=0 skips (one line, exit 0); GILSHIM_SID_ROOT is
# the root (default /var/cache/gilshim/sid). Exit status: the command's, or
# 1 with one line if the root is missing or cannot be entered.
set -eu
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: tests/sid.sh COMMAND [ARGS...]" >&2; exit 2; }
if [ "${GILSHIM_SID:-1}" = 0 ]; then
    echo "sid.sh: CPython 3.14/3.15 skipped (GILSHIM_SID=0): $*"
    exit 0
fi
root=${GILSHIM_SID_ROOT:-/var/cache/gilshim/sid}
if [ ! -f "$root/etc/gilshim-sid-root" ]; then
    echo "sid.sh: no CPython 3.14/3.15 root at $root; run tools/deps.sh sid (or set GILSHIM_SID=0 to skip)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "sid.sh: entering $root needs root (chroot); or set GILSHIM_SID=0" >&2
    exit 1
fi
here=$PWD
# The root's own PATH and no pyenv: inside, tests/pythons.sh finds 3.14/3.15.
exec unshare --mount --propagation private sh -c '
    set -e
    root=$1 here=$2; shift 2
    # tmpfs on /tmp first: a tree under /tmp is then bound inside it, not hidden by it
    mount -t tmpfs tmpfs "$root/tmp"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root$here"
    mount --bind "$here" "$root$here"
    exec chroot "$root" env -u PYENV_ROOT -u PYENV_VERSION -u LD_PRELOAD \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        GILSHIM_IN_SID=1 sh -c "cd \"\$0\" && exec \"\$@\"" "$here" "$@"
' sid.sh "$root" "$here" "$@"
