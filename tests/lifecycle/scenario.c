/* SPDX-License-Identifier: MIT */
/*
 * Lifecycle scenarios: an embedding program that does one thing stock
 * CPython gets wrong at an interpreter's or the runtime's end, and says
 * what happened, line by line, on stdout.
 *
 * Built twice per CPython version (tests/run-lifecycle.sh):
 *   scenario-stock-X.Y  plain libpython, no gilshim anywhere
 *   scenario-shim-X.Y   libgilshim linked ahead of libpython, as under
 *                       LD_PRELOAD (-DWITH_GILSHIM)
 * tests/lifecycle/test_lifecycle.c runs both and asserts each outcome:
 * stock's crash, abort or hang next to gilshim's clean run.
 *
 *   scenario NAME [own]     own: an own-GIL sub-interpreter (3.12+)
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/subinterp.h"

#ifdef WITH_GILSHIM
#include "gilshim.h"
#endif

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts))
        ;
}

static void wait_for(_Atomic int *flag, int value)
{
    while (atomic_load(flag) < value)
        sleep_ms(1);
}

/* The same, for a thread that holds a GIL the awaited thread needs. */
static void wait_released(_Atomic int *flag, int value)
{
    Py_BEGIN_ALLOW_THREADS
    wait_for(flag, value);
    Py_END_ALLOW_THREADS
}

/* 0 if th ended within ms, else 1 (still running or blocked). */
static int join_within(pthread_t th, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(th, NULL, &ts) == 0 ? 0 : 1;
}

static void set_marker(const char *name)
{
    PyObject *s = PyUnicode_FromString(name);
    if (!s || PySys_SetObject("_scenario_marker", s) != 0)
        abort();
    Py_DECREF(s);
}

/* Run some Python in the attached interpreter; return its marker. */
static const char *python_call(void)
{
    if (PyRun_SimpleString("import sys; sys._scenario_hits = getattr(sys, '_scenario_hits', 0) + 1"))
        abort();
    PyObject *m = PySys_GetObject("_scenario_marker");
    return m ? PyUnicode_AsUTF8(m) : "?";
}

static PyThreadState *main_ts;

static void start(const char *marker)
{
    Py_InitializeEx(0);
    set_marker(marker);
    main_ts = PyThreadState_Get();
}

/* A sub-interpreter, left attached on the calling thread. */
static PyThreadState *new_sub(int own_gil, const char *marker)
{
    PyThreadState *sub = test_new_sub(own_gil);
    if (!sub) {
        say("main: could not create a sub-interpreter");
        exit(3);
    }
    set_marker(marker);
    return sub;
}

static void end_sub(PyThreadState *sub, int own_gil)
{
    say("main: Py_EndInterpreter");
    test_end_sub(sub, main_ts, own_gil);
    say("main: the interpreter ended");
}

#ifdef WITH_GILSHIM
static const char *err_name(int e)
{
    static const char *const names[] = {"GILSHIM_OK", "GILSHIM_ENOPYTHON", "GILSHIM_EINVAL",
                                        "GILSHIM_ESTALE", "GILSHIM_EGONE", "GILSHIM_EFINALIZING",
                                        "GILSHIM_ENOMEM", "GILSHIM_EORDER", "GILSHIM_ETHREAD"};
    return e >= 0 && e <= GILSHIM_ETHREAD ? names[e] : "?";
}

static void try_view(const char *who, const char *what, gilshim_view v)
{
    gilshim_token *t = gilshim_ensure(v);
    if (t) {
        say("%s: gilshim_ensure on %s: a token, ran in %s", who, what, python_call());
        gilshim_release(t);
    } else {
        say("%s: gilshim_ensure on %s: NULL (%s)", who, what, err_name(gilshim_last_error()));
    }
}

static void say_stats(const char *who)
{
    gilshim_stats st;
    gilshim_get_stats(&st, sizeof st);
    say("%s: gilshim holds %zu thread record(s), %zu row(s), %zu bytes", who, st.threads,
        st.rows, st.bytes);
}
#endif

/* --- after_finalize: a foreign thread calls in after Py_FinalizeEx --- */

static _Atomic int af_stage;

static void *af_thread(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    python_call();
    PyGILState_Release(g);
    atomic_store(&af_stage, 1);
    wait_for(&af_stage, 2);
    say("thread: PyGILState_Ensure after Py_FinalizeEx");
    g = PyGILState_Ensure();
    say("thread: PyGILState_Ensure returned");
    PyGILState_Release(g);
    say("thread: released");
    return NULL;
}

