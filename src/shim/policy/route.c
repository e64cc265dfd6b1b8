/* SPDX-License-Identifier: MIT */
/*
 * The routing core: what PyGILState_Ensure/Release and the calls around
 * them do once CPython is known (docs/routing.md). Every CPython
 * call goes through py.*, the originals; nothing here calls an interposed
 * name, so the shim never sees itself.
 */
#define _GNU_SOURCE
#include "policy.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Rule 4: set in a new thread before its start routine runs. */
GS_TLS struct gs_interp *gs_tl_creator;
GS_TLS struct gs_creator gs_tl_creator_info;

static inline int hot(void)
{
    int h = atomic_load_explicit(&gs_hot, memory_order_acquire);
    return __builtin_expect(h >= 0, 1) ? h : gs_hot_slow();
}

static inline int active_mode(void) { return hot() & ~GS_HOT_DEBUG; }

static inline int routing(void) { return active_mode() == GS_MODE_ROUTE; }

/* Route mode, or diagnose mode, which needs the same bookkeeping of
 * regions and creators to know each callback's owner. */
static inline int tracking(void) { return active_mode() != GS_MODE_OFF; }

/* The thread's CPython-bound tstate when it is not one of our rows: a
 * GIL-released region CPython knows of but the shim did not see open
 * (it was opened inside libpython, or before the shim was loaded). */
static inline PyThreadState *stock_released(struct gs_thread *self)
{
    PyThreadState *g = gs_tss_get();
    return g && !gs_row_is_mine(self, g) ? g : NULL;
}

/* A row gs_row_acquire added that got no thread state: DEAD at once, so
 * that a sweep waiting for it stops, then gone, so that the thread's next
 * call for in adds a row again instead of finding a dead one. */
static void drop_new_row(struct gs_thread *self, struct gs_row *r)
{
    atomic_store(&r->state, GS_ROW_DEAD);
    gs_row_forget(self, r);
}

/* gs_row_acquire's refusal: the explicit API's error, and what the
 * interposed Ensure's fail-safe says. */
static struct gs_row *refuse(int *err, const char **why, int code, const char *text)
{
    *err = code;
    if (why)
        *why = text;
    return NULL;
}

static struct gs_row *refuse_ended(int *err, const char **why)
{
    return gs_runtime_finalizing()
               ? refuse(err, why, GILSHIM_EFINALIZING, "PyGILState_Ensure while the runtime finalizes")
               : refuse(err, why, GILSHIM_EGONE, "PyGILState_Ensure for an interpreter that has ended");
}

struct gs_row *gs_row_acquire(struct gs_thread *self, struct gs_interp *in, int *err,
                              const char **why)
{
    struct gs_row *r = gs_row_find(self, in);
    if (r) {
        int idle = GS_ROW_IDLE;
        if (!atomic_compare_exchange_strong(&r->state, &idle, GS_ROW_BUSY))
            return refuse_ended(err, why);
    } else {
        /* Born BUSY, so an interpreter end that sweeps now waits for it. */
        if (!(r = gs_row_add(self, in, NULL, GS_ROW_BUSY)))
            return refuse(err, why, GILSHIM_ENOMEM, "out of memory for a thread state's row");
    }
    /* seq_cst after the CAS/publish above: see the protocol in registry.h */
    if (atomic_load(&in->state) != GS_ALIVE || gs_runtime_finalizing()) {
        if (r->tstate)
            atomic_store(&r->state, GS_ROW_IDLE);
        else
            drop_new_row(self, r);
        return refuse_ended(err, why);
    }
    if (!r->tstate) {
        if (!in->hook_registered && !gs_interp_listed(in)) {
            atomic_store(&in->state, GS_DEAD);
            drop_new_row(self, r);
            return refuse(err, why, GILSHIM_EGONE, "PyGILState_Ensure for an interpreter that has ended");
        }
        /* CPython documents PyThreadState_New as callable without the GIL
         * (stock PyGILState_Ensure does exactly this). */
        self->in_setup++;
        PyThreadState *t = gs_fault("PyThreadState_New for a row") ? NULL : py.ThreadState_New(in->ptr);
        self->in_setup--;
        if (!t) {
            drop_new_row(self, r);
            return refuse(err, why, GILSHIM_ENOMEM, "CPython could not create a thread state");
        }
        /* published with release: gs_thread_state_delete reads it from
         * other threads (the row stays BUSY while this runs) */
        __atomic_store_n(&r->tstate, t, __ATOMIC_RELEASE);
        py.RestoreThread(t);
        gs_learn_current(self, t);
        gs_learn_exception(t);
        gs_learn_gilstate_flag(t);
        gs_log(GS_LOG_DEBUG, "new thread state %p for interpreter %lld", (void *)t,
               (long long)in->id);
        if (!in->hook_registered)
            gs_place_exit_hook(in);
        if (atomic_load_explicit(&in->orphans, memory_order_relaxed))
            gs_reap_orphans(in, "an Ensure");
        return r;
    }
    py.RestoreThread(r->tstate);
    if (__builtin_expect(!self->py_current, 0))
        gs_learn_current(self, r->tstate);
    if (atomic_load_explicit(&in->orphans, memory_order_relaxed))
        gs_reap_orphans(in, "an Ensure");
    return r;
}

