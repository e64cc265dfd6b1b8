/* SPDX-License-Identifier: MIT */
/*
 * Embedding tests: real CPython (the version this file is compiled
 * against), libgilshim linked ahead of libpython so that, as under
 * LD_PRELOAD, every PyGILState_* and PyEval_Save/RestoreThread call of the
 * process lands in the shim. Stock CPython's own functions are fetched
 * from libpython's handle, so each test shows both outcomes side by side.
 *
 * Which interpreter ran a callback is read inside it, two ways:
 * PyInterpreterState_Get() and a per-interpreter marker in sys.
 */

#include <Python.h>

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gilshim.h"
#include "../common/subinterp.h"
#include "../../src/shim/port/versions.h"

static PyGILState_STATE (*stock_Ensure)(void);
static void (*stock_Release)(PyGILState_STATE);

struct seen {
    PyInterpreterState *interp;
    PyThreadState *tstate;
    uint64_t tsid;
    int check;
    PyThreadState *this_thread_state;
    char marker[32];
};

static PyThreadState *main_ts;

static void set_marker(const char *name)
{
    PyObject *s = PyUnicode_FromString(name);
    cr_assert(s && PySys_SetObject("_gilshim_marker", s) == 0);
    Py_DECREF(s);
}

static void start_python(void)
{
    Dl_info info;
    cr_assert(dladdr((void *)Py_Initialize, &info) && info.dli_fname);
    void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    cr_assert(h, "libpython handle");
    stock_Ensure = (PyGILState_STATE(*)(void))dlsym(h, "PyGILState_Ensure");
    stock_Release = (void (*)(PyGILState_STATE))dlsym(h, "PyGILState_Release");
    cr_assert(stock_Ensure && stock_Release);
    cr_assert((void *)stock_Ensure != (void *)PyGILState_Ensure, "shim must be linked ahead");
    Py_InitializeEx(0);
    set_marker("main");
    main_ts = PyThreadState_Get();
}

/* A sub-interpreter, left attached on the calling thread. */
static PyThreadState *new_sub(int own_gil, const char *marker)
{
    PyThreadState *sub = test_new_sub(own_gil);
    cr_assert(sub, "%s", own_gil ? "own-GIL interpreter" : "sub-interpreter");
    set_marker(marker);
    return sub;
}

static void probe(struct seen *s)
{
    s->interp = PyInterpreterState_Get();
    s->tstate = PyThreadState_Get();
    s->tsid = PyThreadState_GetID(s->tstate);
    s->check = PyGILState_Check();
    s->this_thread_state = PyGILState_GetThisThreadState();
    PyObject *m = PySys_GetObject("_gilshim_marker");
    snprintf(s->marker, sizeof s->marker, "%s", m ? PyUnicode_AsUTF8(m) : "?");
    /* and run some Python there */
    cr_assert(PyRun_SimpleString("import sys; sys._gilshim_hits = getattr(sys, '_gilshim_hits', 0) + 1") == 0);
}

static void callback_shim(struct seen *s)
{
    PyGILState_STATE g = PyGILState_Ensure();
    probe(s);
    PyGILState_Release(g);
}

static void callback_stock(struct seen *s)
{
    PyGILState_STATE g = stock_Ensure();
    s->interp = PyInterpreterState_Get();
    PyObject *m = PySys_GetObject("_gilshim_marker");
    snprintf(s->marker, sizeof s->marker, "%s", m ? PyUnicode_AsUTF8(m) : "?");
    stock_Release(g);
}

/* --- a foreign thread: what a C library's worker looks like --- */

struct job {
    void (*fn)(struct job *);
    struct seen shim, stock;
    gilshim_view view;
    int n;
    PyInterpreterState *owner;  /* for the grandchild test */
    struct seen grand;
};

static void *job_main(void *p)
{
    struct job *j = p;
    j->fn(j);
    return NULL;
}

/* Run fn on a new thread created now (so rule 4 sees the caller's state),
 * and wait for it with the GIL released. */
static void run_thread(struct job *j)
{
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, job_main, j) == 0);
    PyThreadState *me = PyEval_SaveThread();
    pthread_join(th, NULL);
    PyEval_RestoreThread(me);
}

static void both(struct job *j)
{
    callback_stock(&j->stock);
    callback_shim(&j->shim);
}

static void sub_gone(PyThreadState *sub, int own_gil) { test_end_sub(sub, main_ts, own_gil); }

TestSuite(embed, .init = start_python, .timeout = 60);

Test(embed, rule1_attached_thread_nests)
{
    PyThreadState *sub = new_sub(0, "sub");
    PyGILState_STATE g = PyGILState_Ensure();
    cr_assert_eq(g, PyGILState_LOCKED);
    cr_assert_eq(PyThreadState_Get(), sub, "never switch interpreters implicitly");
    PyGILState_STATE g2 = PyGILState_Ensure();
    cr_assert_eq(g2, PyGILState_LOCKED);
    PyGILState_Release(g2);
    PyGILState_Release(g);
    cr_assert_eq(PyThreadState_Get(), sub);
    test_switch_to(main_ts);
    sub_gone(sub, 0);
}

