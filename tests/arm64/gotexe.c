/* SPDX-License-Identifier: MIT */
/*
 * GOT patching in an executable that defines CPython's names itself, as
 * Debian's python3.X does, so that a preloaded libgilshim patches the
 * import slots of libgotlib (gotlib.c, full RELRO):
 *   - its GLOB_DAT slot points into libgilshim (the architecture's
 *     relocation types are known to gotpatch.c; relro.sh counts the
 *     JUMP_SLOT one from the log);
 *   - its .data is still writable afterwards.
 * One line per check, "ok" or "FAIL"; exit status 1 on any FAIL.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* The "CPython" of this process: never called. */
int PyGILState_Check(void) { return 7; }
int PyGILState_Ensure(void) { return 0; }
void PyGILState_Release(int s) { (void)s; }

void *gotlib_check_address(void);
int gotlib_write(int v);
extern int gotlib_data[4];



int main(void)
{
    int fail = 0;
    Dl_info where;
    void *p = gotlib_check_address();
    int patched = dladdr(p, &where) && where.dli_fname && strstr(where.dli_fname, "libgilshim");
    printf("%s GLOB_DAT slot of PyGILState_Check points into %s\n", patched ? "ok  " : "FAIL",
           where.dli_fname ? where.dli_fname : "?");
    fail |= !patched;

    /* a page of it made read-only by the patching would fault here */
    int w = gotlib_write(42);
    printf("%s .data of the patched library still writable\n", w == 42 ? "ok  " : "FAIL");
    fail |= w != 42;
    return fail;
}
