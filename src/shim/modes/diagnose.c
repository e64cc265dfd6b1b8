/* SPDX-License-Identifier: MIT */
/*
 * GILSHIM_MODE=diagnose: decide as route mode would, then do what stock
 * CPython does, and report each finding (call site, rule, owner's kind,
 * stock's interpreter) where the two differ. The first occurrence of a
 * finding is reported in full; every one is counted, the counts written as
 * they change, at most once per GILSHIM_COUNT_INTERVAL_MS, by the calling
 * thread (an account that survives a SIGKILL), and summed up at exit. Also
 * reported, with stock's outcome kept: an Ensure after finalization began,
 * a Release that matches no Ensure, a thread that exits inside an Ensure
 * (lifecycle.c) and an interpreter that ends with callbacks still running
 * in it.
 */
#define _GNU_SOURCE
#include "diagnose.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A finding: (call site, rule, owner's kind, stock's interpreter). The
 * same call site reached by two mechanisms (a synchronous callback by rule
 * 2, a library thread's by rule 4) is two findings. */
enum { KIND_MAIN, KIND_LEGACY, KIND_OWN_GIL, KIND_UNKNOWN };
static const char *const kind_names[] = {"main", "legacy", "own_gil", "unknown"};

struct finding {
    const void *caller;
    int rule, kind;
    int64_t owner, stock;
    unsigned long count;    /* since the process started (the summary) */
    unsigned long pending;  /* since the previous counts line */
    /* The call site as JSON and as text, found (dladdr) before the finding
     * entered the table: under the table's lock nothing takes the loader's
     * lock, which a thread in dlopen may hold while it calls back. */
    char site[600], where[256];
};

#define GS_FINDINGS 256
static struct finding g_found[GS_FINDINGS];
static size_t g_nfound;
static unsigned long g_lost;
static pthread_mutex_t g_found_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_hooks_registered;
static struct timespec g_counts_at;  /* CLOCK_MONOTONIC of the previous counts line */
static int g_counts_written;

/* What the shim can tell of an interpreter's GIL without asking CPython's
 * internals: main is main; below 3.12 every sub-interpreter shares it. */
static int owner_kind(const struct gs_interp *owner)
{
    if (owner->id == 0)
        return KIND_MAIN;
    return py.minor && py.minor < 12 ? KIND_LEGACY : KIND_UNKNOWN;
}

/* "time":seconds since the epoch, to the millisecond, into buf. */
static const char *json_time(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, len, "\"time\":%lld.%03ld", (long long)ts.tv_sec, ts.tv_nsec / 1000000);
    return buf;
}

/* Finding i as a JSON object (n: its count to show), into buf; its length. */
static size_t finding_json(size_t i, unsigned long n, char *buf, size_t len)
{
    const struct finding *f = &g_found[i];
    int k = snprintf(buf, len, "{\"finding\":%zu,%s,\"rule\":%d,\"owner\":%lld,\"owner_kind\":\"%s\","
                     "\"stock\":%lld,\"count\":%lu}", i + 1, f->site, f->rule,
                     (long long)f->owner, kind_names[f->kind], (long long)f->stock, n);
    return k < 0 ? 0 : (size_t)k < len ? (size_t)k : len - 1;
}