struct gs_route gs_route_for(struct gs_thread *self, PyThreadState *attached)
{
    /* A binding or creator from a runtime since finalized names nothing:
     * after Py_Initialize again the thread is as new. */
    uint64_t gen = gs_generation();
    if (self && self->bound && self->bound->generation != gen) {
        self->bound = NULL;
        self->fast_row = NULL;
    }
    if (gs_tl_creator && gs_tl_creator->generation != gen) {
        gs_tl_creator = NULL;
        if (self)
            self->fast_row = NULL;
    }
    struct gs_route_in in = {attached, NULL, self ? self->bound : NULL, gs_tl_creator};
    if (!attached && !(in.released = gs_released_top(self)) &&
        !(in.released = gs_readline_released()))
        in.released = stock_released(self);
    return gs_route_decide(&in);
}

const char *gs_rule_name(int rule)
{
    static const char *const names[] = {"none", "attached", "GIL-released region",
                                        "thread binding", "creating thread", "main"};
    return rule >= 0 && rule <= GS_RULE_MAIN ? names[rule] : "?";
}

/* A runtime was initialized once: an Ensure with none now comes after
 * Py_FinalizeEx, not before Py_Initialize. Only a message depends on it:
 * what an Ensure does with no runtime comes from CPython's state. */
static _Atomic int g_runtime_seen;

/* An Ensure with no initialized runtime and nothing attached: stock
 * dereferences the absent interpreter (or, 3.15, hangs). Without history
 * it may be early, so wait for Py_Initialize, bounded by GILSHIM_DRAIN_MS;
 * after Py_FinalizeEx, or once the wait is over, the fail-safe policy. */
static void no_runtime(const void *caller)
{
    if (!atomic_load_explicit(&g_runtime_seen, memory_order_relaxed)) {
        for (long waited = 0; waited < gs_config()->drain_ms; waited++) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            if (py.IsInitialized())
                return;
        }
    }
    gs_fail_safe(atomic_load_explicit(&g_runtime_seen, memory_order_relaxed)
                     ? "PyGILState_Ensure after Py_FinalizeEx"
                     : "PyGILState_Ensure with no initialized runtime (before Py_Initialize "
                       "completed, or after Py_FinalizeEx)",
                 caller);
}

/* While the runtime finalizes, the thread that finalizes it calls back
 * from inside a call that released the GIL. */
static int finalizer_released(void)
{
    struct gs_thread *t = gs_thread_peek();
    return t && gs_released_top(t) && py.IsFinalizing() && gs_is_finalizer(t);
}

/* Between main's exit hook and the runtime's finalizing mark, where CPython
 * still runs Python (port fact python_after_atexit): it ends the
 * sub-interpreters left, with their atexit functions, and 3.15 joins the
 * threads an atexit function started in a further round. */
static int python_after_atexit_now(void)
{
    return py.port->python_after_atexit && py.IsInitialized() && !py.IsFinalizing();
}

/* In that window, a callback a sub-interpreter owns, on a thread with
 * nothing of CPython's bound to it, which stock serves in main. Main's own
 * keep the fail-safe policy: CPython would stop such a thread inside its
 * Ensure once the runtime finalizes, out of the policy's reach. Elsewhere
 * a refusal here is where stock stops the thread too. */
