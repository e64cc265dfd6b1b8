/* SPDX-License-Identifier: MIT */
/*
 * CPython 3.15's own PEP 788 cycle against gilshim's, in one process
 * (docs/pep788.md "Speed"). Run with libgilshim preloaded, on CPython
 * 3.15+; every loop runs on a thread that has never run Python (a foreign
 * thread), attaching to main and detaching again:
 *
 *   native_guard      PyThreadState_Ensure(guard) / PyThreadState_Release
 *                     (the guard taken once, held throughout)
 *   native_view       PyThreadState_EnsureFromView(view) / Release
 *   stock_gilstate    libpython's own PyGILState_Ensure / Release
 *   gilshim_gilstate  PyGILState_Ensure / Release as gilshim interposes them
 *   gilshim_ensure    gilshim_ensure(view) / gilshim_release
 *   gilshim_guard     gilshim_guard_ensure(guard) / gilshim_release
 *   gilshim_guarded   gilshim_ensure_guarded(view) / gilshim_release
 *   limit             PyEval_RestoreThread / PyEval_SaveThread of one
 *                     persistent thread state (libpython's own)
 *   native_nested     PyThreadState_Ensure(guard) / Release, attached
 *   gilshim_nested    gilshim_ensure(view) / gilshim_release, attached
 *
 * Prints "key ns-per-cycle", best of ROUNDS rounds, and
 * "native_creates 0|1": whether 3.15's Ensure made a new thread state in
 * each cycle of native_guard.
 *   pep788 [SCALE]
 *   pep788 ir KEY N    one timed loop of N cycles, for callgrind
 *                      --toggle-collect=timed (tests/run-bench-pep788.sh)
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../include/gilshim.h"

#if PY_VERSION_HEX < 0x030F0000
#error "tests/bench/pep788.c measures CPython 3.15's own PEP 788 API"
#endif

static int rounds = 7;
static long n = 100000;

static PyInterpreterGuard *guard;
static PyInterpreterView *view;
static gilshim_view gview;
static gilshim_guard *gguard;

static struct {
    PyGILState_STATE (*Ensure)(void);
    void (*Release)(PyGILState_STATE);
    PyThreadState *(*Save)(void);
    void (*Restore)(PyThreadState *);
} real;

static struct {
    gilshim_view (*view_main)(void);
    gilshim_token *(*ensure)(gilshim_view);
    void (*release)(gilshim_token *);
    gilshim_guard *(*guard_from_view)(gilshim_view);
    void (*guard_close)(gilshim_guard *);
    gilshim_token *(*guard_ensure)(gilshim_guard *);
    gilshim_token *(*ensure_guarded)(gilshim_view);
} gs;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

__attribute__((noipa)) static void native_guard(void)
{
    for (long i = 0; i < n; i++)
        PyThreadState_Release(PyThreadState_Ensure(guard));
}

__attribute__((noipa)) static void native_view(void)
{
    for (long i = 0; i < n; i++)
        PyThreadState_Release(PyThreadState_EnsureFromView(view));
}

__attribute__((noipa)) static void stock_gilstate(void)
{
    for (long i = 0; i < n; i++)
        real.Release(real.Ensure());
}

__attribute__((noipa)) static void gilshim_gilstate(void)
{
    for (long i = 0; i < n; i++)
        PyGILState_Release(PyGILState_Ensure());
}

__attribute__((noipa)) static void gilshim_ensure_loop(void)
{
    for (long i = 0; i < n; i++)
        gs.release(gs.ensure(gview));
}

__attribute__((noipa)) static void gilshim_guard_loop(void)
{
    for (long i = 0; i < n; i++)
        gs.release(gs.guard_ensure(gguard));
}

__attribute__((noipa)) static void gilshim_guarded_loop(void)
{
    for (long i = 0; i < n; i++)
        gs.release(gs.ensure_guarded(gview));
}

static PyThreadState *persistent;

__attribute__((noipa)) static void limit(void)
{
    for (long i = 0; i < n; i++) {
        real.Restore(persistent);
        real.Save();
    }
}

/* attached (through a token of the same kind), the nested pair */
__attribute__((noipa)) static void native_nested(void)
{
    PyThreadStateToken *outer = PyThreadState_Ensure(guard);
    for (long i = 0; i < n; i++)
        PyThreadState_Release(PyThreadState_Ensure(guard));
    PyThreadState_Release(outer);
}

__attribute__((noipa)) static void gilshim_nested(void)
{
    gilshim_token *outer = gs.ensure(gview);
    for (long i = 0; i < n; i++)
        gs.release(gs.ensure(gview));
    gs.release(outer);
}

struct job {
    void (*loop)(void);
    double best;
};

/* noipa: callgrind counts this, the timed part, alone */
__attribute__((noipa)) static void timed(struct job *j)
{
    double t0 = now_ns();
    j->loop();
    double ns = (now_ns() - t0) / (double)n;
    if (ns < j->best)
        j->best = ns;
}

