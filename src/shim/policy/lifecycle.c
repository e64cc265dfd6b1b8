/* SPDX-License-Identifier: MIT */
/*
 * Interpreter ends, runtime finalization, thread exit, fork.
 *
 * CPython frees thread states when an interpreter ends; the shim caches
 * them. So it must hear of each end first, but not before CPython stops
 * running Python there: an atexit function may still wait for a foreign
 * thread's callback. Each interpreter gets one Python-level atexit entry;
 * CPython calls it in its turn (last in, first out), which only notes that
 * the end has begun, and releases it with the whole table once every
 * atexit function has run (atexit_callfuncs, then atexit_cleanup, on
 * 3.9-3.15). That release, seen through a capsule the entry holds, sweeps
 * the interpreter's rows: after its atexit functions, threading's shutdown
 * and pending calls (which come first), before Py_EndInterpreter's "not the
 * last thread" check and Py_FinalizeEx's deletion of other threads' states.
 * Py_AtExit (runs last in Py_FinalizeEx) closes the runtime generation.
 */
#define _GNU_SOURCE
#include "policy.h"
#include "../redirect/redirect.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic int gs_finalizing;
_Atomic pid_t gs_finalizer_tid;
static _Atomic uint64_t g_atexit_generation;
static _Atomic uint64_t g_atexit_ok;  /* generation whose runtime_exit is registered */
_Atomic uint64_t gs_hooks_armed;


void gs_fix_stale_tss(struct gs_thread *self)
{
    atomic_store(&self->stale_tss, NULL);
    if (atomic_load(&gs_tss_key_state) == 1) {
        void *v = gs_tss_read();
        for (size_t i = 0; v && i < self->nrows; i++)
            if (atomic_load(&self->rows[i]->state) == GS_ROW_DEAD && self->rows[i]->tstate == v) {
                gs_tss_write(NULL);
                break;
            }
    }
    gs_row_prune(self);
}

/* --- diagnose mode's strategy, installed by the entry layer at load
 * (policy.h): the policy reports through it, never naming the mode --- */
static const struct gs_mode_ops *_Atomic g_diagnose;

void gs_set_diagnose_ops(const struct gs_mode_ops *ops) { atomic_store(&g_diagnose, ops); }

const struct gs_mode_ops *gs_diagnose_ops_installed(void) { return atomic_load(&g_diagnose); }

/* --- the interpreters the shim knows, and which fast paths may run --- */

static _Atomic(struct gs_interp *) g_main;

_Atomic int gs_hot = -1;

__attribute__((noinline)) int gs_hot_slow(void)
{
    int s = gs_py_state();
    if (s == GS_PY_UNKNOWN && (s = gs_py_resolve()) == GS_PY_PRESENT)
        gs_lifecycle_init();
    const struct gs_config *c = gs_config();
    int hot = (s == GS_PY_PRESENT ? c->mode : GS_MODE_OFF) |
              (c->log_level >= GS_LOG_DEBUG ? GS_HOT_DEBUG : 0);
    /* Not final while CPython is unresolved or the configuration is still
     * being read (a re-entrant call sees the defaults). */
    if (s != GS_PY_UNKNOWN && gs_config_final()) {
        atomic_store_explicit(&gs_hot, hot, memory_order_release);
        gs_fast_refresh();
    }
    return hot;
}

/* gs_fast: see policy.h. Its inputs change a handful of times in a process;
 * each change refreshes it, one refresh at a time, so the last refresh
 * has seen every change. */
_Atomic int gs_fast;

void gs_fast_refresh(void)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    int hot = atomic_load(&gs_hot);
    int track = hot >= 0 && (hot & ~GS_HOT_DEBUG) != GS_MODE_OFF;
    int route = hot == GS_MODE_ROUTE;
    int rows = route && !gs_runtime_finalizing() && atomic_load(&gs_hooks_armed) == gs_generation();
    atomic_store(&gs_fast, (track ? GS_FAST_TRACK : 0) | (route ? GS_FAST_NEST : 0) |
                               (rows ? GS_FAST_ROW : 0));
    pthread_mutex_unlock(&lock);
}

struct gs_interp *gs_main_interp(void)
{
    struct gs_interp *e = atomic_load_explicit(&g_main, memory_order_acquire);
    if (__builtin_expect(e && e->generation == gs_generation(), 1))
        return e;
    PyInterpreterState *ip = py.InterpreterState_Main();
    if (!ip)
        return NULL;
    e = gs_interp_intern(ip, py.InterpreterState_GetID(ip));
    atomic_store_explicit(&g_main, e, memory_order_release);
    return e;
}

