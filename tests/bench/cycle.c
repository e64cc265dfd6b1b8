/*
 * One foreign thread cycling PyGILState_Ensure/Release around nothing,
 * next to the limit: one persistent thread state attached with
 * PyEval_RestoreThread and detached with PyEval_SaveThread. Linked with
 * libgilshim ahead of libpython; GILSHIM_MODE (off = stock, route,
 * diagnose) decides what the Ensure loop measures. Prints
 * "ensure NS persistent NS" (ns per cycle, best of ROUNDS).
 *   cycle [CYCLES [ROUNDS]]
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long cycles = 200000;
static int rounds = 5;
static double best_ensure = 1e30, best_persistent = 1e30;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Each loop on a thread of its own: a thread state created on the Ensure
 * thread would be bound to it, and stock would reuse it. */
static void *ensure_loop(void *unused)
{
    (void)unused;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (long i = 0; i < cycles; i++) {
            PyGILState_STATE g = PyGILState_Ensure();
            PyGILState_Release(g);
        }
        double ns = (now_ns() - t0) / (double)cycles;
        if (ns < best_ensure)
            best_ensure = ns;
    }
    return NULL;
}

static void *persistent_loop(void *unused)
{
    (void)unused;
    PyThreadState *mine = PyThreadState_New(PyInterpreterState_Main());
    for (int r = 0; r < rounds; r++) {
        double t0 = now_ns();
        for (long i = 0; i < cycles; i++) {
            PyEval_RestoreThread(mine);
            PyEval_SaveThread();
        }
        double ns = (now_ns() - t0) / (double)cycles;
        if (ns < best_persistent)
            best_persistent = ns;
    }
    PyEval_RestoreThread(mine);
    PyThreadState_Clear(mine);
    PyThreadState_DeleteCurrent();
    return NULL;
}

static void run(void *(*fn)(void *))
{
    pthread_t th;
    pthread_create(&th, NULL, fn, NULL);
    pthread_join(th, NULL);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cycles = atol(argv[1]);
    if (argc > 2)
        rounds = atoi(argv[2]);
    Py_InitializeEx(0);
    Py_BEGIN_ALLOW_THREADS
    run(ensure_loop);
    run(persistent_loop);
    Py_END_ALLOW_THREADS
    Py_FinalizeEx();
    printf("ensure %.1f persistent %.1f\n", best_ensure, best_persistent);
    return 0;
}