static int after_finalize(void)
{
    start("main");
#ifdef WITH_GILSHIM
    gilshim_view v = gilshim_view_main();
#endif
    pthread_t th;
    pthread_create(&th, NULL, af_thread, NULL);
    wait_released(&af_stage, 1);
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned");
#ifdef WITH_GILSHIM
    try_view("main", "the finalized main interpreter", v);
#endif
    atomic_store(&af_stage, 2);
    say(join_within(th, 1000) ? "main: the thread is still blocked" : "main: the thread ended");
    say("main: exit");
    return 0;
}

/* --- first_after_finalize: the first PyGILState_Ensure the process ever
 * makes from a foreign thread comes after Py_FinalizeEx, so gilshim has
 * no history of the runtime: what it does must come from CPython's state
 * at that moment --- */

static _Atomic int fa_stage;

static void *fa_thread(void *unused)
{
    (void)unused;
    wait_for(&fa_stage, 1);
    say("thread: PyGILState_Ensure after Py_FinalizeEx");
    PyGILState_STATE g = PyGILState_Ensure();
    say("thread: PyGILState_Ensure returned");
    PyGILState_Release(g);
    return NULL;
}

static int first_after_finalize(void)
{
    pthread_t th;
    pthread_create(&th, NULL, fa_thread, NULL);
    start("main");
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned");
    atomic_store(&fa_stage, 1);
    say(join_within(th, 2500) ? "main: the thread is still blocked" : "main: the thread ended");
    say("main: exit");
    return 0;
}

/* --- before_init: a foreign thread calls in while the runtime is not
 * initialized yet; the main thread initializes it 200 ms later --- */

static void *bi_thread(void *unused)
{
    (void)unused;
    say("thread: PyGILState_Ensure before Py_Initialize");
    PyGILState_STATE g = PyGILState_Ensure();
    /* main may not have set its marker yet: ask CPython which it is */
    python_call();
    say("thread: callback runs in %s",
        PyThreadState_GetInterpreter(PyThreadState_Get()) == PyInterpreterState_Main() ? "main"
                                                                                       : "another");
    PyGILState_Release(g);
    return NULL;
}

static int before_init(void)
{
    pthread_t th;
    pthread_create(&th, NULL, bi_thread, NULL);
    sleep_ms(200);
    start("main");
    say("main: initialized");
    Py_BEGIN_ALLOW_THREADS
    say(join_within(th, 3000) ? "main: the thread is still blocked" : "main: the thread ended");
    Py_END_ALLOW_THREADS
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- finalize_busy: foreign threads call in while the runtime finalizes --- */

#define NWORKERS 4

struct worker {
    pthread_t th;
    _Atomic long attempts, entered, left;
};
static struct worker workers[NWORKERS];

static void *busy_worker(void *p)
{
    struct worker *w = p;
    for (;;) {
        atomic_fetch_add(&w->attempts, 1);
        PyGILState_STATE g = PyGILState_Ensure();
        atomic_fetch_add(&w->entered, 1);
        python_call();
        PyGILState_Release(g);
        atomic_fetch_add(&w->left, 1);
    }
    return NULL;
}

static int finalize_busy(void)
{
    start("main");
    for (int i = 0; i < NWORKERS; i++)
        pthread_create(&workers[i].th, NULL, busy_worker, &workers[i]);
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < NWORKERS; i++)
        while (atomic_load(&workers[i].left) < 20)
            sleep_ms(1);
    Py_END_ALLOW_THREADS
    say("main: Py_FinalizeEx with %d threads calling in", NWORKERS);
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned");
    long before[NWORKERS];
    for (int i = 0; i < NWORKERS; i++)
        before[i] = atomic_load(&workers[i].attempts);
    sleep_ms(300);
    int killed = 0, parked = 0, running = 0, lost = 0;
    long entered = 0, left = 0;
    for (int i = 0; i < NWORKERS; i++) {
        struct worker *w = &workers[i];
        entered += atomic_load(&w->entered);
        left += atomic_load(&w->left);
        if (pthread_tryjoin_np(w->th, NULL) == 0)
            killed++;  /* the loop never ends on its own */
        else if (atomic_load(&w->attempts) != before[i])
            running++;
        else if (atomic_load(&w->entered) != atomic_load(&w->left))
            lost++;    /* stuck inside a callback */
        else
            parked++;  /* blocked inside PyGILState_Ensure */
    }
    say("main: workers killed=%d parked=%d running=%d stuck-in-callback=%d", killed, parked,
        running, lost);
    say("main: callbacks entered=%ld left=%ld", entered, left);
    say("main: exit");
    return 0;
}

