/* SPDX-License-Identifier: MIT */
/*
 * The interposition layer: CPython's own names, exported so that with
 * LD_PRELOAD every extension module's calls land here first, and the same
 * entry points under the gilshim_ prefix for explicit linking
 * (<gilshim/redirect.h>). Thin on purpose: the logic is in route.c.
 */
#define _GNU_SOURCE
#include "../../../include/gilshim.h"
#include "../modes/diagnose.h"
#include "../policy/policy.h"
#include "../redirect/redirect.h"
#include "entry.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CALLER __builtin_return_address(0)

GS_EXPORT int PyGILState_Ensure(void) { return gs_ensure(CALLER); }
GS_EXPORT void PyGILState_Release(int oldstate) { gs_release(oldstate, CALLER); }
GS_EXPORT void *PyGILState_GetThisThreadState(void) { return gs_this_thread_state(); }
GS_EXPORT int PyGILState_Check(void) { return gs_check(); }
GS_EXPORT void *PyEval_SaveThread(void) { return gs_save_thread(); }
GS_EXPORT void PyEval_RestoreThread(void *t) { gs_restore_thread(t); }
GS_EXPORT void PyThreadState_Delete(void *t) { gs_thread_state_delete(t); }
GS_EXPORT void *PyInterpreterState_ThreadHead(void *ip) { return gs_interp_thread_head(ip, CALLER); }

/* Each function above under two more names: gilshim_<name>, exported,
 * for <gilshim/redirect.h>; and gs_entry_<name>, hidden, whose address is
 * ours for sure (a reference to an exported name may bind to CPython's own
 * definition), which is what GOT patching must store. */
#define GS_ALIASES(suffix, name)                                                   \
    GS_EXPORT extern __typeof__(name) gilshim_##name                              \
        __attribute__((alias(#name), copy(name)));                                \
    extern __typeof__(name) gs_entry_##suffix                                     \
        __attribute__((alias(#name), visibility("hidden")))
GS_ALIASES(Ensure, PyGILState_Ensure);
GS_ALIASES(Release, PyGILState_Release);
GS_ALIASES(GetThisThreadState, PyGILState_GetThisThreadState);
GS_ALIASES(Check, PyGILState_Check);
GS_ALIASES(SaveThread, PyEval_SaveThread);
GS_ALIASES(RestoreThread, PyEval_RestoreThread);
GS_ALIASES(ThreadState_Delete, PyThreadState_Delete);
/* Only for GOT patching: what it answers is CPython's own, no gilshim_ name. */
extern __typeof__(PyInterpreterState_ThreadHead) gs_entry_ThreadHead
    __attribute__((alias("PyInterpreterState_ThreadHead"), visibility("hidden")));

/* What GOT patching rewrites: each name to its hidden alias, which no other
 * object's definition can win over. */
static const struct gs_redirect_target redirects[] = {
    {"PyGILState_Ensure", (void *)gs_entry_Ensure},
    {"PyGILState_Release", (void *)gs_entry_Release},
    {"PyGILState_GetThisThreadState", (void *)gs_entry_GetThisThreadState},
    {"PyGILState_Check", (void *)gs_entry_Check},
    {"PyEval_SaveThread", (void *)gs_entry_SaveThread},
    {"PyEval_RestoreThread", (void *)gs_entry_RestoreThread},
    {"PyThreadState_Delete", (void *)gs_entry_ThreadState_Delete},
    {"PyInterpreterState_ThreadHead", (void *)gs_entry_ThreadHead},
};

/*
 * At load: the strategy of diagnose mode for the policy (a pointer, nothing
 * more: CPython is not looked at here), then how calls reach the shim.
 * Cheap and silent without Python: one dlsym that fails.
 */
__attribute__((constructor)) static void entry_init(void)
{
    gs_set_diagnose_ops(&gs_diagnose_ops);
    gs_redirect_init(redirects, sizeof redirects / sizeof *redirects);
}

/* --- rule 4: a new thread inherits its creator's interpreter ---
 * Only a thread created by a thread tied to an interpreter is wrapped; all
 * others (every thread of a process without Python) go straight to libc. */

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static _Atomic(pthread_create_fn) g_real_pthread_create;

struct start {
    void *(*fn)(void *);
    void *arg;
    struct gs_interp *owner;
    struct gs_creator creator;
};

/* Not instrumented under -fsanitize=thread: when TSan's own pthread_create
 * interceptor calls this one, the new thread runs this code before TSan's
 * start routine (s.fn) has set the thread up. */
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize("thread")))
#endif
static void *trampoline(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    gs_tl_creator = s.owner;
    gs_tl_creator_info = s.creator;
    return s.fn(s.arg);
}

GS_EXPORT int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                             void *arg)
{
    pthread_create_fn real = atomic_load_explicit(&g_real_pthread_create, memory_order_relaxed);
    if (!real) {
        real = (pthread_create_fn)gs_real_symbol("pthread_create");
        atomic_store_explicit(&g_real_pthread_create, real, memory_order_relaxed);
    }
    struct gs_interp *owner = gs_creator_owner();
    struct start *s;
    if (!owner)
        return real(th, attr, fn, arg);
    if (!(s = gs_malloc("pthread_create trampoline", sizeof *s))) {
        char where[256];
        gs_log(GS_LOG_WARN, "pthread_create at %s: out of memory; the thread it creates does not "
               "inherit interpreter %lld (its callbacks go where stock CPython sends them)",
               gs_describe_addr(__builtin_return_address(0), where, sizeof where),
               (long long)owner->id);
        return real(th, attr, fn, arg);
    }
    s->fn = fn;
    s->arg = arg;
    s->owner = owner;
    /* for diagnose mode's report: who made this thread, and where */
    struct gs_thread *self = gs_thread_peek();
    s->creator.tid = self ? self->tid : (pid_t)syscall(SYS_gettid);
    s->creator.site = __builtin_return_address(0);
    s->creator.name[0] = 0;
    if (gs_config()->mode == GS_MODE_DIAGNOSE)
        pthread_getname_np(pthread_self(), s->creator.name, sizeof s->creator.name);
    int rc = real(th, attr, trampoline, s);
    if (rc)
        free(s);
    return rc;
}

GS_EXPORT extern __typeof__(pthread_create) gilshim_pthread_create
    __attribute__((alias("pthread_create"), copy(pthread_create)));
