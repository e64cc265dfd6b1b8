#!/bin/sh
# SPDX-License-Identifier: MIT
# The tiers on arm64 (aarch64), under qemu-user, with no arm64 hardware:
# gilshim and every test binary are cross-built (aarch64-linux-gnu-gcc
# --sysroot=ROOT) and run by qemu through a binfmt_misc entry registered in
# a user namespace of this run's own, never for the whole machine (Criterion
# and the e2e scripts exec their binaries, so a runner prefix would not do).
# The existing tests/run-*.sh run unchanged, with cross tools first on PATH
# (cc, c++, ldd, nm, objdump, readelf) and build/ bind-mounted over by a
# build folder per root, so the host's build is never touched.
#   tests/arm64/run.sh [TIER...]   default: the make test-arm64 set below
# Tiers: relro unit check embed lifecycle faults pep788 legacy e2e stress.
# Default: every tier on Debian 12's 3.11; on sid's 3.14 and 3.15 every
# tier but unit and check, which do not depend on the CPython. About 17
# minutes on two cores (everything runs 5-20 times slower under qemu;
# lifecycle on 3.14 and 3.15 alone is about 5). e2e runs its probes
# whole and, of the real clients, GILSHIM_E2E_CLIENTS (default below;
# "all" for every one, about 3 more minutes per CPython), and gives each
# probe GILSHIM_E2E_TIMEOUT (default here 60 s, not 15: a pool of 16
# sub-interpreters took about 50 s under qemu at a load average of 20; the
# probes that deadlock in CPython itself, Debian 3.11.2's under
# -X tracemalloc, wait that long each).
# Roots (tools/deps.sh arm64): GILSHIM_ARM64_ROOTS/arm64-bookworm (Debian
# 12's CPython 3.11, libpython in the executable and libpython3.11.so) and
# arm64-sid (3.14, 3.15); GILSHIM_ARM64_ROOTS defaults to /var/cache/gilshim.
# GILSHIM_ARM64=0 skips (one line, exit 0). GILSHIM_ARM64_SUITES: which
# roots (default "bookworm sid"). Exit status: 1 if any tier failed.
set -eu
cd "$(dirname "$0")/../.."
here=$PWD
if [ "${GILSHIM_ARM64:-1}" = 0 ]; then
    echo "arm64: skipped (GILSHIM_ARM64=0)"
    exit 0
fi
roots=${GILSHIM_ARM64_ROOTS:-/var/cache/gilshim}
suites=${GILSHIM_ARM64_SUITES:-bookworm sid}
tiers=${*:-}
default_bookworm="relro unit check embed lifecycle faults pep788 legacy e2e stress"
default_sid="relro embed lifecycle faults pep788 legacy e2e stress"
clients=${GILSHIM_E2E_CLIENTS:-ctypes-thread sqlite3-function cffi-thread cython-thread}
[ "$clients" != all ] || clients=

if [ -z "${GILSHIM_ARM64_NS:-}" ]; then
    for s in $suites; do
        if [ ! -f "$roots/arm64-$s/etc/gilshim-arm64-root" ]; then
            echo "arm64: no arm64 root at $roots/arm64-$s; run tools/deps.sh arm64 (or set GILSHIM_ARM64=0)" >&2
            exit 1
        fi
    done
    for t in aarch64-linux-gnu-gcc qemu-aarch64-static; do
        command -v $t >/dev/null || { echo "arm64: $t not found; run tools/deps.sh arm64" >&2; exit 1; }
    done
    # the host's own tests of the RELRO rounding first: no emulation needed
    case " ${tiers:-relro} " in *" relro "*)
        mkdir -p build/arm64/host
        cc -std=c11 -Wall -Wextra -Werror -Isrc tests/arm64/test_relro.c -o build/arm64/host/test_relro -lcriterion
        echo "== relro, host"
        build/arm64/host/test_relro || exit 1 ;;
    esac
    # a user namespace owns its binfmt_misc instance (Linux 6.7+); as root
    # as well, so that nothing is registered outside it
    exec env GILSHIM_ARM64_NS=1 unshare --user --map-root-user --mount --propagation private \
        sh "$0" "$@"
fi

mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
    echo "arm64: cannot mount a binfmt_misc of this user namespace (needs Linux 6.7 or later)" >&2
    exit 1
}
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
grep -v '^#' "$conf" > /proc/sys/fs/binfmt_misc/register

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
status=0
for s in $suites; do
    root=$roots/arm64-$s
    out=$here/build/arm64/$s
    mkdir -p "$out"
    # the cross tools under the names the scripts call; the root's C
    # library, start files and headers ahead of the cross compiler's own
    # (Debian 12's glibc 2.36), which sid's libraries are too new for
    lib=$root/usr/lib/aarch64-linux-gnu
    paths="-B$lib/ -L$lib -L$root/lib/aarch64-linux-gnu"
    cat > "$tools/cc" <<EOF
#!/bin/sh
exec aarch64-linux-gnu-gcc --sysroot=$root -isystem $root/usr/include/aarch64-linux-gnu -isystem $root/usr/include $paths "\$@"
EOF
    cat > "$tools/c++" <<EOF
#!/bin/sh
command -v aarch64-linux-gnu-g++ >/dev/null || exit 1
exec aarch64-linux-gnu-g++ --sysroot=$root $paths "\$@"
EOF
    # the target's loader lists what it would load, under qemu, with the
    # paths as the target sees them (the root's own path names "gilshim")
    cat > "$tools/ldd" <<EOF
#!/bin/sh
for f; do $root/lib/ld-linux-aarch64.so.1 --list "\$f" | sed "s|$root/|/|g"; done
EOF
    for t in nm objdump readelf; do
        printf '#!/bin/sh\nexec aarch64-linux-gnu-%s "$@"\n' $t > "$tools/$t"
    done
    chmod +x "$tools"/*
    pythons=
    for cfg in "$root"/usr/bin/python3.1[0-9]-config; do
        [ -x "$cfg" ] && pythons="$pythons $cfg"
    done
    echo "== arm64, Debian $s:$(for c in $pythons; do printf ' %s' "$(basename "${c%-config}")"; done)"
    # In a mount namespace of its own per root: build/ is this root's
    # build folder, and the cross tools come first.
    # QEMU_CPU: an ARMv8.2 server core (Neoverse N1: Graviton 2, Ampere
    # Altra) rather than qemu's "max" (SVE, MTE...), with which sid's
    # binaries ran 2-3 times slower here (python3.14 started in 4 s, not 2)
    GILSHIM_PYTHONS="$pythons" QEMU_LD_PREFIX=$root QEMU_CPU=${QEMU_CPU:-neoverse-n1} \
        PATH="$tools:$PATH" GILSHIM_ARM64_ROOT=$root \
        GILSHIM_NO_PTY="qemu-user cannot openpty for the guest" GILSHIM_E2E_CLIENTS="$clients" \
        GILSHIM_E2E_TIMEOUT=${GILSHIM_E2E_TIMEOUT:-60} \
        unshare --mount --propagation private sh -c '
        mount --bind "$1" build && shift && exec tests/arm64/tiers.sh "$@"' tiers "$out" \
        ${tiers:-$(eval echo "\$default_$s")} || status=1
done
exit $status