static int stock_serves_late(struct gs_thread *self, const struct gs_interp *in)
{
    return in != gs_main_interp() && python_after_atexit_now() && !stock_released(self);
}

/* In that window, a thread re-attaching a state CPython bound to it (a
 * Python thread inside a call that released the GIL, not one of the
 * shim's rows), which stock re-attaches. */
static int stock_reattaches_late(struct gs_thread *self, PyThreadState *t)
{
    return !gs_row_is_mine(self, t) && python_after_atexit_now();
}

/* Out of line, so that the fast paths below stay lean. */
__attribute__((noinline)) static int ensure_general(const void *caller)
{
    int mode = active_mode();
    if (mode != GS_MODE_ROUTE) {
        if (mode == GS_MODE_DIAGNOSE && gs_diagnose_ops_installed()) {
            int seen = atomic_load_explicit(&g_runtime_seen, memory_order_relaxed);
            if (py.IsInitialized()) {
                /* From main's exit hook on, stock still serves callbacks
                 * until Py_FinalizeEx clears "initialized". Framed all the
                 * same: Release looks for a frame while initialized. */
                if (gs_runtime_finalizing() && !gs_py_attached())
                    gs_diagnose_ops_installed()->late_ensure(caller, 0);
                if (!seen)
                    atomic_store_explicit(&g_runtime_seen, 1, memory_order_relaxed);
                return gs_diagnose_ops_installed()->ensure(caller);
            }
            /* attached: a nested call from code Py_FinalizeEx runs */
            if (!gs_py_attached())
                gs_diagnose_ops_installed()->late_ensure(caller, seen ? 1 : 2);
        }
        return ORIGINAL(GILState_Ensure, "PyGILState_Ensure")();
    }
    /* Py_FinalizeEx clears "initialized" before it runs finalizers and
     * clears modules: a thread attached then is still nesting, and the
     * finalizing thread inside a GIL-released call re-attaches (rule 2). */
    if (__builtin_expect(!py.IsInitialized(), 0) && !gs_py_attached() && !finalizer_released())
        no_runtime(caller);
    if (__builtin_expect(!atomic_load_explicit(&g_runtime_seen, memory_order_relaxed), 0))
        atomic_store_explicit(&g_runtime_seen, 1, memory_order_relaxed);
    struct gs_thread *self = gs_thread_self();
    if (!self)
        gs_fail_safe("out of memory for the thread record", caller);
    if (__builtin_expect(atomic_load_explicit(&self->stale_tss, memory_order_relaxed) != NULL, 0))
        gs_fix_stale_tss(self);
    PyThreadState *att = gs_py_attached();
    if (!self->py_current)
        gs_learn_current(self, att);
    gs_learn_tss_slot(self);
    struct gs_frame *f = gs_frame_push(self);
    if (!f)
        gs_fail_safe("out of memory for an Ensure frame", caller);
    f->caller = caller;
    if (__builtin_expect(self->in_setup && !att, 0)) {
        /* Re-entered from the PyThreadState_New below, whose allocation
         * runs tracemalloc's hook (python -X tracemalloc): the row being
         * made is BUSY and has no state yet. Do what stock does then, as
         * stock's own Ensure is re-entered there too (CPython gh-96071). */
        f->kind = GS_FRAME_STOCK;
        f->returned = py.GILState_Ensure();
        return f->returned;
    }
    struct gs_route route = gs_route_for(self, att);
    if (route.rule == GS_RULE_ATTACHED) {
        f->kind = GS_FRAME_NESTED;
        f->tstate = att;
        f->returned = GS_PyGILState_LOCKED;
        return GS_PyGILState_LOCKED;
    }
    f->returned = GS_PyGILState_UNLOCKED;
    if (route.rule == GS_RULE_RELEASED) {
        if ((gs_runtime_finalizing() || py.IsFinalizing()) && !gs_is_finalizer(self) &&
            !stock_reattaches_late(self, route.tstate)) {
            gs_frame_pop(self);
            gs_fail_safe("PyGILState_Ensure while the runtime finalizes", caller);
        }
        py.RestoreThread(route.tstate);
        f->kind = GS_FRAME_REATTACH;
        f->tstate = route.tstate;
        return GS_PyGILState_UNLOCKED;
    }
    int err = 0;
    const char *why = "out of memory for the main interpreter's entry";
    /* not the fast path's guess for an Ensure re-entered while its row is made */
    self->fast_row = NULL;
    struct gs_interp *in = route.interp ? route.interp : gs_main_interp();
    struct gs_row *r = in ? gs_row_acquire(self, in, &err, &why) : NULL;
    if (!r && err == GILSHIM_EFINALIZING && stock_serves_late(self, in)) {
        /* What stock does: a thread state of main's for this call only.
         * No row: every cached state is gone already, and a sub-interpreter
         * left to Py_FinalizeEx is ended from the head of its list. */
        gs_log(GS_LOG_DEBUG, "Ensure for interpreter %lld after main's atexit functions, "
               "before the runtime finalizes: served as stock serves it, in the main interpreter",
               (long long)in->id);
        f->kind = GS_FRAME_STOCK;
        f->returned = py.GILState_Ensure();
        return f->returned;
    }
    if (!r) {
        gs_frame_pop(self);
        gs_fail_safe(why, caller);
    }
    f->kind = GS_FRAME_ROW;
    f->row = r;
    f->tstate = r->tstate;
    self->fast_row = r;  /* rules 3-5 picked it: next time, take it at once */
    if (__builtin_expect(hot() & GS_HOT_DEBUG, 0)) {
        char where[256];
        char extra[768];
        int k = snprintf(extra, sizeof extra, "\"interpreter\":%lld,\"rule\":%d,",
                         (long long)in->id, route.rule);
        gs_json_site("site", caller, extra + k, sizeof extra - (size_t)k);
        gs_logx(GS_LOG_DEBUG, "route", extra, "Ensure at %s -> interpreter %lld (rule %d: %s)",
                gs_describe_addr(caller, where, sizeof where), (long long)in->id, route.rule,
                gs_rule_name(route.rule));
    }
    return GS_PyGILState_UNLOCKED;
}