static void rule2_in_region(int own_gil)
{
    PyThreadState *sub = new_sub(own_gil, "sub");
    PyInterpreterState *subi = PyInterpreterState_Get();
    /* sqlite3 / ctypes qsort shape: release the GIL, call back synchronously */
    PyThreadState *save = PyEval_SaveThread();
    struct seen shim = {0}, stock = {0};
    callback_shim(&shim);
    if (!own_gil)
        callback_stock(&stock);
    PyEval_RestoreThread(save);
    cr_assert_eq(shim.interp, subi, "routed callback ran in the sub-interpreter");
    cr_assert_str_eq(shim.marker, "sub");
    cr_assert_eq(shim.tstate, sub, "the released thread state itself is re-attached");
    cr_assert_eq(shim.check, 1);
    cr_assert_eq(shim.this_thread_state, sub);
    if (!own_gil) {
        if (PY_VERSION_HEX < 0x030C0000)
            cr_assert_str_eq(stock.marker, "main", "stock <= 3.11 lands in main");
        else
            cr_assert_str_eq(stock.marker, "sub", "stock 3.12+ follows the last attached state");
    }
    test_switch_to(main_ts);
    sub_gone(sub, own_gil);
}

Test(embed, rule2_released_region_legacy) { rule2_in_region(0); }
#if HAVE_OWN_GIL
Test(embed, rule2_released_region_own_gil) { rule2_in_region(1); }
#endif

static void bound_job(struct job *j)
{
    callback_stock(&j->stock);
    cr_assert_eq(gilshim_bind_thread(j->view), 0);
    callback_shim(&j->shim);
    gilshim_unbind_thread();
}

static void rule3_binding(int own_gil)
{
    PyThreadState *sub = new_sub(own_gil, "sub");
    PyInterpreterState *subi = PyInterpreterState_Get();
    struct job j = {.fn = bound_job, .view = gilshim_view_current()};
    cr_assert(j.view.id > 0);
    test_switch_to(main_ts);
    run_thread(&j);  /* created while attached to main: only the binding says sub */
    cr_assert_eq(j.shim.interp, subi);
    cr_assert_str_eq(j.shim.marker, "sub");
    cr_assert_str_eq(j.stock.marker, "main", "stock ignores who owns the callback");
    sub_gone(sub, own_gil);
}

Test(embed, rule3_binding_legacy) { rule3_binding(0); }
#if HAVE_OWN_GIL
Test(embed, rule3_binding_own_gil) { rule3_binding(1); }
#endif

static void *grandchild(void *p)
{
    struct job *j = p;
    callback_shim(&j->grand);
    return NULL;
}

static void creator_job(struct job *j)
{
    both(j);
    pthread_t th;  /* a thread made by a thread that never ran Python */
    cr_assert(pthread_create(&th, NULL, grandchild, j) == 0);
    pthread_join(th, NULL);
}

static void rule4_creator(int own_gil, int released)
{
    PyThreadState *sub = new_sub(own_gil, "sub");
    PyInterpreterState *subi = PyInterpreterState_Get();
    struct job j = {.fn = creator_job};
    if (released) {
        /* the C library makes its thread inside Py_BEGIN_ALLOW_THREADS */
        PyThreadState *save = PyEval_SaveThread();
        pthread_t th;
        cr_assert(pthread_create(&th, NULL, job_main, &j) == 0);
        pthread_join(th, NULL);
        PyEval_RestoreThread(save);
    } else {
        run_thread(&j);
    }
    cr_assert_eq(j.shim.interp, subi, "routed to the creating thread's interpreter");
    cr_assert_str_eq(j.shim.marker, "sub");
    cr_assert_eq(j.shim.check, 1);
    cr_assert_eq(j.shim.this_thread_state, j.shim.tstate);
    cr_assert_str_eq(j.grand.marker, "sub", "inherited by the threads it creates");
    cr_assert_str_eq(j.stock.marker, "main", "stock runs it in main");
    test_switch_to(main_ts);
    sub_gone(sub, own_gil);
}

Test(embed, rule4_creator_attached_legacy) { rule4_creator(0, 0); }
Test(embed, rule4_creator_released_legacy) { rule4_creator(0, 1); }
#if HAVE_OWN_GIL
Test(embed, rule4_creator_attached_own_gil) { rule4_creator(1, 0); }
Test(embed, rule4_creator_released_own_gil) { rule4_creator(1, 1); }
#endif

