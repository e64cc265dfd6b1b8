/* SPDX-License-Identifier: MIT */
/*
 * The floor of make bench: the cheapest interposer of PyGILState_Ensure and
 * PyGILState_Release there can be, preloaded instead of gilshim. A foreign
 * thread gets one thread state of the main interpreter, made on its first
 * Ensure and then attached and detached with nothing else around it.
 *
 * It is not a usable shim: no routing, no nesting check, no frames, no
 * claim against an interpreter end, no exception cleared, and the state
 * leaks when the thread exits. What it costs over the persistent loop is
 * what any interposer costs (one more call into a preloaded library, one
 * thread-local read, a call that cannot be a tail call since Ensure returns
 * a value); what gilshim costs over it is its bookkeeping.
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <dlfcn.h>

/* initial-exec, as gilshim's own: a preloaded library may use it */
static __thread __attribute__((tls_model("initial-exec"))) PyThreadState *mine;

/* The first Ensure of a thread: stock's, unless the thread has no state of
 * its own, which makes it one of ours. */
__attribute__((noinline)) static PyGILState_STATE first_ensure(void)
{
    static PyGILState_STATE (*real)(void);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "PyGILState_Ensure");
    if (PyGILState_GetThisThreadState())
        return real();
    mine = PyThreadState_New(PyInterpreterState_Main());
    PyEval_RestoreThread(mine);
    return PyGILState_UNLOCKED;
}

PyGILState_STATE PyGILState_Ensure(void)
{
    PyThreadState *t = mine;
    if (__builtin_expect(t == NULL, 0))
        return first_ensure();
    PyEval_RestoreThread(t);
    return PyGILState_UNLOCKED;
}

void PyGILState_Release(PyGILState_STATE s)
{
    static void (*real)(PyGILState_STATE);
    if (__builtin_expect(mine != NULL && s == PyGILState_UNLOCKED, 1)) {
        PyEval_SaveThread();
        return;
    }
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "PyGILState_Release");
    real(s);
}