/* --- end_cached / end_inflight: Py_EndInterpreter while a foreign thread
 * keeps a thread state of that interpreter (idle, or in a callback) --- */

static PyInterpreterState *ec_interp;
static _Atomic int ec_stage;
static int ec_inflight;
#ifdef WITH_GILSHIM
static gilshim_view ec_view;
#endif

static void ec_callback(void)
{
    say("thread: callback runs in %s", python_call());
    if (ec_inflight) {
        atomic_store(&ec_stage, 1);
        /* Python code that blocks: the GIL is released meanwhile */
        if (PyRun_SimpleString("import time; time.sleep(0.3)"))
            abort();
        say("thread: callback finished");
    }
}

static void *ec_thread(void *unused)
{
    (void)unused;
#ifdef WITH_GILSHIM
    /* the interposed PyGILState_Ensure, told which interpreter is ours */
    gilshim_bind_thread(ec_view);
    PyGILState_STATE g = PyGILState_Ensure();
    ec_callback();
    PyGILState_Release(g);
#else
    /* What a per-thread cache without gilshim's exit hook does: one thread
     * state kept for the thread's life (cffi keeps one like this). */
    PyThreadState *ts = PyThreadState_New(ec_interp);
    PyEval_RestoreThread(ts);
    ec_callback();
    PyEval_SaveThread();
#endif
    atomic_store(&ec_stage, 2);
    wait_for(&ec_stage, 3);
#ifdef WITH_GILSHIM
    try_view("thread", "the ended interpreter", ec_view);
#endif
    return NULL;
}

static int end_with_thread_state(int own_gil, int inflight)
{
    ec_inflight = inflight;
    start("main");
    PyThreadState *sub = new_sub(own_gil, "sub");
    ec_interp = PyThreadState_GetInterpreter(sub);
#ifdef WITH_GILSHIM
    ec_view = gilshim_view_current();
#endif
    test_switch_to(main_ts);
    pthread_t th;
    pthread_create(&th, NULL, ec_thread, NULL);
    wait_released(&ec_stage, inflight ? 1 : 2);
    end_sub(sub, own_gil);
    atomic_store(&ec_stage, 3);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- finalize_inflight: Py_FinalizeEx while a foreign thread's callback
 * runs in main, its GIL released --- */

static _Atomic int fi_stage;

static void *fi_thread(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    say("thread: callback runs in %s", python_call());
    atomic_store(&fi_stage, 1);
    if (PyRun_SimpleString("import time; time.sleep(0.3)"))
        abort();
    say("thread: callback finished");
    PyGILState_Release(g);
    return NULL;
}

static int finalize_inflight(void)
{
    start("main");
    pthread_t th;
    pthread_create(&th, NULL, fi_thread, NULL);
    wait_released(&fi_stage, 1);
    say("main: Py_FinalizeEx with a callback in flight");
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned");
    say(join_within(th, 1000) ? "main: the thread is still blocked" : "main: the thread ended");
    say("main: exit");
    return 0;
}

/* --- atexit_ensure: a foreign thread calls in while an atexit callback
 * of main waits for it; stock's runtime is not finalizing yet --- */

static _Atomic int ax_stage;

static void *ax_thread(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    python_call();
    PyGILState_Release(g);
    atomic_store(&ax_stage, 1);
    wait_for(&ax_stage, 2);
    say("thread: PyGILState_Ensure during an atexit callback");
    g = PyGILState_Ensure();
    say("thread: callback runs in %s", python_call());
    PyGILState_Release(g);
    atomic_store(&ax_stage, 3);
    return NULL;
}

static PyObject *ax_at_exit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    int ran;
    Py_BEGIN_ALLOW_THREADS
    atomic_store(&ax_stage, 2);
    for (int i = 0; i < 1000 && atomic_load(&ax_stage) < 3; i++)
        sleep_ms(1);
    ran = atomic_load(&ax_stage) == 3;
    Py_END_ALLOW_THREADS
    say(ran ? "atexit: the thread's callback ran" : "atexit: the thread is still blocked");
    Py_RETURN_NONE;
}