Test(embed, rule5_main_when_nothing_is_known)
{
    /* created by a thread that is not attached (released, in main) */
    PyThreadState *save = PyEval_SaveThread();
    pthread_t th;
    struct job j = {.fn = both};
    cr_assert(pthread_create(&th, NULL, job_main, &j) == 0);
    pthread_join(th, NULL);
    PyEval_RestoreThread(save);
    cr_assert_str_eq(j.shim.marker, "main");
    cr_assert_str_eq(j.stock.marker, "main");
}

static void cycles_job(struct job *j)
{
    struct seen first, s;
    callback_shim(&first);
    for (int i = 0; i < j->n; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        s.tstate = PyThreadState_Get();
        s.tsid = PyThreadState_GetID(s.tstate);
        PyGILState_Release(g);
        cr_assert_eq(s.tsid, first.tsid, "cycle %d made a new thread state", i);
    }
    j->shim = first;
}

static void stock_cycles_job(struct job *j)
{
    /* stock: one thread state per outermost pair (on a thread the shim
     * never cached a state for: on <= 3.11 stock would reuse that one) */
    uint64_t ids[3];
    for (int i = 0; i < 3; i++) {
        PyGILState_STATE g = stock_Ensure();
        ids[i] = PyThreadState_GetID(PyThreadState_Get());
        stock_Release(g);
    }
    j->n = ids[0] != ids[1] && ids[1] != ids[2];
}

static int count_tstates(PyInterpreterState *interp)
{
    int n = 0;
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t))
        n++;
    return n;
}

Test(embed, ten_thousand_cycles_one_thread_state)
{
    PyInterpreterState *mi = PyInterpreterState_Get();
    int before = count_tstates(mi);
    struct job j = {.fn = cycles_job, .n = 10000};
    run_thread(&j);
    cr_assert_str_eq(j.shim.marker, "main");
    cr_assert_eq(count_tstates(mi), before, "the thread's state went with the thread");
    struct job s = {.fn = stock_cycles_job};
    run_thread(&s);
    cr_assert(s.n, "stock churns thread states");
}

/* cffi 2.1 on a foreign thread (gil_ensure and thread_canary_register in its
 * src/c/misc_thread_common.h): an Ensure, a nested Ensure it never releases,
 * which pins the state as gilstate_counter++ did before, then Release(UNLOCKED)
 * for the first. Stock only counts, so that Release detaches. With gilshim
 * every callback takes this path (an idle row is not named by
 * PyGILState_GetThisThreadState), so it runs twice here. */
static void pinned_job(struct job *j)
{
    j->n = 0;
    for (int i = 0; i < 2; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        cr_assert_eq(g, PyGILState_UNLOCKED);
        probe(&j->shim);
        cr_assert_eq(PyGILState_Ensure(), PyGILState_LOCKED);
        PyGILState_Release(g);
        j->n += PyGILState_Check();
    }
}

static void stock_pinned_job(struct job *j)
{
    PyGILState_STATE g = stock_Ensure();
    cr_assert_eq(stock_Ensure(), PyGILState_LOCKED);
    stock_Release(g);
    j->n = PyGILState_Check();
}

static void pinning_ensure(int own_gil)
{
    struct job s = {.fn = stock_pinned_job};
    run_thread(&s);
    cr_assert_eq(s.n, 0, "stock: the Release detached, the state stays pinned");
    PyThreadState *sub = new_sub(own_gil, "sub");
    struct job j = {.fn = pinned_job};
    run_thread(&j);
    cr_assert_str_eq(j.shim.marker, "sub");
    cr_assert_eq(j.n, 0, "the Release detached, both times");
    test_switch_to(main_ts);
    sub_gone(sub, own_gil);
}

Test(embed, release_under_an_unreleased_nested_ensure_legacy) { pinning_ensure(0); }
#if HAVE_OWN_GIL
Test(embed, release_under_an_unreleased_nested_ensure_own_gil) { pinning_ensure(1); }
#endif

/* A callback that returns with an exception set, then the next ones on the
 * same (reused) thread state, which must start clean: stock destroys the
 * state, and the exception with it, at the outermost Release. */
static void exception_job(struct job *j)
{
    j->n = 0;
    for (int i = 0; i < 100; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        if (PyErr_Occurred())
            j->n++;
        PyGILState_STATE inner = PyGILState_Ensure();
        PyErr_SetString(PyExc_ValueError, "left set by a callback");
        PyGILState_Release(inner);
        if (!PyErr_Occurred())
            j->n += 1000;  /* the nested Release must not clear it */
        PyGILState_Release(g);
    }
}