void gs_release_mismatch(const char *what, int oldstate, const void *caller)
{
    char where[256], extra[512];
    gs_logx(GS_LOG_WARN, "release_mismatch", gs_json_site("site", caller, extra, sizeof extra),
            "PyGILState_Release(%s) at %s: %s; doing what stock CPython does",
            oldstate == GS_PyGILState_LOCKED ? "LOCKED" : "UNLOCKED",
            gs_describe_addr(caller, where, sizeof where), what);
}

static int is_pin(const struct gs_frame *f)
{
    return f->kind == GS_FRAME_NESTED && f->returned == GS_PyGILState_LOCKED && !f->explicit_api;
}

/* A Release given UNLOCKED while the innermost open Ensures only nested
 * (returned LOCKED) is the Release of the Ensure under them, if that one
 * returned UNLOCKED. Stock CPython only counts: it detaches there and the
 * nested Ensures stay counted, which is how cffi 2.1 pins a foreign
 * thread's state (thread_canary_register: a nested PyGILState_Ensure it
 * never releases, where it did gilstate_counter++ before). Those Ensures
 * acquired nothing: drop them, and that Ensure is the match. */
static struct gs_frame *drop_pins(struct gs_thread *self, struct gs_frame *f)
{
    size_t i = self->depth - 1;
    struct gs_frame *u;
    do
        u = i ? gs_frame_at(self, --i) : NULL;
    while (u && is_pin(u));
    if (!u || u->explicit_api || u->returned != GS_PyGILState_UNLOCKED)
        return f;
    while ((f = gs_frame_top(self)) != u) {
        if (active_mode() == GS_MODE_DIAGNOSE && f->counted)
            atomic_fetch_sub(&f->counted->in_flight, 1);
        gs_frame_drop(self, f);
    }
    return u;
}