struct gs_interp *gs_interp_of(PyThreadState *t, int attached)
{
    PyInterpreterState *ip = py.ThreadState_GetInterpreter(t);
    int64_t id = py.InterpreterState_GetID(ip);
    struct gs_interp *in = gs_interp_intern(ip, id);
    if (!in)
        gs_log(GS_LOG_WARN, "out of memory for the entry of interpreter %lld", (long long)id);
    else if (attached && !in->hook_registered)
        gs_place_exit_hook(in);
    return in;
}

/* An entry whose exit hook is not in place yet may describe an interpreter
 * that has ended since (it was learnt from a creating thread that was not
 * attached). Check CPython's own list before the first use. */
int gs_interp_listed(struct gs_interp *in)
{
    for (PyInterpreterState *ip = py.InterpreterState_Head(); ip; ip = py.InterpreterState_Next(ip))
        if (ip == in->ptr)
            return py.InterpreterState_GetID(ip) == in->id;
    return 0;
}

/* --- thread states deleted by others ---
 * A keep-alive written for stock CPython can end up holding a row's state:
 * cffi's gil_ensure (src/c/misc_thread_common.h) pins the state
 * PyGILState_Ensure gave a foreign thread and, once that thread has
 * exited, frees it from whichever thread next runs a callback. That races
 * with the exiting thread's own reaper; whoever marks the row first
 * deletes the state, and the other leaves it alone. */

struct deleted {
    PyThreadState *t;
    int found, ours;  /* a row holds t; the row was idle and is now DEAD */
};

static int find_deleted(struct gs_thread *owner, struct gs_row *r, void *arg)
{
    struct deleted *d = arg;
    /* DEAD rows are the shim's, deleted or being deleted under the GIL,
     * and a row still being filled in holds NULL or a state of its own. */
    int idle = GS_ROW_IDLE;
    if (atomic_load(&r->state) == GS_ROW_DEAD || __atomic_load_n(&r->tstate, __ATOMIC_ACQUIRE) != d->t)
        return 0;
    d->found = 1;
    if (atomic_compare_exchange_strong(&r->state, &idle, GS_ROW_DEAD)) {
        d->ours = 1;
        atomic_store(&owner->stale_tss, d->t);
    } else {
        /* Its owner is reaping it. The caller has cleared it, as CPython
         * requires before a delete: the reaper must not clear it again
         * (it reads the mailbox), and that clear may have undone the
         * reaper's binding of it. */
        atomic_store(&owner->stale_tss, d->t);
        gs_gilstate_rebind_foreign(owner->tss_slot, d->t);
    }
    return 1;
}

void gs_thread_state_delete(PyThreadState *t)
{
    void (*real)(PyThreadState *) = ORIGINAL(ThreadState_Delete, "PyThreadState_Delete");
    struct gs_interp *in;
    if (!t || (!gs_row_count() && !gs_orphan_count()) || gs_py_state() != GS_PY_PRESENT ||
        !(in = gs_interp_find_ptr(py.ThreadState_GetInterpreter(t)))) {
        real(t);
        return;
    }
    struct deleted d = {.t = t};
    gs_rows_of_interp(in, find_deleted, &d);
    if (d.found && !d.ours) {
        /* Its owner is attached to it, or reaping it right now: if that
         * reaper has left it as an orphan already, the mailbox came too
         * late for it, and the entry says so instead. */
        gs_orphan_mark_cleared(in, t);
        gs_log(GS_LOG_DEBUG, "PyThreadState_Delete(%p): a cached thread state in use by "
               "its thread; gilshim deletes it when that thread is done", (void *)t);
        return;
    }
    /* Its exited owner may have left it as an orphan: the row goes DEAD
     * only after the push, so one of the two walks sees it. */
    if (!d.found && gs_orphan_take(in, t) == 2) {
        gs_log(GS_LOG_DEBUG, "PyThreadState_Delete(%p): a thread state of an exited thread "
               "that gilshim is deleting right now", (void *)t);
        return;
    }
    real(t);
}

/* --- thread states of exited threads (struct gs_orphan) ---
 * Called holding in's GIL, attached with a state of in: what
 * PyThreadState_Clear asks (3.13+ asserts the interpreter), and what the
 * finalizers it runs need. gs_delete_foreign_tstate keeps the caller's
 * CPython TSS slot: 3.12+ clears the calling thread's slot when the state
 * deleted is still bound, which a row's state is not once released. */
void gs_reap_orphans(struct gs_interp *in, const char *who)
{
    size_t n = 0;
    PyThreadState *t;
    int cleared;
    while ((t = gs_orphan_claim(in, &cleared))) {
        /* CPython itself may have taken it up: 3.9-3.12 end a sub-
         * interpreter from the state at the head of its list (where
         * _xxsubinterpreters' destroy() or the last id's release does not
         * reach the shim's PyInterpreterState_ThreadHead), and it is then
         * current here, in this end's sweep. It is CPython's again. */
        if (t != py.UncheckedGet()) {
            gs_delete_foreign_tstate(t, cleared);
            n++;
        }
        gs_orphan_done(in, t);
    }
    if (n)
        gs_log(GS_LOG_DEBUG, "%s: %zu thread state(s) of exited threads deleted in interpreter %lld",
               who, n, (long long)in->id);
}

