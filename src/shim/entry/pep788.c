/* SPDX-License-Identifier: MIT */
/*
 * The gilshim_ side of <gilshim/pep788.h>: CPython 3.15's interpreter
 * guards on 3.9-3.14 (docs/pep788.md). A guard is an interpreter entry
 * (never freed, so it never dangles) and the view it was taken through;
 * the count of open guards and the wait at an interpreter's end are the
 * policy's (policy/guards.c). Attaching is gilshim_ensure's (api.c).
 */
#define _GNU_SOURCE
#include "../../../include/gilshim.h"
#include "../policy/policy.h"
#include "entry.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

struct gilshim_guard {
    struct gs_interp *in;
    gilshim_view view;
};

/* The exit hook is what makes an interpreter's end wait for its guards.
 * It is placed by the first call attached to the interpreter; a guard
 * taken through a view (of main, say) before any such call attaches once
 * to place it. */
static void place_exit_hook(struct gs_interp *in, gilshim_view v)
{
    if (__atomic_load_n(&in->hook_registered, __ATOMIC_RELAXED))
        return;
    gilshim_token *t = gilshim_ensure(v);
    if (!t)
        return;
    gs_place_exit_hook(in);
    gilshim_release(t);
}

static int refused(void)
{
    return gs_set_error(gs_runtime_finalizing() ? GILSHIM_EFINALIZING : GILSHIM_EGONE);
}

static gilshim_guard *guard_on(struct gs_interp *in, gilshim_view v)
{
    if (gs_guard_take(in))
        return refused(), NULL;
    gilshim_guard *g = gs_malloc("interpreter guard", sizeof *g);
    if (!g) {
        gs_guard_put(in);
        return gs_set_error(GILSHIM_ENOMEM), NULL;
    }
    g->in = in;
    g->view = v;
    gs_set_error(GILSHIM_OK);
    return g;
}

GS_EXPORT gilshim_guard *gilshim_guard_current(void)
{
    /* places the exit hook: the caller is attached */
    gilshim_view v = gilshim_view_current();
    struct gs_interp *in = v.id >= 0 ? gs_resolve_view(v) : NULL;
    return in ? guard_on(in, v) : NULL;
}

GS_EXPORT gilshim_guard *gilshim_guard_from_view(gilshim_view v)
{
    struct gs_interp *in = gs_resolve_view(v);
    if (!in)
        return NULL;
    place_exit_hook(in, v);
    return guard_on(in, v);
}

GS_EXPORT void gilshim_guard_close(gilshim_guard *g)
{
    if (!g)
        return;
    gs_guard_put(g->in);
    free(g);
}

GS_EXPORT gilshim_token *gilshim_guard_ensure(gilshim_guard *g)
{
    /* The guard keeps the interpreter ALIVE and the runtime from
     * finalizing: only memory can fail this. */
    if (!g)
        return gs_set_error(GILSHIM_EINVAL), NULL;
    return gilshim_ensure(g->view);
}

GS_EXPORT gilshim_token *gilshim_ensure_guarded(gilshim_view v)
{
    struct gs_thread *self = gs_thread_peek();
    struct gs_row *r;
    struct gs_interp *in;
    /* the entry from gilshim_ensure's own cache, as its fast path finds it */
    if (self && (r = *gs_view_row(self, v.id)) && r->interp->id == v.id &&
        r->interp->generation == v.generation) {
        in = r->interp;
    } else if ((in = gs_resolve_view(v))) {
        place_exit_hook(in, v);
    } else {
        return NULL;
    }
    if (gs_guard_take(in))
        return refused(), NULL;
    struct gs_frame *f = (struct gs_frame *)gilshim_ensure(v);
    if (!f) {
        gs_guard_put(in);
        return NULL;
    }
    /* off gilshim_release's fast path: release_general closes the guard */
    f->explicit_api = 2;
    return (gilshim_token *)f;
}
