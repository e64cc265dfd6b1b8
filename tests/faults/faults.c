/* SPDX-License-Identifier: MIT */
/*
 * Out of memory, and CPython failing to make a thread state, at every call
 * the shim makes through src/registry/alloc.h (docs/failure-paths.md).
 * Linked with the fault-injection build of the shim (build/fault/,
 * -DGILSHIM_FAULT_INJECTION) by tests/run-faults.sh, once per CPython, and
 * run plain and under valgrind:
 *
 *   GILSHIM_LOG=FILE GILSHIM_ON_FINALIZE=exit faults route
 *   GILSHIM_LOG=FILE GILSHIM_MODE=diagnose GILSHIM_LOG_FORMAT=json faults diagnose
 *
 * Each phase runs its body once to warm up, once more counting the calls
 * through alloc.h (K), then once for each N = 1..K with the Nth failing
 * (gilshim_test_fail_alloc). A body runs on threads of its own, so each
 * run meets the same allocations. By the site that failed, the program
 * checks what must follow: the outcome, the message in LOG (naming the
 * call site where there is one), and that the shim holds no more thread
 * records and rows than before. One line per run, on stdout:
 *
 *   ok|FAIL PHASE N/K SITE: what happened
 *
 * SITE is "-" for the runs where nothing failed. The phases, in order:
 * generation, ensure, creator, grandchild, bind, api, guard, save, view,
 * newsub, then sweep at the runtime's end (3.13+); in diagnose mode, diagnose, then
 * the summary at exit, whose log tests/run-faults.sh checks.
 */
#define _GNU_SOURCE 1
#include <Python.h>

#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/subinterp.h"
#include "gilshim.h"

/* The fault-injection build's own export (src/registry/alloc.c). */
long gilshim_test_fail_alloc(long n, const char **site);

static const char *g_log;      /* GILSHIM_LOG: what the shim says, read back */
static char g_site_tag[300];   /* "(at faults-X.Y(": a call site in this program */
static int g_diagnose;
static int g_failures;

/* --- CPython helpers --- */

static void set_marker(const char *name)
{
    PyObject *s = PyUnicode_FromString(name);
    if (!s || PySys_SetObject("_faults_marker", s) != 0)
        abort();
    Py_DECREF(s);
}

/* Run some Python where the thread is attached; its interpreter's marker. */
static void python_call(char *where, size_t len)
{
    if (PyRun_SimpleString("import sys; sys._faults_hits = getattr(sys, '_faults_hits', 0) + 1"))
        abort();
    PyObject *m = PySys_GetObject("_faults_marker");
    snprintf(where, len, "%s", m ? PyUnicode_AsUTF8(m) : "?");
}

static PyThreadState *main_ts;

static void start(void)
{
    /* no site import: a shorter start, which valgrind feels */
    PyConfig cfg;
    PyConfig_InitPythonConfig(&cfg);
    cfg.site_import = 0;
    cfg.install_signal_handlers = 0;
    PyStatus st = Py_InitializeFromConfig(&cfg);
    PyConfig_Clear(&cfg);
    if (PyStatus_Exception(st)) {
        printf("FAIL setup: Py_InitializeFromConfig\n");
        exit(1);
    }
    set_marker("main");
    main_ts = PyThreadState_Get();
}

/* A legacy sub-interpreter (main's GIL), left attached. */
static PyThreadState *new_sub(const char *marker)
{
    PyThreadState *sub = test_new_sub(0);
    if (!sub) {
        printf("FAIL setup: could not create a sub-interpreter\n");
        exit(1);
    }
    set_marker(marker);
    return sub;
}

/* --- what one run saw --- */

