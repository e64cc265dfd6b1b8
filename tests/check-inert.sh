#!/bin/sh
# SPDX-License-Identifier: MIT
# Preloaded into programs without Python, the shim is silent and changes
# nothing: exit status 0 and no output at all.
set -eu
lib=$(cd "$(dirname "${1:-build/libgilshim.so}")" && pwd)/$(basename "${1:-build/libgilshim.so}")
fail=0
check() {
    out=$(LD_PRELOAD=$lib GILSHIM_LOG_LEVEL=debug "$@" 2>&1) && rc=0 || rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
        echo "check-inert: FAIL: $* -> exit $rc, output: $out"; fail=1
    fi
}
check /bin/true
check bash -c true
check bash -c 'sleep 0 & wait'
check sh -c 'echo hi > /dev/null'
printf 'int main(void){return 0;}' > /tmp/gilshim-inert-$$.c
check cc -c /tmp/gilshim-inert-$$.c -o /tmp/gilshim-inert-$$.o
rm -f /tmp/gilshim-inert-$$.c /tmp/gilshim-inert-$$.o
# dlopen of a bare name found only through the caller's RUNPATH: the
# wrapper must leave glibc seeing the real caller.
d=$(mktemp -d)
printf 'int plugin(void){return 42;}' > "$d/p.c"
cc -shared -fPIC "$d/p.c" -o "$d/libgsplugin.so"
printf '#include <dlfcn.h>\nint main(void){void *h = dlopen("libgsplugin.so", RTLD_NOW);\nint (*f)(void) = h ? (int (*)(void))dlsym(h, "plugin") : 0; return f && f() == 42 ? 0 : 1;}' > "$d/m.c"
cc "$d/m.c" -o "$d/m" -Wl,--enable-new-dtags,-rpath,"$d" -ldl
check "$d/m"
rm -rf "$d"
[ $fail -eq 0 ] && echo "check-inert: ok (true, bash, sh, cc, a RUNPATH dlopen: exit 0, no output)"
exit $fail
