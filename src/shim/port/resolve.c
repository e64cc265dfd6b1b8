/* SPDX-License-Identifier: MIT */
/* Finding CPython at run time, lazily: a preloaded library is inherited by
 * every child process (sh, cc, git), so nothing here runs in a constructor
 * and a process without Python only ever pays one failed dlsym. */
#define _GNU_SOURCE
#include "cpython.h"
#include "../../registry/registry.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
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

/*
 * CPython's own "attached thread state" word, which PyThreadState_GetUnchecked
 * returns: read directly, the fast paths save that call twice per callback
 * (and, on 3.12+, the __tls_get_addr inside it). <= 3.11 it is a field of
 * _PyRuntime, shared by all threads; 3.12+ a thread-local of libpython that
 * is not exported (_Py_tss_tstate). Neither has an offset worth a table:
 * the word is found by looking, like CPython's TSS key (lifecycle.c). The
 * word of that region that holds t while t is attached and stops holding
 * it once t is detached is it; the GIL's last holder and the interpreter's
 * list of thread states keep t, and so fall out. Until it is found, and if
 * it never is, the fast Ensure calls PyThreadState_GetUnchecked and Release
 * takes the general path (where the looking is done).
 */
static _Atomic long g_cur_off = -1;  /* offset in the region; -1 unknown, -2 given up */
static _Atomic int g_cur_tries, g_cur_scans;
static char *g_runtime;              /* <= 3.11: _PyRuntime */
static size_t g_region_size;         /* its size, or that of libpython's TLS block */
static void *g_py_handle;            /* 3.12+: libpython's (or the executable's) handle */

struct tls_size {
    uintptr_t base;
    size_t size;
};

static int tls_size_of(struct dl_phdr_info *info, size_t n, void *arg)
{
    (void)n;
    struct tls_size *ts = arg;
    if (info->dlpi_addr != ts->base)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_TLS)
            ts->size = info->dlpi_phdr[i].p_memsz;
    return 1;
}

