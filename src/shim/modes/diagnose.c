/* SPDX-License-Identifier: MIT */
/*
 * GILSHIM_MODE=diagnose: decide as route mode would, then do what stock
 * CPython does, and report each call site where the two differ. The first
 * occurrence per call site is reported in full, repeats are counted, and
 * a summary of the call sites is printed at exit. Also reported, with
 * stock's outcome kept: an Ensure after finalization began, a Release that
 * matches no Ensure, a thread that exits inside an Ensure (lifecycle.c) and
 * an interpreter that ends with callbacks still running in it.
 */
#define _GNU_SOURCE
#include "diagnose.h"

#include <pthread.h>
#include <stdio.h>
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

/* Site i of the table as a JSON object, into buf; its length. */
static size_t summary_entry(size_t i, char *buf, size_t len)
{
    char site[600];
    int k = snprintf(buf, len, "{%s,\"count\":%lu,\"owner\":%lld,\"stock\":%lld,\"rule\":%d}",
                     gs_json_site("site", g_sites[i].caller, site, sizeof site), g_sites[i].count,
                     (long long)g_sites[i].owner, (long long)g_sites[i].stock, g_sites[i].rule);
    return k < 0 ? 0 : (size_t)k < len ? (size_t)k : len - 1;
}

static void summary(void)
{
    pthread_mutex_lock(&g_sites_lock);
    if (!g_nsites) {
        pthread_mutex_unlock(&g_sites_lock);
        return;
    }
    qsort(g_sites, g_nsites, sizeof *g_sites, by_count);
    unsigned long total = g_lost;
    for (size_t i = 0; i < g_nsites; i++)
        total += g_sites[i].count;
    if (gs_config()->log_format == GS_FORMAT_JSON) {
        /* One event: the whole table. Out of memory for it, the sites that
         * fit in a buffer here, busiest first; the callbacks of the others
         * are counted in "lost", as those past the table's 256 sites are. */
        char small[3584], entry[700];
        size_t cap = 128 + g_nsites * sizeof entry, len = 0, fit = g_nsites;
        char *extra = gs_malloc("diagnose summary", cap);
        unsigned long lost = g_lost;
        if (!extra) {
            extra = small;
            cap = sizeof small;
            len = 128;  /* room for the members before the list */
            for (fit = 0; fit < g_nsites; fit++) {
                len += summary_entry(fit, entry, sizeof entry) + 1;
                if (len >= cap - 2)
                    break;
            }
            for (size_t i = fit; i < g_nsites; i++)
                lost += g_sites[i].count;
        }
        len = (size_t)snprintf(extra, cap, "\"callbacks\":%lu,\"lost\":%lu,\"sites\":[", total, lost);
        for (size_t i = 0; i < fit; i++) {
            summary_entry(i, entry, sizeof entry);
            len += (size_t)snprintf(extra + len, cap - len, "%s%s", i ? "," : "", entry);
        }
        snprintf(extra + len, cap - len, "]");
        if (extra != small) {
            gs_logx(GS_LOG_WARN, "summary", extra, "diagnose summary: %zu call site(s) ran %lu "
                    "callback(s) in the wrong interpreter", g_nsites, total);
            free(extra);
        } else {
            gs_logx(GS_LOG_WARN, "summary", extra, "diagnose summary: %zu call site(s) ran %lu "
                    "callback(s) in the wrong interpreter; out of memory for the site table: "
                    "the %zu busiest listed, the rest counted as lost", g_nsites, total, fit);
        }
    } else {
        gs_log(GS_LOG_WARN, "diagnose summary: %zu call site(s) ran %lu callback(s) in the wrong "
               "interpreter", g_nsites, total);
        for (size_t i = 0; i < g_nsites; i++) {
            char where[256];
            gs_log(GS_LOG_WARN, "  %8lu  %s  (owner %lld by %s, stock ran it in %lld)",
                   g_sites[i].count, gs_describe_addr(g_sites[i].caller, where, sizeof where),
                   (long long)g_sites[i].owner, gs_rule_name(g_sites[i].rule),
                   (long long)g_sites[i].stock);
        }
        if (g_lost)
            gs_log(GS_LOG_WARN, "  %8lu  at further call sites (table full)", g_lost);
    }
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

    char where[256], name[32] = "?", jname[80], extra[2048], created[400] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    gs_json_str(jname, sizeof jname, name);
    int k = snprintf(extra, sizeof extra, "\"thread\":{\"tid\":%d,\"name\":%s},\"stock\":%lld,"
                     "\"owner\":%lld,\"rule\":%d,\"rule_name\":\"%s\",",
                     (int)(gs_thread_peek() ? gs_thread_peek()->tid : 0), jname,
                     (long long)stock_id, (long long)owner->id, rule, gs_rule_name(rule));
    if (rule == GS_RULE_CREATOR) {
        const struct gs_creator *c = &gs_tl_creator_info;
        char cname[80], csite[600], cwhere[256];
        gs_json_str(cname, sizeof cname, c->name);
        k += snprintf(extra + k, sizeof extra - (size_t)k, "\"creator\":{\"tid\":%d,\"name\":%s,%s},",
                      (int)c->tid, cname, gs_json_site("site", c->site, csite, sizeof csite));
        snprintf(created, sizeof created, ", created by thread %d \"%s\" at %s", (int)c->tid,
                 c->name, gs_describe_addr(c->site, cwhere, sizeof cwhere));
    }
    gs_json_site("site", caller, extra + k, sizeof extra - (size_t)k);
    gs_logx(GS_LOG_WARN, "wrong_interpreter", extra,
            "wrong interpreter: PyGILState_Ensure at %s on thread \"%s\": stock runs it in "
            "interpreter %lld, its owner is interpreter %lld (rule %d: %s%s)",
            gs_describe_addr(caller, where, sizeof where), name, (long long)stock_id,
            (long long)owner->id, rule, gs_rule_name(rule), created);
}

