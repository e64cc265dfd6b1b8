/* SPDX-License-Identifier: MIT */
/*
 * Stress: 32 foreign threads call into 4 sub-interpreters (own-GIL ones on
 * 3.12+) and the main one, with a Python call inside every callback, while
 * the main thread ends and re-creates the sub-interpreters under them and
 * finally finalizes the runtime with all of them still calling in.
 *
 * Checked: every callback runs in the interpreter it was meant for; every
 * Ensure that succeeded is matched by one completed callback and Release
 * (count in = count out); a refused gilshim_ensure (or
 * gilshim_ensure_guarded, one call in three) says why, and only for an
 * interpreter that is ending or a runtime that is finalizing.
 *
 *   stress [SECONDS [PACE_US]]   default 2 s; PACE_US: a pause after each
 *                                callback (under valgrind, whose one-thread-
 *                                at-a-time scheduler otherwise starves the
 *                                main thread that ends the interpreters)
 *
 * Run by tests/run-stress.sh, plain and under ASan+UBSan, TSan and
 * valgrind. Half the threads use gilshim_ensure; the other half use the
 * interposed PyGILState_Ensure and are stopped at finalization by
 * GILSHIM_ON_FINALIZE=exit, which the runner sets, so they can be joined.
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/subinterp.h"
#include "gilshim.h"

#define NTHREADS 32
#define NSLOTS 4

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts))
        ;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The sub-interpreters, replaced while the threads run. */
struct slot {
    pthread_mutex_t lock;
    gilshim_view view;
    PyThreadState *tstate;  /* main thread's state in it (controller only) */
};
static struct slot slots[NSLOTS];
static PyThreadState *main_ts;
static gilshim_view main_view;
static int own_gil;

static _Atomic long mismatches, bad_errors;
static long pace_us;

static void pace(void)
{
    if (pace_us) {
        struct timespec ts = {0, pace_us * 1000L};
        nanosleep(&ts, NULL);
    }
}

struct worker {
    pthread_t th;
    int index;
    long in, out, refused, nested;
    int last_error;
    int killed;  /* did not return from its loop: GILSHIM_ON_FINALIZE=exit */
};
static struct worker workers[NTHREADS];

static gilshim_view slot_view(int k)
{
    pthread_mutex_lock(&slots[k].lock);
    gilshim_view v = slots[k].view;
    pthread_mutex_unlock(&slots[k].lock);
    return v;
}

/* A Python call in the attached interpreter: sys._stress_f(n) == n + id. */
static void python_call(int64_t expect_id, long n)
{
    PyInterpreterState *ip = PyInterpreterState_Get();
    if (PyInterpreterState_GetID(ip) != expect_id)
        atomic_fetch_add(&mismatches, 1);
    PyObject *f = PySys_GetObject("_stress_f");
    PyObject *r = f ? PyObject_CallFunction(f, "l", n) : NULL;
    if (!r || PyLong_AsLong(r) != n + (long)expect_id)
        atomic_fetch_add(&mismatches, 1);
    Py_XDECREF(r);
    if (PyErr_Occurred())
        PyErr_Clear();
}

static void define_function(void)
{
    char code[160];
    snprintf(code, sizeof code, "import sys\nsys._stress_f = lambda n: n + %lld\n",
             (long long)PyInterpreterState_GetID(PyInterpreterState_Get()));
    if (PyRun_SimpleString(code))
        abort();
}

/* Even threads: the explicit API, into the sub-interpreters in turn. */
static void explicit_loop(struct worker *w)
{
    for (long n = 0;; n++) {
        int k = (int)((w->index / 2 + n) % NSLOTS);
        gilshim_view v = n % 5 == 4 ? main_view : slot_view(k);
        /* one in three holds a guard until its release (PEP 788's
         * EnsureFromView): the end waits for it, unbounded */
        gilshim_token *t = n % 3 == 1 ? gilshim_ensure_guarded(v) : gilshim_ensure(v);
        if (!t) {
            int e = gilshim_last_error();
            w->last_error = e;
            if (e == GILSHIM_EFINALIZING || e == GILSHIM_ENOPYTHON ||
                (e == GILSHIM_ESTALE && v.id == main_view.id))
                return;  /* the runtime is going: done */
            if (e != GILSHIM_EGONE)
                atomic_fetch_add(&bad_errors, 1);
            w->refused++;
            continue;
        }
        w->in++;
        python_call(v.id, n);
        if (n % 7 == 0) {
            /* nested: stays in the same interpreter (rule 1) */
            PyGILState_STATE g = PyGILState_Ensure();
            python_call(v.id, n);
            PyGILState_Release(g);
            w->nested++;
        }
        gilshim_release(t);
        w->out++;
        pace();
    }
}

