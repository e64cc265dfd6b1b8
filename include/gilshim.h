/* SPDX-License-Identifier: MIT */
/*
 * gilshim: run native callbacks in the CPython interpreter that owns them.
 *
 * The public contract. Everything gilshim exports starts with gilshim_
 * (or is one of the CPython names it interposes, see README.md).
 * This header needs neither Python.h nor libpython.
 *
 * The explicit API gives CPython 3.9-3.14 the shape of PEP 788:
 *   gilshim_view   ~ PyInterpreterView  (weak, copyable, safe after the end)
 *   gilshim_guard  ~ PyInterpreterGuard (holds the interpreter's end off)
 *   gilshim_ensure ~ PyThreadState_Ensure (a token, NULL when it cannot)
 * and <gilshim/pep788.h> gives it 3.15's own names.
 */
#ifndef GILSHIM_H
#define GILSHIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GILSHIM_VERSION_MAJOR 0
#define GILSHIM_VERSION_MINOR 1
#define GILSHIM_VERSION_PATCH 0

/* A weak reference to an interpreter: its id plus the generation of the
 * runtime it lived in (ids restart after Py_FinalizeEx + Py_Initialize).
 * Copy it freely; it never dangles. An invalid view has id < 0. */
typedef struct gilshim_view {
    int64_t id;
    uint64_t generation;
} gilshim_view;

/* What gilshim_ensure returns: opaque, released exactly once, LIFO, on the
 * thread that got it. */
typedef struct gilshim_token gilshim_token;

enum gilshim_error {
    GILSHIM_OK = 0,
    GILSHIM_ENOPYTHON,    /* no initialized CPython runtime in this process */
    GILSHIM_EINVAL,       /* invalid (NULL, never-valid) view or token */
    GILSHIM_ESTALE,       /* view of a runtime that has since been finalized */
    GILSHIM_EGONE,        /* the interpreter has ended or is ending */
    GILSHIM_EFINALIZING,  /* the runtime is finalizing */
    GILSHIM_ENOMEM,       /* out of memory, or CPython could not make a thread state */
    GILSHIM_EORDER,       /* token released out of LIFO order or twice */
    GILSHIM_ETHREAD,      /* token released on a thread that did not get it */
};

/* "major.minor.patch" of the library actually loaded. */
const char *gilshim_version(void);

/* The interpreter attached to the calling thread, or an invalid view. */
gilshim_view gilshim_view_current(void);
/* The main interpreter, or an invalid view before Py_Initialize. */
gilshim_view gilshim_view_main(void);
/* 1 if the view names an interpreter that is alive and accepting calls. */
int gilshim_view_alive(gilshim_view view);

/* Attach the calling thread to the view's interpreter, whatever it holds
 * now; gilshim_release restores exactly that (and closes the guard of a
 * gilshim_ensure_guarded token). NULL, touching nothing, when the
 * interpreter is gone or finalizing: gilshim_last_error() says why. */
gilshim_token *gilshim_ensure(gilshim_view view);
void gilshim_release(gilshim_token *token);

/* PEP 788's interpreter guards, which <gilshim/pep788.h> gives 3.15's
 * names (docs/pep788.md). While a guard on an interpreter is open, its
 * end (Py_EndInterpreter, or Py_FinalizeEx for every interpreter) waits
 * in gilshim's exit hook, GIL released, until the last one is closed;
 * from then on none can be had. A guard can be closed on any thread. */
typedef struct gilshim_guard gilshim_guard;
/* A guard on the interpreter attached to the calling thread. NULL when
 * its end has begun (GILSHIM_EGONE, GILSHIM_EFINALIZING), nothing is
 * attached (GILSHIM_EINVAL), or out of memory (GILSHIM_ENOMEM). */
gilshim_guard *gilshim_guard_current(void);
/* A guard on the view's interpreter, from any thread, attached or not.
 * NULL as gilshim_view_alive would say 0, or out of memory. */
gilshim_guard *gilshim_guard_from_view(gilshim_view view);
void gilshim_guard_close(gilshim_guard *guard);
/* gilshim_ensure on the guard's interpreter: while the guard is open it
 * fails only for memory. Released with gilshim_release. */
gilshim_token *gilshim_guard_ensure(gilshim_guard *guard);
/* gilshim_guard_from_view, then gilshim_guard_ensure; the guard is held
 * until gilshim_release of the token closes it. */
gilshim_token *gilshim_ensure_guarded(gilshim_view view);

/* Routing rule 3: PyGILState_Ensure on this thread goes to the view's
 * interpreter (unless the thread is attached or in a GIL-released region).
 * Returns 0, or a gilshim_error. */
int gilshim_bind_thread(gilshim_view view);
void gilshim_unbind_thread(void);

/* How calls reach the shim in this process: "symbol interposition",
 * "GOT patching", "explicit linking" or "none (no CPython when loaded)";
 * and the GILSHIM_MODE in force. */
const char *gilshim_redirection(void);
const char *gilshim_mode(void);

/* What the shim holds right now, for tests and monitoring. Pass
 * sizeof(gilshim_stats) as size: the struct only grows at its end, and a
 * caller built against an older, shorter one gets the members it knows.
 * Returns 0, or GILSHIM_EINVAL (NULL, or shorter than the first three). */
typedef struct gilshim_stats {
    size_t threads;  /* OS threads with a gilshim record */
    size_t rows;     /* cached thread states: one per (thread x interpreter) used */
    size_t bytes;    /* heap held for those, besides CPython's own thread states */
    /* 1 once the fast paths read CPython's attached thread state, a
     * thread state's pending exception and CPython's TSS slot in memory,
     * 0 while they still call CPython or libc for them
     * (docs/performance.md) */
    int reads_attached_directly;
    int reads_exception_directly;
    int reads_tss_directly;
} gilshim_stats;
int gilshim_get_stats(gilshim_stats *out, size_t size);

/* The error of the calling thread's last failed gilshim_ call, and its text. */
int gilshim_last_error(void);
const char *gilshim_strerror(int error);

/* The same entry points the library interposes under the CPython names.
 * Legacy extensions reach them through <gilshim/redirect.h>. The int
 * is PyGILState_STATE; the void pointers are PyThreadState pointers. */
int gilshim_PyGILState_Ensure(void);
void gilshim_PyGILState_Release(int oldstate);
void *gilshim_PyGILState_GetThisThreadState(void);
int gilshim_PyGILState_Check(void);
void *gilshim_PyEval_SaveThread(void);
void gilshim_PyEval_RestoreThread(void *tstate);
/* Deleting a state the library caches (a legacy keep-alive such as cffi's)
 * hands it back to the library instead of freeing it under its feet. */
void gilshim_PyThreadState_Delete(void *tstate);
/* pthread_create that records the creating thread's interpreter (rule 4). */
int gilshim_pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                           void *(*start)(void *), void *arg);

#ifdef __cplusplus
}
#endif
#endif /* GILSHIM_H */
