/* SPDX-License-Identifier: MIT */
/*
 * Lifecycle tests: each runs tests/lifecycle/scenario.c twice, as stock
 * CPython (scenario-stock-TAG) and with gilshim (scenario-shim-TAG), and
 * asserts both outcomes, so every test shows the difference.
 *
 * tests/run-lifecycle.sh builds the scenarios for each CPython and runs
 * this with GILSHIM_SCENARIOS=build/scenario-%s-TAG and GILSHIM_PY_MINOR
 * in the environment. What stock does differs by version: the test reads
 * it from the shim's own table (src/shim/port/versions.c, linked in),
 * which tests/embed holds against each version's headers.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../src/shim/port/versions.h"

extern char **environ;

/* The row of the CPython the scenarios were built against. */
static const struct gs_port *port(void)
{
    const char *m = getenv("GILSHIM_PY_MINOR");
    const struct gs_port *row = m ? gs_port_for(atoi(m)) : NULL;
    cr_assert(row, "run through tests/run-lifecycle.sh (GILSHIM_PY_MINOR %s)", m ? m : "unset");
    return row;
}

struct outcome {
    int exited, code;      /* exited normally, with code */
    int signal;            /* killed by this signal */
    int hung;              /* still running at the deadline: killed */
    char out[16384], err[16384];
};

/* Built against a debug CPython (--with-pydebug; run-lifecycle.sh says so) */
static int debug_build(void)
{
    const char *d = getenv("GILSHIM_PY_DEBUG");
    return d && !strcmp(d, "1");
}

static int has(const char *hay, const char *needle);

/* Stock's crash where it dereferences what is gone: a segfault, or on a
 * debug build one of CPython's own asserts first. */
static int crashed(const struct outcome *o)
{
    return o->signal == SIGSEGV ||
           (debug_build() && o->signal == SIGABRT && has(o->err, "Assertion"));
}

static void slurp(const char *path, char *buf, size_t len)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(path);
}