/* Ensures of this thread that got no frame (out of memory for its record
 * or a frame chunk): stock's Ensure ran all the same, and the Release of
 * each, which matches no frame, is not reported as unmatched. It comes
 * when the thread is back at the depth the Ensure was made at (LIFO); the
 * innermost such depth is the one kept. */
static GS_TLS size_t tl_untracked, tl_untracked_depth;

int gs_diagnose_ensure(const void *caller)
{
    struct gs_thread *self = gs_thread_self();
    struct gs_route route = gs_route_for(self, gs_py_attached());
    struct gs_interp *owner = route.rule == GS_RULE_RELEASED ? gs_interp_of(route.tstate, 0)
                                                             : route.interp;
    int st = py.GILState_Ensure();
    PyThreadState *now = gs_py_attached();
    struct gs_interp *ran = now ? gs_interp_of(now, 1) : NULL;
    if (owner && ran && ran != owner && atomic_load(&owner->state) == GS_ALIVE)
        report(caller, route.rule, owner, ran->id);
    /* A frame, so that Release can be matched and an interpreter that ends
     * under this callback can tell. */
    struct gs_frame *f = self ? gs_frame_push(self) : NULL;
    if (f) {
        f->kind = GS_FRAME_NESTED;
        f->returned = st;
        f->caller = caller;
        f->tstate = now;
        f->counted = ran;
        if (ran)
            atomic_fetch_add(&ran->in_flight, 1);
    } else {
        char where[256];
        tl_untracked++;
        tl_untracked_depth = self ? self->depth : 0;
        gs_log(GS_LOG_WARN, "out of memory for %s (at %s); this PyGILState_Ensure is not tracked",
               self ? "an Ensure frame" : "the thread record",
               gs_describe_addr(caller, where, sizeof where));
    }
    return st;
}

void gs_diagnose_release(int oldstate, const void *caller)
{
    struct gs_thread *self = gs_thread_peek();
    if (tl_untracked && (self ? self->depth : 0) == tl_untracked_depth) {
        tl_untracked--;
        py.GILState_Release(oldstate);
        return;
    }
    struct gs_frame *f = gs_release_match(self, oldstate, caller, "doing what stock CPython does");
    if (f) {
        if (f->counted)
            atomic_fetch_sub(&f->counted->in_flight, 1);
        gs_frame_pop(self);
    }
    py.GILState_Release(oldstate);
}

void gs_diagnose_late_ensure(const void *caller, int finalized)
{
    char where[256], extra[512];
    gs_logx(GS_LOG_WARN, finalized ? "ensure_after_finalize" : "ensure_while_finalizing",
            gs_json_site("site", caller, extra, sizeof extra),
            "PyGILState_Ensure %s at %s; doing what stock CPython does",
            finalized == 2   ? "with no initialized runtime (before Py_Initialize, or after "
                               "Py_FinalizeEx)"
            : finalized == 1 ? "after Py_FinalizeEx"
                             : "while the runtime finalizes",
            gs_describe_addr(caller, where, sizeof where));
}

void gs_diagnose_interp_ends(struct gs_interp *in, int self_counted)
{
    long n = atomic_load(&in->in_flight) - self_counted;
    if (n <= 0)
        return;
    char extra[96];
    snprintf(extra, sizeof extra, "\"interpreter\":%lld,\"in_flight\":%ld", (long long)in->id, n);
    gs_logx(GS_LOG_WARN, "ended_in_flight", extra,
            "interpreter %lld ends with %ld PyGILState_Ensure callback(s) still running in it",
            (long long)in->id, n);
}

const struct gs_mode_ops gs_diagnose_ops = {
    .ensure = gs_diagnose_ensure,
    .release = gs_diagnose_release,
    .late_ensure = gs_diagnose_late_ensure,
    .interp_ends = gs_diagnose_interp_ends,
};