struct obs {
    int entered;            /* Ensures (or tokens) that returned */
    int finished;           /* the thread returned, not stopped by the fail-safe */
    char where[32];         /* where its first callback ran: a marker */
    int wrong;              /* callbacks in another interpreter than asked for */
    int errors;             /* explicit API: calls that failed */
    int err;                /* the error of the last that did */
    int retry_fail;         /* explicit API: calls that failed again at once */
    int view_invalid;       /* gilshim_view_current gave no view */
    int no_record;          /* grandchild: its creator got no thread record */
    long calls;             /* through alloc.h */
    const char *failed;     /* the site that failed, or NULL */
    char *log;              /* what the shim said meanwhile */
};

static void mark(struct obs *o)
{
    if (!o->where[0])
        python_call(o->where, sizeof o->where);
}

/* Run fn(o) on a new thread, the GIL released meanwhile. */
static void run_thread(void *(*fn)(void *), struct obs *o)
{
    pthread_t th;
    void *ret = NULL;
    Py_BEGIN_ALLOW_THREADS
    if (pthread_create(&th, NULL, fn, o) == 0)
        pthread_join(th, &ret);
    Py_END_ALLOW_THREADS
    o->finished = ret == o;
}

/* --- the log --- */

static long log_size(void)
{
    struct stat st;
    return stat(g_log, &st) == 0 ? (long)st.st_size : 0;
}

static char *log_since(long mark_at)
{
    FILE *f = fopen(g_log, "r");
    long end = log_size();
    size_t n = end > mark_at ? (size_t)(end - mark_at) : 0;
    char *buf = calloc(1, n + 1);
    if (f && n && fseek(f, mark_at, SEEK_SET) == 0)
        buf[fread(buf, 1, n, f)] = 0;
    if (f)
        fclose(f);
    return buf;
}

/* --- checks --- */

struct check {
    const char *phase;
    long n, k;
    const struct obs *o;
    char why[600];
};