/* Odd threads: the interposed PyGILState_Ensure, no binding: created by
 * the main thread while it was attached to main, they belong to main
 * (rule 4). Stopped at finalization by GILSHIM_ON_FINALIZE=exit. */
static void gilstate_loop(struct worker *w)
{
    for (long n = 0;; n++) {
        PyGILState_STATE g = PyGILState_Ensure();
        w->in++;
        python_call(main_view.id, n);
        PyGILState_Release(g);
        w->out++;
        pace();
    }
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    w->killed = 1;
    if (w->index % 2 == 0)
        explicit_loop(w);
    else
        gilstate_loop(w);
    w->killed = 0;
    return NULL;
}

static PyThreadState *new_sub(void)
{
    PyThreadState *sub = test_new_sub(own_gil);
    if (!sub) {
        fprintf(stderr, "stress: could not create a sub-interpreter\n");
        exit(3);
    }
    define_function();
    return sub;
}

/* Called attached to main; returns attached to main. */
static void fill_slot(int k)
{
    PyThreadState *sub = new_sub();
    gilshim_view v = gilshim_view_current();
    pthread_mutex_lock(&slots[k].lock);
    slots[k].view = v;
    slots[k].tstate = sub;
    pthread_mutex_unlock(&slots[k].lock);
    test_switch_to(main_ts);
}

static void end_slot(int k) { test_end_sub(slots[k].tstate, main_ts, own_gil); }

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    if (seconds <= 0)
        seconds = 2.0;
    pace_us = argc > 2 ? atol(argv[2]) : 0;
    if (pace_us < 0 || pace_us > 999999)
        pace_us = 0;
    own_gil = HAVE_OWN_GIL;
    for (int k = 0; k < NSLOTS; k++)
        pthread_mutex_init(&slots[k].lock, NULL);

    Py_InitializeEx(0);
    main_ts = PyThreadState_Get();
    define_function();
    main_view = gilshim_view_main();
    for (int k = 0; k < NSLOTS; k++)
        fill_slot(k);
    for (int i = 0; i < NTHREADS; i++) {
        workers[i].index = i;
        pthread_create(&workers[i].th, NULL, worker_main, &workers[i]);
    }

    /* End and re-create the sub-interpreters under the running threads. */
    long ends = 0;
    double deadline = now_s() + seconds;
    for (int k = 0; now_s() < deadline; k = (k + 1) % NSLOTS) {
        Py_BEGIN_ALLOW_THREADS
        sleep_ms(10);
        Py_END_ALLOW_THREADS
        end_slot(k);
        ends++;
        fill_slot(k);
    }
    /* The end: every sub-interpreter, then the runtime, still called into. */
    for (int k = 0; k < NSLOTS; k++) {
        end_slot(k);
        ends++;
    }
    int rc = Py_FinalizeEx();

    long in = 0, out = 0, refused = 0, nested = 0;
    int killed = 0, unfinished = 0;
    for (int i = 0; i < NTHREADS; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30;
        if (pthread_timedjoin_np(workers[i].th, NULL, &ts) != 0) {
            unfinished++;
            continue;
        }
        struct worker *w = &workers[i];
        in += w->in;
        out += w->out;
        refused += w->refused;
        nested += w->nested;
        killed += w->killed;
        if (w->in != w->out) {
            fprintf(stderr, "stress: thread %d: %ld callbacks in, %ld out\n", i, w->in, w->out);
            unfinished++;
        }
    }
    printf("stress, CPython %d.%d: %d threads x %d sub-interpreters%s + main, %.1f s: "
           "%ld callbacks in, %ld out (%ld nested), %ld refused while ending, "
           "%ld interpreter ends, Py_FinalizeEx=%d with %d threads stopped inside Ensure\n",
           PY_MAJOR_VERSION, PY_MINOR_VERSION, NTHREADS, NSLOTS, own_gil ? " (own GIL)" : "",
           seconds, in, out, nested, refused, ends, rc, killed);
    int ok = rc == 0 && in == out && !unfinished && !atomic_load(&mismatches) &&
             !atomic_load(&bad_errors) && in > 0;
    if (atomic_load(&mismatches))
        fprintf(stderr, "stress: %ld callbacks ran in the wrong interpreter\n",
                atomic_load(&mismatches));
    if (atomic_load(&bad_errors))
        fprintf(stderr, "stress: %ld refusals with an unexpected error\n", atomic_load(&bad_errors));
    if (unfinished)
        fprintf(stderr, "stress: %d threads unfinished or unbalanced\n", unfinished);
    printf("stress: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
