/* SPDX-License-Identifier: MIT */
/*
 * CPython 3.15's PEP 788 API for extensions built against 3.9-3.14:
 * interpreter guards and views, PyThreadState_Ensure/EnsureFromView/Release,
 * with 3.15's names, types and failure channels. Include it after
 * <Python.h> and link with `pkg-config --libs gilshim`.
 *
 * On 3.15 and later it adds nothing: CPython's own API is used, and the
 * extension needs no gilshim at all. Below 3.15 each name is a static
 * inline function over the gilshim_ API of <gilshim.h>; libgilshim exports
 * none of CPython's names for this. docs/pep788.md has the table and the
 * semantics.
 */
#ifndef GILSHIM_PEP788_H
#define GILSHIM_PEP788_H

#ifndef Py_PYTHON_H
#error "include <gilshim/pep788.h> after <Python.h>"
#endif

#if PY_VERSION_HEX < 0x030F0000

#include <stdlib.h>

#include "../gilshim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct PyInterpreterGuard PyInterpreterGuard;
typedef struct PyInterpreterView PyInterpreterView;
typedef void PyThreadStateToken;

/* A view is a gilshim_view (interpreter id + runtime generation) in a
 * box from malloc: made and freed with or without a thread state, and
 * whether the runtime is there or not. A guard is a gilshim_guard. */
struct PyInterpreterView {
    gilshim_view gilshim_view_;
};

/* 3.15 raises PythonFinalizationError where a guard cannot be had
 * (3.13+; a RuntimeError subclass, which 3.9-3.12 raise instead). */
static inline void gilshim_pep788_raise_(const char *what)
{
    if (gilshim_last_error() == GILSHIM_ENOMEM) {
        PyErr_NoMemory();
        return;
    }
#if PY_VERSION_HEX >= 0x030D0000 && !defined(Py_LIMITED_API)
    PyErr_SetString(PyExc_PythonFinalizationError, what);
#else
    PyErr_SetString(PyExc_RuntimeError, what);
#endif
}

/* Needs an attached thread state. NULL with an exception set when the
 * current interpreter's end has begun, or out of memory. */
static inline PyInterpreterGuard *PyInterpreterGuard_FromCurrent(void)
{
    gilshim_guard *guard = gilshim_guard_current();
    if (!guard)
        gilshim_pep788_raise_("cannot acquire finalization guard anymore");
    return (PyInterpreterGuard *)guard;
}

/* Any thread, attached or not. NULL without an exception when the view's
 * interpreter is gone, its end has begun, or out of memory. */
static inline PyInterpreterGuard *PyInterpreterGuard_FromView(PyInterpreterView *view)
{
    return view ? (PyInterpreterGuard *)gilshim_guard_from_view(view->gilshim_view_) : NULL;
}

/* Any thread, attached or not. The last guard closed lets a waiting
 * Py_EndInterpreter or Py_FinalizeEx go on. */
static inline void PyInterpreterGuard_Close(PyInterpreterGuard *guard)
{
    gilshim_guard_close((gilshim_guard *)guard);
}

/* Needs an attached thread state. NULL with an exception set only out of
 * memory. */
static inline PyInterpreterView *PyInterpreterView_FromCurrent(void)
{
    gilshim_view current = gilshim_view_current();
    PyInterpreterView *view;
    if (current.id < 0) {
        gilshim_pep788_raise_("no current interpreter");
        return NULL;
    }
    view = (PyInterpreterView *)malloc(sizeof *view);
    if (!view) {
        PyErr_NoMemory();
        return NULL;
    }
    view->gilshim_view_ = current;
    return view;
}

/* Any thread. NULL without an exception before Py_Initialize, after
 * Py_FinalizeEx, or out of memory. */
static inline PyInterpreterView *PyInterpreterView_FromMain(void)
{
    gilshim_view main_view = gilshim_view_main();
    PyInterpreterView *view;
    if (main_view.id < 0)
        return NULL;
    view = (PyInterpreterView *)malloc(sizeof *view);
    if (view)
        view->gilshim_view_ = main_view;
    return view;
}

/* Any thread, attached or not. */
static inline void PyInterpreterView_Close(PyInterpreterView *view)
{
    free(view);
}

/* Attach the calling thread to the guard's interpreter, whatever it holds
 * now (nothing, a state of that interpreter: nested, or of another:
 * switched). NULL without an exception only out of memory. */
static inline PyThreadStateToken *PyThreadState_Ensure(PyInterpreterGuard *guard)
{
    return (PyThreadStateToken *)gilshim_guard_ensure((gilshim_guard *)guard);
}

/* PyInterpreterGuard_FromView, then PyThreadState_Ensure; the guard is
 * closed by the matching PyThreadState_Release. NULL without an exception
 * when the interpreter is gone or its end has begun, or out of memory. */
static inline PyThreadStateToken *PyThreadState_EnsureFromView(PyInterpreterView *view)
{
    return view ? (PyThreadStateToken *)gilshim_ensure_guarded(view->gilshim_view_) : NULL;
}

/* Restore what the matching Ensure found: LIFO, on the same thread, once. */
static inline void PyThreadState_Release(PyThreadStateToken *token)
{
    gilshim_release((gilshim_token *)token);
}

#ifdef __cplusplus
}
#endif

#endif /* PY_VERSION_HEX < 0x030F0000 */
#endif /* GILSHIM_PEP788_H */