/* Record the first broken expectation of a run. */
static void expect(struct check *c, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect(struct check *c, int ok, const char *fmt, ...)
{
    if (ok || c->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
}

static int logged(const struct obs *o, const char *text)
{
    return o->log && strstr(o->log, text);
}

/* The message text, followed by the call site in this program. */
static int logged_at_site(const struct obs *o, const char *text)
{
    char want[600];
    snprintf(want, sizeof want, "%s %s", text, g_site_tag);
    return logged(o, want);
}

static void expect_logged(struct check *c, const char *text)
{
    expect(c, logged(c->o, text), "no message \"%s\"", text);
}

static void expect_logged_at_site(struct check *c, const char *text)
{
    expect(c, logged_at_site(c->o, text), "no message \"%s %s...\"", text, g_site_tag);
}

/* The interposed PyGILState_Ensure's fail-safe: GILSHIM_ON_FINALIZE=exit
 * ended the thread inside the Ensure, after a message naming the call. */
static void expect_fail_safe(struct check *c, const char *why, int entered)
{
    expect(c, !c->o->finished, "the thread was not stopped by the fail-safe");
    expect(c, c->o->entered == entered, "%d Ensure(s) returned, expected %d", c->o->entered,
           entered);
    expect_logged_at_site(c, why);
    expect_logged(c, "GILSHIM_ON_FINALIZE=exit");
}

static void expect_finished(struct check *c, const char *where)
{
    expect(c, c->o->finished, "the thread did not finish");
    expect(c, !where || !strcmp(c->o->where, where), "the callback ran in %s, expected %s",
           c->o->where[0] ? c->o->where : "nothing", where);
}

static void expect_no_fail_safe(struct check *c)
{
    expect(c, !logged(c->o, "GILSHIM_ON_FINALIZE="), "a fail-safe message");
}

static void report(struct check *c)
{
    const char *site = c->o->failed ? c->o->failed : "-";
    if (c->why[0])
        g_failures++;
    printf("%s %s %ld/%ld %s: %s\n", c->why[0] ? "FAIL" : "ok", c->phase, c->n, c->k, site,
           c->why[0] ? c->why : "as documented");
    if (c->why[0] && c->o->log && c->o->log[0])
        printf("    log: %s", c->o->log);
    fflush(stdout);
}

static int failed_at(const struct obs *o, const char *site)
{
    return o->failed && !strcmp(o->failed, site);
}

/* --- phases --- */

struct phase {
    const char *name;
    void (*body)(struct obs *);
    void (*check)(struct check *);
};

/* Nothing failed that a phase can see: no failure, or only the entry that
 * hands an exiting thread's state to its interpreter, where the thread
 * deletes the state itself instead, as before there was one (the record
 * and row counts and valgrind check that it is gone). */
static int unseen(const struct obs *o)
{
    return !o->failed || failed_at(o, "orphaned thread state");
}

static void check_unexpected(struct check *c)
{
    expect(c, 0, "no expectation in tests/faults/faults.c for this site in this phase");
}

/* One run of p's body with the nth call failing (0: none); k as counted.
 * Returns how many calls it made. */
static long one_run(const struct phase *p, long n, long k, int judge)
{
    gilshim_stats before, after;
    struct obs o = {0};
    long mark_at = log_size();
    gilshim_get_stats(&before, sizeof before);
    gilshim_test_fail_alloc(n, NULL);
    p->body(&o);
    o.calls = gilshim_test_fail_alloc(0, &o.failed);
    gilshim_get_stats(&after, sizeof after);
    o.log = log_since(mark_at);
    if (judge) {
        struct check c = {.phase = p->name, .n = n, .k = k ? k : o.calls, .o = &o};
        if (n && !o.failed)
            expect(&c, 0, "nothing failed: only %ld call(s) this time", o.calls);
        else
            p->check(&c);
        expect(&c, after.threads == before.threads && after.rows == before.rows,
               "the shim holds %zu thread record(s) and %zu row(s), %zu and %zu before",
               after.threads, after.rows, before.threads, before.rows);
        report(&c);
    }
    free(o.log);
    return o.calls;
}

static void run_phase(const struct phase *p)
{
    one_run(p, 0, 0, 0);             /* the warm-up: first-time allocations */
    long k = one_run(p, 0, 0, 1);    /* the count, and the outcome with none failing */
    for (long n = 1; n <= k; n++)
        one_run(p, n, k, 1);
}

static void expect_not_inherited(struct check *c, const char *where)
{
    /* unwrapped, the thread's callbacks go where stock sends them */
    expect_finished(c, where);
    expect_logged(c, "out of memory; the thread it creates does not inherit interpreter");
}

/* Sites a thread made by run_thread meets on its way in: the creator's
 * record of its interpreter (main's run_thread has released the GIL: rule
 * 2 names main, or the sub attached), then, in the thread, the first
 * PyGILState_Ensure: the fail-safe, with a message for each. uninherited:
 * where its callback runs without the creator's interpreter. 0 if the
 * site is none of them. */
static int check_first_ensure(struct check *c, const char *uninherited)
{
    const struct obs *o = c->o;
    if (failed_at(o, "pthread_create trampoline"))
        expect_not_inherited(c, uninherited);
    else if (failed_at(o, "thread record"))
        expect_fail_safe(c, "out of memory for the thread record", 0);
    else if (failed_at(o, "row list") || failed_at(o, "row block"))
        expect_fail_safe(c, "out of memory for a thread state's row", 0);
    else if (failed_at(o, "PyThreadState_New for a row"))
        expect_fail_safe(c, "CPython could not create a thread state", 0);
    else
        return 0;
    return 1;
}

/* ensure: a thread created by main nests nine PyGILState_Ensure there; the
 * ninth needs a second frame chunk. */
static void *ensure_thread(void *p)
{
    struct obs *o = p;
    PyGILState_STATE g[9];
    for (int i = 0; i < 9; i++) {
        g[i] = PyGILState_Ensure();
        o->entered++;
        mark(o);
    }
    for (int i = 8; i >= 0; i--)
        PyGILState_Release(g[i]);
    return o;
}

static void ensure_body(struct obs *o) { run_thread(ensure_thread, o); }

static void ensure_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o)) {
        expect_finished(c, "main");
        expect(c, o->entered == 9, "%d Ensures returned", o->entered);
    } else if (failed_at(o, "Ensure frame chunk")) {
        expect_fail_safe(c, "out of memory for an Ensure frame", 8);
        /* and the eight it holds are given back as the thread exits */
        expect_logged(c, "thread exits with 8 PyGILState_Ensure/gilshim_ensure still open");
    } else if (!check_first_ensure(c, "main")) {
        check_unexpected(c);
    }
}