static int atexit_ensure(void)
{
    static PyMethodDef def = {"scenario_at_exit", ax_at_exit, METH_NOARGS, NULL};
    start("main");
    /* Before gilshim's own exit hook for main, placed at the first
     * pthread_create or Ensure: atexit runs the callbacks last in first
     * out, so this one runs once gilshim has heard the runtime is going. */
    PyObject *fn = PyCFunction_New(&def, NULL);
    PyObject *mod = PyImport_ImportModule("atexit");
    PyObject *res = fn && mod ? PyObject_CallMethod(mod, "register", "O", fn) : NULL;
    if (!res)
        abort();
    Py_DECREF(res);
    Py_DECREF(mod);
    Py_DECREF(fn);
    pthread_t th;
    pthread_create(&th, NULL, ax_thread, NULL);
    wait_released(&ax_stage, 1);
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned");
    say(join_within(th, 300) ? "main: the thread is still blocked" : "main: the thread ended");
    say("main: exit");
    return 0;
}

/* --- atexit_join WHERE-ORDER: a library whose atexit function stops its
 * thread and joins it; the thread makes one last callback on its way out.
 * WHERE: main, sub (legacy) or own (own GIL), ended before Py_FinalizeEx;
 * left or leftown: a sub left alive at the runtime's end, which 3.13+ end
 * after main's atexit functions (3.9-3.12 never run its atexit functions);
 * ORDER: the atexit function is registered before or after the thread's
 * first callback (and so before or after anything gilshim registers for
 * that interpreter) --- */

static _Atomic int aj_stage;

static void *aj_thread(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    say("thread: first callback runs in %s", python_call());
    PyGILState_Release(g);
    atomic_store(&aj_stage, 1);
    wait_for(&aj_stage, 2);
    g = PyGILState_Ensure();
    say("thread: last callback runs in %s", python_call());
    PyGILState_Release(g);
    return NULL;
}

static pthread_t aj_th;

static PyObject *aj_at_exit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    int blocked;
    say("atexit: stopping the library thread");
    Py_BEGIN_ALLOW_THREADS
    atomic_store(&aj_stage, 2);
    blocked = join_within(aj_th, 3000);
    Py_END_ALLOW_THREADS
    say(blocked ? "atexit: the library thread is still blocked" : "atexit: joined the library thread");
    Py_RETURN_NONE;
}

static void aj_register(void)
{
    static PyMethodDef def = {"library_at_exit", aj_at_exit, METH_NOARGS, NULL};
    PyObject *fn = PyCFunction_New(&def, NULL);
    PyObject *mod = PyImport_ImportModule("atexit");
    PyObject *res = fn && mod ? PyObject_CallMethod(mod, "register", "O", fn) : NULL;
    if (!res)
        abort();
    Py_DECREF(res);
    Py_DECREF(mod);
    Py_DECREF(fn);
}

static int atexit_join(const char *arg)
{
    const char *order = arg ? strchr(arg, '-') : NULL;
    if (!order || (strcmp(order, "-before") && strcmp(order, "-after"))) {
        fprintf(stderr, "atexit_join main|sub|own|left|leftown-before|after\n");
        return 2;
    }
    int sub_wanted = strncmp(arg, "main-", 5) != 0;
    int own_gil = !strncmp(arg, "own-", 4) || !strncmp(arg, "leftown-", 8);
    int left = !strncmp(arg, "left", 4);
    if (own_gil && !HAVE_OWN_GIL) {
        say("own-GIL interpreters need CPython 3.12+");
        return 77;
    }
    if (left && PY_VERSION_HEX < 0x030D0000) {
        /* stock aborts too: "PyInterpreterState_Delete: remaining subinterpreters" */
        say("Py_FinalizeEx ends sub-interpreters left at the runtime's end on CPython 3.13+");
        return 77;
    }
    int before = !strcmp(order, "-before");
    start("main");
    PyThreadState *sub = sub_wanted ? new_sub(own_gil, "sub") : NULL;
    if (before)
        aj_register();
    /* made while the interpreter is attached: gilshim's rule 4 */
    pthread_create(&aj_th, NULL, aj_thread, NULL);
    wait_released(&aj_stage, 1);
    if (!before)
        aj_register();
    if (sub && left) {
        say("main: the sub-interpreter is left to Py_FinalizeEx");
        test_switch_to(main_ts);
    } else if (sub) {
        end_sub(sub, own_gil);
    }
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned");
    say("main: exit");
    return 0;
}