struct gs_frame *gs_release_match(struct gs_thread *self, int oldstate, const void *caller,
                                  const char *then)
{
    struct gs_frame *f = gs_frame_top(self);
    PyThreadState *att;
    if (!f && (att = gs_py_attached()) && att == gs_tss_get() && py.port->gilstate_counter_offset &&
        *(int *)((char *)att + py.port->gilstate_counter_offset) > 1)
        /* No Ensure open, attached to the thread's own state, whose
         * gilstate_counter is above 1: an Ensure made by hand (cffi <= 2.0's
         * gil_ensure raises the counter and attaches the state with
         * PyEval_RestoreThread). Stock's Release only counts it down, and
         * detaches for UNLOCKED: nothing to report. */
        return NULL;
    if (!f || f->explicit_api) {
        gs_release_mismatch(f ? "the innermost open Ensure on this thread is a gilshim_ensure token"
                              : "no PyGILState_Ensure is open on this thread",
                            oldstate, caller);
        return NULL;
    }
    if (oldstate == GS_PyGILState_UNLOCKED && is_pin(f))
        f = drop_pins(self, f);
    if (oldstate != f->returned) {
        char where[256], extra[512];
        gs_logx(GS_LOG_WARN, "release_mismatch", gs_json_site("site", caller, extra, sizeof extra),
                "PyGILState_Release at %s: given %s, but the matching Ensure returned %s; %s",
                gs_describe_addr(caller, where, sizeof where),
                oldstate == GS_PyGILState_LOCKED ? "LOCKED" : "UNLOCKED",
                f->returned == GS_PyGILState_LOCKED ? "LOCKED" : "UNLOCKED", then);
    }
    return f;
}

/* Undo a frame: the shared tail of PyGILState_Release and gilshim_release. */
void gs_frame_undo(struct gs_thread *self, struct gs_frame *f)
{
    int kind = f->kind, returned = f->returned;
    PyThreadState *prev = f->prev, *t = f->tstate;
    struct gs_row *row = f->row;
    gs_frame_pop(self);
    switch (kind) {
    case GS_FRAME_STOCK:
        py.GILState_Release(returned);
        break;
    case GS_FRAME_REATTACH:
        py.SaveThread();
        break;
    case GS_FRAME_ROW:
    case GS_FRAME_SWITCH:
        if (row)
            gs_row_release(self, row);
        else  /* SWITCH back to a state a lower frame holds: it keeps the row */
            py.SaveThread();
        /* detached, and before anything else is attached here */
        if (__builtin_expect(!self->py_current, 0))
            gs_learn_detached(self, t);
        if (kind == GS_FRAME_SWITCH)
            py.RestoreThread(prev);
        break;
    default:
        break;
    }
}

__attribute__((noinline)) static void release_general(int oldstate, const void *caller)
{
    int mode = active_mode();
    if (mode == GS_MODE_DIAGNOSE && py.IsInitialized() && gs_diagnose_ops_installed()) {
        gs_diagnose_ops_installed()->release(oldstate, caller);
        return;
    }
    if (mode != GS_MODE_ROUTE) {
        ORIGINAL(GILState_Release, "PyGILState_Release")(oldstate);
        return;
    }
    struct gs_thread *self = gs_thread_peek();
    PyThreadState *att;
    if (self && !self->depth && (att = gs_py_attached()) && att != gs_tss_get()) {
        /* No Ensure open, and attached to a state CPython has not bound to
         * this thread: one gs_this_thread_state named and the caller
         * attached itself. Stock <= 3.11 aborts here ("This thread state
         * must be current when releasing"); 3.12+ detaches it if the
         * Ensure said UNLOCKED, and so does this. */
        if (oldstate == GS_PyGILState_UNLOCKED)
            gs_save_thread();
        return;
    }
    struct gs_frame *f = gs_release_match(self, oldstate, caller,
                                          "releasing what that Ensure acquired");
    if (!f) {
        py.GILState_Release(oldstate);
        return;
    }
    if (f->kind == GS_FRAME_STOCK) {
        gs_frame_undo(self, f);
        return;
    }
    /* f->tstate is this thread's own, so the attached state (process-wide
     * on <= 3.11) is f->tstate only if this thread has it attached. */
    if (f->kind != GS_FRAME_NESTED && py.UncheckedGet() != f->tstate) {
        gs_release_mismatch("the thread state the matching Ensure attached is not attached any more",
                         oldstate, caller);
        gs_frame_pop(self);
        py.GILState_Release(oldstate);
        return;
    }
    gs_frame_undo(self, f);
}

