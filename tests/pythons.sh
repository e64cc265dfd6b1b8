# SPDX-License-Identifier: MIT
# Sourced: sets PYTHONS to the python3-config of every CPython the tests
# run against: on the host pyenv's 3.9-3.13 with a shared libpython and
# Debian's python3.11; inside the sid root (tests/sid.sh) Debian's 3.14 and
# 3.15, whose executables carry libpython and whose libpython3.1x.so the
# embedding tests link. GILSHIM_PYTHONS (space-separated python3-config
# paths) overrides the search. GILSHIM_DEBUG=1 picks the debug builds
# instead (--with-pydebug, CPython's own asserts on): Debian's python3.11d on
# the host, python3.13d/3.14d/3.15d in the sid root (make debug).
if [ -n "${GILSHIM_PYTHONS:-}" ]; then
    PYTHONS=$GILSHIM_PYTHONS
elif [ "${GILSHIM_DEBUG:-0}" = 1 ]; then
    PYTHONS=
    for minor in 11 13 14 15; do
        [ -x /usr/bin/python3.${minor}d-config ] && [ -x /usr/bin/python3.${minor}d ] &&
            PYTHONS="$PYTHONS /usr/bin/python3.${minor}d-config"
    done
elif [ -f /etc/gilshim-sid-root ]; then
    PYTHONS=
    for minor in 14 15; do
        [ -x /usr/bin/python3.$minor-config ] && PYTHONS="$PYTHONS /usr/bin/python3.$minor-config"
    done
else
    root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "${HOME:-/root}/.pyenv")}
    [ -d "$root/versions" ] || root=/root/.pyenv
    PYTHONS=
    for minor in 9 10 11 12 13; do
        for cfg in "$root"/versions/3.$minor.*/bin/python3-config; do
            [ -x "$cfg" ] || continue
            PYTHONS="$PYTHONS $cfg"
            break
        done
    done
    # Debian's own python3.11 carries libpython in the executable: the case
    # GOT patching exists for.
    if [ -x /usr/bin/python3.11-config ] && [ -x /usr/bin/python3.11 ]; then
        PYTHONS="$PYTHONS /usr/bin/python3.11-config"
    fi
fi

# py_tag CONFIG: a name for build products of that CPython: "3.11", or
# "3.11-system" for the distribution's, so that the two never collide; a
# debug build's is "3.11d-system".
py_tag() {
    _v=$("${1%-config}" -c 'import sys; print("%d.%d%s" % (sys.version_info[:2] + ("d" if hasattr(sys, "gettotalrefcount") else "",)))')
    case $1 in /usr/*) echo "$_v-system" ;; *) echo "$_v" ;; esac
}