/* --- the sub-interpreters the phases below use: sub1..sub8 --- */

#define NSUBS 8
static PyThreadState *subs[NSUBS + 1];   /* [0] is main's */
static gilshim_view views[NSUBS + 1];
static const char *const names[NSUBS + 1] = {"main", "sub1", "sub2", "sub3", "sub4",
                                             "sub5", "sub6", "sub7", "sub8"};

static void make_subs(void)
{
    subs[0] = main_ts;
    views[0] = gilshim_view_main();
    for (int i = 1; i <= NSUBS; i++) {
        subs[i] = new_sub(names[i]);
        views[i] = gilshim_view_current();
    }
    test_switch_to(main_ts);
}

/* creator: a thread created while sub1 is attached calls
 * PyGILState_Ensure, which rule 4 sends to sub1. */
static void *creator_thread(void *p)
{
    struct obs *o = p;
    PyGILState_STATE g = PyGILState_Ensure();
    o->entered++;
    mark(o);
    PyGILState_Release(g);
    return o;
}

static void creator_body(struct obs *o)
{
    test_switch_to(subs[1]);
    run_thread(creator_thread, o);
    test_switch_to(main_ts);
}

static void creator_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o))
        expect_finished(c, "sub1");
    else if (!check_first_ensure(c, "main"))
        check_unexpected(c);
}

/* grandchild: a thread created in sub1, which has not called the shim
 * yet, creates one that calls PyGILState_Ensure: the middle one's record
 * is made by that pthread_create, and rule 4 passes sub1 on. */
static _Atomic int gc_stage;

static void *grandchild_thread(void *p)
{
    while (!atomic_load(&gc_stage))
        usleep(1000);
    return creator_thread(p);
}

static void *child_thread(void *p)
{
    struct obs *o = p;
    gilshim_stats before, after;
    pthread_t th;
    void *ret = NULL;
    gilshim_get_stats(&before, sizeof before);
    int rc = pthread_create(&th, NULL, grandchild_thread, o);
    /* the grandchild waits: only this thread's record can be new */
    gilshim_get_stats(&after, sizeof after);
    o->no_record = after.threads == before.threads;
    atomic_store(&gc_stage, 1);
    if (rc == 0)
        pthread_join(th, &ret);
    return ret;
}

static void grandchild_body(struct obs *o)
{
    atomic_store(&gc_stage, 0);
    test_switch_to(subs[1]);
    run_thread(child_thread, o);
    test_switch_to(main_ts);
}

static void grandchild_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o)) {
        expect_finished(c, "sub1");
    } else if (failed_at(o, "thread record") && o->no_record) {
        /* nothing lost: the creator's interpreter is found without it */
        expect_finished(c, "sub1");
        expect(c, !o->log[0], "a message");
    } else if (!check_first_ensure(c, "main")) {
        check_unexpected(c);
    }
}

/* bind: gilshim_bind_thread(sub1), then PyGILState_Ensure (rule 3). */
static void *bind_thread(void *p)
{
    struct obs *o = p;
    int rc = gilshim_bind_thread(views[1]);
    if (rc != GILSHIM_OK) {
        o->errors++;
        o->err = rc;
        if (gilshim_bind_thread(views[1]) != GILSHIM_OK)
            o->retry_fail++;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    o->entered++;
    mark(o);
    PyGILState_Release(g);
    gilshim_unbind_thread();
    return o;
}

static void bind_body(struct obs *o) { run_thread(bind_thread, o); }

static void bind_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o)) {
        expect_finished(c, "sub1");
    } else if (failed_at(o, "thread record") && o->errors) {
        expect(c, o->err == GILSHIM_ENOMEM, "gilshim_bind_thread gave %d", o->err);
        expect(c, !o->retry_fail, "the call after it failed too");
        expect_finished(c, "sub1");
    } else if (!check_first_ensure(c, "sub1")) {
        check_unexpected(c);
    }
}