/* The orphans of t's interpreter, the caller attached to t. */
static void reap_orphans_of(PyThreadState *t, const char *who)
{
    PyInterpreterState *ip = py.ThreadState_GetInterpreter(t);
    struct gs_interp *in = gs_interp_find_ptr(ip);
    if (in && atomic_load(&in->state) == GS_ALIVE && in->id == py.InterpreterState_GetID(ip) &&
        atomic_load_explicit(&in->orphans, memory_order_relaxed))
        gs_reap_orphans(in, who);
}

void gs_reap_orphans_of(PyThreadState *t)
{
    reap_orphans_of(t, "PyEval_RestoreThread");
}

void gs_attach_reaping(struct gs_row *r)
{
    py.RestoreThread(r->tstate);
    gs_reap_orphans(r->interp, "an Ensure");
}

/* --- the sweep of one ending interpreter --- */

struct sweep {
    struct gs_thread *self;     /* the ending thread's record */
    PyThreadState *self_tstate; /* and the state it is attached with */
    PyThreadState *victims[64];
    size_t n;
    size_t busy;
    size_t setup;               /* of them, rows whose state is being made */
};

/* Under the registry lock, the only time the owner's record is known to
 * exist: it may exit (and free it) once the lock is dropped. */
static int collect(struct gs_thread *t, struct gs_row *r, void *arg)
{
    struct sweep *s = arg;
    /* The ending thread's own attached row stays. Only its own rows can
     * hold that state, and only those may be read here without the CAS:
     * another owner may be filling in its new row's tstate. */
    if (t == s->self && r->tstate == s->self_tstate)
        return 0;
    int idle = GS_ROW_IDLE;
    if (atomic_compare_exchange_strong(&r->state, &idle, GS_ROW_DEAD)) {
        /* Another thread's idle state that the caller is attached to:
         * 3.13 ends a sub-interpreter left at the runtime's end from its
         * head state, which is a cached one when main's exit hook could
         * not sweep it; CPython deletes it itself ("is still current"
         * otherwise). DEAD, so its owner never attaches to it again. */
        if (r->tstate && r->tstate == s->self_tstate) {
            atomic_store(&t->stale_tss, r->tstate);
            return 0;
        }
        if (r->tstate) {
            s->victims[s->n++] = r->tstate;
            /* The owner's CPython TSS slot may hold this state: it clears
             * the slot on its next call (after the delete or before it,
             * either is fine: the row is DEAD and never attached again). */
            atomic_store(&t->stale_tss, r->tstate);
        }
    } else if (idle == GS_ROW_BUSY) {
        s->busy++;
        /* Its owner is inside PyThreadState_New(in->ptr), which takes no
         * GIL: ending the interpreter now would free it under that call. */
        if (!__atomic_load_n(&r->tstate, __ATOMIC_ACQUIRE))
            s->setup++;
    }
    return s->n == 64;  /* batch full: delete these, then sweep again */
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Attached to in's interpreter, with CPython still fully alive there. */
static void sweep(struct gs_interp *in)
{
    atomic_store(&in->state, GS_ENDING);
    if (gs_config()->mode == GS_MODE_DIAGNOSE && gs_diagnose_ops_installed()) {
        struct gs_thread *me = gs_thread_peek();
        int mine = 0;
        for (size_t i = 0; me && i < me->depth; i++) {
            struct gs_frame *f = gs_frame_at(me, i);
            mine += f && f->counted == in;
        }
        gs_diagnose_ops_installed()->interp_ends(in, mine);
    }
    long deadline = now_ms() + gs_config()->drain_ms;
    size_t deleted = 0;
    for (;;) {
        struct sweep s = {.self = gs_thread_peek(), .self_tstate = py.UncheckedGet()};
        gs_rows_of_interp(in, collect, &s);
        for (size_t i = 0; i < s.n; i++)
            gs_delete_foreign_tstate(s.victims[i], 0);
        deleted += s.n;
        if (s.n == 64)
            continue;
        /* after the walk: an owner that exits pushes its state before its
         * row goes DEAD (or away), so a row seen so has its state here */
        gs_reap_orphans(in, "interpreter end");
        if (!s.busy)
            break;
        /* a row being made is waited for past the deadline: it is in
         * PyThreadState_New for as long as that call takes, no longer */
        if (now_ms() >= deadline && !s.setup) {
            char extra[96];
            snprintf(extra, sizeof extra, "\"interpreter\":%lld,\"in_flight\":%zu",
                     (long long)in->id, s.busy);
            gs_logx(GS_LOG_WARN, "ended_in_flight", extra, "interpreter %lld ends with %zu "
                    "callback(s) still running after GILSHIM_DRAIN_MS=%ld", (long long)in->id,
                    s.busy, gs_config()->drain_ms);
            break;
        }
        /* Callbacks in flight need this GIL to finish. */
        PyThreadState *me = py.SaveThread();
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
        py.RestoreThread(me);
    }
    gs_log(GS_LOG_DEBUG, "interpreter %lld ends: %zu cached thread state(s) deleted",
           (long long)in->id, deleted);
    atomic_store(&in->state, GS_DEAD);
}

/* --- a sub-interpreter's idle rows, before CPython counts its threads ---
 * <= 3.11's _xxsubinterpreters refuses to run code in, or destroy, an
 * interpreter with more than one thread state, and counts them from
 * PyInterpreterState_ThreadHead: a library thread that outlived its call
 * keeps its row, which stock never has. Its idle rows are dropped first;
 * the owner makes a new one at its next call, or, once the interpreter
 * has ended, meets the fail-safe path. One GIL for all there, and the
 * caller holds it: no row can be claimed, or its state read, meanwhile. */

static void drop_idle_rows(struct gs_interp *in)
{
    struct sweep s;
    do {
        s = (struct sweep){.self = gs_thread_peek(), .self_tstate = py.UncheckedGet()};
        gs_rows_of_interp(in, collect, &s);
        for (size_t i = 0; i < s.n; i++)
            gs_delete_foreign_tstate(s.victims[i], 0);
    } while (s.n == 64);
    gs_reap_orphans(in, "a thread count of _xxsubinterpreters");
}

/* Whether caller is code of _xxsubinterpreters: other callers see every
 * thread state, the cached ones too. */
static int from_subinterpreters_module(const void *caller)
{
    Dl_info info;
    if (!caller || !dladdr(caller, &info) || !info.dli_fname)
        return 0;
    const char *base = strrchr(info.dli_fname, '/');
    return !strncmp(base ? base + 1 : info.dli_fname, "_xxsubinterpreters", 18);
}

PyThreadState *gs_interp_thread_head(PyInterpreterState *ip, const void *caller)
{
    static PyThreadState *(*_Atomic real)(PyInterpreterState *);
    PyThreadState *(*f)(PyInterpreterState *) = atomic_load_explicit(&real, memory_order_relaxed);
    if (!f) {
        f = (PyThreadState * (*)(PyInterpreterState *)) gs_real_symbol("PyInterpreterState_ThreadHead");
        atomic_store_explicit(&real, f, memory_order_relaxed);
    }
    struct gs_interp *in, *main_in;
    PyThreadState *att;
    /* Thread states of exited threads are not in stock's list: delete
     * them first where the caller holds ip's GIL as ip's own. */
    if (ip && gs_orphan_count() && gs_py_state() == GS_PY_PRESENT && (att = gs_py_attached()) &&
        py.ThreadState_GetInterpreter(att) == ip)
        reap_orphans_of(att, "PyInterpreterState_ThreadHead");
    if (ip && gs_row_count() && (atomic_load(&gs_fast) & GS_FAST_TRACK) &&
        gs_config()->mode == GS_MODE_ROUTE && py.port->sub_counts_threads && gs_py_attached() &&
        (main_in = gs_main_interp()) && (in = gs_interp_find_ptr(ip)) && in != main_in &&
        atomic_load(&in->state) == GS_ALIVE && from_subinterpreters_module(caller))
        drop_idle_rows(in);
    return f(ip);
}

struct others {
    struct gs_interp *main;
    struct gs_interp *list[256];
    size_t n;
};

static void alive_subs(struct gs_interp *in, void *arg)
{
    struct others *o = arg;
    if (in != o->main && in->generation == gs_generation() &&
        atomic_load(&in->state) == GS_ALIVE && in->ptr && o->n < 256)
        o->list[o->n++] = in;
}

/* A sub-interpreter whose exit hook its own code removed (atexit._clear(),
 * as test_atexit does) has ended unseen: its entry must not be visited. */
static void drop_unlisted(struct others *o)
{
    size_t kept = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (gs_interp_listed(o->list[i]))
            o->list[kept++] = o->list[i];
        else
            atomic_store(&o->list[i]->state, GS_DEAD);
    }
    o->n = kept;
}

