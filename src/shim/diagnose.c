/*
 * GILSHIM_MODE=diagnose: decide as route mode would, then do what stock
 * CPython does, and report each call site where the two differ. The first
 * occurrence per call site is reported in full, repeats are counted, and
 * a summary of the call sites is printed at exit.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct site {
    const void *caller;
    unsigned long count;
    int rule;
    int64_t owner, stock;
};

#define GS_SITES 256
static struct site g_sites[GS_SITES];
static size_t g_nsites;
static unsigned long g_lost;
static pthread_mutex_t g_sites_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_summary_registered;

static int by_count(const void *a, const void *b)
{
    const struct site *x = a, *y = b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

static void summary(void)
{
    pthread_mutex_lock(&g_sites_lock);
    if (!g_nsites) {
        pthread_mutex_unlock(&g_sites_lock);
        return;
    }
    qsort(g_sites, g_nsites, sizeof *g_sites, by_count);
    gs_log(GS_LOG_WARN, "diagnose summary: %zu call site(s) ran callbacks in the wrong interpreter",
           g_nsites);
    for (size_t i = 0; i < g_nsites; i++) {
        char where[256];
        gs_log(GS_LOG_WARN, "  %8lu  %s  (owner %lld by %s, stock ran it in %lld)", g_sites[i].count,
               gs_describe_addr(g_sites[i].caller, where, sizeof where),
               (long long)g_sites[i].owner, gs_rule_name(g_sites[i].rule), (long long)g_sites[i].stock);
    }
    if (g_lost)
        gs_log(GS_LOG_WARN, "  %8lu  at further call sites (table full)", g_lost);
    pthread_mutex_unlock(&g_sites_lock);
}

static void report(const void *caller, int rule, struct gs_interp *owner, int64_t stock_id)
{
    pthread_mutex_lock(&g_sites_lock);
    if (!g_summary_registered) {
        g_summary_registered = 1;
        atexit(summary);
    }
    struct site *s = NULL;
    for (size_t i = 0; i < g_nsites && !s; i++)
        if (g_sites[i].caller == caller)
            s = &g_sites[i];
    int first = !s;
    if (!s && g_nsites < GS_SITES) {
        s = &g_sites[g_nsites++];
        s->caller = caller;
        s->rule = rule;
        s->owner = owner->id;
        s->stock = stock_id;
    }
    if (s)
        s->count++;
    else
        g_lost++;
    pthread_mutex_unlock(&g_sites_lock);
    if (!first)
        return;
    char where[256], name[32] = "?";
    pthread_getname_np(pthread_self(), name, sizeof name);
    gs_log(GS_LOG_WARN, "wrong interpreter: PyGILState_Ensure at %s on thread \"%s\": "
           "stock runs it in interpreter %lld, its owner is interpreter %lld (rule %d: %s)",
           gs_describe_addr(caller, where, sizeof where), name, (long long)stock_id,
           (long long)owner->id, rule, gs_rule_name(rule));
}

int gs_diagnose_ensure(const void *caller)
{
    struct gs_route route = gs_route_for(gs_thread_self(), gs_py_attached());
    struct gs_interp *owner = route.rule == GS_RULE_RELEASED ? gs_interp_of(route.tstate, 0)
                                                             : route.interp;
    int st = py.GILState_Ensure();
    PyThreadState *now = gs_py_attached();
    if (owner && now && atomic_load(&owner->state) == GS_ALIVE) {
        PyInterpreterState *ran = py.ThreadState_GetInterpreter(now);
        if (ran != owner->ptr)
            report(caller, route.rule, owner, py.InterpreterState_GetID(ran));
    }
    return st;
}