/* api: gilshim_ensure on nine interpreters (the ninth row needs a row
 * block, rows five and nine a longer row list), then nine nested on main
 * (a second frame chunk). A call that fails is made again at once: it
 * must then work. */
static gilshim_token *ensure_again(struct obs *o, gilshim_view v)
{
    gilshim_token *t = gilshim_ensure(v);
    if (!t) {
        o->errors++;
        o->err = gilshim_last_error();
        if (!(t = gilshim_ensure(v)))
            o->retry_fail++;
    }
    return t;
}

static void *api_thread(void *p)
{
    struct obs *o = p;
    char where[32];
    for (int i = 0; i <= NSUBS; i++) {
        gilshim_token *t = ensure_again(o, views[i]);
        if (!t)
            continue;
        o->entered++;
        python_call(where, sizeof where);
        o->wrong += strcmp(where, names[i]) != 0;
        gilshim_release(t);
    }
    gilshim_token *nested[9];
    for (int i = 0; i < 9; i++) {
        if ((nested[i] = ensure_again(o, views[0]))) {
            o->entered++;
            python_call(where, sizeof where);
            o->wrong += strcmp(where, "main") != 0;
        }
    }
    for (int i = 8; i >= 0; i--)
        if (nested[i])
            gilshim_release(nested[i]);
    return o;
}

static void api_body(struct obs *o) { run_thread(api_thread, o); }

static void api_check(struct check *c)
{
    const struct obs *o = c->o;
    expect_finished(c, NULL);
    expect(c, o->entered == 18, "%d of 18 gilshim_ensure gave a token", o->entered);
    expect(c, !o->wrong, "%d callback(s) in the wrong interpreter", o->wrong);
    expect_no_fail_safe(c);
    if (unseen(o) || failed_at(o, "pthread_create trampoline")) {
        expect(c, !o->errors, "%d call(s) failed", o->errors);
        if (failed_at(o, "pthread_create trampoline"))
            expect_not_inherited(c, NULL);
    } else if (failed_at(o, "thread record") || failed_at(o, "row list") ||
               failed_at(o, "row block") || failed_at(o, "PyThreadState_New for a row") ||
               failed_at(o, "Ensure frame chunk")) {
        expect(c, o->errors == 1, "%d call(s) failed, expected 1", o->errors);
        expect(c, o->err == GILSHIM_ENOMEM, "gilshim_ensure failed with %d, expected GILSHIM_ENOMEM",
               o->err);
        expect(c, !o->retry_fail, "the call after it failed too");
    } else {
        check_unexpected(c);
    }
}

/* guard: a guard through sub1's view and an ensure through it, then
 * gilshim_ensure_guarded on sub2, each released and closed. A call that
 * fails is made again at once: it must then work. No guard may be left
 * open: the sub-interpreters' ends at the finale would wait for it. */
static gilshim_guard *guard_again(struct obs *o, gilshim_view v)
{
    gilshim_guard *g = gilshim_guard_from_view(v);
    if (!g) {
        o->errors++;
        o->err = gilshim_last_error();
        if (!(g = gilshim_guard_from_view(v)))
            o->retry_fail++;
    }
    return g;
}

static gilshim_token *guarded_again(struct obs *o, gilshim_guard *g, gilshim_view v)
{
    gilshim_token *t = g ? gilshim_guard_ensure(g) : gilshim_ensure_guarded(v);
    if (!t) {
        o->errors++;
        o->err = gilshim_last_error();
        if (!(t = g ? gilshim_guard_ensure(g) : gilshim_ensure_guarded(v)))
            o->retry_fail++;
    }
    return t;
}

