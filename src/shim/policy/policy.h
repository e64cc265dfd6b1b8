/* SPDX-License-Identifier: MIT */
/*
 * The policy: the routing decision and the Ensure/Release engine (route.c),
 * and the lifecycle of interpreters, the runtime and threads (lifecycle.c).
 * Uses the registry, the CPython port and the foundation; a mode other than
 * routing is reached through gs_mode_ops, which the entry layer installs
 * (docs/architecture.md).
 */
#ifndef GILSHIM_POLICY_H
#define GILSHIM_POLICY_H

#include "../../../include/gilshim.h"
#include "../../registry/alloc.h"
#include "../../registry/registry.h"
#include "../base/base.h"
#include "../port/cpython.h"
#include <unistd.h>

/* --- a mode other than route, as a strategy (modes/), installed once by
 * the entry layer at load; the engine's general paths call it in that
 * mode, the fast paths never do --- */
struct gs_mode_ops {
    int (*ensure)(const void *caller);
    void (*release)(int oldstate, const void *caller);
    /* an Ensure once the runtime finalizes (finalized: 1 after Py_FinalizeEx,
     * 2 with no initialized runtime and no history of one) */
    void (*late_ensure)(const void *caller, int finalized);
    /* in's exit hook runs; self_counted: callbacks of the ending thread in it */
    void (*interp_ends)(struct gs_interp *in, int self_counted);
};
GS_HIDDEN void gs_set_diagnose_ops(const struct gs_mode_ops *ops);
GS_HIDDEN const struct gs_mode_ops *gs_diagnose_ops_installed(void);

/* What every interposed call asks first, cached in one word once the
 * answer is final (lifecycle.c): the GILSHIM_MODE in force (GS_MODE_OFF
 * when the shim cannot route here), and whether route decisions are
 * logged; -1 until then, when gs_hot_slow finds out. */
#define GS_HOT_DEBUG 0x10
GS_HIDDEN extern _Atomic int gs_hot;
GS_HIDDEN int gs_hot_slow(void);

/* --- routing core (route.c) --- */
GS_HIDDEN int gs_ensure(const void *caller);
GS_HIDDEN void gs_release(int oldstate, const void *caller);
GS_HIDDEN PyThreadState *gs_this_thread_state(void);
GS_HIDDEN int gs_check(void);
GS_HIDDEN PyThreadState *gs_save_thread(void);
GS_HIDDEN void gs_restore_thread(PyThreadState *t);
/* The owner of a thread about to be created by the calling thread. */
GS_HIDDEN struct gs_interp *gs_creator_owner(void);
/* The routing decision (docs/routing.md) for the calling thread,
 * given what it has attached; interp NULL with GS_RULE_MAIN. */
GS_HIDDEN struct gs_route gs_route_for(struct gs_thread *self, PyThreadState *attached);
GS_HIDDEN const char *gs_rule_name(int rule);
/* The message for a PyGILState_Release that cannot be matched. */
GS_HIDDEN void gs_release_mismatch(const char *what, int oldstate, const void *caller);
/* The frame a PyGILState_Release closes, or NULL; reports a missing frame
 * or a state other than its Ensure returned ("...; then"). */
GS_HIDDEN struct gs_frame *gs_release_match(struct gs_thread *self, int oldstate,
                                            const void *caller, const char *then);
/* Whether in is still in CPython's list of interpreters (under the same
 * id): an interpreter whose exit hook was cleared ends unseen. */
GS_HIDDEN int gs_interp_listed(struct gs_interp *in);
/* Entry for the interpreter of an attached tstate (and place its hook). */
GS_HIDDEN struct gs_interp *gs_interp_of(PyThreadState *t, int attached);
GS_HIDDEN struct gs_interp *gs_main_interp(void);
/* Attach the calling thread's row for in; NULL on failure, with the
 * explicit API's error in *err and, if why, the fail-safe's message. */
GS_HIDDEN struct gs_row *gs_row_acquire(struct gs_thread *self, struct gs_interp *in, int *err,
                                        const char **why);

