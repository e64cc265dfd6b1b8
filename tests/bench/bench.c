/* SPDX-License-Identifier: MIT */
/*
 * Issue 6's measurements, one program for every CPython. It never links
 * gilshim: tests/run-bench.sh runs it plain and with libgilshim preloaded,
 * alternately, and divides. The gilshim API (only for what stock cannot
 * do: views, stats) is found with dlsym when preloaded.
 *
 *   bench all [SCALE]   every measurement below, "key value" per line
 *   bench cycles [SCALE] only the single-thread cycles (quick to iterate on)
 *   bench flat [SCALE]   only 1000 threads x 8 interpreters / 1 x 1 (gilshim preloaded)
 *   bench ir WHAT N     one loop of N cycles, for callgrind --toggle-collect
 *
 * Times are ns per cycle, best of ROUNDS rounds; each loop runs on a
 * thread that has never run Python (a foreign thread), unless noted.
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../include/gilshim.h"
#include "../common/subinterp.h"

static int ROUNDS = 7;
static long scale = 1;

/* libpython's and libc's own definitions, found through their handles so
 * that with the shim preloaded they bypass it: the "without the shim" side
 * of each ratio, measured in the same process, interleaved. */
static struct {
    PyGILState_STATE (*Ensure)(void);
    void (*Release)(PyGILState_STATE);
    PyThreadState *(*Save)(void);
    void (*Restore)(PyThreadState *);
    int (*create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
} real;

static void find_real(void)
{
    Dl_info info;
    void *py = NULL, *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (dladdr((void *)&PyLong_FromLong, &info))  /* libpython's own address */
        py = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (!py || !libc) {
        fprintf(stderr, "bench: cannot find libpython or libc\n");
        exit(1);
    }
    *(void **)&real.Ensure = dlsym(py, "PyGILState_Ensure");
    *(void **)&real.Release = dlsym(py, "PyGILState_Release");
    *(void **)&real.Save = dlsym(py, "PyEval_SaveThread");
    *(void **)&real.Restore = dlsym(py, "PyEval_RestoreThread");
    *(void **)&real.create = dlsym(libc, "pthread_create");
}
static struct {
    gilshim_view (*view_current)(void);
    gilshim_token *(*ensure)(gilshim_view);
    void (*release)(gilshim_token *);
    int (*get_stats)(gilshim_stats *, size_t);
} gs;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void run_thread(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    if (pthread_create(&th, NULL, fn, arg) != 0)
        abort();
    pthread_join(th, NULL);
}

/* --- the loops; noinline so that callgrind can count each one --- */

__attribute__((noipa)) static void loop_ensure(long n)
{
    for (long i = 0; i < n; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyGILState_Release(g);
    }
}

__attribute__((noipa)) static void loop_persistent(PyThreadState *t, long n)
{
    for (long i = 0; i < n; i++) {
        PyEval_RestoreThread(t);
        PyEval_SaveThread();
    }
}

__attribute__((noipa)) static void loop_persistent_real(PyThreadState *t, long n)
{
    for (long i = 0; i < n; i++) {
        real.Restore(t);
        real.Save();
    }
}

/* Attached: the nested pair that a callback made from Python code costs. */
__attribute__((noipa)) static void loop_nested(long n)
{
    for (long i = 0; i < n; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyGILState_Release(g);
    }
}

__attribute__((noipa)) static void loop_nested_real(long n)
{
    for (long i = 0; i < n; i++) {
        PyGILState_STATE g = real.Ensure();
        real.Release(g);
    }
}

/* A little Python work (about a microsecond), so that parallel interpreters have something to
 * run in parallel. */
__attribute__((unused)) static void work(long i)
{
    PyObject *a = PyLong_FromLong(i | 0x40000000L);
    for (int k = 0; k < 20; k++) {
        PyObject *b = PyNumber_Add(a, a);
        Py_DECREF(a);
        a = b;
    }
    Py_DECREF(a);
}

__attribute__((noipa, unused)) static void loop_ensure_work(long n)
{
    for (long i = 0; i < n; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        work(i);
        PyGILState_Release(g);
    }
}

/* --- one foreign thread, main or a sub-interpreter --- */

struct timed {
    void (*loop)(long);                        /* Ensure loops */
    void (*ploop)(PyThreadState *, long);      /* persistent loops */
    PyInterpreterState *interp;  /* persistent/nested: its state's interpreter */
    long n;
    double best;
};

/* noipa: callgrind counts this, the timed part, alone (--toggle-collect) */
__attribute__((noipa)) static void timed_round(struct timed *t, PyThreadState *mine)
{
    double t0 = now_ns();
    if (t->ploop)
        t->ploop(mine, t->n);
    else
        t->loop(t->n);
    double ns = (now_ns() - t0) / (double)t->n;
    if (ns < t->best)
        t->best = ns;
}

/* One round on a new foreign thread: warm (the first Ensure makes what is
 * reused), then n cycles. */
static void *timed_ensure(void *p)
{
    struct timed *t = p;
    t->loop(t->n / 10);
    timed_round(t, NULL);
    return NULL;
}

static void *timed_persistent(void *p)
{
    struct timed *t = p;
    PyThreadState *mine = PyThreadState_New(t->interp);
    t->ploop(mine, t->n / 10);
    timed_round(t, mine);
    PyEval_RestoreThread(mine);
    PyThreadState_Clear(mine);
    PyThreadState_DeleteCurrent();
    return NULL;
}

static void *timed_nested(void *p)
{
    struct timed *t = p;
    PyThreadState *mine = PyThreadState_New(t->interp);
    PyEval_RestoreThread(mine);
    t->loop(t->n / 10);
    timed_round(t, NULL);
    PyThreadState_Clear(mine);
    PyThreadState_DeleteCurrent();
    return NULL;
}

/* Runs fn on a new thread created while `from` is attached: with gilshim
 * that thread's Ensure goes to from's interpreter (rule 4); stock sends it
 * to main. Called attached to main; returns attached to main. */
static double on_thread_from(PyThreadState *from, void *(*fn)(void *), struct timed *t)
{
    PyThreadState *back = PyEval_SaveThread();
    PyEval_RestoreThread(from);
    if (from == back) {  /* already there */
        PyEval_SaveThread();
        run_thread(fn, t);
        PyEval_RestoreThread(back);
        return t->best;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, fn, t) != 0)
        abort();
    PyEval_SaveThread();
    pthread_join(th, NULL);
    PyEval_RestoreThread(back);
    return t->best;
}