Test(embed, reused_thread_state_starts_without_the_last_exception)
{
    struct job j = {.fn = exception_job};
    run_thread(&j);
    cr_assert_eq(j.n, 0, "%d callbacks began with an exception set, or lost theirs", j.n);
    /* the cycles above took the fast paths, which read CPython's memory
     * once they have found where; each version must get there */
    gilshim_stats st;
    cr_assert_eq(gilshim_get_stats(&st, sizeof st), GILSHIM_OK);
    cr_assert_eq(st.reads_attached_directly, 1);
    cr_assert_eq(st.reads_exception_directly, 1);
    cr_assert_eq(st.reads_tss_directly, 1, "glibc's thread-specific data layout");
}

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cv = PTHREAD_COND_INITIALIZER;
static int park_state;  /* 1: called back, 2: may exit */

static void stay_alive_job(struct job *j)
{
    callback_shim(&j->shim);
    /* and once through the explicit API, which then keeps the row as its
     * guess for this view (the guess must not outlive the interpreter) */
    gilshim_token *k = gilshim_ensure(j->view);
    cr_assert(k, "%s", gilshim_strerror(gilshim_last_error()));
    probe(&j->grand);
    gilshim_release(k);
    pthread_mutex_lock(&park_mu);
    park_state = 1;
    pthread_cond_broadcast(&park_cv);
    while (park_state != 2)
        pthread_cond_wait(&park_cv, &park_mu);
    pthread_mutex_unlock(&park_mu);
    /* the interpreter is gone now: the explicit API says so */
    gilshim_token *t = gilshim_ensure(j->view);
    j->n = t ? -1 : gilshim_last_error();
}

static void end_while_cached(int own_gil)
{
    PyThreadState *sub = new_sub(own_gil, "sub");
    struct job j = {.fn = stay_alive_job, .view = gilshim_view_current()};
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, job_main, &j) == 0);
    PyThreadState *me = PyEval_SaveThread();
    pthread_mutex_lock(&park_mu);
    while (park_state != 1)
        pthread_cond_wait(&park_cv, &park_mu);
    pthread_mutex_unlock(&park_mu);
    PyEval_RestoreThread(me);
    cr_assert_str_eq(j.shim.marker, "sub");
    cr_assert_str_eq(j.grand.marker, "sub");
    cr_assert_eq(j.grand.tstate, j.shim.tstate, "the same cached thread state");
    /* The worker keeps a cached thread state of sub: stock would abort
     * here with "not the last thread" had it one. */
    sub_gone(sub, own_gil);
    cr_assert(!gilshim_view_alive(j.view));
    pthread_mutex_lock(&park_mu);
    park_state = 2;
    pthread_cond_broadcast(&park_cv);
    pthread_mutex_unlock(&park_mu);
    me = PyEval_SaveThread();
    pthread_join(th, NULL);
    PyEval_RestoreThread(me);
    cr_assert_eq(j.n, GILSHIM_EGONE);
}

Test(embed, end_interpreter_with_cached_state_legacy) { end_while_cached(0); }
#if HAVE_OWN_GIL
Test(embed, end_interpreter_with_cached_state_own_gil) { end_while_cached(1); }
#endif

static void explicit_switch(int own_gil)
{
    PyThreadState *sub = new_sub(own_gil, "sub");
    gilshim_view v = gilshim_view_current();
    test_switch_to(main_ts);
    gilshim_token *t = gilshim_ensure(v);
    cr_assert(t, "%s", gilshim_strerror(gilshim_last_error()));
    struct seen s;
    probe(&s);
    cr_assert_str_eq(s.marker, "sub");
    gilshim_token *t2 = gilshim_ensure(gilshim_view_main());
    cr_assert(t2);
    probe(&s);
    cr_assert_str_eq(s.marker, "main");
    gilshim_release(t2);
    probe(&s);
    cr_assert_str_eq(s.marker, "sub");
    gilshim_release(t);
    cr_assert_eq(PyThreadState_Get(), main_ts, "restores exactly what it found");
    gilshim_release(t);
    cr_assert_eq(gilshim_last_error(), GILSHIM_ETHREAD, "a token released twice is refused");
    sub_gone(sub, own_gil);
    cr_assert_null(gilshim_ensure(v));
    cr_assert_eq(gilshim_last_error(), GILSHIM_EGONE);
    gilshim_view bad = {-1, 0};
    cr_assert_null(gilshim_ensure(bad));
    cr_assert_eq(gilshim_last_error(), GILSHIM_EINVAL);
}

Test(embed, explicit_ensure_switches_and_restores_legacy) { explicit_switch(0); }
#if HAVE_OWN_GIL
Test(embed, explicit_ensure_switches_and_restores_own_gil) { explicit_switch(1); }
#endif

/* A foreign thread goes back into an interpreter it switched away from:
 * gilshim_ensure(sub), (main), (sub) again. The last one attaches the
 * very state the first one did (its row is held lower on the stack), and
 * each release puts back what its ensure found. Then the same from inside
 * a GIL-released region of main. */