static int by_count(const void *a, const void *b)
{
    const struct finding *x = g_found + *(const size_t *)a, *y = g_found + *(const size_t *)b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

/* One counts line: its JSON members, its text's list, its callbacks. */
struct counts_line {
    char json[2600];
    char text[400];
    unsigned long callbacks;
};
static size_t take_counts(struct counts_line *out, size_t nout);
static void write_counts(const struct counts_line *c, size_t n);

static void summary(void)
{
    pthread_mutex_lock(&g_found_lock);
    /* The last counts first: summed, the counts lines give the summary's
     * totals whether or not the process got this far. */
    static struct counts_line last[4];
    for (size_t k; (k = take_counts(last, 4));)
        write_counts(last, k);
    size_t order[GS_FINDINGS], n = 0;
    unsigned long total = g_lost;
    for (size_t i = 0; i < g_nfound; i++)
        if (g_found[i].count) {
            order[n++] = i;
            total += g_found[i].count;
        }
    if (!n) {
        pthread_mutex_unlock(&g_found_lock);
        return;
    }
    /* By count, the table itself left in place: finding ids are indexes. */
    qsort(order, n, sizeof *order, by_count);
    if (gs_config()->log_format == GS_FORMAT_JSON) {
        /* One event: the whole table. Out of memory for it, the findings
         * that fit in a buffer here, busiest first; the callbacks of the
         * others are counted in "lost", as those past the table's 256 are. */
        char small[3584], entry[800], when[40];
        size_t cap = 160 + n * sizeof entry, len = 0, fit = n;
        char *extra = gs_malloc("diagnose summary", cap);
        unsigned long lost = g_lost;
        if (!extra) {
            extra = small;
            cap = sizeof small;
            len = 160;  /* room for the members before the list */
            for (fit = 0; fit < n; fit++) {
                len += finding_json(order[fit], g_found[order[fit]].count, entry, sizeof entry) + 1;
                if (len >= cap - 2)
                    break;
            }
            for (size_t i = fit; i < n; i++)
                lost += g_found[order[i]].count;
        }
        len = (size_t)snprintf(extra, cap, "%s,\"callbacks\":%lu,\"lost\":%lu,\"sites\":[",
                               json_time(when, sizeof when), total, lost);
        for (size_t i = 0; i < fit; i++) {
            finding_json(order[i], g_found[order[i]].count, entry, sizeof entry);
            len += (size_t)snprintf(extra + len, cap - len, "%s%s", i ? "," : "", entry);
        }
        snprintf(extra + len, cap - len, "]");
        if (extra != small) {
            gs_logx(GS_LOG_WARN, "summary", extra, "diagnose summary: %zu finding(s) ran %lu "
                    "callback(s) in the wrong interpreter", n, total);
            free(extra);
        } else {
            gs_logx(GS_LOG_WARN, "summary", extra, "diagnose summary: %zu finding(s) ran %lu "
                    "callback(s) in the wrong interpreter; out of memory for the site table: "
                    "the %zu busiest listed, the rest counted as lost", n, total, fit);
        }
    } else {
        gs_log(GS_LOG_WARN, "diagnose summary: %zu finding(s) ran %lu callback(s) in the wrong "
               "interpreter", n, total);
        for (size_t j = 0; j < n; j++) {
            const struct finding *f = &g_found[order[j]];
            gs_log(GS_LOG_WARN, "  %8lu  %s  (#%zu: owner %lld, %s, by %s; stock ran it in %lld)",
                   f->count, f->where, order[j] + 1,
                   (long long)f->owner, kind_names[f->kind], gs_rule_name(f->rule),
                   (long long)f->stock);
        }
        if (g_lost)
            gs_log(GS_LOG_WARN, "  %8lu  of further findings (table full)", g_lost);
    }
    pthread_mutex_unlock(&g_found_lock);
}

/* A forked child starts its own account: the parent's callbacks are the
 * parent's. The ids stay, so that a finding is not reported in full again. */
static void after_fork_child(void)
{
    pthread_mutex_init(&g_found_lock, NULL);
    for (size_t i = 0; i < g_nfound; i++)
        g_found[i].count = g_found[i].pending = 0;
    g_lost = 0;
    g_counts_written = 0;
}

/* The counts lines for the findings with pending callbacks, into out (at
 * most nout lines; more findings than fit wait for the next count); the
 * pending counts are taken. Under g_found_lock. Returns the lines made. */
static size_t take_counts(struct counts_line *out, size_t nout)
{
    size_t lines = 0, len = 0, tlen = 0;
    char entry[800], when[40];
    json_time(when, sizeof when);
    for (size_t i = 0; i < g_nfound && lines < nout; i++) {
        if (!g_found[i].pending)
            continue;
        size_t k = finding_json(i, g_found[i].pending, entry, sizeof entry);
        if (len && (len + k + 4 >= sizeof out->json || tlen + 40 >= sizeof out->text)) {
            snprintf(out[lines].json + len, sizeof out->json - len, "]");
            if (++lines == nout)
                break;
            len = 0;
        }
        struct counts_line *c = &out[lines];
        if (!len) {
            len = (size_t)snprintf(c->json, sizeof c->json, "%s,\"findings\":[", when);
            tlen = 0;
            c->callbacks = 0;
        }
        len += (size_t)snprintf(c->json + len, sizeof c->json - len, "%s%s",
                                c->json[len - 1] == '[' ? "" : ",", entry);
        tlen += (size_t)snprintf(c->text + tlen, sizeof c->text - tlen, "%s#%zu %lu",
                                 tlen ? ", " : "", i + 1, g_found[i].pending);
        c->callbacks += g_found[i].pending;
        g_found[i].pending = 0;
    }
    if (len && lines < nout)
        snprintf(out[lines++].json + len, sizeof out->json - len, "]");
    return lines;
}

static void write_counts(const struct counts_line *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gs_logx(GS_LOG_WARN, "counts", c[i].json, "diagnose counts: %lu callback(s) in the wrong "
                "interpreter since the previous count (finding count: %s)", c[i].callbacks,
                c[i].text);
}

static long since_ms(const struct timespec *then, const struct timespec *now)
{
    return (long)(now->tv_sec - then->tv_sec) * 1000 + (now->tv_nsec - then->tv_nsec) / 1000000;
}

/* The wrong_interpreter event of a new finding, all but its id and time:
 * made outside the table's lock (dladdr, the thread's name). */
struct first_report {
    char site[600], where[256], extra[2048], text[1024];
};

static void describe_first(struct first_report *r, const void *caller, int rule,
                           const struct gs_interp *owner, int kind, int64_t stock_id)
{
    char name[32] = "?", jname[80], created[400] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    gs_json_str(jname, sizeof jname, name);
    gs_json_site("site", caller, r->site, sizeof r->site);
    gs_describe_addr(caller, r->where, sizeof r->where);
    int k = snprintf(r->extra, sizeof r->extra, "\"thread\":{\"tid\":%d,\"name\":%s},"
                     "\"stock\":%lld,\"owner\":%lld,\"owner_kind\":\"%s\",\"rule\":%d,"
                     "\"rule_name\":\"%s\",",
                     (int)(gs_thread_peek() ? gs_thread_peek()->tid : 0), jname,
                     (long long)stock_id, (long long)owner->id, kind_names[kind], rule,
                     gs_rule_name(rule));
    if (rule == GS_RULE_CREATOR) {
        const struct gs_creator *c = &gs_tl_creator_info;
        char cname[80], csite[600], cwhere[256];
        gs_json_str(cname, sizeof cname, c->name);
        k += snprintf(r->extra + k, sizeof r->extra - (size_t)k, "\"creator\":{\"tid\":%d,\"name\":%s,%s},",
                      (int)c->tid, cname, gs_json_site("site", c->site, csite, sizeof csite));
        snprintf(created, sizeof created, ", created by thread %d \"%s\" at %s", (int)c->tid,
                 c->name, gs_describe_addr(c->site, cwhere, sizeof cwhere));
    }
    snprintf(r->extra + k, sizeof r->extra - (size_t)k, "%s", r->site);
    snprintf(r->text, sizeof r->text, "wrong interpreter: PyGILState_Ensure at %s on thread \"%s\": "
             "stock runs it in interpreter %lld, its owner is interpreter %lld (rule %d: %s%s)",
             r->where, name, (long long)stock_id, (long long)owner->id, rule, gs_rule_name(rule),
             created);
}

static struct finding *find(const void *caller, int rule, int kind, int64_t stock_id)
{
    for (size_t i = 0; i < g_nfound; i++)
        if (g_found[i].caller == caller && g_found[i].rule == rule && g_found[i].kind == kind &&
            g_found[i].stock == stock_id)
            return &g_found[i];
    return NULL;
}

static void report(const void *caller, int rule, struct gs_interp *owner, int64_t stock_id)
{
    int kind = owner_kind(owner);
    pthread_mutex_lock(&g_found_lock);
    struct finding *f = find(caller, rule, kind, stock_id);
    if (!f && g_nfound < GS_FINDINGS) {
        /* New: described with the lock released, then looked up again. */
        pthread_mutex_unlock(&g_found_lock);
        struct first_report r;
        describe_first(&r, caller, rule, owner, kind, stock_id);
        pthread_mutex_lock(&g_found_lock);
        f = find(caller, rule, kind, stock_id);
        if (!f && g_nfound < GS_FINDINGS) {
            f = &g_found[g_nfound++];
            *f = (struct finding){.caller = caller, .rule = rule, .kind = kind,
                                  .owner = owner->id, .stock = stock_id};
            memcpy(f->site, r.site, sizeof f->site);
            memcpy(f->where, r.where, sizeof f->where);
            /* in the event, in the table's order: its id, then the rest */
            char when[40], extra[2200];
            snprintf(extra, sizeof extra, "%s,\"finding\":%zu,%s", json_time(when, sizeof when),
                     g_nfound, r.extra);
            gs_logx(GS_LOG_WARN, "wrong_interpreter", extra, "%s [finding %zu, owner %s]", r.text,
                    g_nfound, kind_names[kind]);
        }
    }
    if (!g_hooks_registered) {
        g_hooks_registered = 1;
        atexit(summary);
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    if (!f) {
        g_lost++;
        pthread_mutex_unlock(&g_found_lock);
        return;
    }
    f->count++;
    f->pending++;
    /* The counts, written by the thread that changed them once the
     * interval has passed: no thread and no timer of the shim's own. Under
     * the lock, from the one static line: nothing to allocate. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!g_counts_written || since_ms(&g_counts_at, &now) >= gs_config()->count_interval_ms) {
        static struct counts_line lines[4];
        write_counts(lines, take_counts(lines, 4));
        g_counts_at = now;
        g_counts_written = 1;
    }
    pthread_mutex_unlock(&g_found_lock);
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
