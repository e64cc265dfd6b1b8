/* SPDX-License-Identifier: MIT */
/*
 * The slice of CPython the shim uses, declared here instead of including
 * Python.h: the shim links no libpython and runs unchanged on every version, so
 * every CPython function is found at run time and called through py.*.
 * Types are opaque. Two PyThreadState fields are read (thread_id on
 * <= 3.11, the pending exception) at offsets kept per version in
 * port/versions.c and checked by tests/embed; CPython's attached-state word
 * is found by looking.
 */
#ifndef GILSHIM_CPYTHON_H
#define GILSHIM_CPYTHON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"
#include "versions.h"


typedef struct gs_PyThreadState PyThreadState;
typedef struct gs_PyInterpreterState PyInterpreterState;
typedef struct gs_PyObject PyObject;

/* PyGILState_STATE */
enum { GS_PyGILState_LOCKED = 0, GS_PyGILState_UNLOCKED = 1 };

/* PyMethodDef, for the per-interpreter exit hook (stable ABI layout). */
struct gs_PyMethodDef {
    const char *ml_name;
    PyObject *(*ml_meth)(PyObject *, PyObject *);
    int ml_flags;
    const char *ml_doc;
};
#define GS_METH_NOARGS 0x0004

struct gs_py {
    int minor;                     /* 0 until resolved */
    const struct gs_port *port;    /* this version's facts (port/versions.h) */
    /* offsetof(PyThreadState, thread_id) where the attached state is
     * process-wide (port->shared_current), else 0 */
    long thread_id_offset;
    /* offsetof(PyThreadState, curexc_type) (<= 3.11) or current_exception
     * (3.12+), once checked on a live thread state; 0 until then or if
     * the check failed (gs_learn_exception) */
    long exc_offset;
    /* 3.12+: where a state's _status.bound_gilstate is (port row), once
     * checked on a live state (gs_learn_gilstate_flag); mask 0 until then
     * or if the check failed */
    long status_offset;
    unsigned bound_gilstate_mask;
    unsigned bound_gilstate_keep;  /* ~bound_gilstate_mask */
    int gilstate_follows;          /* port->gilstate_follows, one load away */
    /* the originals of what the shim interposes */
    int (*GILState_Ensure)(void);
    void (*GILState_Release)(int);
    PyThreadState *(*GILState_GetThisThreadState)(void);
    int (*GILState_Check)(void);
    PyThreadState *(*SaveThread)(void);
    void (*RestoreThread)(PyThreadState *);
    /* used, never interposed */
    int (*IsInitialized)(void);
    int (*IsFinalizing)(void);
    PyThreadState *(*UncheckedGet)(void);
    PyThreadState **readline_tstate;  /* _PyOS_ReadlineTState, if exported */
    PyThreadState *(*ThreadState_New)(PyInterpreterState *);
    void (*ThreadState_Clear)(PyThreadState *);
    void (*ThreadState_Delete)(PyThreadState *);
    void (*ThreadState_DeleteCurrent)(void);
    PyInterpreterState *(*ThreadState_GetInterpreter)(PyThreadState *);
    int64_t (*InterpreterState_GetID)(PyInterpreterState *);
    PyInterpreterState *(*InterpreterState_Main)(void);
    PyInterpreterState *(*InterpreterState_Head)(void);
    PyInterpreterState *(*InterpreterState_Next)(PyInterpreterState *);
    PyObject *(*Err_Occurred)(void);
    void (*Err_Clear)(void);
    void (*Err_SetNone)(PyObject *);
    PyObject **exc_runtime_error;     /* PyExc_RuntimeError */
    const char *(*GetVersion)(void);
    int (*AtExit)(void (*)(void));
    PyObject *(*Import_ImportModule)(const char *);
    PyObject *(*Object_GetAttrString)(PyObject *, const char *);
    PyObject *(*Object_CallFunctionObjArgs)(PyObject *, ...);
    PyObject *(*CFunction_NewEx)(struct gs_PyMethodDef *, PyObject *, PyObject *);
    PyObject *(*Capsule_New)(void *, const char *, void (*)(PyObject *));
    void (*DecRef)(PyObject *);
    PyObject *(*BuildValue)(const char *, ...);
};

GS_HIDDEN extern struct gs_py py;

/* Python's state in this process, as far as the shim knows. */
enum { GS_PY_UNKNOWN = 0, GS_PY_ABSENT = 1, GS_PY_PRESENT = 2, GS_PY_UNSUPPORTED = 3 };