struct back_job {
    gilshim_view sub, main;
    PyThreadState *first, *main_state, *again, *after_inner, *after_switch, *in_region;
    char again_in[32], region_in[32];
};

static void *back_job_main(void *p)
{
    struct back_job *b = p;
    struct seen s;
    gilshim_token *t1 = gilshim_ensure(b->sub);
    if (!t1)
        return NULL;
    b->first = PyThreadState_Get();
    gilshim_token *t2 = gilshim_ensure(b->main);
    b->main_state = PyThreadState_Get();
    gilshim_token *t3 = gilshim_ensure(b->sub);
    if (t3) {
        b->again = PyThreadState_Get();
        probe(&s);
        snprintf(b->again_in, sizeof b->again_in, "%s", s.marker);
        gilshim_release(t3);
    }
    b->after_inner = PyThreadState_Get();
    PyThreadState *saved = PyEval_SaveThread();
    gilshim_token *t4 = gilshim_ensure(b->sub);
    if (t4) {
        b->in_region = PyThreadState_Get();
        probe(&s);
        snprintf(b->region_in, sizeof b->region_in, "%s", s.marker);
        gilshim_release(t4);
    }
    PyEval_RestoreThread(saved);
    gilshim_release(t2);
    b->after_switch = PyThreadState_Get();
    gilshim_release(t1);
    return NULL;
}

Test(embed, explicit_ensure_back_into_a_state_held_lower)
{
    PyThreadState *sub = new_sub(HAVE_OWN_GIL, "sub");
    struct back_job b = {.sub = gilshim_view_current(), .main = gilshim_view_main()};
    test_switch_to(main_ts);
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, back_job_main, &b) == 0);
    PyThreadState *me = PyEval_SaveThread();
    pthread_join(th, NULL);
    PyEval_RestoreThread(me);
    cr_assert_not_null(b.first, "%s", gilshim_strerror(gilshim_last_error()));
    cr_assert_not_null(b.again, "gilshim_ensure back into the sub-interpreter refused");
    cr_assert_str_eq(b.again_in, "sub");
    cr_assert_eq(b.again, b.first, "the state the first ensure attached, not a new one");
    cr_assert_eq(b.after_inner, b.main_state);
    cr_assert_not_null(b.in_region, "gilshim_ensure from a GIL-released region refused");
    cr_assert_str_eq(b.region_in, "sub");
    cr_assert_eq(b.in_region, b.first);
    cr_assert_eq(b.after_switch, b.first, "back to exactly the first state");
    sub_gone(sub, HAVE_OWN_GIL);
}

/* Guards through the gilshim API: taken and closed on any thread, an
 * ensure through one, and what refuses one. (An end waiting for a guard:
 * tests/pep788.) */
static void *guard_job_main(void *p)
{
    gilshim_guard *g = p;
    gilshim_token *t = gilshim_guard_ensure(g);
    struct seen s = {0};
    if (t) {
        probe(&s);
        gilshim_release(t);
    }
    gilshim_guard_close(g);
    return strcmp(s.marker, "sub") ? NULL : p;
}

Test(embed, guards_taken_used_closed_and_refused)
{
    cr_assert_null(gilshim_guard_ensure(NULL));
    cr_assert_eq(gilshim_last_error(), GILSHIM_EINVAL);
    gilshim_guard_close(NULL);
    PyThreadState *sub = new_sub(0, "sub");
    gilshim_view v = gilshim_view_current();
    gilshim_guard *g = gilshim_guard_current();
    cr_assert_not_null(g, "%s", gilshim_strerror(gilshim_last_error()));
    gilshim_guard *g2 = gilshim_guard_from_view(v);
    cr_assert_not_null(g2);
    test_switch_to(main_ts);
    pthread_t th;
    void *ran_in_sub;
    cr_assert(pthread_create(&th, NULL, guard_job_main, g) == 0);
    PyThreadState *me = PyEval_SaveThread();
    pthread_join(th, &ran_in_sub);
    PyEval_RestoreThread(me);
    cr_assert_not_null(ran_in_sub, "a thread's ensure through the guard ran in the sub-interpreter");
    /* guarded: the release closes the guard it took */
    gilshim_token *t = gilshim_ensure_guarded(v);
    cr_assert_not_null(t);
    struct seen s;
    probe(&s);
    cr_assert_str_eq(s.marker, "sub");
    gilshim_release(t);
    cr_assert_eq(PyThreadState_Get(), main_ts);
    gilshim_guard_close(g2);
    sub_gone(sub, 0);  /* no guard left open: it does not wait */
    cr_assert_null(gilshim_guard_from_view(v));
    cr_assert_eq(gilshim_last_error(), GILSHIM_EGONE);
    cr_assert_null(gilshim_ensure_guarded(v));
    cr_assert_eq(gilshim_last_error(), GILSHIM_EGONE);
    PyThreadState *detached = PyEval_SaveThread();
    cr_assert_null(gilshim_guard_current(), "nothing attached");
    cr_assert_eq(gilshim_last_error(), GILSHIM_EINVAL);
    PyEval_RestoreThread(detached);
}