/* Run "scenario-KIND-TAG NAME [ARG]" with extra "VAR=value" settings. */
static struct outcome *run(const char *kind, const char *name, const char *arg,
                           const char *const *env_add, long deadline_ms)
{
    const char *pattern = getenv("GILSHIM_SCENARIOS");
    cr_assert(pattern, "run through tests/run-lifecycle.sh (GILSHIM_SCENARIOS unset)");
    char bin[512], out[64], err[64];
    snprintf(bin, sizeof bin, pattern, kind);
    snprintf(out, sizeof out, "/tmp/gilshim-lc-%d.out", (int)getpid());
    snprintf(err, sizeof err, "/tmp/gilshim-lc-%d.err", (int)getpid());

    char *envp[256];
    size_t n = 0;
    for (const char *const *e = env_add; e && *e; e++)
        envp[n++] = (char *)*e;
    for (char **e = environ; *e && n < 254; e++)
        if (strncmp(*e, "GILSHIM_", 8) || !strncmp(*e, "GILSHIM_SCENARIOS=", 18))
            envp[n++] = *e;  /* the scenario's settings are the test's alone */
    envp[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *argv[] = {bin, (char *)name, (char *)arg, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "spawn %s: %s", bin, strerror(rc));

    struct outcome *o = calloc(1, sizeof *o);
    int status = 0;
    for (long waited = 0;; waited += 10) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (waited >= deadline_ms) {
            o->hung = 1;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    if (!o->hung && WIFEXITED(status)) {
        o->exited = 1;
        o->code = WEXITSTATUS(status);
    } else if (!o->hung) {
        o->signal = WTERMSIG(status);
    }
    slurp(out, o->out, sizeof o->out);
    slurp(err, o->err, sizeof o->err);
    return o;
}

static const char *describe(const struct outcome *o)
{
    static char buf[64];
    if (o->hung)
        return "hung";
    if (o->exited)
        snprintf(buf, sizeof buf, "exit %d", o->code);
    else
        snprintf(buf, sizeof buf, "signal %d (%s)", o->signal, strsignal(o->signal));
    return buf;
}

#define SHOW(o) "%s\n--- stdout\n%s--- stderr\n%s", describe(o), (o)->out, (o)->err

static int has(const char *text, const char *needle) { return strstr(text, needle) != NULL; }

static void clean_exit(const struct outcome *o)
{
    cr_assert(o->exited && o->code == 0, "gilshim: expected exit 0, got " SHOW(o));
}

/* GILSHIM_LOG for a run whose events are checked: .setting goes into the
 * run's environment. */
struct log_file {
    char path[64], setting[80];
};

static void log_file_init(struct log_file *j)
{
    snprintf(j->path, sizeof j->path, "/tmp/gilshim-lc-%d.json", (int)getpid());
    snprintf(j->setting, sizeof j->setting, "GILSHIM_LOG=%s", j->path);
    unlink(j->path);
}

/* Every line of the log against the schema of docs/messages.md
 * (tests/e2e/check_report.py, the one checker): each of events
 * (space-separated) at least once, and no other event. */
static void json_events(struct log_file *j, const char *events)
{
    char cmd[512], out[4096], log[16384];
    snprintf(cmd, sizeof cmd, "python3 tests/e2e/check_report.py --events %s %s 2>&1", j->path,
             events);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int status = pclose(p);
    slurp(j->path, log, sizeof log);
    cr_assert(status == 0 && !strcmp(out, "ok\n"), "%s\n%s--- log\n%s", cmd, out, log);
}

static int own_gil_available(void)
{
    struct outcome *o = run("shim", "end_cached", "own", NULL, 20000);
    int ok = !(o->exited && o->code == 77);
    free(o);
    return ok;
}

TestSuite(lifecycle, .timeout = 120);

/* --- runtime finalization --- */

/* The fail-safe's message for a park after Py_FinalizeEx (g: a run at the
 * default level): a warning where stock crashes, else (3.15, stock blocks
 * the thread as park does) info, shown at GILSHIM_LOG_LEVEL=info. Either
 * comes after up to 50 ms, if the process has not exited by then. */
static void late_message_level(const struct outcome *g, const char *name, const char *text)
{
    if (port()->after_fini == GS_AFTER_CRASHES) {
        cr_assert(has(g->err, text), "the message names the case and the call site: " SHOW(g));
        return;
    }
    cr_assert_str_empty(g->err, "stock's outcome: nothing to say at the default level " SHOW(g));
    const char *env[] = {"GILSHIM_LOG_LEVEL=info", "GILSHIM_DRAIN_MS=100", NULL};
    struct outcome *i = run("shim", name, NULL, env, 20000);
    clean_exit(i);
    cr_assert(has(i->err, text), "the message names the case and the call site: " SHOW(i));
    cr_assert(has(i->err, "GILSHIM_ON_FINALIZE=park"), SHOW(i));
    free(i);
}

Test(lifecycle, ensure_after_finalize_parks_instead_of_crashing)
{
    struct outcome *s = run("stock", "after_finalize", NULL, NULL, 20000);
    if (port()->after_fini == GS_AFTER_CRASHES)
        cr_assert(crashed(s), "stock: expected a segfault, got " SHOW(s));
    else
        cr_assert(s->exited && has(s->out, "main: the thread is still blocked"),
                  "stock: expected the thread to hang, got " SHOW(s));
    /* the message waits for the process to exit (up to 50 ms, GILSHIM_DRAIN_MS if less) */
    const char *drain[] = {"GILSHIM_DRAIN_MS=100", NULL};
    struct outcome *g = run("shim", "after_finalize", NULL, drain, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: PyGILState_Ensure after Py_FinalizeEx\n"), SHOW(g));
    cr_assert(!has(g->out, "PyGILState_Ensure returned"), "park: Ensure must not return " SHOW(g));
    cr_assert(has(g->out, "main: the thread is still blocked"), SHOW(g));
    cr_assert(has(g->out, "gilshim_ensure on the finalized main interpreter: NULL (GILSHIM_ENOPYTHON)"),
              SHOW(g));
    late_message_level(g, "after_finalize", "PyGILState_Ensure after Py_FinalizeEx (at scenario-shim-");
    cr_assert(has(g->err, "GILSHIM_ON_FINALIZE=park") || !g->err[0], SHOW(g));
}

/* The same with no history: the process's first foreign Ensure comes after
 * Py_FinalizeEx. gilshim decides from CPython's state at the call. */
Test(lifecycle, first_ensure_after_finalize_needs_no_history)
{
    struct outcome *s = run("stock", "first_after_finalize", NULL, NULL, 20000);
    if (port()->after_fini == GS_AFTER_CRASHES)
        cr_assert(crashed(s), "stock: expected a segfault, got " SHOW(s));
    else
        cr_assert(s->exited && has(s->out, "main: the thread is still blocked"),
                  "stock: expected the thread to hang, got " SHOW(s));
    struct outcome *g = run("shim", "first_after_finalize", NULL, NULL, 20000);
    clean_exit(g);
    cr_assert(!has(g->out, "PyGILState_Ensure returned"), "park: Ensure must not return " SHOW(g));
    cr_assert(has(g->out, "main: the thread is still blocked"), SHOW(g));
    late_message_level(g, "first_after_finalize",
                       "PyGILState_Ensure with no initialized runtime (before Py_Initialize "
                       "completed, or after Py_FinalizeEx) (at scenario-shim-");
    free(g);
    const char *env[] = {"GILSHIM_ON_FINALIZE=exit", "GILSHIM_DRAIN_MS=100", NULL};
    g = run("shim", "first_after_finalize", NULL, env, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "main: the thread ended"), "exit policy, after the wait " SHOW(g));
    free(g);
    const char *diag[] = {"GILSHIM_MODE=diagnose", NULL};
    g = run("shim", "first_after_finalize", NULL, diag, 20000);
    if (port()->after_fini == GS_AFTER_CRASHES)
        cr_assert(crashed(g), "diagnose keeps stock's outcome; got " SHOW(g));
    cr_assert(has(g->err, "PyGILState_Ensure with no initialized runtime"), SHOW(g));
}

/* Before Py_Initialize has completed: gilshim waits for it (bounded by
 * GILSHIM_DRAIN_MS), then routes as usual. */
Test(lifecycle, ensure_before_initialize_waits_for_the_runtime)
{
    struct outcome *s = run("stock", "before_init", NULL, NULL, 20000);
    cr_assert(!(s->exited && has(s->out, "thread: callback runs in main")),
              "stock: expected a crash or a hang, got " SHOW(s));
    /* a bound well past Py_Initialize's time: under qemu-user on a loaded
     * machine (make test-arm64) it took more than the default second */
    const char *patient[] = {"GILSHIM_DRAIN_MS=10000", NULL};
    struct outcome *g = run("shim", "before_init", NULL, patient, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: callback runs in main\n"), SHOW(g));
    cr_assert(has(g->out, "main: the thread ended\n"), SHOW(g));
    cr_assert_str_empty(g->err, "no message: the runtime came in time " SHOW(g));
    free(g);
    /* a wait shorter than the 200 ms: the policy, with its message */
    const char *env[] = {"GILSHIM_ON_FINALIZE=exit", "GILSHIM_DRAIN_MS=20", NULL};
    g = run("shim", "before_init", NULL, env, 20000);
    clean_exit(g);
    cr_assert(!has(g->out, "thread: callback runs"), SHOW(g));
    cr_assert(has(g->err, "PyGILState_Ensure with no initialized runtime"), SHOW(g));
}

Test(lifecycle, ensure_after_finalize_exit_policy_ends_the_thread)
{
    const char *env[] = {"GILSHIM_ON_FINALIZE=exit", "GILSHIM_DRAIN_MS=100", NULL};
    struct outcome *g = run("shim", "after_finalize", NULL, env, 20000);
    clean_exit(g);
    cr_assert(!has(g->out, "PyGILState_Ensure returned"), SHOW(g));
    cr_assert(has(g->out, "main: the thread ended"), SHOW(g));
}

Test(lifecycle, ensure_after_finalize_abort_policy_names_the_call_site)
{
    const char *env[] = {"GILSHIM_ON_FINALIZE=abort", NULL};
    struct outcome *g = run("shim", "after_finalize", NULL, env, 20000);
    cr_assert(g->signal == SIGABRT, "expected abort, got " SHOW(g));
    cr_assert(has(g->err, "PyGILState_Ensure after Py_FinalizeEx (at scenario-shim-"), SHOW(g));
    cr_assert(has(g->err, "GILSHIM_ON_FINALIZE=abort"), SHOW(g));
}

/* Four foreign threads loop Ensure + Python + Release while main finalizes:
 * stock kills them with pthread_exit or crashes; gilshim lets callbacks in
 * flight finish, then parks every thread at its next Ensure. */
static void parse_busy(const struct outcome *o, int *killed, int *parked, long *in, long *out)
{
    const char *w = strstr(o->out, "main: workers killed=");
    const char *c = strstr(o->out, "main: callbacks entered=");
    int running = -1, lost = -1;
    cr_assert(w && c, SHOW(o));
    cr_assert_eq(sscanf(w, "main: workers killed=%d parked=%d running=%d stuck-in-callback=%d",
                        killed, parked, &running, &lost), 4, SHOW(o));
    cr_assert_eq(sscanf(c, "main: callbacks entered=%ld left=%ld", in, out), 2, SHOW(o));
    cr_assert_eq(running, 0, "no thread may run Python after Py_FinalizeEx " SHOW(o));
    cr_assert_eq(lost, 0, "no callback may be cut off " SHOW(o));
}

Test(lifecycle, threads_calling_in_while_the_runtime_finalizes)
{
    int killed, parked;
    long in, out;
    struct outcome *s = run("stock", "finalize_busy", NULL, NULL, 20000);
    if (s->exited && port()->late_caller == GS_LATE_EXITS) {
        cr_assert(has(s->out, "main: workers killed="), SHOW(s));
        cr_assert(!has(s->out, "main: workers killed=0 "),
                  "stock: expected threads killed by pthread_exit, got " SHOW(s));
    } else if (s->exited) {
        /* 3.14+ blocks them, not always before one is let run again */
        cr_assert(has(s->out, "main: workers killed=0 "),
                  "stock: expected threads hung, not killed, got " SHOW(s));
    } else {
        cr_assert(s->signal == SIGSEGV || s->signal == SIGABRT,
                  "stock: expected killed threads or a crash, got " SHOW(s));
    }
    struct outcome *g = run("shim", "finalize_busy", NULL, NULL, 20000);
    clean_exit(g);
    parse_busy(g, &killed, &parked, &in, &out);
    cr_assert_eq(killed, 0, SHOW(g));
    cr_assert_eq(parked, 4, SHOW(g));
    cr_assert_eq(in, out, "count in = count out " SHOW(g));
    cr_assert_gt(in, 0);
}

Test(lifecycle, threads_calling_in_while_the_runtime_finalizes_exit_policy)
{
    int killed, parked;
    long in, out;
    const char *env[] = {"GILSHIM_ON_FINALIZE=exit", NULL};
    struct outcome *g = run("shim", "finalize_busy", NULL, env, 20000);
    clean_exit(g);
    parse_busy(g, &killed, &parked, &in, &out);
    cr_assert_eq(killed, 4, SHOW(g));
    cr_assert_eq(in, out, "count in = count out " SHOW(g));
}

/* Py_FinalizeEx while a foreign thread's callback in main waits with its
 * GIL released: stock stops the thread when it comes back for the GIL and
 * the callback never finishes; gilshim's drain lets it finish first. */
Test(lifecycle, finalize_with_a_callback_in_flight_lets_it_finish)
{
    struct outcome *s = run("stock", "finalize_inflight", NULL, NULL, 20000);
    cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
    cr_assert(!has(s->out, "thread: callback finished"), "stock: expected it cut off, got " SHOW(s));
    struct outcome *g = run("shim", "finalize_inflight", NULL, NULL, 20000);
    clean_exit(g);
    const char *fin = strstr(g->out, "thread: callback finished");
    const char *ret = strstr(g->out, "main: Py_FinalizeEx returned");
    cr_assert(fin && ret && fin < ret, "the callback finishes first " SHOW(g));
    cr_assert(has(g->out, "main: the thread ended"), SHOW(g));
    cr_assert_eq(g->err[0], 0, SHOW(g));
}

/* An atexit callback of main that waits for a foreign thread's callback,
 * registered before anything gilshim registers: stock serves it, the
 * runtime is not finalizing yet, and so does gilshim. */
Test(lifecycle, ensure_from_an_atexit_callback_is_served)
{
    struct outcome *s = run("stock", "atexit_ensure", NULL, NULL, 20000);
    cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
    cr_assert(has(s->out, "thread: callback runs in main\n"), "stock: " SHOW(s));
    cr_assert(has(s->out, "atexit: the thread's callback ran"), "stock: " SHOW(s));
    struct outcome *g = run("shim", "atexit_ensure", NULL, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: callback runs in main\n"), SHOW(g));
    cr_assert(has(g->out, "atexit: the thread's callback ran"), SHOW(g));
    cr_assert_eq(g->err[0], 0, SHOW(g));
}

/* A library's atexit function stops its thread and joins it; the thread
 * makes one last callback first. Stock runs it (in main, whatever the
 * thread's interpreter) and exits; gilshim runs it in the interpreter
 * that owns it, before that interpreter's end, in either registration
 * order, and says nothing. */
static void atexit_join(const char *arg)
{
    const char *sub = strncmp(arg, "main-", 5) ? "sub" : "main";
    struct outcome *s = run("stock", "atexit_join", arg, NULL, 20000);
    if (s->exited && s->code == 77)
        cr_skip_test("own-GIL interpreters need CPython 3.12+");
    cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
    cr_assert(has(s->out, "thread: last callback runs in main\n"), "stock: " SHOW(s));
    cr_assert(has(s->out, "atexit: joined the library thread\n"), "stock: " SHOW(s));
    struct outcome *g = run("shim", "atexit_join", arg, NULL, 20000);
    clean_exit(g);
    char want[64];
    snprintf(want, sizeof want, "thread: first callback runs in %s\n", sub);
    cr_assert(has(g->out, want), SHOW(g));
    snprintf(want, sizeof want, "thread: last callback runs in %s\n", sub);
    cr_assert(has(g->out, want), SHOW(g));
    cr_assert(has(g->out, "atexit: joined the library thread\n"), SHOW(g));
    cr_assert(has(g->out, "main: exit\n"), SHOW(g));
    cr_assert_eq(g->err[0], 0, SHOW(g));
}

Test(lifecycle, atexit_joins_a_thread_of_main_registered_before) { atexit_join("main-before"); }
Test(lifecycle, atexit_joins_a_thread_of_main_registered_after) { atexit_join("main-after"); }
Test(lifecycle, atexit_joins_a_thread_of_a_sub_registered_before) { atexit_join("sub-before"); }
Test(lifecycle, atexit_joins_a_thread_of_a_sub_registered_after) { atexit_join("sub-after"); }
Test(lifecycle, atexit_joins_a_thread_of_an_own_gil_sub_registered_before)
{
    atexit_join("own-before");
}
Test(lifecycle, atexit_joins_a_thread_of_an_own_gil_sub_registered_after)
{
    atexit_join("own-after");
}

/* A sub-interpreter left alive at the runtime's end, whose library's
 * atexit function joins its thread, which calls back once more. 3.9-3.12
 * abort at a sub-interpreter left so, stock too (skipped). 3.13+ end it
 * inside Py_FinalizeEx from the state at the head of its list, which must
 * not be the thread's cached one ("Py_EndInterpreter: not the last
 * thread", gilshim before main's exit hook was placed from the sub). 3.14+
 * do it before the runtime finalizes: stock serves the last callback in
 * main, and so does gilshim. 3.13 does it after: stock ends the thread
 * there, gilshim parks it by default and ends it as stock does with
 * GILSHIM_ON_FINALIZE=exit. */
static void atexit_join_left(const char *arg)
{
    struct outcome *s = run("stock", "atexit_join", arg, NULL, 20000);
    if (s->exited && s->code == 77)
        cr_skip_test("%s", s->out);
    if (!debug_build()) {  /* 3.13d's own assert fails in stock here */
        cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
        cr_assert(has(s->out, "atexit: joined the library thread\n"), "stock: " SHOW(s));
    }
    struct outcome *g = run("shim", "atexit_join", arg, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: first callback runs in sub\n"), SHOW(g));
    cr_assert(has(g->out, "main: exit\n"), SHOW(g));
    cr_assert(!has(g->err, "gilshim") && !has(g->err, "Fatal"), SHOW(g));
    if (port()->python_after_atexit) {
        cr_assert(has(s->out, "thread: last callback runs in main\n"), "stock: " SHOW(s));
        cr_assert(has(g->out, "thread: last callback runs in main\n"), SHOW(g));
        cr_assert(has(g->out, "atexit: joined the library thread\n"), SHOW(g));
        return;
    }
    cr_assert(!has(g->out, "thread: last callback"), SHOW(g));
    cr_assert(has(g->out, "atexit: the library thread is still blocked\n"), SHOW(g));
    const char *env[] = {"GILSHIM_ON_FINALIZE=exit", NULL};
    g = run("shim", "atexit_join", arg, env, 20000);
    clean_exit(g);
    cr_assert(!has(g->out, "thread: last callback"), SHOW(g));
    cr_assert(has(g->out, "atexit: joined the library thread\n"), SHOW(g));
}

Test(lifecycle, atexit_joins_a_thread_of_a_sub_left_to_finalize_registered_before)
{
    atexit_join_left("left-before");
}
Test(lifecycle, atexit_joins_a_thread_of_a_sub_left_to_finalize_registered_after)
{
    atexit_join_left("left-after");
}
Test(lifecycle, atexit_joins_a_thread_of_an_own_gil_sub_left_to_finalize_registered_before)
{
    atexit_join_left("leftown-before");
}
Test(lifecycle, atexit_joins_a_thread_of_an_own_gil_sub_left_to_finalize_registered_after)
{
    atexit_join_left("leftown-after");
}

/* --- interpreter end --- */

/* What stock does when an interpreter ends while a foreign thread keeps a
 * state of it: <= 3.13 the fatal error; 3.14+ deletes that state, and a
 * callback in flight on it never returns (the scenario's alarm ends it). */
static void stock_end_outcome(const struct outcome *s, const char *name)
{
    if (!port()->end_deletes_others)
        cr_assert(s->signal == SIGABRT && has(s->err, "not the last thread"),
                  "stock: expected Py_EndInterpreter's fatal error, got " SHOW(s));
    else if (!strcmp(name, "end_inflight"))
        cr_assert(s->signal == SIGALRM && !has(s->out, "thread: callback finished"),
                  "stock: expected the callback in flight to hang, got " SHOW(s));
    else
        cr_assert(s->exited && s->code == 0 && has(s->out, "main: the interpreter ended\n"),
                  "stock: expected the state deleted with the interpreter, got " SHOW(s));
}

static void end_interpreter(const char *name, const char *arg)
{
    stock_end_outcome(run("stock", name, arg, NULL, 20000), name);
    struct outcome *g = run("shim", name, arg, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: callback runs in sub\n"), SHOW(g));
    cr_assert(has(g->out, "main: the interpreter ended\n"), SHOW(g));
    cr_assert(has(g->out, "thread: gilshim_ensure on the ended interpreter: NULL (GILSHIM_EGONE)"),
              SHOW(g));
    if (!strcmp(name, "end_inflight")) {
        const char *fin = strstr(g->out, "thread: callback finished");
        const char *end = strstr(g->out, "main: the interpreter ended");
        cr_assert(fin && end && fin < end, "the callback in flight finishes first " SHOW(g));
    }
}

Test(lifecycle, end_interpreter_with_a_cached_thread_state) { end_interpreter("end_cached", NULL); }
Test(lifecycle, end_interpreter_with_a_callback_in_flight) { end_interpreter("end_inflight", NULL); }

static void end_own_gil_interpreter(const char *name)
{
    if (!own_gil_available())
        cr_skip_test("own-GIL interpreters need CPython 3.12+");
    end_interpreter(name, "own");
}

Test(lifecycle, end_own_gil_interpreter_with_a_cached_thread_state)
{
    end_own_gil_interpreter("end_cached");
}

Test(lifecycle, end_own_gil_interpreter_with_a_callback_in_flight)
{
    end_own_gil_interpreter("end_inflight");
}

/* The drain is bounded: a callback that outlives GILSHIM_DRAIN_MS is
 * reported, and Py_EndInterpreter then does what stock's does. */
Test(lifecycle, drain_gives_up_after_GILSHIM_DRAIN_MS)
{
    const char *env[] = {"GILSHIM_DRAIN_MS=50", NULL};
    struct outcome *g = run("shim", "end_inflight", NULL, env, 20000);
    stock_end_outcome(g, "end_inflight");
    cr_assert(has(g->err, "callback(s) still running after GILSHIM_DRAIN_MS=50"), SHOW(g));
    free(g);
    struct log_file j;
    log_file_init(&j);
    const char *json[] = {"GILSHIM_DRAIN_MS=50", "GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    g = run("shim", "end_inflight", NULL, json, 20000);
    stock_end_outcome(g, "end_inflight");
    json_events(&j, "ended_in_flight");
}

/* 3.15's own PEP 788 calls on a thread that also calls PyGILState_Ensure:
 * nested either way, both sides balanced; an interpreter end waits for the
 * thread's guard (gilshim's exit hook runs and does not deadlock); the view
 * of the ended interpreter gives NULL. Stock's PyGILState_Ensure lands in
 * main, gilshim's in the creating sub-interpreter, where the native
 * Ensure inside it then needs no switch. */
static void pep788_interplay(const char *arg)
{
    if (!port()->pep788)
        cr_skip_test("PEP 788 is CPython 3.15+");
    const char *common[] = {
        "thread: PyThreadState_EnsureFromView in sub, PyGILState_Ensure inside it in sub\n",
        "thread: closing the guard\nmain: the interpreter ended\n",
        "thread: PyThreadState_EnsureFromView on the ended interpreter: NULL\n",
        "main: exit\n",
    };
    struct outcome *s = run("stock", "pep788", arg, NULL, 20000);
    cr_assert(s->exited && s->code == 0, SHOW(s));
    cr_assert(has(s->out, "thread: PyGILState_Ensure in main, PyThreadState_Ensure(guard) inside "
                          "it in sub, back in main\n"), SHOW(s));
    struct outcome *g = run("shim", "pep788", arg, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: PyGILState_Ensure in sub, PyThreadState_Ensure(guard) inside "
                          "it in sub, back in sub\n"), SHOW(g));
    for (size_t i = 0; i < sizeof common / sizeof *common; i++) {
        cr_assert(has(s->out, common[i]), "stock: %s" SHOW(s), common[i]);
        cr_assert(has(g->out, common[i]), "gilshim: %s" SHOW(g), common[i]);
    }
    cr_assert_str_empty(g->err, "gilshim says nothing: " SHOW(g));
}

Test(lifecycle, pep788_calls_nest_with_pygilstate_and_guards_hold_an_interpreter_end)
{
    pep788_interplay(NULL);
}

Test(lifecycle, pep788_with_an_own_gil_interpreter) { pep788_interplay("own"); }

/* --- Py_Initialize again --- */

Test(lifecycle, reinitialized_runtime_works_and_old_views_stay_invalid)
{
    struct outcome *s = run("stock", "reinit", NULL, NULL, 20000);
    cr_assert(s->exited && s->code == 0, SHOW(s));
    struct outcome *g = run("shim", "reinit", NULL, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: callback 1 runs in first runtime\n"), SHOW(g));
    cr_assert(has(g->out, "thread: callback 2 runs in second runtime\n"), SHOW(g));
    cr_assert(has(g->out, "thread: 100 more: 0 elsewhere, 0 on another thread state"),
              "one state reused in the new runtime " SHOW(g));
    cr_assert(has(g->out, "on the first runtime's main interpreter: NULL (GILSHIM_ESTALE)"), SHOW(g));
    cr_assert(has(g->out, "on the second runtime's main interpreter: a token, ran in second runtime"),
              SHOW(g));
}

/* --- thread exit --- */

Test(lifecycle, thread_exit_deletes_its_states_in_live_interpreters_only)
{
    struct outcome *s = run("stock", "thread_exit", NULL, NULL, 20000);
    cr_assert(s->exited && s->code == 0, SHOW(s));
    struct outcome *g = run("shim", "thread_exit", NULL, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: gilshim_ensure on sub2: a token, ran in sub2"), SHOW(g));
    cr_assert(has(g->out, "while the thread lives: main +1, sub1 +1 thread state(s)"),
              "one cached state per interpreter " SHOW(g));
    cr_assert(has(g->out, "after the thread exited: main +0, sub1 +0 thread state(s)"), SHOW(g));
    cr_assert(has(g->out, "main: gilshim holds 1 thread record(s), 0 row(s)"),
              "only main's record is left " SHOW(g));
}

/* A library thread that called back once exits while the thread holding
 * its interpreter's GIL joins it, the GIL held (grpc's C core, device
 * libraries' close()): stock's thread exits, as its state went at its
 * Release; gilshim's must too, never waiting for that GIL at its exit, and
 * the state it leaves is deleted by the next holder of the GIL: the next
 * callback's Ensure (B's, after A), PyInterpreterState_ThreadHead from
 * inside the interpreter (the count after B), or the interpreter's end
 * (after C). A thread that does not exit within 3 s is joined with the
 * GIL released, so a regression fails here instead of hanging. */
static void exit_joined(const char *where)
{
    struct outcome *s = run("stock", "exit_joined", where, NULL, 20000);
    if (s->exited && s->code == 77)
        cr_skip_test("own-GIL interpreters need CPython 3.12+");
    cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
    const char *env[] = {"GILSHIM_LOG_LEVEL=debug", NULL};
    struct outcome *g = run("shim", "exit_joined", where, env, 20000);
    const char *const lines[] = {
        "main: thread A exited while main held the GIL",
        "main: thread B exited while main held the GIL",
        "main: +0 thread state(s) in the interpreter",
        "main: thread C exited while main held the GIL",
        "main: exit",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        cr_assert(has(s->out, lines[i]), "stock: %s\n" SHOW(s), lines[i]);
        cr_assert(has(g->out, lines[i]), "gilshim: %s\n" SHOW(g), lines[i]);
    }
    clean_exit(g);
    if (strcmp(where, "main"))
        cr_assert(has(g->out, "thread: callback runs in sub"), SHOW(g));
    /* A's by B's Ensure, B's by the count, C's by the end (or, in a sub,
     * by main's PyEval_RestoreThread on its way back from the sub): three */
    const char *const reapers[] = {"an Ensure", "PyInterpreterState_ThreadHead"};
    char tail[96];
    snprintf(tail, sizeof tail, ": 1 thread state(s) of exited threads deleted in interpreter %d",
             strcmp(where, "main") ? 1 : 0);
    for (size_t i = 0; i < 2; i++) {
        char line[160];
        snprintf(line, sizeof line, "%s%s", reapers[i], tail);
        cr_assert(has(g->err, line), "gilshim: %s\n" SHOW(g), line);
    }
    int n = 0;
    for (const char *p = g->err; (p = strstr(p, tail)); p++)
        n++;
    cr_assert_eq(n, 3, "gilshim: each exited thread's state deleted once\n" SHOW(g));
}

Test(lifecycle, thread_joined_with_the_gil_held_exits_in_main) { exit_joined("main"); }
Test(lifecycle, thread_joined_with_the_gil_held_exits_in_a_sub) { exit_joined("sub"); }
Test(lifecycle, thread_joined_with_the_gil_held_exits_in_an_own_gil_sub) { exit_joined("own"); }

/* --- fork --- */

Test(lifecycle, fork_child_keeps_working_with_only_its_own_thread)
{
    struct outcome *s = run("stock", "fork", NULL, NULL, 20000);
    cr_assert(s->exited && s->code == 0 && has(s->out, "parent: the child exited with 0"), SHOW(s));
    struct outcome *g = run("shim", "fork", NULL, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "parent: gilshim holds 3 thread record(s)"), SHOW(g));
    cr_assert(has(g->out, "child: gilshim holds 1 thread record(s), 0 row(s)"), SHOW(g));
    cr_assert(has(g->out, "child thread: callback runs in main"), SHOW(g));
    cr_assert(has(g->out, "child after its thread exited: gilshim holds 1 thread record(s), 0 row(s)"),
              SHOW(g));
    cr_assert(has(g->out, "child: Py_FinalizeEx returned 0"), SHOW(g));
    cr_assert(has(g->out, "parent: the child exited with 0"), SHOW(g));
}

/* --- bad input --- */

Test(lifecycle, thread_exiting_inside_ensure_gives_the_gil_back)
{
    struct outcome *s = run("stock", "unbalanced", NULL, NULL, 3000);
    cr_assert(s->hung, "stock: the dead thread keeps the GIL forever; got " SHOW(s));
    struct outcome *g = run("shim", "unbalanced", NULL, NULL, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "main: has the GIL back"), SHOW(g));
    cr_assert(has(g->err, "thread exits with 1 PyGILState_Ensure/gilshim_ensure still open "
                          "(innermost at scenario-shim-"),
              SHOW(g));
}

/* A Release given the wrong state, 250 times: stock carries on, gilshim
 * does the same and says so, 200 times, then once that it stops. Before
 * that a token released out of order is refused. */
Test(lifecycle, release_with_the_wrong_state_is_reported_up_to_the_cap)
{
    struct outcome *s = run("stock", "misuse", NULL, NULL, 20000);
    if (debug_build()) {
        /* PyGILState_Release asserts the state its Ensure returned */
        cr_assert(s->signal == SIGABRT && has(s->err, "Assertion"), "stock: " SHOW(s));
    } else {
        cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
        cr_assert(has(s->out, "thread: 250 of 250 callbacks ran in main"), "stock: " SHOW(s));
    }
    struct log_file j;  /* 200 lines do not fit in g->err */
    log_file_init(&j);
    const char *env[] = {j.setting, NULL};
    struct outcome *g = run("shim", "misuse", NULL, env, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: the outer token released first: GILSHIM_EORDER"), SHOW(g));
    cr_assert(has(g->out, "thread: 250 of 250 callbacks ran in main"), SHOW(g));
    static char log[65536];
    slurp(j.path, log, sizeof log);
    size_t lines = 0;
    for (const char *c = log; *c; c++)
        lines += *c == '\n';
    cr_assert(has(log, "token released out of LIFO order (1 newer still open); ignored\n"), "%s", log);
    cr_assert(has(log, "given LOCKED, but the matching Ensure returned UNLOCKED"), "%s", log);
    cr_assert(lines == 201 && has(log, "]: 200 messages; further ones suppressed\n"),
              "%zu lines:\n%s", lines, log);
}

/* Py_FinalizeEx clears "initialized" before it clears modules: an object
 * destroyed then whose destructor calls PyGILState_Ensure is a nested call
 * on an attached thread, in every mode, not an Ensure after finalization.
 * Debug logging takes the general path instead of the fast one. */
Test(lifecycle, destructor_run_by_finalize_nests_as_in_stock)
{
    struct outcome *s = run("stock", "finalizer", NULL, NULL, 20000);
    cr_assert(s->exited && s->code == 0, "stock: " SHOW(s));
    cr_assert(has(s->out, "finalizer: Ensure returned LOCKED, initialized=0"), "stock: " SHOW(s));
    free(s);
    const char *envs[][3] = {{NULL}, {"GILSHIM_LOG_LEVEL=debug", NULL},
                             {"GILSHIM_MODE=diagnose", "GILSHIM_LOG_FORMAT=json", NULL}};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        struct outcome *g = run("shim", "finalizer", NULL, envs[i], 20000);
        clean_exit(g);
        cr_assert(has(g->out, "finalizer: Ensure returned LOCKED, initialized=0"), SHOW(g));
        cr_assert(has(g->out, "main: Py_FinalizeEx returned 0"), SHOW(g));
        cr_assert(!has(g->err, "after Py_FinalizeEx") && !has(g->err, "while the runtime finalizes") &&
                      !has(g->err, "ensure_after_finalize") && !has(g->err, "ensure_while_finalizing"),
                  SHOW(g));
        free(g);
    }
}

/* --- GILSHIM_MODE=diagnose: stock's outcome, and a report of it --- */

Test(lifecycle, diagnose_reports_ensure_after_finalize_and_keeps_stocks_outcome)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_MODE=diagnose", "GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "after_finalize", NULL, env, 20000);
    if (port()->after_fini == GS_AFTER_CRASHES)
        cr_assert(crashed(g), "diagnose keeps stock's outcome; got " SHOW(g));
    else
        cr_assert(g->exited && has(g->out, "main: the thread is still blocked"),
                  "diagnose keeps stock's outcome; got " SHOW(g));
    FILE *f = fopen(j.path, "r");
    char line[1024] = "";
    cr_assert(f && fgets(line, sizeof line, f), SHOW(g));
    fclose(f);
    cr_assert(has(line, "\"event\":\"ensure_after_finalize\""), "%s", line);
    cr_assert(has(line, "\"site\":{\"object\":\"scenario-shim-"), "%s", line);
    json_events(&j, "ensure_after_finalize");
}

/* The thread is stopped as stock stops it, still inside its Ensure. */
Test(lifecycle, diagnose_reports_a_callback_in_flight_at_finalize_and_keeps_stocks_cut)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_MODE=diagnose", "GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "finalize_inflight", NULL, env, 20000);
    clean_exit(g);
    cr_assert(!has(g->out, "thread: callback finished"), "diagnose keeps stock's outcome " SHOW(g));
    FILE *f = fopen(j.path, "r");
    char line[1024] = "";
    cr_assert(f && fgets(line, sizeof line, f), SHOW(g));
    fclose(f);
    cr_assert(has(line, "\"event\":\"ended_in_flight\"") &&
                  has(line, "\"interpreter\":0,\"in_flight\":1,"), "%s", line);
    /* <= 3.13 stock ends the thread inside its Ensure; 3.14+ blocks it */
    json_events(&j, port()->late_caller == GS_LATE_EXITS ? "ended_in_flight unbalanced_exit"
                                                         : "ended_in_flight");
}

/* A callback while an atexit function of main waits for it: stock runs it,
 * the runtime is not finalizing yet; nothing to report. */
Test(lifecycle, diagnose_keeps_a_callback_from_an_atexit_function_unreported)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_MODE=diagnose", "GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "atexit_ensure", NULL, env, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: callback runs in main\n"), SHOW(g));
    cr_assert(has(g->out, "atexit: the thread's callback ran"), SHOW(g));
    char log[16384];
    slurp(j.path, log, sizeof log);
    cr_assert_eq(log[0], 0, "expected no event, got\n%s", log);
}

/* A thread bound to a sub-interpreter: stock runs its callback in main. */
Test(lifecycle, diagnose_reports_a_bound_threads_callback_in_main)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_MODE=diagnose", "GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "end_cached", NULL, env, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "thread: callback runs in main\n"), SHOW(g));
    json_events(&j, "wrong_interpreter summary");
}