/* The interpreter the calling thread is attached to, if the shim knows it. */
static struct gs_interp *current_interp(void)
{
    PyThreadState *me = py.UncheckedGet();
    return me ? gs_interp_find_ptr(py.ThreadState_GetInterpreter(me)) : NULL;
}

/* Called by CPython in the atexit run, in registration order reversed:
 * functions registered earlier still run after it, and may wait for a
 * callback, so nothing ends here. */
static PyObject *exit_hook(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    struct gs_interp *in = current_interp();
    if (in)
        atomic_store(&in->exit_begun, 1);
    return py.BuildValue("");
}

/* The capsule held by the exit hook is freed with the atexit table: after
 * the run, or by atexit._clear() (or unregister) without one. */
static void exit_hook_freed(PyObject *capsule)
{
    (void)capsule;
    struct gs_interp *in = current_interp();
    if (!in)
        return;
    if (!atomic_exchange(&in->exit_begun, 0)) {
        /* Removed unrun: the interpreter lives on without a hook. The next
         * call attached to it places one again; until then its entry is
         * checked against CPython's list before a new row is made. */
        gs_registry_lock();
        in->hook_registered = 0;
        gs_registry_unlock();
        if (in == gs_main_interp()) {
            /* the fast path may no longer count on hearing of the end */
            atomic_store(&gs_hooks_armed, 0);
            gs_fast_refresh();
        }
        return;
    }
    if (in == gs_main_interp()) {
        /* The runtime is going. Sub-interpreters that 3.13 will end later,
         * from a thread where all else is gone, and those 3.9-3.12 leave
         * behind: sweep them now, each from inside, while it is safe.
         * First every interpreter's guards (3.15 waits for them too). */
        struct others o = {.main = in};
        gs_guards_drain(in);
        gs_interp_foreach(alive_subs, &o);
        drop_unlisted(&o);
        for (size_t i = 0; i < o.n; i++)
            gs_guards_drain(o.list[i]);
        for (size_t i = 0; i < o.n; i++) {
            PyThreadState *visit = gs_fault("PyThreadState_New for a sweep")
                                      ? NULL
                                      : py.ThreadState_New(o.list[i]->ptr);
            if (!visit) {
                gs_log(GS_LOG_WARN, "could not visit interpreter %lld at the runtime's end "
                       "(PyThreadState_New failed); its cached thread states are left to its "
                       "own exit hook, when CPython ends it", (long long)o.list[i]->id);
                continue;
            }
            PyThreadState *back = py.SaveThread();
            py.RestoreThread(visit);
            sweep(o.list[i]);
            atomic_store(&o.list[i]->state, GS_ALIVE);  /* it lives on, without our rows */
            py.ThreadState_Clear(visit);
            py.ThreadState_DeleteCurrent();
            py.RestoreThread(back);
        }
        atomic_store(&gs_finalizer_tid, (pid_t)syscall(SYS_gettid));
        atomic_store(&gs_finalizing, 1);
        gs_fast_refresh();
        for (size_t i = 0; i < o.n; i++)
            atomic_store(&o.list[i]->state, GS_ENDING);
        sweep(in);
    } else {
        gs_guards_drain(in);
        sweep(in);
    }
}