/* --- flat lookups: many threads x many interpreters (gilshim API) --- */

#define FLAT_INTERPS 8

struct flat {
    gilshim_view views[FLAT_INTERPS];
    PyInterpreterState *interps[FLAT_INTERPS];  /* real: hand-written, no shim */
    int real;
    int nviews;
    long per_turn;
    int turns;
    sem_t *go, *done;       /* per thread; main hands a baton around */
    double total_ns;        /* sum over turns, measured inside them */
};

struct flat_thread {
    struct flat *f;
    int idx;
};

__attribute__((noipa)) static void loop_views(const gilshim_view *v, int nv, long n)
{
    for (long i = 0; i < n; i++) {
        gilshim_token *k = gs.ensure(v[i % nv]);
        gs.release(k);
    }
}

/* The same pattern written by hand: one thread state per interpreter,
 * attached and detached with libpython's own calls. */
__attribute__((noipa)) static void loop_states(PyThreadState **ts, int nv, long n)
{
    for (long i = 0; i < n; i++) {
        real.Restore(ts[i % nv]);
        real.Save();
    }
}

static void *flat_worker(void *p)
{
    struct flat_thread *ft = p;
    struct flat *f = ft->f;
    PyThreadState *ts[FLAT_INTERPS];
    if (f->real)
        for (int i = 0; i < f->nviews; i++)
            ts[i] = PyThreadState_New(f->interps[i]);
    else
        loop_views(f->views, f->nviews, f->nviews);  /* one row per interpreter */
    for (int turn = 0; turn < f->turns; turn++) {
        sem_wait(&f->go[ft->idx]);
        double t0 = now_ns();
        if (f->real)
            loop_states(ts, f->nviews, f->per_turn);
        else
            loop_views(f->views, f->nviews, f->per_turn);
        f->total_ns += now_ns() - t0;  /* only the baton holder writes */
        sem_post(&f->done[ft->idx]);
    }
    for (int i = 0; f->real && i < f->nviews; i++) {
        real.Restore(ts[i]);
        PyThreadState_Clear(ts[i]);
        PyThreadState_DeleteCurrent();
    }
    return NULL;
}

