/* SPDX-License-Identifier: MIT */
/*
 * The entry points: CPython's names that libgilshim exports (interpose.c)
 * and the gilshim_ API (api.c, include/gilshim.h). The top layer: each
 * picks the mode's strategy and calls the policy (docs/architecture.md).
 */
#ifndef GILSHIM_ENTRY_H
#define GILSHIM_ENTRY_H

#include "../../../include/gilshim.h"
#include "../base/base.h"

/* The CPython names libgilshim exports. */
GS_EXPORT int PyGILState_Ensure(void);
GS_EXPORT void PyGILState_Release(int oldstate);
GS_EXPORT void *PyGILState_GetThisThreadState(void);
GS_EXPORT int PyGILState_Check(void);
GS_EXPORT void *PyEval_SaveThread(void);
GS_EXPORT void PyEval_RestoreThread(void *tstate);
GS_EXPORT void PyThreadState_Delete(void *tstate);
GS_EXPORT void *PyInterpreterState_ThreadHead(void *interp);

/* --- the explicit API (api.c), for pep788.c --- */
struct gs_interp;
/* The live entry of a view, or NULL with gilshim_last_error set. */
GS_HIDDEN struct gs_interp *gs_resolve_view(gilshim_view v);
/* Set gilshim_last_error; returns err. */
GS_HIDDEN int gs_set_error(int err);

#endif