/* One foreign thread, gilshim_ensure into each of 10 interpreters in turn:
 * ids 0-9 in a fresh process, so two pairs share a slot of the shim's
 * per-thread view cache. */
#define NVIEWS 10
struct views_job {
    gilshim_view views[NVIEWS];
    PyInterpreterState *interps[NVIEWS];
    PyThreadState *first[NVIEWS];
    int wrong, moved, failed;
};

static void *views_job_main(void *p)
{
    struct views_job *vj = p;
    for (int round = 0; round < 100; round++)
        for (int k = 0; k < NVIEWS; k++) {
            gilshim_token *t = gilshim_ensure(vj->views[k]);
            if (!t) {
                vj->failed++;
                continue;
            }
            PyThreadState *ts = PyThreadState_Get();
            if (PyInterpreterState_Get() != vj->interps[k])
                vj->wrong++;
            if (!round)
                vj->first[k] = ts;
            else if (ts != vj->first[k])
                vj->moved++;
            gilshim_release(t);
        }
    return NULL;
}

Test(embed, explicit_cycles_across_ten_interpreters_one_state_each)
{
    static struct views_job vj;
    PyThreadState *subs[NVIEWS];
    vj.views[0] = gilshim_view_current();
    vj.interps[0] = PyInterpreterState_Get();
    for (int k = 1; k < NVIEWS; k++) {
        subs[k] = new_sub(0, "sub");
        vj.views[k] = gilshim_view_current();
        vj.interps[k] = PyInterpreterState_Get();
        test_switch_to(main_ts);
    }
    int before[NVIEWS];
    for (int k = 0; k < NVIEWS; k++)
        before[k] = count_tstates(vj.interps[k]);
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, views_job_main, &vj) == 0);
    PyThreadState *me = PyEval_SaveThread();
    pthread_join(th, NULL);
    PyEval_RestoreThread(me);
    cr_assert_eq(vj.failed, 0);
    cr_assert_eq(vj.wrong, 0, "%d callbacks ran in another interpreter", vj.wrong);
    cr_assert_eq(vj.moved, 0, "%d callbacks ran on another thread state", vj.moved);
    /* each counted from inside it: a thread's exit leaves its states to
     * their interpreters, and a thread that holds one's GIL as its own
     * deletes them (docs/lifecycle.md, "When a thread exits") */
    for (int k = 0; k < NVIEWS; k++) {
        test_switch_to(k ? subs[k] : main_ts);
        int n = count_tstates(vj.interps[k]);
        test_switch_to(main_ts);
        cr_assert_eq(n, before[k], "interpreter %d: the thread's state went with the thread", k);
    }
    for (int k = 1; k < NVIEWS; k++)
        sub_gone(subs[k], 0);
}

/* --- bad input to the explicit API --- */

static void *release_foreign_token(void *token)
{
    gilshim_release(token);
    return (void *)(intptr_t)gilshim_last_error();
}

Test(embed, token_released_on_another_thread_is_refused)
{
    gilshim_token *t = gilshim_ensure(gilshim_view_main());
    cr_assert(t);
    pthread_t th;
    void *err;
    /* the other thread needs no GIL to be refused */
    cr_assert(pthread_create(&th, NULL, release_foreign_token, t) == 0);
    pthread_join(th, &err);
    cr_assert_eq((int)(intptr_t)err, GILSHIM_ETHREAD);
    cr_assert_eq(PyThreadState_Get(), main_ts, "nothing changed on the owning thread");
    gilshim_release(t);
    cr_assert_eq(gilshim_last_error(), GILSHIM_OK, "its owner still releases it");
}

Test(embed, token_released_out_of_order_is_refused)
{
    gilshim_token *outer = gilshim_ensure(gilshim_view_main());
    gilshim_token *inner = gilshim_ensure(gilshim_view_main());
    cr_assert(outer && inner);
    gilshim_release(outer);
    cr_assert_eq(gilshim_last_error(), GILSHIM_EORDER);
    gilshim_release(inner);
    gilshim_release(outer);
    cr_assert_eq(gilshim_last_error(), GILSHIM_OK);
    cr_assert_eq(PyThreadState_Get(), main_ts);
}