/* --- rows, shared by the fast paths of route.c and api.c --- */
/* What the owner knows of its CPython TSS slot (gs_row.tss_note). */
enum gs_tss_note {
    TSS_UNKNOWN = 0,
    /* <= 3.11: the slot holds this row's tstate. CPython binds a slot
     * only while it is empty and empties it only when the bound state is
     * deleted, so it keeps holding it while the row lives. */
    TSS_HOLDS = 1,
};

/* The outermost Release of a row: detach it, then it goes back to IDLE.
 * Stock destroys the thread state here, and with it any exception the
 * callback left set; a reused one must not carry it over. */
static inline void gs_row_release(struct gs_thread *self, struct gs_row *r)
{
    if (gs_py_exception(r->tstate))
        py.Err_Clear();
    py.SaveThread();
    /* 3.12+: an idle row's state is unbound from the gilstate slot
     * (port/cpython.h), once detached. */
    if (py.gilstate_follows)
        gs_gilstate_unbind(self->tss_slot, r->tstate);
    /* Only now: drop_gil reads the interpreter (<= 3.12) or the state
     * (3.13) after unlocking the GIL (CPython gh-104341), so no one may
     * claim the row before SaveThread returns. Release: the ender's CAS
     * that reads this IDLE acquires, so all of it happens before the
     * delete, on aarch64 too (registry.h). Nothing else follows the
     * call, which cannot be a tail call (docs/performance.md). */
    atomic_store_explicit(&r->state, GS_ROW_IDLE, memory_order_release);
}

/* Delete the thread states exited threads left to in (struct gs_orphan),
 * attached to in; who names the caller in the debug message (lifecycle.c). */
GS_HIDDEN void gs_reap_orphans(struct gs_interp *in, const char *who);
/* Attached to t just now: gs_reap_orphans of t's interpreter, if the
 * shim knows it as alive (a thread leaving a GIL-released region: the
 * library thread it waited for may have exited there). */
GS_HIDDEN void gs_reap_orphans_of(PyThreadState *t);
/* Attach r's state, then gs_reap_orphans of its interpreter. */
GS_HIDDEN void gs_attach_reaping(struct gs_row *r) __attribute__((noinline));

/* The fast paths' attach of a cached row: claim it (IDLE -> BUSY, then its
 * interpreter still ALIVE, seq_cst after the CAS: see the protocol in
 * registry.h), open a frame of the given tag at depth, attach the row's
 * state. NULL, with nothing changed, if the row cannot be claimed. */
static inline __attribute__((always_inline)) struct gs_frame *
gs_row_attach(struct gs_thread *self, struct gs_row *r, size_t depth, uint32_t tag,
              const void *caller, int slot_empty)
{
    int idle = GS_ROW_IDLE;
    /* seq_cst CAS (acquire: it may read the ender's or reaper's IDLE),
     * then a seq_cst load: the order the spin model assumes (registry.h) */
    if (__builtin_expect(!atomic_compare_exchange_strong(&r->state, &idle, GS_ROW_BUSY), 0))
        return NULL;
    if (__builtin_expect(atomic_load(&r->interp->state) != GS_ALIVE, 0)) {
        atomic_store(&r->state, GS_ROW_IDLE);
        return NULL;
    }
    struct gs_frame *f = &self->first_chunk.f[depth];
    f->tag = tag;
    f->tstate = r->tstate;
    f->row = r;
    f->caller = caller;
    self->depth = depth + 1;
    gs_gilstate_bind(self->tss_slot, r->tstate, slot_empty);
    /* threads that exited left states of this interpreter: delete them,
     * once attached (one load, before the call: nothing kept across it) */
    if (__builtin_expect(atomic_load_explicit(&r->interp->orphans, memory_order_relaxed) != NULL, 0))
        gs_attach_reaping(r);
    else
        py.RestoreThread(r->tstate);
    return f;
}

/* cur, read from the thread's attached-state word, is not attached on this
 * thread: on <= 3.11 that word is process-wide and may name another
 * thread's state. A state open in one of the depth frames of this thread
 * is this thread's. */
