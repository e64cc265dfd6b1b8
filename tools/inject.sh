#!/bin/sh
# Run a command with libgilshim first in LD_PRELOAD (see README.md).
#   tools/inject.sh [OPTIONS] [--] COMMAND [ARGS...]
#   --diagnose            keep stock behaviour, report wrong-interpreter
#                         callbacks                   (GILSHIM_MODE=diagnose)
#   --log FILE            messages to FILE            (GILSHIM_LOG)
#   --json                one JSON object per message (GILSHIM_LOG_FORMAT=json)
#   --on-finalize POLICY  park | exit | abort         (GILSHIM_ON_FINALIZE)
#   --check               run COMMAND (a Python) with a probe that prints the
#                         shim's version, mode and redirection method
# The library is $GILSHIM_LIB if set, else build/libgilshim.so next to this
# script, else libgilshim.so.0 from the system library path.
set -eu
me=inject.sh
USAGE="usage: $me [--diagnose] [--log FILE] [--json] [--on-finalize park|exit|abort] [--check] [--] COMMAND [ARGS...]"
usage() { echo "$USAGE" >&2; exit 2; }

check=
while [ $# -gt 0 ]; do
    case $1 in
        --) shift; break ;;
        -h|--help) echo "$USAGE"; exit 0 ;;
        --check) check=1; shift ;;
        --diagnose) GILSHIM_MODE=diagnose; export GILSHIM_MODE; shift ;;
        --json) GILSHIM_LOG_FORMAT=json; export GILSHIM_LOG_FORMAT; shift ;;
        --log)
            [ $# -ge 2 ] && [ -n "$2" ] || { echo "$me: --log needs a file" >&2; usage; }
            GILSHIM_LOG=$2; export GILSHIM_LOG; shift 2 ;;
        --on-finalize)
            [ $# -ge 2 ] || { echo "$me: --on-finalize needs a policy" >&2; usage; }
            case $2 in park|exit|abort) ;; *) echo "$me: --on-finalize: unknown policy '$2'" >&2; usage ;; esac
            GILSHIM_ON_FINALIZE=$2; export GILSHIM_ON_FINALIZE; shift 2 ;;
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
if [ -n "$check" ]; then
    # Python 2 must be able to parse this, to say it is unsupported.
    exec "$1" -c '
import sys
v = sys.version_info[:2]
if not ((3, 9) <= v <= (3, 15)):
    sys.stderr.write("inject.sh: CPython %d.%d is not supported (3.9-3.15)\n" % v)
    sys.exit(3)
import ctypes
me = ctypes.CDLL(None)
try:
    version, mode, how = me.gilshim_version, me.gilshim_mode, me.gilshim_redirection
except AttributeError:
    sys.stderr.write("inject.sh: libgilshim is not loaded in this process\n")
    sys.exit(4)
for f in (version, mode, how):
    f.restype = ctypes.c_char_p
print("gilshim %s: mode %s, redirection by %s, CPython %s (%s)" % (
    version().decode(), mode().decode(), how().decode(), sys.version.split()[0], sys.executable))
'
fi
exec "$@"
