#!/bin/sh
# SPDX-License-Identifier: MIT
# make packages: the Debian packages, end to end.
#  1. dpkg-buildpackage -b on a copy of this tree (the .debs land in
#     build/deb/, the log in build/deb/build.log);
#  2. lintian: any error fails;
#  3. install them on this host with dpkg -i and use them with no source
#     tree and a bare environment: gilshim --version, the man pages,
#     gilshim --check on Debian's python3.11 (GOT patching), the legacy
#     example as libgilshim-dev ships it built with pkg-config alone, and
#     the demo under gilshim; then remove them with dpkg -r;
#  4. with GILSHIM_PKG_SID=1 or GILSHIM_SID_ROOT set: the same in a Debian
#     sid root, with its python3.14; the packages are removed again.
# Variables:
#   GILSHIM_PKG_PYTHON    the host's CPython for step 3 (/usr/bin/python3.11)
#   GILSHIM_PKG_SID=1     make a fresh sid root in /var/tmp with mmdebstrap
#                         (about a minute, network), use it, delete it
#   GILSHIM_PKG_SID_KEEP=1  keep that root, to reuse with GILSHIM_SID_ROOT
#   GILSHIM_SID_ROOT=DIR  reuse a root kept that way. Only a root this script
#                         made is used (it carries /etc/gilshim-scratch-root):
#                         any other directory is refused, since dpkg -i would
#                         change it.
# Exit status: 0 all passed, 1 a check failed, 2 cannot run here.
set -eu
cd "$(dirname "$0")/.."
top=$PWD
t0=$(date +%s)
version=$(sed -n 's/^#define GILSHIM_VERSION_[A-Z]* //p' include/gilshim.h | paste -sd.)
arch=$(dpkg --print-architecture)
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
hostpy=${GILSHIM_PKG_PYTHON:-/usr/bin/python3.11}
out=$top/build/deb
pkgs="libgilshim0 libgilshim-dev gilshim"

