/* SPDX-License-Identifier: MIT */
/* The explicit API of include/gilshim.h. Failures return an error (and set
 * gilshim_last_error) instead of taking the interposed Ensure's fail-safe
 * path: a caller of this API can handle them. */
#define _GNU_SOURCE
#include "../../../include/gilshim.h"
#include "../modes/diagnose.h"
#include "../policy/policy.h"
#include "../redirect/redirect.h"
#include "entry.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

static GS_TLS int tl_error;

static int fail(int err)
{
    tl_error = err;
    return err;
}

int gs_set_error(int err) { return fail(err); }

static int ready(void)
{
    int s = gs_py_state();
    if (s == GS_PY_UNKNOWN && (s = gs_py_resolve()) == GS_PY_PRESENT)
        gs_lifecycle_init();
    return s == GS_PY_PRESENT && py.IsInitialized();
}

static const gilshim_view invalid_view = {-1, 0};

GS_EXPORT const char *gilshim_version(void) { return "0.1.0"; }

GS_EXPORT int gilshim_last_error(void) { return tl_error; }

GS_EXPORT int gilshim_get_stats(gilshim_stats *out, size_t size)
{
    if (!out || size < offsetof(gilshim_stats, reads_attached_directly))
        return fail(GILSHIM_EINVAL);
    gilshim_stats st = {
        .threads = gs_thread_count(),
        .rows = gs_row_count(),
        .bytes = gs_registry_bytes(),
        .reads_attached_directly = gs_reads_attached_directly(),
        .reads_exception_directly = __atomic_load_n(&py.exc_offset, __ATOMIC_RELAXED) != 0,
        .reads_tss_directly = gs_reads_tss_directly(),
    };
    memcpy(out, &st, size < sizeof st ? size : sizeof st);
    return GILSHIM_OK;
}

GS_EXPORT const char *gilshim_redirection(void)
{
    switch (gs_redirect_method()) {
    case GS_REDIRECT_INTERPOSE: return "symbol interposition";
    case GS_REDIRECT_GOT: return "GOT patching";
    case GS_REDIRECT_EXPLICIT: return "explicit linking";
    default: return "none (no CPython when loaded)";
    }
}

GS_EXPORT const char *gilshim_mode(void)
{
    static const char *const names[] = {"route", "off", "diagnose"};
    return names[gs_config()->mode];
}

static const char *error_text(int error)
{
    switch (error) {
    case GILSHIM_OK: return "no error";
    case GILSHIM_ENOPYTHON: return "no initialized CPython runtime in this process";
    case GILSHIM_EINVAL: return "invalid view or token";
    case GILSHIM_ESTALE: return "the view belongs to a runtime that has been finalized";
    case GILSHIM_EGONE: return "the interpreter has ended or is ending";
    case GILSHIM_EFINALIZING: return "the Python runtime is finalizing";
    case GILSHIM_ENOMEM: return "out of memory, or CPython could not create a thread state";
    case GILSHIM_EORDER: return "token released out of LIFO order";
    case GILSHIM_ETHREAD: return "token is not open on this thread (released twice, or another thread's)";
    default: return "unknown gilshim error";
    }
}

GS_EXPORT const char *gilshim_strerror(int error) { return error_text(error); }

/* in: the shim's entry for the interpreter; NULL when it could not be
 * allocated */
static gilshim_view view_of(struct gs_interp *in)
{
    if (!in)
        return fail(GILSHIM_ENOMEM), invalid_view;
    gilshim_view v = {in->id, in->generation};
    return v;
}

GS_EXPORT gilshim_view gilshim_view_current(void)
{
    if (!ready())
        return fail(GILSHIM_ENOPYTHON), invalid_view;
    PyThreadState *t = gs_py_attached();
    if (!t)
        return fail(GILSHIM_EINVAL), invalid_view;
    return view_of(gs_interp_of(t, 1));
}

GS_EXPORT gilshim_view gilshim_view_main(void)
{
    if (!ready())
        return fail(GILSHIM_ENOPYTHON), invalid_view;
    return view_of(gs_main_interp());
}

