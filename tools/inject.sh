#!/bin/sh
# Run a command with libgilshim first in LD_PRELOAD (see README.md).
#   tools/inject.sh [--] COMMAND [ARGS...]
# The library is $GILSHIM_LIB if set, else build/libgilshim.so next to this
# script, else libgilshim.so.0 from the system library path.
set -eu
me=inject.sh
usage() { echo "usage: $me [--] COMMAND [ARGS...]" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --) shift; break ;;
        -h|--help) echo "usage: $me [--] COMMAND [ARGS...]"; exit 0 ;;
        -*) echo "$me: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || usage

here=$(cd "$(dirname "$0")" && pwd)
lib=${GILSHIM_LIB:-}
if [ -z "$lib" ]; then
    if [ -f "$here/../build/libgilshim.so" ]; then
        lib=$(cd "$here/../build" && pwd)/libgilshim.so
    else
        lib=$(/sbin/ldconfig -p 2>/dev/null | awk '/libgilshim\.so\.0 /{print $NF; exit}')
    fi
fi
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    echo "$me: libgilshim not found (${lib:-no build/libgilshim.so, none installed}); run 'make' or set GILSHIM_LIB" >&2
    exit 127
fi
if ! command -v "$1" >/dev/null 2>&1; then
    echo "$me: $1: command not found" >&2
    exit 127
fi

# Ahead of anything already preloaded, except a sanitizer runtime, which
# must stay first.
first= rest=
for p in $(printf '%s' "${LD_PRELOAD:-}" | tr ': ' '  '); do
    case $p in
        *libasan*|*libtsan*|*libubsan*) first="$first${first:+:}$p" ;;
        *libgilshim*) ;;
        *) rest="$rest${rest:+:}$p" ;;
    esac
done
LD_PRELOAD="$first${first:+:}$lib${rest:+:}$rest"
export LD_PRELOAD
exec "$@"
