#!/bin/sh
# SPDX-License-Identifier: MIT
# Run a command with libgilshim first in LD_PRELOAD (see README.md).
#   tools/inject.sh [OPTIONS] [--] COMMAND [ARGS...]
# The options are in help() below. The library is $GILSHIM_LIB if set, else
# build/libgilshim.so next to this script, else libgilshim.so.0 from the
# system library path.
#
# `make install` installs this script as the gilshim command (gilshim(1)),
# with the three lines below filled in: its name, its version, and the
# library installed with it, which it then uses instead of build/ and the
# system library path; and where gilshim_report.py, behind `report`, is.
set -eu
me=inject.sh
version=
installed=
reporter=

USAGE="usage: $me [--diagnose] [--log FILE] [--json] [--on-finalize park|exit|abort] [--check] [--] COMMAND [ARGS...]
       $me report [--json] LOG...
       $me --version | --help"
usage() { echo "$USAGE" >&2; exit 2; }
help() {
    cat <<END
$USAGE
Run COMMAND with libgilshim first in LD_PRELOAD, so that a CPython callback
made from a foreign thread runs in the interpreter that owns it.

  --diagnose            keep stock behaviour, report wrong-interpreter
                        callbacks                   (GILSHIM_MODE=diagnose)
  --log FILE            messages to FILE            (GILSHIM_LOG)
  --json                one JSON object per message (GILSHIM_LOG_FORMAT=json)
  --on-finalize POLICY  park | exit | abort         (GILSHIM_ON_FINALIZE)
  --check               run COMMAND (a Python) with a probe that prints the
                        shim's version, mode and redirection method
  --version             print the version and the library that would be used
  -h, --help            print this help

report [--json] LOG...  one table of the wrong-interpreter callbacks in the
                        JSON logs of diagnose mode (--diagnose --json --log),
                        from any number of processes; --json: as JSON

Exit status: COMMAND's; 2 usage error; 127 library or COMMAND not found;
with --check, 3 not CPython 3.9-3.15, 4 the shim is not loaded in it;
report: 0 no wrong-interpreter callback, 1 some, 2 usage or unreadable LOG,
127 no python3.
END
}

if [ "${1:-}" = report ]; then
    shift
    here=$(cd "$(dirname "$0")" && pwd)
    [ -n "$reporter" ] || reporter=$here/gilshim_report.py
    # python3, or any CPython 3.9+ by its versioned name (a system may
    # carry python3.14 without the python3 of its default version)
    pyrep=
    for p in python3 python3.15 python3.14 python3.13 python3.12 python3.11 python3.10 python3.9; do
        command -v $p >/dev/null 2>&1 && { pyrep=$p; break; }
    done
    [ -n "$pyrep" ] || { echo "$me: report needs python3 (3.9+)" >&2; exit 127; }
    [ -f "$reporter" ] || { echo "$me: $reporter not found" >&2; exit 127; }
    GILSHIM_REPORT_NAME="$me report" exec $pyrep "$reporter" "$@"
fi

check= show_version=
while [ $# -gt 0 ]; do
    case $1 in
        --) shift; break ;;
        -h|--help) help; exit 0 ;;
        --version) show_version=1; shift ;;
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
[ -n "$show_version" ] || [ $# -gt 0 ] || usage

here=$(cd "$(dirname "$0")" && pwd)
lib=${GILSHIM_LIB:-}
if [ -z "$lib" ]; then
    if [ -n "$installed" ]; then
        lib=$installed
    elif [ -f "$here/../build/libgilshim.so" ]; then
        lib=$(cd "$here/../build" && pwd)/libgilshim.so
    else
        lib=$(/sbin/ldconfig -p 2>/dev/null | awk '/libgilshim\.so\.0 /{print $NF; exit}')
    fi
fi
if [ -n "$show_version" ]; then
    [ -n "$version" ] ||
        version=$(sed -n 's/^#define GILSHIM_VERSION_[A-Z]* //p' "$here/../include/gilshim.h" 2>/dev/null | paste -sd.)
    echo "$me ${version:-(unknown version)}"
fi
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    if [ -n "$installed" ] && [ -z "${GILSHIM_LIB:-}" ]; then
        echo "$me: libgilshim not found ($lib, installed with $me); reinstall it or set GILSHIM_LIB" >&2
    else
        echo "$me: libgilshim not found (${lib:-no build/libgilshim.so, none installed}); run 'make' or set GILSHIM_LIB" >&2
    fi
    exit 127
fi
if [ -n "$show_version" ]; then
    echo "library: $lib"
    exit 0
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
me = sys.argv[1]
v = sys.version_info[:2]
if v < (3, 9) or v > (3, 15):
    sys.stderr.write("%s: CPython %d.%d is not supported (3.9-3.15)\n" % (me, v[0], v[1]))
    sys.exit(3)
if "free-threading build" in sys.version.split("(")[0]:
    sys.stderr.write("%s: CPython %d.%d free-threading build is not supported (GIL builds only)\n"
                     % (me, v[0], v[1]))
    sys.exit(3)
import ctypes
lib = ctypes.CDLL(None)
try:
    version, mode, how = lib.gilshim_version, lib.gilshim_mode, lib.gilshim_redirection
except AttributeError:
    sys.stderr.write("%s: libgilshim is not loaded in this process\n" % me)
    sys.exit(4)
for f in (version, mode, how):
    f.restype = ctypes.c_char_p
print("gilshim %s: mode %s, redirection by %s, CPython %s (%s)" % (
    version().decode(), mode().decode(), how().decode(), sys.version.split()[0], sys.executable))
' "$me"
fi
exec "$@"