setup_error() { echo "run-packages: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || setup_error "run as root: the packages are installed on this host"
for tool in dpkg-buildpackage dh lintian man pkg-config cc; do
    command -v $tool >/dev/null 2>&1 ||
        setup_error "$tool not found (apt-get install debhelper dpkg-dev lintian man-db pkg-config gcc)"
done
[ -x "$hostpy" ] && [ -x "$hostpy-config" ] || setup_error "$hostpy and $hostpy-config needed (GILSHIM_PKG_PYTHON)"
for p in $pkgs; do
    if dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' installed$'; then
        setup_error "$p is installed already; this run would remove it (dpkg -r $pkgs)"
    fi
done
sid=
if [ -n "${GILSHIM_SID_ROOT:-}" ] || [ "${GILSHIM_PKG_SID:-0}" = 1 ]; then
    sid=1
    if [ -n "${GILSHIM_SID_ROOT:-}" ]; then
        [ -f "$GILSHIM_SID_ROOT/etc/gilshim-scratch-root" ] ||
            setup_error "GILSHIM_SID_ROOT=$GILSHIM_SID_ROOT is not a root this script made, and dpkg -i would change it; make one with GILSHIM_PKG_SID=1 GILSHIM_PKG_SID_KEEP=1"
    else
        command -v mmdebstrap >/dev/null 2>&1 || setup_error "mmdebstrap not found (apt-get install mmdebstrap)"
    fi
fi

pass=0 fail=0
ok() { pass=$((pass + 1)); printf '  ok   %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf '  FAIL %s\n' "$1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/       /'; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "want: $2
got:  $3"; fi; }
has() { case $3 in *"$2"*) ok "$1" ;; *) bad "$1" "want it to contain: $2
got: $3" ;; esac; }
stage() { echo "== $1 ($(($(date +%s) - t0)) s)"; }
finish() {
    echo "run-packages: $pass passed, $fail failed ($(($(date +%s) - t0)) s)"
    [ $fail -eq 0 ] && exit 0 || exit 1
}

tmp=$(mktemp -d /tmp/gilshim-pkg.XXXXXX)
installed= sidroot= sidmade=
cleanup() {
    if [ -n "$installed" ]; then
        dpkg_locked -r $pkgs >"$tmp/remove.log" 2>&1 || cat "$tmp/remove.log" >&2
    fi
    [ -z "$sidmade" ] || rm -rf --one-file-system "$sidroot"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# dpkg, waiting up to 5 minutes for another apt-get or dpkg to finish.
dpkg_locked() {
    _i=0
    while :; do
        if dpkg "$@" >"$tmp/dpkg.log" 2>&1; then cat "$tmp/dpkg.log"; return 0; fi
        if grep -q 'lock' "$tmp/dpkg.log" && [ $_i -lt 60 ]; then
            _i=$((_i + 1)); sleep 5; continue
        fi
        cat "$tmp/dpkg.log"; return 1
    done
}

# 1. Build, from a copy: the tree stays as it is.
stage "building the packages in build/deb/"
rm -rf "$out"
src=$out/gilshim-$version
mkdir -p "$src"
tar -C "$top" --exclude=./build --exclude=./.git --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
if (cd "$src" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
    ok "dpkg-buildpackage -us -uc -b"
else
    bad "dpkg-buildpackage -us -uc -b" "$(tail -20 "$out/build.log")"
    finish
fi
debs=
for p in $pkgs; do
    f=$out/${p}_${version}_$arch.deb
    if [ -f "$f" ]; then debs="$debs $f"; else bad "$p: $(basename "$f") built"; fi
done
[ $fail -eq 0 ] || finish
contents() { dpkg-deb -c "$1" | awk '{print $6 ($7 == "->" ? " -> " $8 : "")}' | sed 's|^\./|/|' | grep -v '/$' | grep -v '^/usr/share/doc/' | sort | paste -sd' '; }
expect "libgilshim0 holds the library, in the multiarch directory" \
    "/usr/lib/$triplet/libgilshim.so.0" "$(contents "$out/libgilshim0_${version}_$arch.deb")"
expect "libgilshim-dev holds the headers, the .so link, gilshim.pc and gilshim(3)" \
    "/usr/include/gilshim.h /usr/include/gilshim/pep788.h /usr/include/gilshim/redirect.h /usr/lib/$triplet/libgilshim.so -> libgilshim.so.0 /usr/lib/$triplet/pkgconfig/gilshim.pc /usr/share/man/man3/gilshim.3.gz" \
    "$(contents "$out/libgilshim-dev_${version}_$arch.deb")"
expect "gilshim holds the command, its report and gilshim(1)" \
    "/usr/bin/gilshim /usr/share/gilshim/gilshim_report.py /usr/share/man/man1/gilshim.1.gz" \
    "$(contents "$out/gilshim_${version}_$arch.deb")"

# 2. lintian, on the three packages of the .changes.
stage "lintian"
lintian "$out/gilshim_${version}_$arch.changes" >"$out/lintian.log" 2>&1 || true
grep -E '^[EWIPX]: ' "$out/lintian.log" | sed 's/^/       /' || true
counts=$(for l in E W I; do printf '%s %s  ' "$l:" "$(grep -c "^$l: " "$out/lintian.log" || true)"; done)
if grep -q '^E: ' "$out/lintian.log"; then
    bad "lintian: no errors ($counts)"
else
    ok "lintian: no errors ($counts)"
fi

# 3. On this host, with no source tree. The probe a Python runs to find
# which interpreter called the legacy example back, from a fresh
# sub-interpreter (the 3.9-3.14 spellings, as demo/demo.py).
cat >"$tmp/legacy_probe.py" <<'EOF'
import sys

code = """
import sys
sys._where = "sub"
sys.path.insert(0, %r)
import legacy

def where():
    import sys  # the running interpreter's sys
    return sys._where

print("callback in", legacy.call_on_new_thread(lambda: {"main": 1, "sub": 2}[where()]),
      "by", legacy.redirection(), flush=True)
""" % sys.argv[1]
sys._where = "main"
try:
    import _interpreters as interpreters  # 3.13+
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.9-3.12

    try:
        iid = interpreters.create(isolated=False)
    except TypeError:
        iid = interpreters.create()
    interpreters.run_string(iid, code)
else:
    iid = interpreters.create()
    err = interpreters.exec(iid, code)
    if err is not None:
        sys.exit("legacy_probe: %s: %s" % (err.type.__name__, err.msg))
interpreters.destroy(iid)
EOF
# The demo, as make demo runs it: demo/demo.py and the stand-in C library.
mkdir -p "$tmp/demo"
cp demo/demo.py tests/e2e/cbthread.c "$tmp/demo/"

# in_bare DIR COMMAND...: COMMAND in DIR with nothing of this shell's
# environment (no GILSHIM_*, PKG_CONFIG_PATH, LD_PRELOAD, pyenv).
in_bare() {
    _d=$1; shift
    (cd "$_d" && env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$tmp" LC_ALL=C.UTF-8 TERM=dumb "$@")
}

# use_installed RUN PYTHON WORK LABEL: the checks of step 3 through RUN
# (env, or chroot ROOT), with WORK a scratch folder as RUN sees it.
use_installed() {
    run=$1 py=$2 work=$3 where=$4
    expect "$where: gilshim is /usr/bin/gilshim" /usr/bin/gilshim "$($run sh -c 'command -v gilshim' 2>&1)"
    expect "$where: gilshim --version" "gilshim $version
library: /usr/lib/$triplet/libgilshim.so.0" "$($run gilshim --version 2>&1)"
    expect "$where: man finds gilshim(1) and gilshim(3)" \
        "/usr/share/man/man1/gilshim.1.gz /usr/share/man/man3/gilshim.3.gz" \
        "$($run sh -c 'man -w 1 gilshim; man -w 3 gilshim' 2>&1 | paste -sd' ')"
    # gilshim report, on a one-line log written here: exit 1, one finding
    got=$($run sh -c "echo '{\"gilshim\":1,\"event\":\"counts\",\"pid\":2,\"time\":1.0,\"findings\":[{\"finding\":1,\"site\":{\"object\":\"x.so\",\"symbol\":null,\"offset\":1},\"rule\":4,\"owner\":1,\"owner_kind\":\"legacy\",\"stock\":0,\"count\":3}]}' >$work/diag.jsonl
        gilshim report $work/diag.jsonl; echo exit \$?" 2>&1 | sed -n '1p;$p' | paste -sd' ')
    expect "$where: gilshim report" "gilshim report: 1 finding(s), 3 wrong-interpreter callback(s) in 1 process(es), 1 log(s) exit 1" "$got"
    got=$($run gilshim --check "$py" 2>&1) || true
    has "$where: gilshim --check $py" "gilshim $version: mode route, redirection by GOT patching" "$got"
    # The example as libgilshim-dev installs it, built with pkg-config alone.
    got=$($run sh -c "
        set -e
        mkdir -p $work/legacy_ext && cd $work/legacy_ext
        cp /usr/share/doc/libgilshim-dev/examples/legacy.c /usr/share/doc/libgilshim-dev/examples/Makefile .
        make -s PYTHON_CONFIG=$py-config PYTHON=$py
        ls legacy*.so" 2>&1) || true
    case $got in
        *legacy*.so) ok "$where: examples/legacy_ext built with pkg-config --cflags --libs gilshim" ;;
        *) bad "$where: examples/legacy_ext built with pkg-config --cflags --libs gilshim" "$got" ;;
    esac
    expect "$where: legacy extension, no LD_PRELOAD: callback in the sub-interpreter" \
        "callback in 2 by explicit linking" "$($run timeout 60 "$py" "$work/legacy_probe.py" "$work/legacy_ext" 2>&1)"
    # The PEP 788 example, in its own folder of the examples, the same way.
    got=$($run sh -c "
        set -e
        mkdir -p $work/pep788_ext && cd $work/pep788_ext
        cp /usr/share/doc/libgilshim-dev/examples/pep788_ext/* .
        make -s PYTHON_CONFIG=$py-config PYTHON=$py
        ls pep788_ext*.so" 2>&1) || true
    case $got in
        *pep788_ext*.so) ok "$where: examples/pep788_ext built with pkg-config --cflags --libs gilshim" ;;
        *) bad "$where: examples/pep788_ext built with pkg-config --cflags --libs gilshim" "$got" ;;
    esac
    expect "$where: PEP 788 extension, no LD_PRELOAD: a thread's callback through a view" \
        "('main', 'called')" "$($run timeout 60 "$py" -c "import sys; sys.path.insert(0, '$work/pep788_ext'); sys._pep788_marker = 'main'; import pep788_ext as e; e.keep_view(0); print(e.call_on_thread('view', 0, lambda: 'called'))" 2>&1)"
    got=$($run sh -c "cd $work/demo && cc -shared -fPIC -O2 -pthread cbthread.c -o libcbthread.so" 2>&1) &&
        ok "$where: demo library built" || bad "$where: demo library built" "$got"
    expect "$where: demo, stock: the callback runs in main" \
        "    callback ran in the MAIN interpreter" \
        "$($run timeout 60 "$py" "$work/demo/demo.py" "$work/demo/libcbthread.so" 2>&1 | grep 'callback ran')"
    expect "$where: demo under gilshim: the callback runs in the sub-interpreter" \
        "    callback ran in the SUB-interpreter that registered it" \
        "$($run timeout 60 gilshim "$py" "$work/demo/demo.py" "$work/demo/libcbthread.so" 2>&1 | grep 'callback ran')"
}

stage "installing on this host"
if dpkg_locked -i $debs >"$out/install.log" 2>&1; then
    installed=1
    ok "dpkg -i $(echo $pkgs)"
else
    bad "dpkg -i $(echo $pkgs)" "$(tail -20 "$out/install.log")"
    finish
fi
host_run() { in_bare "$tmp" "$@"; }
use_installed host_run "$hostpy" "$tmp" "host"
stage "removing from this host"
if dpkg_locked -r $pkgs >"$out/remove.log" 2>&1; then
    installed=
    left=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null | grep -v 'not-installed$' || true)
    expect "dpkg -r: nothing left of the packages" "" "$left"
    expect "dpkg -r: no gilshim command left" "" "$(in_bare / sh -c 'command -v gilshim' || true)"
else
    bad "dpkg -r $(echo $pkgs)" "$(tail -20 "$out/remove.log")"
fi

# 4. A Debian sid root: the packages as sid would get them, with its
# python3.14.
if [ -n "$sid" ]; then
    if [ -n "${GILSHIM_SID_ROOT:-}" ]; then
        sidroot=$GILSHIM_SID_ROOT
        stage "using the sid root $sidroot"
    else
        sidroot=$(mktemp -d /var/tmp/gilshim-sid.XXXXXX)
        sidmade=1
        stage "making a sid root in $sidroot (mmdebstrap)"
        if mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
            --include=python3.14,python3.14-dev,pkg-config,gcc,libc6-dev,make,man-db \
            sid "$sidroot" >"$out/mmdebstrap.log" 2>&1; then
            touch "$sidroot/etc/gilshim-scratch-root"
            [ "${GILSHIM_PKG_SID_KEEP:-0}" != 1 ] || sidmade=
            ok "mmdebstrap sid"
        else
            bad "mmdebstrap sid" "$(tail -20 "$out/mmdebstrap.log")"
            finish
        fi
    fi
    rm -rf "$sidroot/tmp/gilshim-pkg"
    mkdir -p "$sidroot/tmp/gilshim-pkg"
    cp $debs "$tmp/legacy_probe.py" "$sidroot/tmp/gilshim-pkg/"
    cp -r "$tmp/demo" "$sidroot/tmp/gilshim-pkg/"
    # chroot in a mount namespace of its own, with /proc: nothing to unmount
    sid_run() {
        unshare --mount --propagation private sh -c \
            'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$sidroot" \
            env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/tmp LC_ALL=C.UTF-8 TERM=dumb "$@"
    }
    if sid_run sh -c 'dpkg -i /tmp/gilshim-pkg/*.deb' >"$out/sid-install.log" 2>&1; then
        ok "sid: dpkg -i $(echo $pkgs)"
        use_installed sid_run /usr/bin/python3.14 /tmp/gilshim-pkg "sid"
        if sid_run dpkg -r $pkgs >"$out/sid-remove.log" 2>&1; then
            ok "sid: dpkg -r $(echo $pkgs)"
        else
            bad "sid: dpkg -r $(echo $pkgs)" "$(tail -20 "$out/sid-remove.log")"
        fi
    else
        bad "sid: dpkg -i $(echo $pkgs)" "$(tail -20 "$out/sid-install.log")"
    fi
    rm -rf "$sidroot/tmp/gilshim-pkg"
    [ -n "$sidmade" ] || echo "  (kept $sidroot: GILSHIM_SID_ROOT=$sidroot reuses it; rm -rf it when done)"
fi
finish