Test(embed, bad_views_and_arguments_are_refused)
{
    gilshim_view main_view = gilshim_view_main();
    gilshim_view never = {main_view.id + 1000, main_view.generation};
    gilshim_view other_runtime = {main_view.id, main_view.generation + 1};
    gilshim_view invalid = {-1, 0};
    cr_assert_null(gilshim_ensure(never));
    cr_assert_eq(gilshim_last_error(), GILSHIM_EINVAL);
    cr_assert_null(gilshim_ensure(other_runtime));
    cr_assert_eq(gilshim_last_error(), GILSHIM_ESTALE);
    cr_assert_eq(gilshim_bind_thread(invalid), GILSHIM_EINVAL);
    cr_assert_not(gilshim_view_alive(invalid));
    gilshim_release(NULL);
    cr_assert_eq(gilshim_last_error(), GILSHIM_EINVAL);
    cr_assert_eq(gilshim_get_stats(NULL, 0), GILSHIM_EINVAL);
    gilshim_stats st;
    cr_assert_eq(gilshim_get_stats(&st, offsetof(gilshim_stats, reads_attached_directly) - 1),
                 GILSHIM_EINVAL, "shorter than the first version of the struct");
    size_t first = offsetof(gilshim_stats, reads_attached_directly);
    memset(&st, 0xa5, sizeof st);
    cr_assert_eq(gilshim_get_stats(&st, first), GILSHIM_OK, "an older caller's struct");
    cr_assert_eq(((unsigned char *)&st)[first], 0xa5, "nothing written past its end");
    cr_assert_eq(gilshim_get_stats(&st, sizeof st), GILSHIM_OK);
    cr_assert_str_eq(gilshim_strerror(12345), "unknown gilshim error");
    cr_assert_eq(PyThreadState_Get(), main_ts, "nothing changed");
}

Test(embed, port_row_matches_headers)
{
    /* src/shim/port/versions.c, compiled into this test, holds one row per
     * version: hold this version's against its own headers. */
    const struct gs_port *row = gs_port_for(PY_MINOR_VERSION);
    cr_assert_not_null(row, "no row for CPython 3.%d in src/shim/port/versions.c", PY_MINOR_VERSION);
    cr_assert_eq(row->minor, PY_MINOR_VERSION);
    cr_assert_geq(PY_MINOR_VERSION, gs_port_oldest());
    cr_assert_leq(PY_MINOR_VERSION, gs_port_newest());
#if PY_VERSION_HEX < 0x030C0000
    /* one GIL: the attached state is a field of _PyRuntime, and the
     * owner of a state is told by its thread_id */
    cr_assert(row->shared_current);
    cr_assert_not(row->gilstate_follows);
    cr_assert(row->exc_is_type);
    cr_assert_eq(row->thread_id_offset, (long)offsetof(PyThreadState, thread_id));
    cr_assert_eq(row->exc_offset, (long)offsetof(PyThreadState, curexc_type));
#else
    cr_assert_not(row->shared_current);
    cr_assert(row->gilstate_follows);
    cr_assert_not(row->exc_is_type);
    cr_assert_eq(row->exc_offset, (long)offsetof(PyThreadState, current_exception));
    /* CPython's record of which state is in the gilstate slot */
    cr_assert_eq(row->status_offset, (long)offsetof(PyThreadState, _status));
    PyThreadState blank;
    unsigned word;
    memset(&blank, 0, sizeof blank);
    blank._status.bound_gilstate = 1;
    memcpy(&word, (char *)&blank + row->status_offset, sizeof word);
    cr_assert_eq(row->bound_gilstate_mask, word);
#endif
    cr_assert_eq(row->gilstate_counter_offset, (long)offsetof(PyThreadState, gilstate_counter));
    /* gh-87135: a late PyGILState_Ensure hangs from 3.14 on */
    cr_assert_eq(row->late_caller, PY_VERSION_HEX >= 0x030E0000 ? GS_LATE_HANGS : GS_LATE_EXITS);
#if PY_VERSION_HEX >= 0x030F0000
    cr_assert(row->pep788);
    PyThreadStateToken *(*ensure)(PyInterpreterGuard *) = PyThreadState_Ensure;
    cr_assert_not_null(ensure);
#else
    cr_assert_not(row->pep788);
#endif
    cr_assert_eq(PyGILState_Check(), 1);
}

/* --- misuse and configuration ---
 * The shim reads GILSHIM_* once, at its first use, which in a test worker
 * comes before any .init (Criterion's own threads go through the
 * pthread_create hook). So tests/run-embed.sh runs the misuse suite once
 * per setting, with the variables in the environment; each test checks that
 * its setting is there, so a runner that forgets it fails. */

static const char *log_path;

static void require_env(const char *var, const char *value)
{
    const char *v = getenv(var);
    cr_assert(v && (!value || !strcmp(v, value)), "run with %s=%s (tests/run-embed.sh)", var,
              value ? value : "...");
}

static void start_logged(void)
{
    require_env("GILSHIM_LOG", NULL);
    log_path = getenv("GILSHIM_LOG");
    start_python();
}