static void *guard_thread(void *p)
{
    struct obs *o = p;
    char where[32];
    gilshim_guard *g = guard_again(o, views[1]);
    gilshim_token *t = g ? guarded_again(o, g, views[1]) : NULL;
    if (t) {
        o->entered++;
        python_call(where, sizeof where);
        o->wrong += strcmp(where, "sub1") != 0;
        gilshim_release(t);
    }
    gilshim_guard_close(g);
    if ((t = guarded_again(o, NULL, views[2]))) {
        o->entered++;
        python_call(where, sizeof where);
        o->wrong += strcmp(where, "sub2") != 0;
        gilshim_release(t);
    }
    return o;
}

static void guard_body(struct obs *o) { run_thread(guard_thread, o); }

static void guard_check(struct check *c)
{
    const struct obs *o = c->o;
    expect_finished(c, NULL);
    expect(c, o->entered == 2, "%d of 2 ensures through a guard gave a token", o->entered);
    expect(c, !o->wrong, "%d callback(s) in the wrong interpreter", o->wrong);
    expect_no_fail_safe(c);
    if (unseen(o) || failed_at(o, "pthread_create trampoline")) {
        expect(c, !o->errors, "%d call(s) failed", o->errors);
        if (failed_at(o, "pthread_create trampoline"))
            expect_not_inherited(c, NULL);
    } else if (failed_at(o, "interpreter guard") || failed_at(o, "thread record") ||
               failed_at(o, "row list") || failed_at(o, "row block") ||
               failed_at(o, "PyThreadState_New for a row") || failed_at(o, "Ensure frame chunk")) {
        expect(c, o->errors == 1, "%d call(s) failed, expected 1", o->errors);
        expect(c, o->err == GILSHIM_ENOMEM, "the call failed with %d, expected GILSHIM_ENOMEM",
               o->err);
        expect(c, !o->retry_fail, "the call after it failed too");
    } else {
        check_unexpected(c);
    }
}

/* save: a thread attaches a state of its own in sub1 and detaches it
 * (PyEval_SaveThread makes the thread's record); inside that region a
 * PyGILState_Ensure re-attaches it (rule 2). */
static void *save_thread(void *p)
{
    struct obs *o = p;
    PyThreadState *ts = PyThreadState_New(PyThreadState_GetInterpreter(subs[1]));
    PyEval_RestoreThread(ts);
    PyThreadState *saved = PyEval_SaveThread();
    PyGILState_STATE g = PyGILState_Ensure();
    o->entered++;
    mark(o);
    PyGILState_Release(g);
    PyEval_RestoreThread(saved);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
    return o;
}

static void save_body(struct obs *o) { run_thread(save_thread, o); }

static void save_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o)) {
        expect_finished(c, "sub1");
    } else if (failed_at(o, "thread record")) {
        /* untracked, CPython's own binding still names the region */
        expect_finished(c, "sub1");
        expect_logged(c, "out of memory for the thread record; PyEval_SaveThread");
    } else if (!check_first_ensure(c, "sub1")) {
        check_unexpected(c);
    }
}

/* view: a new sub-interpreter, and gilshim_view_current in it (the
 * shim's entry for it). */
static void view_body(struct obs *o)
{
    PyThreadState *sub = new_sub("subx");
    gilshim_view v = gilshim_view_current();
    if (v.id < 0) {
        o->view_invalid = 1;
        o->err = gilshim_last_error();
        v = gilshim_view_current();
        o->retry_fail = v.id < 0;
    }
    o->finished = 1;
    test_end_sub(sub, main_ts, 0);
}

static void view_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o)) {
        expect(c, !o->view_invalid, "no view");
    } else if (failed_at(o, "interpreter entry")) {
        expect(c, o->view_invalid, "a view all the same");
        expect(c, o->err == GILSHIM_ENOMEM, "gilshim_last_error() is %d, expected GILSHIM_ENOMEM",
               o->err);
        expect(c, !o->retry_fail, "the call after it failed too");
        expect_logged(c, "out of memory for the entry of interpreter");
    } else {
        check_unexpected(c);
    }
}