/* Resolve everything once; GS_PY_PRESENT if the shim can route. Cheap after
 * the first call. Never prints unless asked to (GILSHIM_LOG_LEVEL). */
GS_HIDDEN int gs_py_resolve(void);
GS_HIDDEN int gs_py_state(void);

/* The original of an interposed function: RTLD_NEXT, then RTLD_DEFAULT,
 * never an address inside libgilshim. NULL if there is none. */
GS_HIDDEN void *gs_real_symbol(const char *name);

/* libc's dlopen, not the shim's own hook (redirect/): the port loads
 * nothing, it only looks up objects already there (RTLD_NOLOAD). */
GS_HIDDEN void *gs_real_dlopen(const char *file, int mode);

/* An interposed name must reach CPython even when the shim stands aside. */
#define ORIGINAL(field, name) \
    (py.field ? py.field : (__typeof__(py.field))gs_real_symbol(name))

GS_HIDDEN unsigned long gs_self_ident(void);


/* CPython's gilstate binding of the calling thread ("the TSS slot"), once
 * found (binding.c): a pthread key of the runtime (autoTSSkey, through
 * 3.14) or a thread-local word of libpython (_Py_tss_gilstate, 3.15+,
 * port->gilstate_in_tls). Read directly it costs one pthread_getspecific
 * or one load instead of three calls. */
GS_HIDDEN extern pthread_key_t gs_tss_key;
GS_HIDDEN extern _Atomic int gs_tss_key_state;  /* 0 unknown, 1 found, 2 not found */
/* gilstate_in_tls: this thread's word, or NULL before libpython's TLS
 * block exists on it */
GS_HIDDEN void **gs_tss_word(void);

static inline void *gs_tss_read(void)
{
    if (!py.port->gilstate_in_tls)
        return pthread_getspecific(gs_tss_key);
    void **w = gs_tss_word();
    return w ? *w : NULL;
}

static inline void gs_tss_write(void *v)
{
    void **w;
    if (!py.port->gilstate_in_tls)
        pthread_setspecific(gs_tss_key, v);
    else if ((w = gs_tss_word()))
        *w = v;
}

GS_HIDDEN PyThreadState *gs_tss_get_slow(void);
/* The thread state CPython has bound to the calling thread, attached or not
 * (PyGILState_GetThisThreadState of the original). */
static inline PyThreadState *gs_tss_get(void)
{
    if (__builtin_expect(atomic_load_explicit(&gs_tss_key_state, memory_order_acquire) == 1, 1))
        return (PyThreadState *)gs_tss_read();
    return gs_tss_get_slow();
}

struct gs_thread;
/* Point self->tss_slot at where this thread's binding is kept: glibc's
 * value of CPython's TSS key, once the layout is checked, or libpython's
 * word (binding.c). */
GS_HIDDEN void gs_learn_tss_slot(struct gs_thread *self);
GS_HIDDEN int gs_reads_tss_directly(void);

/*
 * 3.12+: CPython keeps two records of which state is in a thread's gilstate
 * slot, the slot itself and the state's _status.bound_gilstate, and asserts
 * in debug builds that they agree (tstate_activate, unbind_gilstate_tstate:
 * docs/thread-states.md). A row's state is bound while attached, as
 * CPython binds every state it activates, and unbound while idle: its
 * interpreter's end may delete it from another thread at any moment, and
 * deleting a bound state clears the *deleter's* slot, while binding another
 * state writes through the old binding. slot is the thread's tss_slot
 * (NULL if not readable in memory).
 */
static inline unsigned *gs_status_word(PyThreadState *t)
{
    return (unsigned *)((char *)t + py.status_offset);
}

GS_HIDDEN void gs_gilstate_bind_slow(PyThreadState *t);
/* t, this thread's row state about to be attached, into the slot, which
 * the caller found empty (slot_empty) or is checked here: what
 * tstate_activate would do, without its two TSS calls. */
static inline __attribute__((always_inline)) void gs_gilstate_bind(void *const *slot,
                                                                   PyThreadState *t,
                                                                   int slot_empty)
{
    unsigned m = py.bound_gilstate_mask;
    if (m && (slot_empty || (slot && !*slot))) {
        *(void **)slot = t;  /* CPython's value of its key, glibc's copy: see binding.c */
        /* the slot before the flag, for gs_gilstate_rebind_foreign (no
         * instruction on x86-64) */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        *gs_status_word(t) |= m;
    } else if (m && !slot) {
        gs_gilstate_bind_slow(t);
    }
}