static int log_has(const char *needle)
{
    char buf[8192] = {0};
    FILE *f = fopen(log_path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static void init_log(void) { start_logged(); }
static void init_mode_off(void) { require_env("GILSHIM_MODE", "off"); start_python(); }
static void init_bogus(void)
{
    require_env("GILSHIM_ON_FINALIZE", "sometimes");
    require_env("GILSHIM_MODE", "sideways");
    require_env("GILSHIM_DRAIN_MS", "soon");
    require_env("GILSHIM_LOG_LEVEL", "loud");
    require_env("GILSHIM_PATCH", "maybe");
    require_env("GILSHIM_LOG_FORMAT", "yaml");
    start_logged();
}

static void wrong_state_job(struct job *j)
{
    PyGILState_STATE g = PyGILState_Ensure();
    cr_assert_eq(g, PyGILState_UNLOCKED);
    PyGILState_Release(PyGILState_LOCKED);  /* the wrong one */
    j->n = PyGILState_Check();              /* 0: what Ensure acquired was released */
}

Test(logged, release_with_another_state_warns_and_undoes_its_ensure, .init = init_log,
     .timeout = 60)
{
    struct job j = {.fn = wrong_state_job, .n = -1};
    run_thread(&j);
    cr_assert_eq(j.n, 0);
    cr_assert(log_has("given LOCKED, but the matching Ensure returned UNLOCKED"));
}

static void *release_without_ensure(void *p)
{
    (void)p;
    PyGILState_Release(PyGILState_UNLOCKED);
    return NULL;
}

/* The diagnostic, then stock's outcome: Py_FatalError ("auto-releasing
 * thread-state, but no thread-state for this thread"), an abort. */
Test(logged, release_without_ensure_gets_stocks_outcome, .init = init_log, .signal = SIGABRT,
     .timeout = 60)
{
    pthread_t th;
    PyThreadState *me = PyEval_SaveThread();
    pthread_create(&th, NULL, release_without_ensure, NULL);
    pthread_join(th, NULL);
    PyEval_RestoreThread(me);
}

/* What correct clients do must not draw a message (tests/run-embed.sh runs
 * this suite with a log of its own and fails if anything is in it). */
static void init_silent(void) { start_logged(); }

/* cffi <= 2.0's gil_ensure for a synchronous callback: it takes what
 * PyGILState_GetThisThreadState names, raises its gilstate_counter and
 * attaches it with PyEval_RestoreThread, then calls PyGILState_Release
 * (src/c/misc_thread_common.h). Stock's Release undoes that. */
Test(silent, hand_made_ensure_then_release, .init = init_silent, .timeout = 60)
{
    PyThreadState *save = PyEval_SaveThread();
    PyThreadState *ts = PyGILState_GetThisThreadState();
    cr_assert_eq(ts, save);
    ts->gilstate_counter++;
    PyEval_RestoreThread(ts);
    PyGILState_Release(PyGILState_UNLOCKED);
    int attached = PyGILState_Check();
    PyEval_RestoreThread(save);
    cr_assert_eq(attached, 0, "the Release detached");
    cr_assert_not(log_has("gilshim["), "nothing logged");
}

Test(silent, release_under_an_unreleased_nested_ensure, .init = init_silent, .timeout = 60)
{
    PyThreadState *sub = new_sub(0, "sub");
    struct job j = {.fn = pinned_job};
    run_thread(&j);
    test_switch_to(main_ts);
    sub_gone(sub, 0);
    cr_assert_eq(j.n, 0);
    cr_assert_not(log_has("gilshim["), "nothing logged");
}

Test(mode_off, passes_everything_through, .init = init_mode_off, .timeout = 60)
{
    PyThreadState *sub = new_sub(0, "sub");
    struct job j = {.fn = creator_job};
    run_thread(&j);
    cr_assert_str_eq(j.shim.marker, "main", "GILSHIM_MODE=off: stock routing");
    test_switch_to(main_ts);
    sub_gone(sub, 0);
}

Test(bogus_setting, is_warned_and_ignored, .init = init_bogus, .timeout = 60)
{
    struct job j = {.fn = both};
    run_thread(&j);
    cr_assert_str_eq(j.shim.marker, "main");
    cr_assert(log_has("GILSHIM_ON_FINALIZE=sometimes: unknown value, ignored"));
    cr_assert(log_has("GILSHIM_MODE=sideways: unknown value, ignored"));
    cr_assert(log_has("GILSHIM_LOG_LEVEL=loud: unknown value, ignored"));
    cr_assert(log_has("GILSHIM_PATCH=maybe: unknown value, ignored"));
    cr_assert(log_has("gilshim[") && log_has("GILSHIM_LOG_FORMAT=yaml: unknown value, ignored"),
              "text lines, the default format");
    cr_assert(log_has("GILSHIM_DRAIN_MS=soon: not a number of milliseconds (0-3600000), keeping 1000"));
    cr_assert_str_eq(gilshim_mode(), "route", "the default is kept");
}