/* newsub: a thread created in a new sub-interpreter, which the shim meets
 * first at that pthread_create; the thread calls PyGILState_Ensure. */
static void newsub_body(struct obs *o)
{
    PyThreadState *sub = new_sub("subx");
    run_thread(creator_thread, o);
    test_end_sub(sub, main_ts, 0);
}

static void newsub_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o)) {
        expect_finished(c, "subx");
    } else if (failed_at(o, "interpreter entry")) {
        expect_finished(c, "main");
        expect_logged(c, "out of memory for the entry of interpreter");
    } else if (!check_first_ensure(c, "main")) {
        check_unexpected(c);
    }
}

/* generation: a runtime of its own (Py_Initialize .. Py_FinalizeEx), whose
 * main interpreter the shim meets first at a PyGILState_Ensure of a thread
 * created before Py_Initialize. */
static _Atomic int gen_stage;

static void *generation_thread(void *p)
{
    while (!atomic_load(&gen_stage))
        usleep(1000);
    return creator_thread(p);
}

static void generation_body(struct obs *o)
{
    pthread_t th;
    void *ret = NULL;
    atomic_store(&gen_stage, 0);
    pthread_create(&th, NULL, generation_thread, o);
    start();
    Py_BEGIN_ALLOW_THREADS
    atomic_store(&gen_stage, 1);
    pthread_join(th, &ret);
    Py_END_ALLOW_THREADS
    o->finished = ret == o;
    /* Where the thread failed before the shim placed its exit hooks, this
     * places them, so that the shim hears of this runtime's end and the
     * next run meets a new one (the same allocations) */
    gilshim_view_current();
    Py_FinalizeEx();
}

static void generation_check(struct check *c)
{
    const struct obs *o = c->o;
    if (unseen(o))
        expect_finished(c, "main");
    else if (failed_at(o, "interpreter entry"))
        expect_fail_safe(c, "out of memory for the main interpreter's entry", 0);
    else if (!check_first_ensure(c, "main"))
        check_unexpected(c);
}

/* diagnose mode: a thread created in sub1 nests nine PyGILState_Ensure;
 * stock runs them in main, which the shim reports. */
static void diagnose_body(struct obs *o)
{
    test_switch_to(subs[1]);
    run_thread(ensure_thread, o);
    test_switch_to(main_ts);
}

static void diagnose_check(struct check *c)
{
    const struct obs *o = c->o;
    /* stock's outcome, whatever failed */
    expect_finished(c, "main");
    expect(c, o->entered == 9, "%d Ensures returned", o->entered);
    expect_no_fail_safe(c);
    expect(c, !logged(o, "release_mismatch"), "a Release reported as not matching its Ensure");
    if (unseen(o))
        return;
    if (failed_at(o, "pthread_create trampoline"))
        expect_not_inherited(c, "main");
    else if (failed_at(o, "thread record"))
        expect_logged_at_site(c, "out of memory for the thread record");
    else if (failed_at(o, "Ensure frame chunk"))
        expect_logged_at_site(c, "out of memory for an Ensure frame");
    else
        check_unexpected(c);
}

/* --- the end of the runtime --- */

/* sweep (3.13+): a thread holds a cached state in sub1 while Py_FinalizeEx
 * runs; the shim's exit hook for main makes a thread state to visit sub1
 * before CPython ends it. 3.9-3.12 abort in Py_FinalizeEx with a
 * sub-interpreter left ("remaining subinterpreters"), stock or not: there
 * every sub-interpreter ends first. */
#if PY_VERSION_HEX >= 0x030D0000
static _Atomic int sw_stage;

static void *sweep_thread(void *p)
{
    struct obs *o = p;
    gilshim_token *t = gilshim_ensure(views[1]);
    if (t) {
        o->entered++;
        mark(o);
        gilshim_release(t);
    }
    atomic_store(&sw_stage, 1);
    while (atomic_load(&sw_stage) < 2)
        usleep(1000);
    return o;
}
#endif