/* The live entry of a view, or NULL with tl_error set. */
struct gs_interp *gs_resolve_view(gilshim_view v)
{
    if (!ready())
        return fail(GILSHIM_ENOPYTHON), NULL;
    if (v.id < 0)
        return fail(GILSHIM_EINVAL), NULL;
    if (v.generation != gs_generation())
        return fail(GILSHIM_ESTALE), NULL;
    /* The calling thread's own rows first: a few entries, in its cache. */
    struct gs_interp *in = NULL;
    struct gs_thread *self = gs_thread_peek();
    for (size_t i = 0; self && i < self->nrows && !in; i++)
        if (self->rows[i]->interp->id == v.id && self->rows[i]->interp->generation == v.generation)
            in = self->rows[i]->interp;
    if (!in)
        in = gs_interp_find_view(v.id, v.generation);
    if (!in)
        return fail(GILSHIM_EINVAL), NULL;
    if (gs_runtime_finalizing())
        return fail(GILSHIM_EFINALIZING), NULL;
    if (atomic_load(&in->state) != GS_ALIVE)
        return fail(GILSHIM_EGONE), NULL;
    return in;
}

GS_EXPORT int gilshim_view_alive(gilshim_view v) { return gs_resolve_view(v) != NULL; }

/* This thread's state for in, if a frame lower on its stack holds its row
 * while another state is attached, or none: a gilshim_ensure switched
 * away from it, or a GIL-released region left it. Only its owner sets its
 * own row BUSY, so it is this thread's to attach again. */
static PyThreadState *held_lower(struct gs_thread *self, struct gs_interp *in)
{
    struct gs_row *r = gs_row_find(self, in);
    return r && atomic_load(&r->state) == GS_ROW_BUSY ? r->tstate : NULL;
}

__attribute__((noinline)) static gilshim_token *ensure_general(gilshim_view v, const void *caller)
{
    struct gs_interp *in = gs_resolve_view(v);
    struct gs_thread *self = in ? gs_thread_self() : NULL;
    if (!in)
        return NULL;
    if (!self)
        return fail(GILSHIM_ENOMEM), NULL;
    if (atomic_load_explicit(&self->stale_tss, memory_order_relaxed))
        gs_fix_stale_tss(self);
    struct gs_frame *f = gs_frame_push(self);
    if (!f)
        return fail(GILSHIM_ENOMEM), NULL;
    f->explicit_api = 1;
    f->caller = caller;
    PyThreadState *att = gs_py_attached(), *held;
    int err = 0;
    if (att && py.ThreadState_GetInterpreter(att) == in->ptr) {
        f->kind = GS_FRAME_NESTED;
        f->tstate = att;
    } else if (att && (held = held_lower(self, in))) {
        /* back to an interpreter this thread switched away from */
        f->kind = GS_FRAME_SWITCH;
        f->prev = py.SaveThread();
        f->tstate = held;
        py.RestoreThread(held);
    } else if (att && (held = gs_tss_get()) && held != att &&
               py.ThreadState_GetInterpreter(held) == in->ptr) {
        /* the thread's own state there, the one CPython has bound to it
         * (3.9-3.11; 3.12+ binds the attached one): a second state of one
         * interpreter on one thread is fatal on their debug builds
         * (_PyThreadState_Swap: "Invalid thread state for this thread") */
        f->kind = GS_FRAME_SWITCH;
        f->prev = py.SaveThread();
        f->tstate = held;
        py.RestoreThread(held);
    } else if (att) {
        PyThreadState *prev = py.SaveThread();
        struct gs_row *r = gs_row_acquire(self, in, &err, NULL);
        if (!r) {
            py.RestoreThread(prev);
            gs_frame_pop(self);
            return fail(err), NULL;
        }
        f->kind = GS_FRAME_SWITCH;
        f->prev = prev;
        f->row = r;
        f->tstate = r->tstate;
    } else {
        PyThreadState *rel = gs_released_top(self);
        if ((rel && py.ThreadState_GetInterpreter(rel) == in->ptr) ||
            (rel = held_lower(self, in))) {
            py.RestoreThread(rel);
            f->kind = GS_FRAME_REATTACH;
            f->tstate = rel;
        } else {
            struct gs_row *r = gs_row_acquire(self, in, &err, NULL);
            if (!r) {
                gs_frame_pop(self);
                return fail(err), NULL;
            }
            f->kind = GS_FRAME_ROW;
            f->row = r;
            f->tstate = r->tstate;
        }
    }
    if (f->row)  /* frames are pushed zeroed: set for ROW and SWITCH */
        *gs_view_row(self, in->id) = f->row;
    tl_error = GILSHIM_OK;
    return (gilshim_token *)f;
}