static void *run_rounds(void *p)
{
    struct job *j = p;
    if (j->loop == limit) {
        persistent = PyThreadState_New(PyInterpreterState_Main());
        real.Restore(persistent);
        real.Save();
    }
    j->loop();  /* warm up: first states made, paths learnt */
    j->best = 1e30;
    for (int r = 0; r < rounds; r++)
        timed(j);
    if (j->loop == limit) {
        real.Restore(persistent);
        PyThreadState_Clear(persistent);
        PyThreadState_DeleteCurrent();
    }
    return NULL;
}

/* on a fresh foreign thread, with main's GIL released meanwhile */
static double measure(void (*loop)(void))
{
    struct job j = {loop, 0};
    pthread_t th;
    Py_BEGIN_ALLOW_THREADS
    if (pthread_create(&th, NULL, run_rounds, &j) != 0)
        abort();
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    return j.best;
}

/* Does 3.15's Ensure make a thread state per cycle here? Two cycles on
 * one foreign thread, compared by thread state id. */
static void *creates(void *p)
{
    uint64_t ids[2];
    for (int i = 0; i < 2; i++) {
        PyThreadStateToken *t = PyThreadState_Ensure(guard);
        ids[i] = PyThreadState_GetID(PyThreadState_Get());
        PyThreadState_Release(t);
    }
    *(int *)p = ids[0] != ids[1];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    if (argc > 3 && !strcmp(argv[1], "ir")) {
        only = argv[2];
        n = atol(argv[3]);
        rounds = 1;
    } else if (argc > 1) {
        n = atol(argv[1]) * n;
    }
    Dl_info info;
    void *py = NULL;
    if (dladdr((void *)&PyLong_FromLong, &info))
        py = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (!py) {
        fprintf(stderr, "pep788 bench: cannot find libpython\n");
        return 1;
    }
    *(void **)&real.Ensure = dlsym(py, "PyGILState_Ensure");
    *(void **)&real.Release = dlsym(py, "PyGILState_Release");
    *(void **)&real.Save = dlsym(py, "PyEval_SaveThread");
    *(void **)&real.Restore = dlsym(py, "PyEval_RestoreThread");
    *(void **)&gs.view_main = dlsym(RTLD_DEFAULT, "gilshim_view_main");
    *(void **)&gs.ensure = dlsym(RTLD_DEFAULT, "gilshim_ensure");
    *(void **)&gs.release = dlsym(RTLD_DEFAULT, "gilshim_release");
    *(void **)&gs.guard_from_view = dlsym(RTLD_DEFAULT, "gilshim_guard_from_view");
    *(void **)&gs.guard_close = dlsym(RTLD_DEFAULT, "gilshim_guard_close");
    *(void **)&gs.guard_ensure = dlsym(RTLD_DEFAULT, "gilshim_guard_ensure");
    *(void **)&gs.ensure_guarded = dlsym(RTLD_DEFAULT, "gilshim_ensure_guarded");
    if (!gs.ensure || !gs.guard_ensure || !gs.ensure_guarded) {
        fprintf(stderr, "pep788 bench: run it with libgilshim preloaded\n");
        return 1;
    }
    if ((void *)real.Ensure == (void *)PyGILState_Ensure) {
        fprintf(stderr, "pep788 bench: PyGILState_Ensure does not reach gilshim\n");
        return 1;
    }
    Py_InitializeEx(0);
    guard = PyInterpreterGuard_FromCurrent();
    view = PyInterpreterView_FromCurrent();
    gview = gs.view_main();
    gguard = gs.guard_from_view(gview);
    if (!guard || !view || !gguard)
        return 1;

    if (!only) {
        int made = -1;
        pthread_t th;
        Py_BEGIN_ALLOW_THREADS
        pthread_create(&th, NULL, creates, &made);
        pthread_join(th, NULL);
        Py_END_ALLOW_THREADS
        printf("native_creates %d\n", made);
    }

    static const struct {
        const char *key;
        void (*loop)(void);
    } loops[] = {
        {"native_guard", native_guard},         {"native_view", native_view},
        {"stock_gilstate", stock_gilstate},     {"gilshim_gilstate", gilshim_gilstate},
        {"gilshim_ensure", gilshim_ensure_loop}, {"gilshim_guard", gilshim_guard_loop},
        {"gilshim_guarded", gilshim_guarded_loop}, {"limit", limit},
        {"native_nested", native_nested},       {"gilshim_nested", gilshim_nested},
    };
    for (size_t i = 0; i < sizeof loops / sizeof loops[0]; i++) {
        if (only && strcmp(only, loops[i].key))
            continue;
        printf("%s %.1f\n", loops[i].key, measure(loops[i].loop));
        fflush(stdout);
    }
    gs.guard_close(gguard);
    PyInterpreterGuard_Close(guard);
    PyInterpreterView_Close(view);
    return Py_FinalizeEx() < 0;
}