/*
 * The fast paths. Most calls are one of two cases, and they are written out
 * here so that they cost little more than the CPython calls they make
 * (make bench): a thread already attached nests; a thread with nothing
 * attached and no GIL-released region re-attaches the cached row that
 * rules 3-5 pick for it. Anything else, or any doubt, takes the general
 * path, which decides the same way with every case spelled out.
 */

/* The row fast path's tail: claim r and attach it. Every call before the
 * last is a tail call, so that the common case saves no registers. */
static inline __attribute__((always_inline)) int ensure_row(struct gs_thread *self,
                                                            struct gs_row *r, size_t depth,
                                                            const void *caller, int slot_empty)
{
    if (__builtin_expect(!gs_row_attach(self, r, depth,
                                        gs_frame_tag(GS_FRAME_ROW, GS_PyGILState_UNLOCKED, 0),
                                        caller, slot_empty),
                         0))
        return ensure_general(caller);
    return GS_PyGILState_UNLOCKED;
}

/* The row fast path when CPython's TSS slot cannot be read in memory yet,
 * or names another state there: read it with pthread_getspecific. On 3.12+
 * it is empty while the row is idle, unless the thread has bound a state
 * of its own there (rule 2 then, in the general path). */
__attribute__((noinline)) static int ensure_row_tss(const void *caller)
{
    PyThreadState *bound = gs_tss_get();
    /* read again rather than kept across the call: nothing to save */
    struct gs_thread *self = gs_tl_self;
    struct gs_row *r = self->fast_row;
    if (!self->tss_slot)
        gs_learn_tss_slot(self);
    else if (!bound && *self->tss_slot)
        /* a value glibc keeps for a deleted key: drop it, so that the read
         * in memory (ensure_detached) sees what pthread_getspecific sees */
        gs_tss_write(NULL);
    if (bound && bound != r->tstate)
        return ensure_general(caller);
    if (bound && !py.port->gilstate_follows)
        r->tss_note = TSS_HOLDS;
    return ensure_row(self, r, self->depth, caller, 0);
}

/* Rules 1-2 do not apply (nothing attached, no released region the shim
 * saw or CPython has bound); rules 3-5 gave fast_row last time and their
 * inputs have not changed since. */
static inline __attribute__((always_inline)) int ensure_detached(struct gs_thread *self,
                                                                 size_t depth, int fast,
                                                                 const void *caller)
{
    struct gs_row *r = self->fast_row;
    if (__builtin_expect(!(fast & GS_FAST_ROW) || !r ||
                         self->nreleased /* overflow implies a full array */, 0))
        return ensure_general(caller);
    if (r->tss_note != TSS_HOLDS) {
        /* the slot read in memory, empty while the row is idle on 3.12+
         * (port/cpython.h); any doubt, and ensure_row_tss reads it with
         * pthread_getspecific */
        void *const *slot = self->tss_slot;
        if (!slot || *slot)
            return ensure_row_tss(caller);
    }
    /* empty, or (<= 3.11, TSS_HOLDS) nothing to bind */
    return ensure_row(self, r, depth, caller, 1);
}

/* Something is attached: here (nest) or, on <= 3.11, where the
 * process-wide word may name another thread's state. */
__attribute__((noinline)) static int ensure_attached(struct gs_thread *self, PyThreadState *cur,
                                                     size_t depth, int fast, const void *caller)
{
    if (gs_attached_elsewhere(self, cur, depth))
        return ensure_detached(self, depth, fast, caller);
    struct gs_frame *f = &self->first_chunk.f[depth];
    f->tag = gs_frame_tag(GS_FRAME_NESTED, GS_PyGILState_LOCKED, 0);
    f->tstate = cur;
    f->caller = caller;
    self->depth = depth + 1;
    return GS_PyGILState_LOCKED;
}

/* The fast path while this thread does not know CPython's word yet. */
__attribute__((noinline)) static int ensure_calling(struct gs_thread *self, size_t depth, int fast,
                                                    const void *caller)
{
    PyThreadState *cur = py.UncheckedGet();
    if (cur)
        return ensure_attached(self, cur, depth, fast, caller);
    return ensure_detached(self, depth, fast, caller);
}

