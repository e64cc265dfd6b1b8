#!/bin/sh
# Install what `make test` / `make demo` / `make sanitize` need and lack
# (Debian packages).
#   tools/deps.sh test|demo|sanitize
set -eu
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
          have_pkg cython3 || need="$need cython3" ;;
    sanitize) have_pkg libcriterion-dev || need="$need libcriterion-dev"
          have_pkg python3-dev || need="$need python3-dev"
          command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
          # gcc's sanitizer runtimes
          have_pkg libasan8 || need="$need libasan8"
          have_pkg libtsan2 || need="$need libtsan2"
          have_pkg libubsan1 || need="$need libubsan1" ;;
    demo) ;;
    *) echo "usage: tools/deps.sh test|demo|sanitize" >&2; exit 2 ;;
esac
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing:$need; install them (as root: apt-get install$need)" >&2
        exit 1
    fi
    echo "deps.sh: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq $need >/dev/null
fi
. "$(dirname "$0")/../tests/pythons.sh"
if [ -z "$PYTHONS" ]; then
    echo "deps.sh: no CPython 3.9-3.13 with a shared libpython found (pyenv versions, or GILSHIM_PYTHONS)" >&2
    exit 1
fi