__attribute__((noinline)) static void release_general(gilshim_token *token, const void *caller)
{
    struct gs_thread *self = gs_thread_peek();
    struct gs_frame *f = (struct gs_frame *)token;
    size_t idx;
    char where[256];
    if (!token) {
        fail(GILSHIM_EINVAL);
        return;
    }
    if (!gs_frame_lookup(self, f, &idx) || !f->explicit_api) {
        fail(GILSHIM_ETHREAD);
        gs_logx(GS_LOG_WARN, "token_misuse", NULL, "gilshim_release(%p) at %s: %s", (void *)token,
               gs_describe_addr(caller, where, sizeof where),
               error_text(GILSHIM_ETHREAD));
        return;
    }
    if (idx + 1 != self->depth) {
        fail(GILSHIM_EORDER);
        gs_logx(GS_LOG_WARN, "token_misuse", NULL, "gilshim_release(%p) at %s: %s (%zu newer still open); ignored",
               (void *)token, gs_describe_addr(caller, where, sizeof where),
               error_text(GILSHIM_EORDER), self->depth - idx - 1);
        return;
    }
    /* gilshim_ensure_guarded's token: its guard is closed once detached */
    struct gs_interp *guarded = f->explicit_api == 2 ? gs_frame_interp(f) : NULL;
    gs_frame_undo(self, f);
    tl_error = GILSHIM_OK;
    if (guarded)
        gs_guard_put(guarded);
}

/*
 * The common cases written out, as gs_ensure's are (src/shim/route.c): a
 * thread with nothing attached and no GIL-released region open re-attaches
 * its row for the view, and releases it again. Anything else, or any
 * doubt, takes the general path above, which decides the same way.
 */
GS_EXPORT gilshim_token *gilshim_ensure(gilshim_view v)
{
    struct gs_thread *self = gs_tl_self;
    size_t depth;
    struct gs_row *r;
    PyThreadState *cur;
    /* A row whose interpreter has this view's id and generation, claimed
     * and ALIVE, is of the current runtime: no other generation check. */
    if (__builtin_expect(!(atomic_load_explicit(&gs_fast, memory_order_relaxed) & GS_FAST_ROW) ||
                             !self || (depth = self->depth) >= GS_FRAME_CHUNK ||
                             !self->py_current || self->nreleased ||
                             atomic_load_explicit(&self->stale_tss, memory_order_relaxed) ||
                             !(r = *gs_view_row(self, v.id)) ||
                             r->interp->id != v.id || r->interp->generation != v.generation ||
                             ((cur = gs_py_current(self->py_current)) &&
                              !gs_attached_elsewhere(self, cur, depth)),
                         0))
        return ensure_general(v, __builtin_return_address(0));
    struct gs_frame *f = gs_row_attach(self, r, depth, gs_frame_tag(GS_FRAME_ROW, 0, 1),
                                       __builtin_return_address(0), 0);
    if (__builtin_expect(!f, 0))
        return ensure_general(v, __builtin_return_address(0));
    tl_error = GILSHIM_OK;
    return (gilshim_token *)f;
}

GS_EXPORT void gilshim_release(gilshim_token *token)
{
    struct gs_thread *self = gs_tl_self;
    struct gs_frame *f = (struct gs_frame *)token;
    size_t top;
    /* depth 0 wraps to SIZE_MAX: the general path reports it */
    if (__builtin_expect(self && (top = self->depth - 1) < GS_FRAME_CHUNK &&
                             f == &self->first_chunk.f[top] &&
                             f->tag == gs_frame_tag(GS_FRAME_ROW, 0, 1) && self->py_current,
                         1)) {
        self->depth = top;
        tl_error = GILSHIM_OK;
        gs_row_release(self, f->row);
        return;
    }
    release_general(token, __builtin_return_address(0));
}

GS_EXPORT int gilshim_bind_thread(gilshim_view v)
{
    struct gs_interp *in = gs_resolve_view(v);
    if (!in)
        return tl_error;
    struct gs_thread *self = gs_thread_self();
    if (!self)
        return fail(GILSHIM_ENOMEM);
    self->bound = in;
    self->fast_row = NULL;
    return tl_error = GILSHIM_OK;
}

GS_EXPORT void gilshim_unbind_thread(void)
{
    struct gs_thread *self = gs_thread_peek();
    if (self) {
        self->bound = NULL;
        self->fast_row = NULL;
    }
}
