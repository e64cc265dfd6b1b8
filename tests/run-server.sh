#!/bin/sh
# SPDX-License-Identifier: MIT
# The real-server tier (make server): Apache with mod_wsgi, stock and with
# gilshim preloaded into apache2, embedded and daemon mode, the application
# in mod_wsgi's default application group (tests/server/server.py has the
# checks). On the host Debian's mod_wsgi for its python3.11 (libpython
# shared: symbol interposition); inside the sid root (tests/sid.sh) the
# mod_wsgi 5 builds for 3.14 and 3.15 (mod_wsgi.so-3.1X).
# Environment: SERVER_REQUESTS, the load per side (default 2000).
set -eu
cd "$(dirname "$0")/.."
modules=/usr/lib/apache2/modules
if ! command -v apache2 >/dev/null 2>&1 && [ ! -x /usr/sbin/apache2 ]; then
    echo "run-server.sh: apache2 is not installed (tools/deps.sh test installs it); skipped"
    exit 0
fi
if [ -f /etc/gilshim-sid-root ]; then
    wsgis="$modules/mod_wsgi.so-3.14 $modules/mod_wsgi.so-3.15"
else
    wsgis=$(ls "$modules"/mod_wsgi.so-3.* 2>/dev/null || true)
fi
[ -n "$wsgis" ] || { echo "run-server.sh: no mod_wsgi in $modules (libapache2-mod-wsgi-py3); skipped"; exit 0; }
mkdir -p build
cc -shared -fPIC -O2 -pthread tests/e2e/cbthread.c -o build/libcbthread.so
lib=$PWD/build/libgilshim.so
[ -f "$lib" ] || { echo "run-server.sh: no $lib; run make" >&2; exit 1; }
echo "== tools/gilshim_report.py on made-up logs"
python3 tests/server/test_report.py 2>&1 | tail -1 | grep -qx OK &&
    echo "  ok   gilshim report: processes, logs, a cut-off line, old logs, exit status" ||
    { python3 tests/server/test_report.py; echo "  FAIL gilshim report's own tests"; exit 1; }
# The client and checks run on the system's python3; the server's Python is
# the one mod_wsgi was built for.
st=0
for w in $wsgis; do
    if [ ! -f "$w" ]; then
        echo "== $w: not installed; skipped"
        continue
    fi
    echo "== Apache $(apache2 -v 2>/dev/null | sed -n 's/^Server version: //p') with $(basename "$w") ($(ldd "$w" | awk '/libpython/{print $1}'))"
    PATH=$PATH:/usr/sbin python3 tests/server/server.py "$w" "$lib" "$PWD/build/libcbthread.so" || st=1
done
[ $st = 0 ] && echo "run-server.sh: passed" || echo "run-server.sh: FAILED"
exit $st
