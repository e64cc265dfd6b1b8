/* SPDX-License-Identifier: MIT */
/*
 * For extensions that cannot rely on LD_PRELOAD: include this after
 * <Python.h> (and <pthread.h>), link with `pkg-config --libs gilshim`, and
 * this compilation unit's PyGILState_* calls, its Py_BEGIN/END_ALLOW_THREADS
 * and its pthread_create go through gilshim. Nothing else in the process
 * changes.
 */
#ifndef GILSHIM_REDIRECT_H
#define GILSHIM_REDIRECT_H

#ifndef Py_PYTHON_H
#error "include <gilshim/redirect.h> after <Python.h>"
#endif

#include <pthread.h>

#include "../gilshim.h"

#undef PyGILState_Ensure
#undef PyGILState_Release
#undef PyGILState_GetThisThreadState
#undef PyGILState_Check
#undef PyEval_SaveThread
#undef PyEval_RestoreThread
#undef PyThreadState_Delete
#undef pthread_create

#define PyGILState_Ensure() ((PyGILState_STATE)gilshim_PyGILState_Ensure())
#define PyGILState_Release(state) gilshim_PyGILState_Release((int)(state))
#define PyGILState_GetThisThreadState() ((PyThreadState *)gilshim_PyGILState_GetThisThreadState())
#define PyGILState_Check() gilshim_PyGILState_Check()
/* Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS expand to these */
#define PyEval_SaveThread() ((PyThreadState *)gilshim_PyEval_SaveThread())
#define PyEval_RestoreThread(tstate) gilshim_PyEval_RestoreThread((void *)(tstate))
#define PyThreadState_Delete(tstate) gilshim_PyThreadState_Delete((void *)(tstate))
#define pthread_create gilshim_pthread_create

#endif
