/* Finding CPython at run time, lazily: a preloaded library is inherited by
 * every child process (sh, cc, git), so nothing here runs in a constructor
 * and a process without Python only ever pays one failed dlsym. */
#define _GNU_SOURCE
#include "cpython.h"
#include "shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

struct gs_py py;
static _Atomic int g_state = GS_PY_UNKNOWN;

unsigned long gs_self_ident(void) { return (unsigned long)pthread_self(); }

/* The thread_id word of t, read while another thread may be freeing t: a
 * deliberate race, like a seqlock reader's, made harmless by the caller's
 * re-check. Not instrumented, so sanitizers judge the rest of the shim. */
__attribute__((no_sanitize("address", "thread"), noinline))
static unsigned long racy_owner(const PyThreadState *t)
{
    return *(const volatile unsigned long *)((const char *)t + py.thread_id_offset);
}

PyThreadState *gs_attached_shared(PyThreadState *t)
{
    /* t may be another thread's, which that thread can delete at
     * any moment. If t is ours, no other thread can change the current
     * tstate while we read; if it changed, t was not ours. */
    if (racy_owner(t) != gs_self_ident() || py.UncheckedGet() != t)
        return NULL;
    return t;
}

PyThreadState *gs_readline_released(void)
{
    PyThreadState *rl;
    if (!py.readline_tstate || !py.thread_id_offset ||
        !(rl = __atomic_load_n(py.readline_tstate, __ATOMIC_ACQUIRE)))
        return NULL;
    /* Another thread's may be freed as we read it; ours stays put. */
    if (racy_owner(rl) != gs_self_ident() || __atomic_load_n(py.readline_tstate, __ATOMIC_ACQUIRE) != rl)
        return NULL;
    return rl;
}

static int in_self(void *p)
{
    Dl_info me, it;
    if (!dladdr((void *)gs_real_symbol, &me) || !dladdr(p, &it))
        return 0;
    return me.dli_fbase == it.dli_fbase;
}

void *gs_real_symbol(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p && !in_self(p))
        return p;
    p = dlsym(RTLD_DEFAULT, name);
    if (p && !in_self(p))
        return p;
    return NULL;
}

/* offsetof(PyThreadState, thread_id) on the versions whose "current
 * thread state" is process-wide; tests/embed checks it against each
 * version's headers. 3.12+ keeps the current tstate thread-local. */
static long thread_id_offset(int minor)
{
    switch (minor) {
    case 9: case 10: return 176;
    case 11: return 152;
    default: return 0;
    }
}

#define NEED(field, name) \
    do { if (!(*(void **)&py.field = gs_real_symbol(name))) missing = name; } while (0)
#define WANT(field, name) (*(void **)&py.field = gs_real_symbol(name))

int gs_py_resolve(void)
{
    int s = atomic_load_explicit(&g_state, memory_order_acquire);
    if (s != GS_PY_UNKNOWN)
        return s;
    /* Racing first callers compute the same answers and publish them in
     * the same order; the race is benign. */
    if (!gs_real_symbol("Py_IsInitialized")) {
        atomic_store(&g_state, GS_PY_ABSENT);
        return GS_PY_ABSENT;
    }
    const char *missing = NULL;
    NEED(GILState_Ensure, "PyGILState_Ensure");
    NEED(GILState_Release, "PyGILState_Release");
    NEED(GILState_GetThisThreadState, "PyGILState_GetThisThreadState");
    NEED(GILState_Check, "PyGILState_Check");
    NEED(SaveThread, "PyEval_SaveThread");
    NEED(RestoreThread, "PyEval_RestoreThread");
    NEED(IsInitialized, "Py_IsInitialized");
    if (!WANT(IsFinalizing, "Py_IsFinalizing"))
        NEED(IsFinalizing, "_Py_IsFinalizing");
    if (!WANT(UncheckedGet, "PyThreadState_GetUnchecked"))
        NEED(UncheckedGet, "_PyThreadState_UncheckedGet");
    WANT(readline_tstate, "_PyOS_ReadlineTState");
    NEED(ThreadState_New, "PyThreadState_New");
    NEED(ThreadState_Clear, "PyThreadState_Clear");
    NEED(ThreadState_Delete, "PyThreadState_Delete");
    NEED(ThreadState_DeleteCurrent, "PyThreadState_DeleteCurrent");
    NEED(ThreadState_GetInterpreter, "PyThreadState_GetInterpreter");
    NEED(InterpreterState_GetID, "PyInterpreterState_GetID");
    NEED(InterpreterState_Main, "PyInterpreterState_Main");
    NEED(InterpreterState_Head, "PyInterpreterState_Head");
    NEED(InterpreterState_Next, "PyInterpreterState_Next");
    NEED(Err_Occurred, "PyErr_Occurred");
    NEED(Err_Clear, "PyErr_Clear");
    NEED(GetVersion, "Py_GetVersion");
    NEED(AtExit, "Py_AtExit");
    NEED(Import_ImportModule, "PyImport_ImportModule");
    NEED(Object_GetAttrString, "PyObject_GetAttrString");
    NEED(Object_CallFunctionObjArgs, "PyObject_CallFunctionObjArgs");
    NEED(CFunction_NewEx, "PyCFunction_NewEx");
    NEED(DecRef, "Py_DecRef");
    NEED(BuildValue, "Py_BuildValue");

    int major = 0, minor = 0;
    if (py.GetVersion && sscanf(py.GetVersion(), "%d.%d", &major, &minor) != 2 && !missing)
        missing = "Py_GetVersion()";
    if (missing || major != 3 || minor < 9 || minor > 14) {
        gs_log(GS_LOG_WARN, "CPython %d.%d%s%s: unsupported, passing calls through",
               major, minor, missing ? " lacks " : "", missing ? missing : "");
        /* The interposed names must still reach CPython: keep only those. */
        atomic_store(&g_state, GS_PY_UNSUPPORTED);
        return GS_PY_UNSUPPORTED;
    }
    py.thread_id_offset = thread_id_offset(minor);
    py.minor = minor;
    gs_lifecycle_init();
    atomic_store_explicit(&g_state, GS_PY_PRESENT, memory_order_release);
    return GS_PY_PRESENT;
}

int gs_py_state(void) { return atomic_load_explicit(&g_state, memory_order_acquire); }