static inline int gs_attached_elsewhere(struct gs_thread *self, PyThreadState *cur, size_t depth)
{
    return py.thread_id_offset && !(depth && self->first_chunk.f[depth - 1].tstate == cur) &&
           cur != gs_tss_get() && !gs_attached_shared(cur);
}
GS_HIDDEN void gs_fix_stale_tss(struct gs_thread *self);
/* The interposed PyInterpreterState_ThreadHead (lifecycle.c). */
GS_HIDDEN PyThreadState *gs_interp_thread_head(PyInterpreterState *ip, const void *caller);
/* Pop f (the top frame) and undo what its Ensure did. */
GS_HIDDEN void gs_frame_undo(struct gs_thread *self, struct gs_frame *f);
GS_HIDDEN extern GS_TLS struct gs_interp *gs_tl_creator;
/* Rule 4's creating thread, for diagnose mode's report. */
struct gs_creator {
    pid_t tid;
    const void *site;  /* the pthread_create call */
    char name[16];     /* diagnose mode only */
};
GS_HIDDEN extern GS_TLS struct gs_creator gs_tl_creator_info;

/* --- PEP 788 guards (guards.c; docs/pep788.md) --- */
/* gs_interp.guards once the interpreter's end has passed its guards */
#define GS_GUARDS_CLOSED UINTPTR_MAX
/* A guard on in: 0, or -1 once in's end has passed its guards. */
GS_HIDDEN int gs_guard_take(struct gs_interp *in);
GS_HIDDEN void gs_guard_put(struct gs_interp *in);
/* From in's exit hook, attached: wait, GIL released, until in has no
 * guard open, and close it to new ones. */
GS_HIDDEN void gs_guards_drain(struct gs_interp *in);
/* The interpreter an open frame attached (for gilshim_ensure_guarded's). */
GS_HIDDEN struct gs_interp *gs_frame_interp(const struct gs_frame *f);

/* --- lifecycle (lifecycle.c) --- */
/* The generation in which main's exit hook and the runtime's Py_AtExit
 * hook are both registered: while it is current and the runtime is not
 * finalizing, CPython is initialized and stays so until the shim hears. */
GS_HIDDEN extern _Atomic uint64_t gs_hooks_armed;
/* Which fast paths may run (route.c): recording GIL-released regions in
 * route or diagnose mode; nesting in route mode; re-attaching a row also
 * needs the hooks armed in the current generation (so CPython is
 * initialized) and the runtime not finalizing. Whoever changes one of
 * these calls gs_fast_refresh. */
enum { GS_FAST_NEST = 1, GS_FAST_ROW = 2, GS_FAST_TRACK = 4 };
GS_HIDDEN extern _Atomic int gs_fast;
GS_HIDDEN void gs_fast_refresh(void);
/* Set by main's exit hook when Py_FinalizeEx begins, cleared when it ends. */
GS_HIDDEN extern _Atomic int gs_finalizing;
static inline int gs_runtime_finalizing(void)
{
    return atomic_load_explicit(&gs_finalizing, memory_order_acquire);
}
/* The thread that runs Py_FinalizeEx (its tid, noted by main's exit hook;
 * 0 until then, and the process's main thread is taken, where Python's own
 * main finalizes). It alone may attach once the runtime finalizes: CPython
 * serves its re-attach of a state it released (tstate_must_exit), so stock
 * serves a callback from inside its GIL-released calls, such as a library's
 * close() under the last garbage collection. */
GS_HIDDEN extern _Atomic pid_t gs_finalizer_tid;
static inline int gs_is_finalizer(const struct gs_thread *t)
{
    pid_t f = atomic_load_explicit(&gs_finalizer_tid, memory_order_relaxed);
    return t->tid == (f ? f : getpid());
}
/* Called attached to in: make sure in's exit hook is registered. */
GS_HIDDEN void gs_place_exit_hook(struct gs_interp *in);
/* The fail-safe path of PyGILState_Ensure (no error channel). */
GS_HIDDEN void gs_fail_safe(const char *why, const void *caller) __attribute__((noreturn));
GS_HIDDEN void gs_lifecycle_init(void);
/* PyThreadState_Delete as interposed: a row's tstate deleted by someone
 * else (cffi frees the states it kept alive for exited threads) marks the
 * row DEAD first, or is left to the shim if the row is in use. */
GS_HIDDEN void gs_thread_state_delete(PyThreadState *t);
#endif