/* --- reinit: Py_FinalizeEx, Py_Initialize again; old views stay invalid --- */

static _Atomic int ri_cmd, ri_done;

static void *ri_thread(void *unused)
{
    (void)unused;
    for (int n = 1; n <= 2; n++) {
        wait_for(&ri_cmd, n);
        PyGILState_STATE g = PyGILState_Ensure();
        say("thread: callback %d runs in %s", n, python_call());
        uint64_t id = PyThreadState_GetID(PyThreadState_Get());
        PyGILState_Release(g);
        /* the new runtime's CPython keeps its TSS key under a new key
         * object: the ones after the first take the fast paths again */
        int elsewhere = 0, other_states = 0;
        for (int i = 0; n == 2 && i < 100; i++) {
            g = PyGILState_Ensure();
            elsewhere += strcmp(python_call(), "second runtime") != 0;
            other_states += PyThreadState_GetID(PyThreadState_Get()) != id;
            PyGILState_Release(g);
        }
        if (n == 2)
            say("thread: 100 more: %d elsewhere, %d on another thread state", elsewhere,
                other_states);
        atomic_store(&ri_done, n);
    }
    return NULL;
}

static int reinit(void)
{
    start("first runtime");
#ifdef WITH_GILSHIM
    gilshim_view first = gilshim_view_main();
#endif
    pthread_t th;
    pthread_create(&th, NULL, ri_thread, NULL);
    atomic_store(&ri_cmd, 1);
    wait_released(&ri_done, 1);
    Py_FinalizeEx();
    say("main: Py_FinalizeEx returned; Py_Initialize again");
    start("second runtime");
    atomic_store(&ri_cmd, 2);
    wait_released(&ri_done, 2);
#ifdef WITH_GILSHIM
    try_view("main", "the first runtime's main interpreter", first);
    Py_BEGIN_ALLOW_THREADS
    try_view("main", "the second runtime's main interpreter", gilshim_view_main());
    Py_END_ALLOW_THREADS
#endif
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- thread_exit: a thread with cached states in three interpreters, one
 * of which has ended, exits --- */

static int count_thread_states(PyInterpreterState *ip)
{
    int n = 0;
    for (PyThreadState *t = PyInterpreterState_ThreadHead(ip); t; t = PyThreadState_Next(t))
        n++;
    return n;
}

#ifdef WITH_GILSHIM
static gilshim_view te_views[3];
#endif
static _Atomic int te_stage;

static void *te_thread(void *unused)
{
    (void)unused;
#ifdef WITH_GILSHIM
    for (int i = 0; i < 3; i++)
        try_view("thread", i == 0 ? "main" : i == 1 ? "sub1" : "sub2", te_views[i]);
#else
    PyGILState_STATE g = PyGILState_Ensure();
    say("thread: callback runs in %s", python_call());
    PyGILState_Release(g);
#endif
    atomic_store(&te_stage, 1);
    wait_for(&te_stage, 2);
    return NULL;  /* and the thread exits */
}

static int thread_exit(void)
{
    start("main");
    PyThreadState *s1 = new_sub(0, "sub1");
    PyInterpreterState *i1 = PyThreadState_GetInterpreter(s1);
    PyThreadState *s2 = new_sub(0, "sub2");
    PyInterpreterState *i0 = PyThreadState_GetInterpreter(main_ts);
#ifdef WITH_GILSHIM
    te_views[2] = gilshim_view_current();
    test_switch_to(s1);
    te_views[1] = gilshim_view_current();
    test_switch_to(main_ts);
    te_views[0] = gilshim_view_current();
#else
    test_switch_to(main_ts);
#endif
    int main_before = count_thread_states(i0), sub1_before = count_thread_states(i1);
    pthread_t th;
    pthread_create(&th, NULL, te_thread, NULL);
    wait_released(&te_stage, 1);
    say("main: while the thread lives: main +%d, sub1 +%d thread state(s)",
        count_thread_states(i0) - main_before, count_thread_states(i1) - sub1_before);
    end_sub(s2, 0);
    atomic_store(&te_stage, 2);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    /* each counted from inside: gilshim deletes a state an exited thread
     * left to its interpreter when a thread holds that GIL as its own */
    int main_after = count_thread_states(i0);
    test_switch_to(s1);
    int sub1_after = count_thread_states(i1);
    test_switch_to(main_ts);
    say("main: after the thread exited: main +%d, sub1 +%d thread state(s)",
        main_after - main_before, sub1_after - sub1_before);
#ifdef WITH_GILSHIM
    say_stats("main");
#endif
    end_sub(s1, 0);
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- exit_joined: a library thread that called back once exits while
 * the thread holding its interpreter's GIL joins it, the GIL held (grpc's
 * C core frees its executor so, from a Cython deallocator). Stock deleted
 * the thread's state at its Release, so the thread exits without the GIL.
 * Three threads in turn, in main or a sub-interpreter: A is joined with
 * the GIL held; B calls back once (gilshim: its Ensure deletes what A
 * left), and is joined so too, then the interpreter's states are counted
 * from inside it; C is joined so, then the interpreter ends. --- */

static _Atomic int ej_go;

static void *ej_thread(void *arg)
{
    _Atomic int *done = arg;
    PyGILState_STATE g = PyGILState_Ensure();
    say("thread: callback runs in %s", python_call());
    PyGILState_Release(g);
    atomic_store(done, 1);
    wait_for(&ej_go, 1);
    return NULL;  /* and it exits */
}

/* Start a thread that calls back once, let it exit while this thread,
 * attached, joins it; say whether it got out within 3 s. A thread that did
 * not is joined with the GIL released, so the scenario ends either way. */
static void ej_round(const char *name)
{
    _Atomic int done = 0;
    pthread_t th;
    atomic_store(&ej_go, 0);
    pthread_create(&th, NULL, ej_thread, &done);
    wait_released(&done, 1);
    atomic_store(&ej_go, 1);
    if (!join_within(th, 3000)) {
        say("main: thread %s exited while main held the GIL", name);
        return;
    }
    say("main: thread %s did not exit within 3 s while main held the GIL", name);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    say("main: thread %s exited once main released the GIL", name);
}

static int exit_joined(const char *where)
{
    if (!where || (strcmp(where, "main") && strcmp(where, "sub") && strcmp(where, "own"))) {
        say("exit_joined main|sub|own");
        return 2;
    }
    int own = !strcmp(where, "own");
    if (own && !HAVE_OWN_GIL) {
        say("own-GIL interpreters need CPython 3.12+");
        return 77;
    }
    start("main");
    PyThreadState *sub = strcmp(where, "main") ? new_sub(own, "sub") : NULL;
    PyInterpreterState *ip = PyThreadState_GetInterpreter(PyThreadState_Get());
    int before = count_thread_states(ip);
    ej_round("A");
    ej_round("B");
    say("main: %+d thread state(s) in the interpreter", count_thread_states(ip) - before);
    ej_round("C");
    if (sub)
        end_sub(sub, own);
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- fork: the child keeps working, with only its own thread's state --- */

static _Atomic int fk_stage;
#ifdef WITH_GILSHIM
static gilshim_view fk_sub;
#endif

static void *fk_parent_thread(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    python_call();
    PyGILState_Release(g);
#ifdef WITH_GILSHIM
    try_view("parent thread", "the sub-interpreter", fk_sub);
#endif
    atomic_fetch_add(&fk_stage, 1);
    wait_for(&fk_stage, 100);
    return NULL;
}

static void *fk_child_thread(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    say("child thread: callback runs in %s", python_call());
    PyGILState_Release(g);
    return NULL;
}

static int fork_child(void)
{
    start("main");
    PyThreadState *sub = new_sub(0, "sub");
#ifdef WITH_GILSHIM
    fk_sub = gilshim_view_current();
#endif
    test_switch_to(main_ts);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, fk_parent_thread, NULL);
    wait_released(&fk_stage, 2);
    /* Not with the sub-interpreter alive: stock PyOS_AfterFork_Child then
     * deadlocks (3.9-3.11) or aborts (3.13) clearing it, shim or not. */
    end_sub(sub, 0);
#ifdef WITH_GILSHIM
    say_stats("parent");
#endif
    PyOS_BeforeFork();
    pid_t pid = fork();
    if (pid == 0) {
        PyOS_AfterFork_Child();
#ifdef WITH_GILSHIM
        say_stats("child");
#endif
        pthread_t c;
        pthread_create(&c, NULL, fk_child_thread, NULL);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(c, NULL);
        Py_END_ALLOW_THREADS
#ifdef WITH_GILSHIM
        say_stats("child after its thread exited");
#endif
        say("child: Py_FinalizeEx returned %d", Py_FinalizeEx());
        fflush(stdout);
        _exit(0);
    }
    PyOS_AfterFork_Parent();
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    waitpid(pid, &status, 0);
    Py_END_ALLOW_THREADS
    if (WIFEXITED(status))
        say("parent: the child exited with %d", WEXITSTATUS(status));
    else
        say("parent: the child was killed by signal %d", WTERMSIG(status));
    atomic_store(&fk_stage, 100);
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    Py_END_ALLOW_THREADS
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- unbalanced: a thread exits inside PyGILState_Ensure --- */

static void *ub_thread(void *unused)
{
    (void)unused;
    PyGILState_Ensure();
    python_call();
    say("thread: exits without PyGILState_Release");
    return NULL;
}

static int unbalanced(void)
{
    start("main");
    pthread_t th;
    pthread_create(&th, NULL, ub_thread, NULL);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    say("main: has the GIL back");
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* --- misuse: PyGILState_Release given the wrong state, 250 times; with
 * gilshim first a token released out of order --- */

static void *mu_thread(void *unused)
{
    (void)unused;
#ifdef WITH_GILSHIM
    gilshim_token *outer = gilshim_ensure(gilshim_view_main());
    gilshim_token *inner = gilshim_ensure(gilshim_view_main());
    gilshim_release(outer);
    say("thread: the outer token released first: %s", err_name(gilshim_last_error()));
    gilshim_release(inner);
    gilshim_release(outer);
#endif
    int ran = 0;
    for (int i = 0; i < 250; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        ran += strcmp(python_call(), "main") == 0;
        PyGILState_Release(g == PyGILState_UNLOCKED ? PyGILState_LOCKED : PyGILState_UNLOCKED);
    }
    say("thread: %d of 250 callbacks ran in main, each released with the wrong state", ran);
    return NULL;
}

static int misuse(void)
{
    start("main");
    pthread_t th;
    pthread_create(&th, NULL, mu_thread, NULL);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    say("main: has the GIL back");
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}

/* Py_FinalizeEx clears "initialized" and only then clears modules: a
 * destructor run then that calls PyGILState_Ensure (a common defensive
 * habit) nests in an attached thread and must simply work. */
static void capsule_gone(PyObject *capsule)
{
    (void)capsule;
    PyGILState_STATE g = PyGILState_Ensure();
    say("finalizer: Ensure returned %s, initialized=%d", g == PyGILState_LOCKED ? "LOCKED" : "UNLOCKED",
        Py_IsInitialized());
    PyGILState_Release(g);
}

static void *touch(void *unused)
{
    (void)unused;
    PyGILState_STATE g = PyGILState_Ensure();
    PyGILState_Release(g);
    return NULL;
}

static int finalizer(void)
{
    start("main");
    pthread_t th;  /* a foreign thread first: the runtime is known to have run */
    pthread_create(&th, NULL, touch, NULL);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    PyObject *cap = PyCapsule_New((void *)1, "gilshim.test", capsule_gone);
    PyObject *main_mod = PyImport_AddModule("__main__");
    PyObject_SetAttrString(main_mod, "_held", cap);
    Py_DECREF(cap);
    int rc = Py_FinalizeEx();
    say("main: Py_FinalizeEx returned %d", rc);
    return 0;
}

/* --- pep788 (3.15+): CPython's own PyThreadState_Ensure and interpreter
 * guards on a foreign thread that also calls PyGILState_Ensure, which
 * gilshim routes to the thread's creator (the sub-interpreter) and gives a
 * cached state. Nested both ways, then an interpreter end while the thread
 * holds a guard (CPython waits for it; the exit hook must not deadlock),
 * then the view of the ended interpreter. --- */
#if PY_VERSION_HEX >= 0x030F0000
static PyInterpreterView *pv_view;
static PyInterpreterGuard *pv_guard;
static _Atomic int pv_stage;

static void *pv_thread(void *unused)
{
    (void)unused;
    for (int i = 0; i < 3; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        const char *outer = python_call();
        PyThreadStateToken *t = PyThreadState_Ensure(pv_guard);
        const char *inner = t ? python_call() : "NULL";
        if (t)
            PyThreadState_Release(t);
        const char *back = python_call();
        PyGILState_Release(g);
        if (i == 2)
            say("thread: PyGILState_Ensure in %s, PyThreadState_Ensure(guard) inside it in %s, "
                "back in %s", outer, inner, back);
    }
    for (int i = 0; i < 3; i++) {
        PyThreadStateToken *t = PyThreadState_EnsureFromView(pv_view);
        const char *outer = t ? python_call() : "NULL";
        PyGILState_STATE g = PyGILState_Ensure();
        const char *inner = python_call();
        PyGILState_Release(g);
        if (t)
            PyThreadState_Release(t);
        if (i == 2)
            say("thread: PyThreadState_EnsureFromView in %s, PyGILState_Ensure inside it in %s",
                outer, inner);
    }
    atomic_store(&pv_stage, 1);
    /* main ends the interpreter now, and waits for this guard */
    sleep_ms(300);
    say("thread: closing the guard");
    PyInterpreterGuard_Close(pv_guard);
    wait_for(&pv_stage, 2);
    PyThreadStateToken *t = PyThreadState_EnsureFromView(pv_view);
    say("thread: PyThreadState_EnsureFromView on the ended interpreter: %s", t ? "a token" : "NULL");
    if (t)
        PyThreadState_Release(t);
    PyInterpreterView_Close(pv_view);
    return NULL;
}

static int pep788(int own_gil)
{
    start("main");
    PyThreadState *sub = new_sub(own_gil, "sub");
    pv_view = PyInterpreterView_FromCurrent();
    pv_guard = PyInterpreterGuard_FromCurrent();
    if (!pv_view || !pv_guard)
        abort();
    /* made while the sub-interpreter is attached: gilshim's rule 4 */
    pthread_t th;
    pthread_create(&th, NULL, pv_thread, NULL);
    wait_released(&pv_stage, 1);
    end_sub(sub, own_gil);
    atomic_store(&pv_stage, 2);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    Py_FinalizeEx();
    say("main: exit");
    return 0;
}
#endif

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "";
    int own = argc > 2 && !strcmp(argv[2], "own");
    if (own && !HAVE_OWN_GIL) {
        say("own-GIL interpreters need CPython 3.12+");
        return 77;
    }
    /* a scenario that hangs is a finding, not a stuck test run */
    alarm(20);
    if (!strcmp(name, "after_finalize"))
        return after_finalize();
    if (!strcmp(name, "first_after_finalize"))
        return first_after_finalize();
    if (!strcmp(name, "before_init"))
        return before_init();
    if (!strcmp(name, "finalize_busy"))
        return finalize_busy();
    if (!strcmp(name, "end_cached"))
        return end_with_thread_state(own, 0);
    if (!strcmp(name, "end_inflight"))
        return end_with_thread_state(own, 1);
    if (!strcmp(name, "reinit"))
        return reinit();
    if (!strcmp(name, "thread_exit"))
        return thread_exit();
    if (!strcmp(name, "fork"))
        return fork_child();
    if (!strcmp(name, "unbalanced"))
        return unbalanced();
    if (!strcmp(name, "finalizer"))
        return finalizer();
    if (!strcmp(name, "finalize_inflight"))
        return finalize_inflight();
    if (!strcmp(name, "atexit_ensure"))
        return atexit_ensure();
    if (!strcmp(name, "atexit_join"))
        return atexit_join(argc > 2 ? argv[2] : NULL);
    if (!strcmp(name, "misuse"))
        return misuse();
    if (!strcmp(name, "exit_joined"))
        return exit_joined(argc > 2 ? argv[2] : NULL);
#if PY_VERSION_HEX >= 0x030F0000
    if (!strcmp(name, "pep788"))
        return pep788(own);
#endif
    fprintf(stderr, "usage: %s after_finalize|first_after_finalize|before_init|finalize_busy|"
            "finalize_inflight|atexit_ensure|atexit_join main|sub|own|left|leftown-before|after|"
            "end_cached [own]|end_inflight [own]|reinit|thread_exit|exit_joined main|sub|own|"
            "fork|unbalanced|misuse|"
            "finalizer|pep788 [own] (3.15+)\n", argv[0]);
    return 2;
}