static void finale_route(void)
{
#if PY_VERSION_HEX < 0x030D0000
    for (int i = NSUBS; i >= 1; i--)
        test_end_sub(subs[i], main_ts, 0);
    Py_FinalizeEx();
#else
    /* sub2..sub8 end first; sub1 is left to the runtime's end, with no
     * thread state but the cached one (3.13 ends a sub-interpreter left
     * with more than one with "not the last thread", shim or not) */
    for (int i = NSUBS; i >= 2; i--)
        test_end_sub(subs[i], main_ts, 0);
    /* from inside sub1, as Py_EndInterpreter does: a debug build asserts
     * that a state is cleared under its own interpreter */
    test_switch_to(subs[1]);
    PyThreadState_Clear(subs[1]);
    PyThreadState_DeleteCurrent();
    PyEval_RestoreThread(main_ts);
    struct obs o = {0};
    pthread_t th;
    pthread_create(&th, NULL, sweep_thread, &o);
    Py_BEGIN_ALLOW_THREADS
    while (atomic_load(&sw_stage) < 1)
        usleep(1000);
    Py_END_ALLOW_THREADS
    long mark_at = log_size();
    gilshim_test_fail_alloc(1, NULL);
    Py_FinalizeEx();
    o.calls = gilshim_test_fail_alloc(0, &o.failed);
    atomic_store(&sw_stage, 2);
    pthread_join(th, NULL);
    o.log = log_since(mark_at);
    o.finished = 1;
    struct check c = {.phase = "sweep", .n = 1, .k = 1, .o = &o};
    expect(&c, !strcmp(o.where, "sub1"), "the thread's callback ran in %s", o.where);
    if (failed_at(&o, "PyThreadState_New for a sweep"))
        expect_logged(&c, "could not visit interpreter");
    else
        expect(&c, 0, "expected \"PyThreadState_New for a sweep\" to fail");
    report(&c);
    free(o.log);
#endif
}

int main(int argc, char **argv)
{
    g_log = getenv("GILSHIM_LOG");
    if (argc < 2 || (strcmp(argv[1], "route") && strcmp(argv[1], "diagnose")) || !g_log) {
        fprintf(stderr, "usage: GILSHIM_LOG=FILE %s route|diagnose\n", argv[0]);
        return 2;
    }
    g_diagnose = !strcmp(argv[1], "diagnose");
    snprintf(g_site_tag, sizeof g_site_tag, "(at %s(", basename(argv[0]));
    /* a run that hangs is a finding, not a stuck test run */
    alarm(240);
    if (!g_diagnose) {
        static const struct phase generation = {"generation", generation_body, generation_check};
        run_phase(&generation);
    }
    start();
    make_subs();
    if (g_diagnose) {
        static const struct phase diag = {"diagnose", diagnose_body, diagnose_check};
        run_phase(&diag);
        for (int i = NSUBS; i >= 1; i--)
            test_end_sub(subs[i], main_ts, 0);
        Py_FinalizeEx();
        /* the summary at exit: its table is the next allocation */
        gilshim_test_fail_alloc(1, NULL);
    } else {
        static const struct phase phases[] = {
            {"ensure", ensure_body, ensure_check},     {"creator", creator_body, creator_check},
            {"grandchild", grandchild_body, grandchild_check},
            {"bind", bind_body, bind_check},           {"api", api_body, api_check},
            {"guard", guard_body, guard_check},
            {"save", save_body, save_check},           {"view", view_body, view_check},
            {"newsub", newsub_body, newsub_check},
        };
        for (size_t i = 0; i < sizeof phases / sizeof *phases; i++)
            run_phase(&phases[i]);
        finale_route();
    }
    printf("%s: %d failure(s)\n", argv[1], g_failures);
    return g_failures ? 1 : 0;
}