Test(lifecycle, diagnose_reports_a_thread_exiting_inside_ensure_and_keeps_stocks_hang)
{
    const char *env[] = {"GILSHIM_MODE=diagnose", NULL};
    struct outcome *g = run("shim", "unbalanced", NULL, env, 3000);
    cr_assert(g->hung, "diagnose keeps stock's outcome; got " SHOW(g));
    cr_assert(has(g->err, "thread exits with 1 PyGILState_Ensure/gilshim_ensure still open "
                          "(innermost at scenario-shim-"),
              SHOW(g));
    cr_assert(!has(g->err, "releasing its GIL"), SHOW(g));
}

/* --- route mode's events in JSON (docs/messages.md) --- */

Test(lifecycle, json_fail_safe)
{
    struct log_file j;
    log_file_init(&j);
    /* info: on 3.15 stock blocks the thread as park does (docs/messages.md) */
    const char *env[] = {"GILSHIM_LOG_FORMAT=json", "GILSHIM_LOG_LEVEL=info", "GILSHIM_DRAIN_MS=100",
                         j.setting, NULL};
    struct outcome *g = run("shim", "after_finalize", NULL, env, 20000);
    clean_exit(g);
    cr_assert(has(g->out, "main: the thread is still blocked"), SHOW(g));
    json_events(&j, "fail_safe");
}

Test(lifecycle, json_unbalanced_exit)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "unbalanced", NULL, env, 20000);
    clean_exit(g);
    json_events(&j, "unbalanced_exit");
}

Test(lifecycle, json_route_and_message_at_debug_level)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_LOG_LEVEL=debug", "GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "end_cached", NULL, env, 20000);
    clean_exit(g);
    json_events(&j, "route message");
}

Test(lifecycle, json_release_mismatch_token_misuse_suppressed)
{
    struct log_file j;
    log_file_init(&j);
    const char *env[] = {"GILSHIM_LOG_FORMAT=json", j.setting, NULL};
    struct outcome *g = run("shim", "misuse", NULL, env, 20000);
    clean_exit(g);
    json_events(&j, "release_mismatch token_misuse suppressed");
}