/* Py_FinalizeEx has returned and no runtime has been initialized since. */
static _Atomic int g_after_fini;
/* The process is in exit() (the program's main returned, or it called it). */
static _Atomic int g_process_exiting;

static void process_exit(void) { atomic_store(&g_process_exiting, 1); }

static void runtime_exit(void)
{
    /* Last thing in Py_FinalizeEx: every tstate is freed, and CPython's
     * TSS key deleted; a runtime initialized again makes a new one, which
     * is found again. */
    gs_runtime_ended();
    atomic_store(&g_after_fini, 1);
    atomic_store(&gs_tss_key_state, 0);
    atomic_store(&gs_finalizing, 0);
    atomic_store(&gs_finalizer_tid, 0);
    gs_fast_refresh();
}

/* A sub-interpreter still alive at the runtime's end is ended later from
 * the state at the head of its list, whoever's it is: by the last
 * reference to its _xxsubinterpreters id (3.9-3.12), or by Py_FinalizeEx
 * itself (3.13+). A foreign thread's cached state there is "still current"
 * or "not the last thread". Only main's exit hook sweeps such a sub in
 * time, so a sub-interpreter's hook brings main's: from a visit, as the
 * caller is attached to the sub-interpreter. */
static void place_main_hook_from(struct gs_interp *in)
{
    struct gs_interp *m = gs_main_interp();
    if (!m || m == in || __atomic_load_n(&m->hook_registered, __ATOMIC_RELAXED))
        return;
    /* This thread's own state of main, where its gilstate slot holds one
     * (the main thread, on 3.9-3.11): a second state of main on the thread
     * is "Invalid thread state for this thread" to CPython's debug builds. */
    PyThreadState *own = gs_tss_get();
    if (!own || own == gs_py_attached() || py.ThreadState_GetInterpreter(own) != m->ptr)
        own = NULL;
    PyThreadState *visit = own ? own : py.ThreadState_New(m->ptr);
    if (!visit) {
        gs_log(GS_LOG_WARN, "could not visit the main interpreter to place its exit hook "
               "(PyThreadState_New failed); a sub-interpreter left at the runtime's end may "
               "abort it");
        return;
    }
    PyThreadState *back = py.SaveThread();
    py.RestoreThread(visit);
    gs_place_exit_hook(m);
    if (own) {
        py.SaveThread();
    } else {
        py.ThreadState_Clear(visit);
        py.ThreadState_DeleteCurrent();
    }
    py.RestoreThread(back);
}