/* ns per gilshim_ensure/release cycle, nthreads taking turns. */
static double flat_run(const gilshim_view *views, PyInterpreterState **interps, int nviews,
                       int nthreads, long per_turn, int turns)
{
    struct flat f = {.nviews = nviews, .per_turn = per_turn, .turns = turns, .real = !views};
    if (views)
        memcpy(f.views, views, (size_t)nviews * sizeof *views);
    memcpy(f.interps, interps, (size_t)nviews * sizeof *interps);
    f.go = calloc((size_t)nthreads, sizeof *f.go);
    f.done = calloc((size_t)nthreads, sizeof *f.done);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    struct flat_thread *ft = calloc((size_t)nthreads, sizeof *ft);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < nthreads; i++) {
        sem_init(&f.go[i], 0, 0);
        sem_init(&f.done[i], 0, 0);
        ft[i] = (struct flat_thread){&f, i};
        if (pthread_create(&th[i], &attr, flat_worker, &ft[i]) != 0)
            abort();
    }
    for (int turn = 0; turn < turns; turn++)
        for (int i = 0; i < nthreads; i++) {
            sem_post(&f.go[i]);
            sem_wait(&f.done[i]);
        }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    free(f.go);
    free(f.done);
    free(th);
    free(ft);
    pthread_attr_destroy(&attr);
    return f.total_ns / ((double)nthreads * turns * per_turn);
}

/* --- parallel own-GIL interpreters --- */
#if HAVE_OWN_GIL

struct par {
    long n;
    pthread_barrier_t *start;
    double elapsed;
};

static void *par_worker(void *p)
{
    struct par *w = p;
    loop_ensure_work(1000);
    pthread_barrier_wait(w->start);
    double t0 = now_ns();
    loop_ensure_work(w->n);
    w->elapsed = now_ns() - t0;
    return NULL;
}

/* Cycles per second of nthreads workers, worker i made while from[i] was
 * attached (so routed to from[i]'s interpreter with gilshim). */
static double par_run(PyThreadState **from, int nthreads, long n)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
    struct par w[2];
    pthread_t th[2];
    PyThreadState *back = PyEval_SaveThread();
    for (int i = 0; i < nthreads; i++) {
        w[i] = (struct par){n, &start, 0};
        PyEval_RestoreThread(from[i]);
        if (pthread_create(&th[i], NULL, par_worker, &w[i]) != 0)
            abort();
        PyEval_SaveThread();
    }
    pthread_barrier_wait(&start);
    double slowest = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        if (w[i].elapsed > slowest)
            slowest = w[i].elapsed;
    }
    PyEval_RestoreThread(back);
    pthread_barrier_destroy(&start);
    return (double)nthreads * (double)n / (slowest / 1e9);
}
#endif

/* --- pthread_create + join from a thread attached to an interpreter --- */

static void *nothing(void *p) { return p; }

/* ns per create+join, through the interposed pthread_create and libc's
 * own, interleaved */
static void create_join(const char *key, int n)
{
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < ROUNDS; r++)
        for (int which = 0; which < 2; which++) {
            double t0 = now_ns();
            for (int i = 0; i < n; i++) {
                pthread_t th;
                if ((which ? real.create : pthread_create)(&th, NULL, nothing, NULL) != 0)
                    abort();
                pthread_join(th, NULL);
            }
            double ns = (now_ns() - t0) / n;
            if (ns < best[which])
                best[which] = ns;
        }
    printf("%s %.0f\n%s_real %.0f\n", key, best[0], key, best[1]);
}

/* --- memory held per (thread x interpreter) row --- */

struct mem {
    const gilshim_view *views;
    int nviews;
    pthread_barrier_t *held, *release;
};

static void *mem_worker(void *p)
{
    struct mem *m = p;
    loop_views(m->views, m->nviews, m->nviews);
    pthread_barrier_wait(m->held);
    pthread_barrier_wait(m->release);
    return NULL;
}

static void memory(const gilshim_view *views, int nviews, int nthreads)
{
    gilshim_stats before, held, after;
    pthread_barrier_t b1, b2;
    pthread_barrier_init(&b1, NULL, (unsigned)nthreads + 1);
    pthread_barrier_init(&b2, NULL, (unsigned)nthreads + 1);
    struct mem m = {views, nviews, &b1, &b2};
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    gs.get_stats(&before, sizeof before);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, mem_worker, &m) != 0)
            abort();
    pthread_barrier_wait(&b1);
    gs.get_stats(&held, sizeof held);
    pthread_barrier_wait(&b2);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    gs.get_stats(&after, sizeof after);
    size_t rows = held.rows - before.rows;
    printf("mem_rows %zu\n", rows);
    printf("mem_bytes_per_row %.0f\n", (double)(held.bytes - before.bytes) / (double)rows);
    printf("mem_rows_after %zu\n", after.rows - before.rows);
    printf("mem_bytes_after %zd\n", (ssize_t)(after.bytes - before.bytes));
    printf("mem_threads_after %zd\n", (ssize_t)(after.threads - before.threads));
    free(th);
    pthread_barrier_destroy(&b1);
    pthread_barrier_destroy(&b2);
}

