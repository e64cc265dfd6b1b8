/*
 * The entry points: CPython's names that libgilshim exports (interpose.c)
 * and the gilshim_ API (api.c, include/gilshim.h). The top layer: each
 * picks the mode's strategy and calls the policy (docs/architecture.md).
 */
#ifndef GILSHIM_ENTRY_H
#define GILSHIM_ENTRY_H

#include "../base/base.h"

/* The CPython names libgilshim exports. */
GS_EXPORT int PyGILState_Ensure(void);
GS_EXPORT void PyGILState_Release(int oldstate);
GS_EXPORT void *PyGILState_GetThisThreadState(void);
GS_EXPORT int PyGILState_Check(void);
GS_EXPORT void *PyEval_SaveThread(void);
GS_EXPORT void PyEval_RestoreThread(void *tstate);
GS_EXPORT void PyThreadState_Delete(void *tstate);

#endif