int gs_ensure(const void *caller)
{
    struct gs_thread *self = gs_tl_self;
    size_t depth;
    int fast = atomic_load_explicit(&gs_fast, memory_order_relaxed);
    if (__builtin_expect(!(fast & GS_FAST_NEST) || !self ||
                         (depth = self->depth) >= GS_FRAME_CHUNK ||
                         atomic_load_explicit(&self->stale_tss, memory_order_relaxed), 0))
        return ensure_general(caller);
    /* Frames are written member by member, not zeroed: see the note on
     * struct gs_frame. */
    if (__builtin_expect(!self->py_current, 0))
        return ensure_calling(self, depth, fast, caller);
    PyThreadState *cur = gs_py_current(self->py_current);
    if (cur)
        return ensure_attached(self, cur, depth, fast, caller);
    return ensure_detached(self, depth, fast, caller);
}

void gs_release(int oldstate, const void *caller)
{
    struct gs_thread *self = gs_tl_self;
    size_t top;
    int fast = atomic_load_explicit(&gs_fast, memory_order_relaxed);
    /* depth 0 wraps to SIZE_MAX: the general path reports it */
    if (__builtin_expect((fast & GS_FAST_NEST) && self && (top = self->depth - 1) < GS_FRAME_CHUNK,
                         1)) {
        struct gs_frame *f = &self->first_chunk.f[top];
        /* f->tstate is this thread's own: attached (process-wide on
         * <= 3.11) means attached by this thread. */
        PyThreadState *t = f->tstate;
        if (f->tag == gs_frame_tag(GS_FRAME_ROW, GS_PyGILState_UNLOCKED, 0) &&
            oldstate == GS_PyGILState_UNLOCKED && self->py_current &&
            gs_py_current(self->py_current) == t) {
            self->depth = top;
            gs_row_release(self, f->row);
            return;
        }
        if (f->tag == gs_frame_tag(GS_FRAME_NESTED, GS_PyGILState_LOCKED, 0) &&
            oldstate == GS_PyGILState_LOCKED) {
            self->depth = top;
            return;
        }
    }
    release_general(oldstate, caller);
}

PyThreadState *gs_this_thread_state(void)
{
    if (!routing() || !py.IsInitialized())
        return ORIGINAL(GILState_GetThisThreadState, "PyGILState_GetThisThreadState")();
    PyThreadState *att = gs_py_attached();
    if (att)
        return att;
    struct gs_thread *self = gs_thread_peek();
    if (self && atomic_load_explicit(&self->stale_tss, memory_order_relaxed))
        gs_fix_stale_tss(self);
    /* Inside a GIL-released region with no Ensure open, the state that
     * region will re-attach: what 3.12+ answers too (its gilstate follows
     * the last attached state), where <= 3.11 names the thread's first
     * state, main's for a sub-interpreter's own thread. Code that attaches
     * the answer itself (cffi's gil_ensure) then runs in the right place;
     * release_general takes the matching PyGILState_Release. */
    PyThreadState *rel;
    if (self && !self->depth && (rel = gs_released_top(self)) && !gs_row_is_mine(self, rel))
        return rel;
    PyThreadState *g = py.GILState_GetThisThreadState();
    /* An idle row is the shim's cache, not a state stock CPython would
     * still have: stock deleted it at the outermost Release. */
    return g && gs_row_is_mine(self, g) ? NULL : g;
}

int gs_check(void)
{
    if (!routing() || !py.IsInitialized())
        return ORIGINAL(GILState_Check, "PyGILState_Check")();
    return gs_py_attached() != NULL;
}

/* A thread detaching through the shim: look for CPython's attached-state
 * word on either side (resolve.c), until this thread knows it. */
__attribute__((noinline)) static PyThreadState *save_thread_learning(struct gs_thread *self)
{
    gs_learn_current(self, py.UncheckedGet());
    PyThreadState *t = py.SaveThread();
    gs_learn_detached(self, t);
    return t;
}