/* ------------------------------------------------------------------ */

static int find_gilshim(void)
{
    gs.view_current = (gilshim_view(*)(void))dlsym(RTLD_DEFAULT, "gilshim_view_current");
    gs.ensure = (gilshim_token * (*)(gilshim_view)) dlsym(RTLD_DEFAULT, "gilshim_ensure");
    gs.release = (void (*)(gilshim_token *))dlsym(RTLD_DEFAULT, "gilshim_release");
    gs.get_stats = (int (*)(gilshim_stats *, size_t))dlsym(RTLD_DEFAULT, "gilshim_get_stats");
    return gs.view_current && gs.ensure && gs.release && gs.get_stats;
}

/* Every single-thread cycle, round by round, so that each ratio compares
 * loops measured minutes, not runs, apart. */
static void cycles(PyThreadState *main_ts, PyThreadState *sub)
{
    long n = 200000 * scale;
    PyInterpreterState *main_is = PyInterpreterState_Main();
    PyInterpreterState *sub_is = PyThreadState_GetInterpreter(sub);
    struct {
        const char *key;
        void *(*fn)(void *);
        PyThreadState *from;  /* made while attached here (rule 4) */
        struct timed t;
    } k[] = {
        {"cycle", timed_ensure, main_ts, {loop_ensure, NULL, main_is, n, 1e30}},
        {"persistent", timed_persistent, main_ts, {NULL, loop_persistent, main_is, n, 1e30}},
        {"persistent_real", timed_persistent, main_ts, {NULL, loop_persistent_real, main_is, n, 1e30}},
        {"nested", timed_nested, main_ts, {loop_nested, NULL, main_is, n, 1e30}},
        {"nested_real", timed_nested, main_ts, {loop_nested_real, NULL, main_is, n, 1e30}},
        {"sub_cycle", timed_ensure, sub, {loop_ensure, NULL, sub_is, n, 1e30}},
        {"sub_persistent_real", timed_persistent, sub, {NULL, loop_persistent_real, sub_is, n, 1e30}},
    };
    size_t nk = sizeof k / sizeof k[0];
    for (int r = 0; r < ROUNDS; r++)
        for (size_t i = 0; i < nk; i++)
            on_thread_from(k[i].from, k[i].fn, &k[i].t);
    for (size_t i = 0; i < nk; i++)
        printf("%s %.2f\n", k[i].key, k[i].t.best);
}

/* 1 x 1 against 1000 threads x 8 interpreters, taking turns: sub and 7
 * more legacy sub-interpreters, ended again after. */
static void flat(PyThreadState *main_ts, PyThreadState *sub, int with_memory)
{
    gilshim_view views[FLAT_INTERPS];
    PyThreadState *subs[FLAT_INTERPS];
    /* A view taken attached to main places main's exit hook, as any use
     * of main through the shim does (`all` has made many by now); until
     * then the shim cannot see finalization coming and keeps to its
     * general paths. */
    PyThreadState_Swap(main_ts);
    (void)gs.view_current();
    subs[0] = sub;
    for (int i = 1; i < FLAT_INTERPS; i++) {
        subs[i] = test_new_sub(0);
        PyThreadState_Swap(main_ts);
    }
    for (int i = 0; i < FLAT_INTERPS; i++) {
        PyThreadState_Swap(subs[i]);
        views[i] = gs.view_current();
        PyThreadState_Swap(main_ts);
    }
    PyInterpreterState *interps[FLAT_INTERPS];
    for (int i = 0; i < FLAT_INTERPS; i++)
        interps[i] = PyThreadState_GetInterpreter(subs[i]);
    Py_BEGIN_ALLOW_THREADS
    /* gilshim, then the same pattern by hand, which says what CPython
     * itself pays for 8000 thread states in 8 interpreters */
    double b1[2] = {1e30, 1e30}, b8[2] = {1e30, 1e30};
    for (int r = 0; r < 3; r++)
        for (int real_ = 0; real_ < 2; real_++) {
            const gilshim_view *v = real_ ? NULL : views;
            double a = flat_run(v, interps, 1, 1, 200 * 1000 * scale, 1);
            double b = flat_run(v, interps, FLAT_INTERPS, 1000, 200 * scale, 1);
            if (a < b1[real_])
                b1[real_] = a;
            if (b < b8[real_])
                b8[real_] = b;
        }
    printf("flat_1x1 %.2f\nflat_1000x8 %.2f\n", b1[0], b8[0]);
    printf("flat_real_1x1 %.2f\nflat_real_1000x8 %.2f\n", b1[1], b8[1]);
    if (with_memory)
        memory(views, FLAT_INTERPS, 64);
    Py_END_ALLOW_THREADS
    for (int i = 1; i < FLAT_INTERPS; i++)
        test_end_sub(subs[i], main_ts, 0);
}