void gs_place_exit_hook(struct gs_interp *in)
{
    static struct gs_PyMethodDef def = {"_gilshim_interpreter_exit", exit_hook, GS_METH_NOARGS,
                                        "gilshim: forget this interpreter's cached thread states"};
    gs_registry_lock();
    int done = in->hook_registered;
    in->hook_registered = 1;
    gs_registry_unlock();
    if (done)
        return;
    uint64_t gen = gs_generation();
    if (atomic_exchange(&g_atexit_generation, gen) != gen) {
        atomic_store(&g_after_fini, 0);
        if (py.AtExit(runtime_exit) == 0)
            atomic_store(&g_atexit_ok, gen);
    }
    gs_tss_get_slow();  /* finds the key, if it is not known yet */

    PyObject *mod = py.Import_ImportModule("atexit"), *fn = NULL, *reg = NULL, *res = NULL;
    /* the atexit table is the capsule's only owner, through fn */
    PyObject *cap = mod ? py.Capsule_New(in, "gilshim.exit_hook", exit_hook_freed) : NULL;
    if (cap && (fn = py.CFunction_NewEx(&def, cap, NULL)) &&
        (reg = py.Object_GetAttrString(mod, "register")))
        res = py.Object_CallFunctionObjArgs(reg, fn, NULL);
    if (!res) {
        py.Err_Clear();
        gs_log(GS_LOG_WARN, "could not register the exit hook of interpreter %lld; "
               "ending it while foreign threads hold cached states will fail", (long long)in->id);
    } else if (in->ptr == py.InterpreterState_Main() && atomic_load(&g_atexit_ok) == gen) {
        /* Both hooks in place: finalization will be seen before any thread
         * state is freed, and the fast path may rely on that. */
        atomic_store(&gs_hooks_armed, gen);
        gs_fast_refresh();
    }
    if (res) py.DecRef(res);
    if (reg) py.DecRef(reg);
    if (fn) py.DecRef(fn);
    if (cap) py.DecRef(cap);
    if (mod) py.DecRef(mod);
    if (res && in->ptr != py.InterpreterState_Main())
        place_main_hook_from(in);
}

/* --- thread exit --- */

/* r, a row of main taken (IDLE -> BUSY) by its exiting thread while the
 * runtime's end sweeps main, or is about to: the thread may not attach to
 * delete the state itself (CPython stops a thread that attaches once it
 * finalizes, here inside a TLS destructor), and a state left listed is not
 * freed on 3.14+: Py_FinalizeEx's _PyThreadState_DeleteList only drops the
 * runtime's reference and counts on the state's own thread to drop the
 * other, which a thread that never attaches again never does (valgrind:
 * "definitely lost" from _PyThreadState_NewBound). So hand the row back:
 * IDLE again, and wait, bounded, until main's sweep, which holds main's
 * GIL, has taken it (DEAD, then deleted). 0 if no sweep of main can come. */
static int give_back_to_sweep(struct gs_row *r)
{
    struct gs_interp *in = r->interp;
    if (!r->tstate || in != gs_main_interp() || atomic_load(&in->state) == GS_DEAD ||
        py.IsFinalizing())
        return 0;
    atomic_store(&r->state, GS_ROW_IDLE);
    long deadline = now_ms() + gs_config()->drain_ms + 1000;
    while (atomic_load(&r->state) == GS_ROW_IDLE && atomic_load(&in->state) != GS_DEAD &&
           now_ms() < deadline) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    int idle = GS_ROW_IDLE;
    if (atomic_compare_exchange_strong(&r->state, &idle, GS_ROW_DEAD))
        gs_log(GS_LOG_DEBUG, "thread exit: main's sweep did not take thread state %p; "
               "left to CPython", r->tstate);
    return 1;
}