__attribute__((noinline)) static PyThreadState *save_general(void)
{
    struct gs_thread *self;
    PyThreadState *t;
    if (!tracking())
        return ORIGINAL(SaveThread, "PyEval_SaveThread")();
    if (!(self = gs_thread_self())) {
        gs_log(GS_LOG_WARN, "out of memory for the thread record; PyEval_SaveThread goes on "
               "untracked (CPython's own binding still names the state it detaches)");
        return ORIGINAL(SaveThread, "PyEval_SaveThread")();
    }
    t = __builtin_expect(self->py_current != NULL, 1) ? py.SaveThread() : save_thread_learning(self);
    if (t)
        gs_released_push(self, t);
    return t;
}

/* Every blocking call in Python comes through here and the next one: the
 * common case of each is written out, the rest is the general path. */
PyThreadState *gs_save_thread(void)
{
    struct gs_thread *self = gs_tl_self;
    PyThreadState *t;
    /* The caller is attached (CPython aborts otherwise): the word names its
     * state, even where it is process-wide. Recorded first, so that
     * CPython's call is the last. */
    if (__builtin_expect(!(atomic_load_explicit(&gs_fast, memory_order_relaxed) & GS_FAST_TRACK) ||
                         !self || !self->py_current || !(t = gs_py_current(self->py_current)), 0))
        return save_general();
    gs_released_push(self, t);
    return py.SaveThread();
}

/* The rare work around an attach: a stale TSS slot to clear first, or
 * exit hooks to place once attached. */
__attribute__((noinline)) static void restore_slow(struct gs_thread *self, PyThreadState *t)
{
    if (atomic_load_explicit(&self->stale_tss, memory_order_relaxed))
        gs_fix_stale_tss(self);
    py.RestoreThread(t);
    if (atomic_load_explicit(&gs_orphans_now, memory_order_relaxed))
        gs_reap_orphans_of(t);
    if (self->pending_hook) {
        /* Attached again: place the hooks of interpreters it learnt of
         * while detached (see gs_creator_owner). */
        struct gs_interp *in = self->pending_hook;
        self->pending_hook = NULL;
        if (!in->hook_registered && in->ptr == py.ThreadState_GetInterpreter(t))
            gs_place_exit_hook(in);
    }
}

/* The attach itself, once the thread's regions are up to date. */
static inline __attribute__((always_inline)) void restore_attach(struct gs_thread *self,
                                                                 PyThreadState *t)
{
    if (__builtin_expect(atomic_load_explicit(&self->stale_tss, memory_order_relaxed) ||
                         self->pending_hook ||
                         atomic_load_explicit(&gs_orphans_now, memory_order_relaxed), 0))
        restore_slow(self, t);
    else
        py.RestoreThread(t);
}

__attribute__((noinline)) static void restore_general(PyThreadState *t)
{
    struct gs_thread *self;
    if (tracking() && (self = gs_thread_peek())) {
        gs_released_restore(self, t);
        restore_attach(self, t);
        return;
    }
    ORIGINAL(RestoreThread, "PyEval_RestoreThread")(t);
}

void gs_restore_thread(PyThreadState *t)
{
    struct gs_thread *self = gs_tl_self;
    /* the innermost region closes (or restore_general sorts it out) */
    if (__builtin_expect(!(atomic_load_explicit(&gs_fast, memory_order_relaxed) & GS_FAST_TRACK) ||
                         !self || !gs_released_close_innermost(self, t), 0)) {
        restore_general(t);
        return;
    }
    restore_attach(self, t);
}

struct gs_interp *gs_creator_owner(void)
{
    if (!tracking() || !py.IsInitialized())
        return NULL;
    struct gs_thread *self = gs_thread_self();
    struct gs_route route = gs_route_for(self, gs_py_attached());
    switch (route.rule) {
    case GS_RULE_ATTACHED: {
        /* A thread made from main inherits nothing rule 5 would not give
         * it: leave it unwrapped. */
        struct gs_interp *in = gs_interp_of(route.tstate, 1);
        return in == gs_main_interp() ? NULL : in;
    }
    case GS_RULE_RELEASED: {
        struct gs_interp *in = gs_interp_of(route.tstate, 0);
        if (in && !in->hook_registered && self)
            self->pending_hook = in;
        return in;
    }
    default:
        return route.interp;  /* NULL for main: nothing to inherit */
    }
}
