/* SPDX-License-Identifier: MIT */
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
 * and from the test program, gilshim_test_fail_alloc(n, &site) (exported by
 * this build only): from now on the nth call fails (0: none, counting
 * only); it returns how many calls were made since the previous
 * gilshim_test_fail_alloc, and in site the one that failed, or NULL.
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

static _Atomic long g_calls;          /* since the last arming */
static _Atomic long g_fail = -1;      /* the call to fail; 0 none; -1 not read yet */
static _Atomic int g_list;            /* GILSHIM_TEST_FAIL_ALLOC=list */
static const char *_Atomic g_failed;  /* the site that failed since the last arming */

static long setting(void)
{
    long f = atomic_load(&g_fail);
    if (f != -1)
        return f;
    /* racing first readers parse the same string */
    const char *v = secure_getenv("GILSHIM_TEST_FAIL_ALLOC");
    char *end;
    f = 0;
    if (v && !strcmp(v, "list"))
        atomic_store(&g_list, 1);
    else if (v && *v && ((f = strtol(v, &end, 10)) < 0 || *end))
        f = 0;
    long unread = -1;
    atomic_compare_exchange_strong(&g_fail, &unread, f);
    return atomic_load(&g_fail);
}

int gs_fault(const char *site)
{
    long f = setting();
    long n = atomic_fetch_add(&g_calls, 1) + 1;
    int fails = f == n;
    if (!fails && !atomic_load(&g_list))
        return 0;
    char line[160];
    int len = snprintf(line, sizeof line, "gilshim-fault[%d]: call %ld: %s%s\n", (int)getpid(), n,
                       site, fails ? ", fails" : "");
    if (len > 0)
        (void)!write(2, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    if (fails)
        atomic_store(&g_failed, site);
    return fails;
}

__attribute__((visibility("default"))) long gilshim_test_fail_alloc(long n, const char **site);

long gilshim_test_fail_alloc(long n, const char **site)
{
    setting();
    atomic_store(&g_fail, 0);
    long calls = atomic_exchange(&g_calls, 0);
    const char *failed = atomic_exchange(&g_failed, NULL);
    if (site)
        *site = failed;
    atomic_store(&g_fail, n > 0 ? n : 0);
    return calls;
}
#endif