GS_HIDDEN void gs_gilstate_unbind_slow(PyThreadState *t);
/* Another thread's row state t, which that thread has bound (its slot
 * holds t) and which the caller, holding the GIL, has just seen cleared:
 * set its flag again, should the clear have raced with that binding. */
GS_HIDDEN void gs_gilstate_rebind_foreign(void *const *slot, PyThreadState *t);
/* t, this thread's row state just detached at its outermost Release, out
 * of the slot: what unbind_gilstate_tstate does when CPython deletes it. */
static inline void gs_gilstate_unbind(void *const *slot, PyThreadState *t)
{
    if (__builtin_expect(slot && *slot == t, 1)) {
        *(void **)slot = NULL;
        /* mask 0 (the flag not found): a no-op on t's own _status word,
         * which no other thread touches while the row is BUSY */
        *gs_status_word(t) &= py.bound_gilstate_keep;
    } else {
        gs_gilstate_unbind_slow(t);
    }
}

/* Before the calling thread attaches its row state t only to delete it
 * (thread exit): bound as CPython's deletion expects (every version). */
GS_HIDDEN void gs_bind_to_delete(void *const *slot, PyThreadState *t);

/* Called attached to t, a row state just made and attached: check the
 * row's _status facts on it, once (binding.c). */
GS_HIDDEN void gs_learn_gilstate_flag(PyThreadState *t);

/* Delete a tstate owned by another (idle) thread without disturbing the
 * calling thread's CPython TSS slot (the owner's is repaired through its
 * stale_tss mailbox). Caller is attached to the tstate's interpreter. */
GS_HIDDEN void gs_delete_foreign_tstate(PyThreadState *t, int cleared);

/* <= 3.11: whether t, the process-wide current tstate, which is not the
 * one bound to this thread, is this thread's all the same. */
GS_HIDDEN PyThreadState *gs_attached_shared(PyThreadState *t);

/* <= 3.11: the state PyOS_Readline released on the calling thread while
 * it waits in GNU readline, or NULL. That release happens inside CPython,
 * where a libpython built with -fno-semantic-interposition, or one linked
 * into the executable, never reaches the shim's PyEval_SaveThread. */
GS_HIDDEN PyThreadState *gs_readline_released(void);

/* This thread's block of libpython's thread-locals (3.12+) and its size,
 * or NULL (resolve.c). */
GS_HIDDEN char *gs_py_tls_block(size_t *size);

/* Where CPython keeps the attached state, found once per process from the
 * general paths (resolve.c): gs_learn_current right after this thread
 * attached t, gs_learn_detached right after it detached t. Once found,
 * gs_learn_current (t may be NULL then) points self->py_current at this
 * thread's word. */
GS_HIDDEN void gs_learn_current(struct gs_thread *self, PyThreadState *t);
GS_HIDDEN void gs_learn_detached(struct gs_thread *self, PyThreadState *t);
GS_HIDDEN int gs_reads_attached_directly(void);

/* The tstate attached on the calling OS thread, or NULL. On <= 3.11 the
 * "current" tstate is process-wide (one GIL): the thread's bound tstate is
 * stock's own test, then gs_attached_shared. */
static inline PyThreadState *gs_py_attached(void)
{
    PyThreadState *t = py.UncheckedGet();
    if (t && py.thread_id_offset && t != gs_tss_get())
        return gs_attached_shared(t);
    return t;
}

/* Called attached to t, a thread state just made: check the offset of its
 * pending exception against CPython's own answer, once (resolve.c). */
GS_HIDDEN void gs_learn_exception(PyThreadState *t);

/* Whether the attached t has an exception set: PyErr_Occurred, read
 * directly once the offset is checked. */
static inline int gs_py_exception(PyThreadState *t)
{
    long off = __atomic_load_n(&py.exc_offset, __ATOMIC_RELAXED);
    return __builtin_expect(off != 0, 1) ? *(void *const *)((const char *)t + off) != NULL
                                         : py.Err_Occurred() != NULL;
}

/* The tstate attached to the calling thread (3.12+) or to any (<= 3.11):
 * PyThreadState_GetUnchecked, read at word (a thread's py_current). */
static inline PyThreadState *gs_py_current(void *const *word)
{
    return (PyThreadState *)__atomic_load_n(word, __ATOMIC_RELAXED);
}

#endif
