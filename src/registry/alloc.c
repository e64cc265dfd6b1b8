/*
 * Allocation-failure injection, compiled only with -DGILSHIM_FAULT_INJECTION
 * (tests/run-faults.sh builds it in build/fault/; the shipped library has
 * none of it, see alloc.h).
 *
 *   GILSHIM_TEST_FAIL_ALLOC=N     the Nth call through alloc.h fails (1 is
 *                                 the first of the process, counted over all
 *                                 threads in the order they make them)
 *   GILSHIM_TEST_FAIL_ALLOC=list  none fails; each is named as it is made
 *
 * Each call so chosen or listed is written to stderr as
 * "gilshim-fault[PID]: call N: SITE" (", fails" added for the one that does).
 *
 * Why a countdown through the shim's own wrappers, and not a malloc
 * interposer preloaded ahead of libc: it fails the shim's allocations only,
 * never CPython's or libc's, so the test judges what the shim does next;
 * every site has a name, so the test knows which one each N reached and
 * that none was missed; valgrind, which replaces malloc itself, still sees
 * every block; and the same hook fails CPython's PyThreadState_New for the
 * shim, with no second library. Counting calls instead of naming one site
 * lets a test try N = 1, 2, ... up to the number a run makes, which reaches
 * sites nobody thought to name.
 */
#ifdef GILSHIM_FAULT_INJECTION
#define _GNU_SOURCE
#include "alloc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Atomic long g_calls;
static _Atomic long g_fail = -1;  /* -1 unread; 0 list; N fail the Nth; -2 off */

static long setting(void)
{
    long f = atomic_load(&g_fail);
    if (f != -1)
        return f;
    /* racing first readers parse the same string */
    const char *v = secure_getenv("GILSHIM_TEST_FAIL_ALLOC");
    char *end;
    if (!v || !*v)
        f = -2;
    else if (!strcmp(v, "list"))
        f = 0;
    else if ((f = strtol(v, &end, 10)) <= 0 || *end)
        f = -2;
    atomic_store(&g_fail, f);
    return f;
}

int gs_fault(const char *site)
{
    long f = setting();
    if (f == -2)
        return 0;
    long n = atomic_fetch_add(&g_calls, 1) + 1;
    if (f && n != f)
        return 0;
    char line[160];
    int len = snprintf(line, sizeof line, "gilshim-fault[%d]: call %ld: %s%s\n", (int)getpid(), n,
                       site, f ? ", fails" : "");
    if (len > 0)
        (void)!write(2, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    return f == n;
}
#endif