/* Once per process: where to look, and how far. */
static int cur_region_init(void)
{
    if (g_region_size)
        return 1;
    Dl_info info;
    if (py.port->shared_current) {
        const ElfW(Sym) *sym = NULL;
        void *rt = gs_real_symbol("_PyRuntime");
        if (!rt || !dladdr1(rt, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || !sym->st_size)
            return 0;
        g_runtime = rt;
        g_region_size = sym->st_size;
        return 1;
    }
    struct link_map *lm = NULL;
    if (!dladdr1((void *)py.RestoreThread, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return 0;
    struct tls_size ts = {lm->l_addr, 0};
    dl_iterate_phdr(tls_size_of, &ts);
    /* the executable itself when CPython is linked into it */
    g_py_handle = gs_real_dlopen(lm->l_name && lm->l_name[0] ? lm->l_name : NULL, RTLD_LAZY | RTLD_NOLOAD);
    if (!g_py_handle || !ts.size)
        return 0;
    g_region_size = ts.size;
    return 1;
}

/* The region as the calling thread sees it (3.12+: its own TLS block,
 * allocated once it has been attached). */
static char *cur_region(void)
{
    if (g_runtime)
        return g_runtime;
    void *tls = NULL;
    if (!g_py_handle || dlinfo(g_py_handle, RTLD_DI_TLS_DATA, &tls) != 0)
        return NULL;
    return tls;
}

/* Words other threads write as we read: see racy_owner. */
__attribute__((no_sanitize("address", "thread"), noinline))
static void *racy_word(const char *base, size_t off)
{
    return *(void *const volatile *)(base + off);
}

int gs_reads_attached_directly(void) { return atomic_load(&g_cur_off) >= 0; }

/* Another thread kept taking the GIL at once, the thread that looked
 * never detached where the shim sees it, or CPython has changed: the fast
 * paths keep calling PyThreadState_GetUnchecked, nothing else changes. */
static void give_up(size_t candidates)
{
    long expect = -1;
    if (atomic_compare_exchange_strong(&g_cur_off, &expect, -2))
        gs_log(GS_LOG_INFO, "CPython's attached-thread-state word not identified "
               "(%zu candidates left)", candidates);
}

/* Candidates seen by the thread that looked last, kept until it detaches:
 * the shim never detaches on its own to look (a thread that re-attaches
 * while the runtime finalizes is killed). */
static pthread_mutex_t g_learn_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(const struct gs_thread *) g_learner;
static size_t g_cand[8], g_ncand;

char *gs_py_tls_block(size_t *size)
{
    if (py.port->shared_current)
        return NULL;
    pthread_mutex_lock(&g_learn_lock);
    int ok = cur_region_init();
    pthread_mutex_unlock(&g_learn_lock);
    if (!ok)
        return NULL;
    *size = g_region_size;
    return cur_region();
}

void gs_learn_current(struct gs_thread *self, PyThreadState *t)
{
    long off = atomic_load_explicit(&g_cur_off, memory_order_acquire);
    char *base;
    if (off == -2 || self->py_current)
        return;
    if (off >= 0) {
        /* 3.12+: NULL until this thread has touched libpython's TLS */
        if ((base = cur_region()) && racy_word(base, (size_t)off) == py.UncheckedGet())
            self->py_current = (void *const *)(base + off);
        return;
    }
    if (!t)
        return;
    if (atomic_fetch_add(&g_cur_scans, 1) >= 1024) {
        give_up(0);
        return;
    }
    pthread_mutex_lock(&g_learn_lock);
    if (cur_region_init() && (base = cur_region())) {
        g_learner = self;
        g_ncand = 0;
        for (size_t o = 0; o + sizeof(void *) <= g_region_size && g_ncand < 8; o += sizeof(void *))
            if (racy_word(base, o) == t)
                g_cand[g_ncand++] = o;
    } else {
        atomic_store(&g_cur_off, -2);
    }
    pthread_mutex_unlock(&g_learn_lock);
}

void gs_learn_detached(struct gs_thread *self, PyThreadState *t)
{
    if (atomic_load_explicit(&g_cur_off, memory_order_relaxed) != -1 ||
        atomic_load_explicit(&g_learner, memory_order_relaxed) != self)
        return;
    pthread_mutex_lock(&g_learn_lock);
    char *base;
    if (g_learner == self && (base = cur_region())) {
        size_t kept = 0;
        for (size_t i = 0; i < g_ncand; i++)
            if (racy_word(base, g_cand[i]) != t)
                g_cand[kept++] = g_cand[i];
        if (kept == 1) {
            atomic_store_explicit(&g_cur_off, (long)g_cand[0], memory_order_release);
        } else if (atomic_fetch_add(&g_cur_tries, 1) >= 16) {
            give_up(kept);
        }
        g_learner = NULL;
    }
    pthread_mutex_unlock(&g_learn_lock);
    gs_learn_current(self, NULL);
}

static int in_self(void *p)
{
    Dl_info me, it;
    if (!dladdr((void *)gs_real_symbol, &me) || !dladdr(p, &it))
        return 0;
    return me.dli_fbase == it.dli_fbase;
}

void *gs_real_dlopen(const char *file, int mode)
{
    static void *(*_Atomic real)(const char *, int);
    void *(*fn)(const char *, int) = atomic_load(&real);
    if (!fn && (fn = (void *(*)(const char *, int))gs_real_symbol("dlopen")))
        atomic_store(&real, fn);
    return fn ? fn(file, mode) : NULL;
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

static _Atomic int g_exc_checked;

void gs_learn_exception(PyThreadState *t)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&g_exc_checked, &expect, 1))
        return;
    long off = py.port->exc_offset;
    if (!off || !py.Err_SetNone || !py.exc_runtime_error || py.Err_Occurred())
        return;
    PyObject *const *word = (PyObject *const *)((const char *)t + off);
    int ok = *word == NULL;
    py.Err_SetNone(*py.exc_runtime_error);
    PyObject *type = py.Err_Occurred(), *set = *word;
    /* the type itself, or the exception, whose ob_type follows ob_refcnt
     * (not so in a free-threaded build: no match) */
    ok = ok && type && set &&
         (py.port->exc_is_type ? set == type : ((PyObject *const *)set)[1] == type);
    py.Err_Clear();
    ok = ok && *word == NULL;
    if (ok)
        __atomic_store_n(&py.exc_offset, off, __ATOMIC_RELAXED);
    else
        gs_log(GS_LOG_INFO, "a thread state's exception is not at offset %ld; "
               "using PyErr_Occurred", off);
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
    WANT(Err_SetNone, "PyErr_SetNone");
    WANT(exc_runtime_error, "PyExc_RuntimeError");
    NEED(GetVersion, "Py_GetVersion");
    NEED(AtExit, "Py_AtExit");
    NEED(Import_ImportModule, "PyImport_ImportModule");
    NEED(Object_GetAttrString, "PyObject_GetAttrString");
    NEED(Object_CallFunctionObjArgs, "PyObject_CallFunctionObjArgs");
    NEED(CFunction_NewEx, "PyCFunction_NewEx");
    NEED(Capsule_New, "PyCapsule_New");
    NEED(DecRef, "Py_DecRef");
    NEED(BuildValue, "Py_BuildValue");

    int major = 0, minor = 0, free_threaded = 0;
    if (py.GetVersion && !gs_port_parse_version(py.GetVersion(), &major, &minor, &free_threaded) &&
        !missing)
        missing = "Py_GetVersion()";
    const struct gs_port *port = major == 3 && !free_threaded ? gs_port_for(minor) : NULL;
    if (missing || !port) {
        if (free_threaded && !missing)
            gs_log(GS_LOG_WARN, "CPython %d.%d free-threading build: unsupported (gilshim knows "
                   "the GIL builds of 3.%d-3.%d), passing calls through", major, minor,
                   gs_port_oldest(), gs_port_newest());
        else
            gs_log(GS_LOG_WARN, "CPython %d.%d%s%s: unsupported (gilshim knows 3.%d-3.%d), "
                   "passing calls through", major, minor, missing ? " lacks " : "",
                   missing ? missing : "", gs_port_oldest(), gs_port_newest());
        /* The interposed names must still reach CPython: keep only those. */
        atomic_store(&g_state, GS_PY_UNSUPPORTED);
        return GS_PY_UNSUPPORTED;
    }
    py.port = port;
    py.thread_id_offset = port->shared_current ? port->thread_id_offset : 0;
    py.gilstate_follows = port->gilstate_follows;
    py.status_offset = port->status_offset;  /* the flag's mask once checked */
    py.bound_gilstate_keep = ~0u;
    py.minor = minor;
    atomic_store_explicit(&g_state, GS_PY_PRESENT, memory_order_release);
    return GS_PY_PRESENT;
}

int gs_py_state(void) { return atomic_load_explicit(&g_state, memory_order_acquire); }