static void all(void)
{
    int shim = find_gilshim();
    PyThreadState *main_ts = PyThreadState_Get();

    /* A legacy sub-interpreter; foreign threads for it are made from it. */
    PyThreadState *sub = test_new_sub(0);
    PyThreadState_Swap(main_ts);
    cycles(main_ts, sub);

    /* pthread_create + join from a thread attached to main, then to sub */
    create_join("create_main", 1000);
    test_switch_to(sub);
    create_join("create_sub", 1000);
    test_switch_to(main_ts);

    if (shim)
        flat(main_ts, sub, 1);
    test_end_sub(sub, main_ts, 0);

#if HAVE_OWN_GIL
    /* Two own-GIL interpreters, one worker each, against one worker. */
    PyThreadState *own[2];
    for (int i = 0; i < 2; i++) {
        own[i] = test_new_sub(1);
        PyEval_SaveThread();
        PyEval_RestoreThread(main_ts);
    }
    double one = 0, two = 0;
    for (int r = 0; r < 3; r++) {
        double a = par_run(own, 1, 100000 * scale);
        double b = par_run(own, 2, 100000 * scale);
        if (a > one)
            one = a;
        if (b > two)
            two = b;
    }
    printf("parallel_1 %.0f\nparallel_2 %.0f\n", one, two);
    for (int i = 0; i < 2; i++)
        test_end_sub(own[i], main_ts, 1);
#endif
}

/* One loop, nothing else timed: for callgrind --toggle-collect=timed_round,
 * which counts the n timed cycles and not the n/10 warm-up ones. */
static void ir(const char *what, long n)
{
    PyInterpreterState *main_is = PyInterpreterState_Main();
    struct timed t = {NULL, NULL, main_is, n, 1e30};
    void *(*fn)(void *) = timed_ensure;
    int real_ = strstr(what, "_real") != NULL;  /* libpython's own calls */
    if (!strncmp(what, "persistent", 10)) {
        fn = timed_persistent;
        t.ploop = real_ ? loop_persistent_real : loop_persistent;
    } else if (!strncmp(what, "nested", 6)) {
        fn = timed_nested;
        t.loop = real_ ? loop_nested_real : loop_nested;
    } else {
        t.loop = loop_ensure;
    }
    Py_BEGIN_ALLOW_THREADS
    run_thread(fn, &t);
    Py_END_ALLOW_THREADS
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench all|cycles|flat [SCALE] | bench ir cycle|persistent[_real]|nested[_real] N\n");
        return 2;
    }
    Py_InitializeEx(0);
    find_real();
    if (!strcmp(argv[1], "all")) {
        if (argc > 2)
            scale = atol(argv[2]);
        all();
    } else if (!strcmp(argv[1], "cycles") || (!strcmp(argv[1], "flat") && find_gilshim())) {
        /* one part of `all` alone, with the legacy sub-interpreter it uses */
        if (argc > 2)
            scale = atol(argv[2]);
        PyThreadState *main_ts = PyThreadState_Get();
        PyThreadState *sub = test_new_sub(0);
        PyThreadState_Swap(main_ts);
        if (argv[1][0] == 'c')
            cycles(main_ts, sub);
        else
            flat(main_ts, sub, 0);
        test_end_sub(sub, main_ts, 0);
    } else if (!strcmp(argv[1], "ir") && argc > 3) {
        ir(argv[2], atol(argv[3]));
    }
    fflush(stdout);
    return Py_FinalizeEx() < 0 ? 1 : 0;
}
