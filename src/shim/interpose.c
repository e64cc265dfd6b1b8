/*
 * The interposition layer: CPython's own names, exported so that with
 * LD_PRELOAD every extension module's calls land here first, and the same
 * entry points under the gilshim_ prefix for explicit linking
 * (<gilshim/redirect.h>). Thin on purpose: the logic is in route.c.
 */
#define _GNU_SOURCE
#include "../../include/gilshim.h"
#include "shim.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CALLER __builtin_return_address(0)

GS_EXPORT int gilshim_PyGILState_Ensure(void) { return gs_ensure(CALLER); }
GS_EXPORT void gilshim_PyGILState_Release(int oldstate) { gs_release(oldstate, CALLER); }
GS_EXPORT void *gilshim_PyGILState_GetThisThreadState(void) { return gs_this_thread_state(); }
GS_EXPORT int gilshim_PyGILState_Check(void) { return gs_check(); }
GS_EXPORT void *gilshim_PyEval_SaveThread(void) { return gs_save_thread(); }
GS_EXPORT void gilshim_PyEval_RestoreThread(void *t) { gs_restore_thread(t); }

GS_EXPORT int PyGILState_Ensure(void) { return gs_ensure(CALLER); }
GS_EXPORT void PyGILState_Release(int oldstate) { gs_release(oldstate, CALLER); }
GS_EXPORT void *PyGILState_GetThisThreadState(void) { return gs_this_thread_state(); }
GS_EXPORT int PyGILState_Check(void) { return gs_check(); }
GS_EXPORT void *PyEval_SaveThread(void) { return gs_save_thread(); }
GS_EXPORT void PyEval_RestoreThread(void *t) { gs_restore_thread(t); }

/* The same functions under hidden names: their addresses are ours for
 * sure (a reference to an exported name may bind to CPython's own
 * definition), which is what GOT patching must store. */
#define GS_ALIAS(hidden_name, name) \
    extern __typeof__(name) hidden_name __attribute__((alias(#name), visibility("hidden")))
GS_ALIAS(gs_entry_Ensure, PyGILState_Ensure);
GS_ALIAS(gs_entry_Release, PyGILState_Release);
GS_ALIAS(gs_entry_GetThisThreadState, PyGILState_GetThisThreadState);
GS_ALIAS(gs_entry_Check, PyGILState_Check);
GS_ALIAS(gs_entry_SaveThread, PyEval_SaveThread);
GS_ALIAS(gs_entry_RestoreThread, PyEval_RestoreThread);

/* --- rule 4: a new thread inherits its creator's interpreter ---
 * Only a thread created by a thread tied to an interpreter is wrapped; all
 * others (every thread of a process without Python) go straight to libc. */

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static _Atomic(pthread_create_fn) g_real_pthread_create;

struct start {
    void *(*fn)(void *);
    void *arg;
    struct gs_interp *owner;
};

static void *trampoline(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    gs_tl_creator = s.owner;
    return s.fn(s.arg);
}

static int create_thread(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                         void *arg)
{
    pthread_create_fn real = atomic_load_explicit(&g_real_pthread_create, memory_order_relaxed);
    if (!real) {
        real = (pthread_create_fn)gs_real_symbol("pthread_create");
        atomic_store_explicit(&g_real_pthread_create, real, memory_order_relaxed);
    }
    struct gs_interp *owner = gs_creator_owner();
    struct start *s;
    if (!owner || !(s = malloc(sizeof *s)))
        return real(th, attr, fn, arg);
    s->fn = fn;
    s->arg = arg;
    s->owner = owner;
    int rc = real(th, attr, trampoline, s);
    if (rc)
        free(s);
    return rc;
}

GS_EXPORT int gilshim_pthread_create(pthread_t *th, const pthread_attr_t *attr,
                                     void *(*fn)(void *), void *arg)
{
    return create_thread(th, attr, fn, arg);
}

GS_EXPORT int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                             void *arg)
{
    return create_thread(th, attr, fn, arg);
}