/* May a state of in outlive its thread as an orphan? Not where an orphan
 * would be seen as a thread: 3.9-3.11's _xxsubinterpreters refuses
 * run_string() and destroy() of a sub-interpreter that has more than one,
 * and the shim drops orphans for it only from its interposed
 * PyInterpreterState_ThreadHead, which that module reaches only through
 * symbol interposition (not when linked explicitly by an extension, nor
 * from inside an executable that carries libpython). There the exiting
 * thread deletes its state itself, as before orphans. */
static int orphan_ok(const struct gs_interp *in)
{
    return !py.port->sub_counts_threads || in == gs_main_interp() ||
           gs_redirect_method() == GS_REDIRECT_INTERPOSE;
}

static void reap_thread(struct gs_thread *t)
{
    if (t->depth) {
        char where[256], extra[600];
        struct gs_frame *f = gs_frame_top(t);
        int route = gs_config()->mode == GS_MODE_ROUTE;
        int k = snprintf(extra, sizeof extra, "\"open\":%zu,", t->depth);
        gs_json_site("site", f ? f->caller : NULL, extra + k, sizeof extra - (size_t)k);
        gs_logx(GS_LOG_WARN, "unbalanced_exit", extra,
                "thread exits with %zu PyGILState_Ensure/gilshim_ensure still open "
                "(innermost at %s)%s", t->depth,
                gs_describe_addr(f ? f->caller : NULL, where, sizeof where),
                route ? "; releasing its GIL" : "");
        /* diagnose mode keeps stock's outcome: the GIL stays held */
        int detached = 0;
        if (route && gs_py_state() == GS_PY_PRESENT && py.IsInitialized() &&
            !gs_runtime_finalizing() && gs_py_attached()) {
            py.SaveThread();
            detached = 1;
        }
        for (size_t i = 0; i < t->nrows; i++) {
            struct gs_row *r = t->rows[i];
            int busy = GS_ROW_BUSY;
            /* out of the gilstate slot, as an outermost Release leaves it:
             * an orphan may be deleted from another thread, whose own slot
             * CPython's unbind would clear (and assert on, debug builds) */
            if (detached && r->tstate && atomic_load(&r->state) == GS_ROW_BUSY)
                gs_gilstate_unbind(t->tss_slot, r->tstate);
            atomic_compare_exchange_strong(&r->state, &busy, GS_ROW_IDLE);
        }
    }
    if (gs_py_state() != GS_PY_PRESENT)
        return;
    for (size_t i = 0; i < t->nrows; i++) {
        struct gs_row *r = t->rows[i];
        int idle = GS_ROW_IDLE;
        if (!atomic_compare_exchange_strong(&r->state, &idle, GS_ROW_BUSY))
            continue;
        /* Touch no interpreter the runtime's end is taking down: a thread
         * that attaches while the runtime finalizes is killed by CPython,
         * and here that would be inside a TLS destructor. One that a
         * Py_EndInterpreter is ending (ENDING) still needs its state gone:
         * its sweep skips this row (BUSY, then DEAD) and waits for it, and
         * a state left behind is "not the last thread" on 3.9-3.13. */
        if (atomic_load(&r->interp->state) == GS_DEAD || gs_runtime_finalizing() ||
            !py.IsInitialized() || py.IsFinalizing() || !r->tstate) {
            if (gs_runtime_finalizing() && give_back_to_sweep(r))
                continue;
            atomic_store(&r->state, GS_ROW_DEAD);
            continue;
        }
        /* Never wait for a GIL here: the thread holding it may be joining
         * this one (grpc's C core frees its executor so, Cython code with
         * the GIL held), and stock's thread, whose state went at its last
         * PyGILState_Release, exits without it. The state goes to its
         * interpreter, for the next thread that holds that GIL through
         * the shim (gs_reap_orphans); then the row is DEAD. */
        int cleared = atomic_load(&t->stale_tss) == r->tstate;
        /* cffi may clear and delete the state meanwhile, holding the GIL
         * (find_deleted, which writes the mailbox under the registry
         * lock): the push reads the mailbox again under that lock, and a
         * delete after the push finds the entry and marks it cleared,
         * through the BUSY row (gs_orphan_mark_cleared) or the DEAD one
         * (gs_orphan_take). tests/model/rows.pml, SEED_BUG_MAILBOX_ONCE. */
        if (!cleared && orphan_ok(r->interp) && gs_orphan_push(r->interp, t, r->tstate) == 0) {
            atomic_store(&r->state, GS_ROW_DEAD);
            continue;
        }
        /* Out of memory for that, or cleared already by the PyThreadState_Delete
         * caller that left its deletion to the shim (find_deleted; an orphan
         * would be cleared twice): delete it here, as stock would at a release. */
        /* bound first (port): a state cffi has already cleared is
         * attached here only to be deleted, and CPython's own binding of
         * it asserts that it is alive (debug builds) */
        gs_bind_to_delete(t->tss_slot, r->tstate);
        py.RestoreThread(r->tstate);
        /* unless cleared meanwhile by a PyThreadState_Delete caller
         * (find_deleted), who held the GIL this thread now holds, so the
         * mailbox is read again: clearing twice asserts on debug builds */
        if (!cleared && atomic_load(&t->stale_tss) != r->tstate)
            py.ThreadState_Clear(r->tstate);
        py.ThreadState_DeleteCurrent();
        atomic_store(&r->state, GS_ROW_DEAD);
    }
}

/* --- failure policy of the interposed PyGILState_Ensure --- */

/* The level of a fail-safe: info where the program ends as under stock,
 * a warning where it does not, or where stock would crash (docs/messages.md). */
static int fail_safe_level(const char *why, int policy)
{
    /* out of memory: gilshim's outcome, whenever it comes */
    if (policy == GS_FIN_ABORT || strncmp(why, "PyGILState_Ensure ", 18))
        return GS_LOG_WARN;
    /* After Py_FinalizeEx returned stock crashes the caller (<= 3.14) or
     * blocks it (3.15+); while the runtime finalizes it stops the thread:
     * pthread_exit (<= 3.13) or blocks it (3.14+), as park and exit do. */
    int hangs = py.port->after_fini == GS_AFTER_HANGS;
    /* Once exit() has begun the process ends the thread within moments;
     * stock's program, which rarely gets the crash in, exits as here. */
    int exiting = atomic_load(&g_process_exiting);
    if (atomic_load(&g_after_fini))
        return hangs || exiting ? GS_LOG_INFO : GS_LOG_WARN;
    if (!py.IsFinalizing() && !gs_runtime_finalizing())
        return GS_LOG_WARN;
    if (exiting)
        return GS_LOG_INFO;
    /* Without runtime_exit in place, "finalizing" may also mean "returned"
     * (CPython keeps the flag): info only where both end the same. */
    return atomic_load(&g_atexit_ok) == gs_generation() || hangs ? GS_LOG_INFO : GS_LOG_WARN;
}

void gs_fail_safe(const char *why, const void *caller)
{
    char where[256], extra[600];
    int policy = gs_config()->on_finalize;
    static const char *const names[] = {"park", "exit", "abort"};
    int k = snprintf(extra, sizeof extra, "\"policy\":\"%s\",", names[policy]);
    gs_json_site("site", caller, extra + k, sizeof extra - (size_t)k);
    int level = fail_safe_level(why, policy);
    if (level == GS_LOG_WARN && policy != GS_FIN_ABORT && atomic_load(&g_after_fini) &&
        gs_config()->log_level == GS_LOG_WARN) {
        /* After Py_FinalizeEx a process usually exits next (python's own
         * main does, within a millisecond): if it does within 50 ms, the
         * program ends as it normally does under stock, and nothing is
         * worth saying. A process that lives on hears of the thread.
         * Only the default level needs to know: info shows either. */
        long hold = gs_config()->drain_ms < 50 ? gs_config()->drain_ms : 50;
        for (long waited = 0; waited < hold && !atomic_load(&g_process_exiting); waited++) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
        level = fail_safe_level(why, policy);
    }
    gs_logx(level, "fail_safe", extra, "%s (at %s); GILSHIM_ON_FINALIZE=%s", why,
            gs_describe_addr(caller, where, sizeof where), names[policy]);
    if (policy == GS_FIN_ABORT)
        abort();
    if (policy == GS_FIN_EXIT)
        pthread_exit(NULL);
    /* park: block forever, holding nothing, like CPython 3.14 */
    for (;;)
        pause();
}

/* --- fork --- */

/* CPython's PyOS_AfterFork_Child keeps the main interpreter and the
 * forking thread's current thread state, and deletes everything else. */
static void after_fork_child(void)
{
    int present = gs_py_state() == GS_PY_PRESENT;
    gs_registry_after_fork_child(present ? gs_py_attached() : NULL,
                                 present ? py.InterpreterState_Main() : NULL);
    /* <= 3.11 re-creates its TSS key in the child (_PyGILState_Reinit),
     * possibly under another number, and binds the current state to it:
     * find the key again, and forget what the rows knew of their slots. */
    atomic_store(&gs_tss_key_state, 0);
    struct gs_thread *me = gs_thread_peek();
    if (me)
        me->tss_slot = NULL;
    for (size_t i = 0; me && i < me->nrows; i++)
        me->rows[i]->tss_note = TSS_UNKNOWN;
}

static _Atomic int g_lifecycle_ready;

void gs_lifecycle_init(void)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&g_lifecycle_ready, &expect, 1))
        return;
    gs_set_thread_reaper(reap_thread);
    pthread_atfork(NULL, NULL, after_fork_child);
    atexit(process_exit);
}
