/* SPDX-License-Identifier: MIT */
/*
 * What differs between CPython versions, as data: one row per minor
 * version in versions.c, and nothing else in the shim asks which version it
 * runs on. Adding a version is adding a row (and running tests/embed, which
 * checks the row against that version's own headers).
 *
 * Self-contained on purpose: tests/embed compiles versions.c into a program
 * that includes Python.h, to hold each row against offsetof().
 */
#ifndef GILSHIM_PORT_VERSIONS_H
#define GILSHIM_PORT_VERSIONS_H

/* What stock PyGILState_Ensure does to a thread that calls it while the
 * runtime finalizes (Python/pylifecycle.c, Python/ceval_gil.c). */
enum gs_late_caller {
    GS_LATE_EXITS = 0,  /* the thread is ended with pthread_exit (<= 3.13) */
    GS_LATE_HANGS = 1,  /* the thread blocks forever (3.14+, gh-87135) */
};

/* ... and once Py_FinalizeEx has returned. */
enum gs_after_fini {
    GS_AFTER_CRASHES = 0,  /* new_threadstate(interp=NULL): SIGSEGV (<= 3.14) */
    GS_AFTER_HANGS = 1,    /* the thread blocks forever (3.15+) */
};

struct gs_port {
    int minor;
    /* The attached thread state is process-wide, kept in _PyRuntime (one
     * GIL, <= 3.11); otherwise a thread-local of libpython. */
    unsigned shared_current : 1;
    /* PyGILState's TSS slot follows the last state attached on the thread
     * (3.12+, CPython PR 101431) instead of the first one made for it. */
    unsigned gilstate_follows : 1;
    /* The pending exception is stored as its type (curexc_type, <= 3.11)
     * rather than as the exception object (current_exception). */
    unsigned exc_is_type : 1;
    /* PyGILState's binding is a thread-local word of libpython
     * (_Py_tss_gilstate, 3.15+) rather than a pthread key of the runtime
     * (autoTSSkey). */
    unsigned gilstate_in_tls : 1;
    /* PEP 788's PyThreadState_Ensure and interpreter guards (3.15+). */
    unsigned pep788 : 1;
    /* Py_EndInterpreter deletes other threads' states of the interpreter
     * (3.14+) instead of the fatal error "not the last thread". */
    unsigned end_deletes_others : 1;
    /* _xxsubinterpreters' run_string() and destroy() refuse an
     * interpreter with a thread state besides its head ("interpreter has
     * more than one thread", _is_running: PyInterpreterState_ThreadHead,
     * then PyThreadState_Next; <= 3.11). */
    unsigned sub_counts_threads : 1;
    /* Py_FinalizeEx runs Python after main's atexit functions and before
     * it marks the runtime finalizing (3.14+, make_pre_finalization_calls):
     * it ends the sub-interpreters left, with their atexit functions, and
     * repeats threading's shutdown, pending calls and atexit while any of
     * them started more. Stock serves foreign threads' callbacks there, in
     * main. */
    unsigned python_after_atexit : 1;
    enum gs_late_caller late_caller;
    enum gs_after_fini after_fini;
    /* offsetof(PyThreadState, thread_id); read only where shared_current. */
    long thread_id_offset;
    /* offsetof(PyThreadState, curexc_type or current_exception); checked on
     * a live thread state before it is used (resolve.c). */
    long exc_offset;
    /* offsetof(PyThreadState, gilstate_counter): whether stock's Release
     * only counts a state down, or deletes it (route.c). */
    long gilstate_counter_offset;
    /* 3.12+: offsetof(PyThreadState, _status), and which bit of that word
     * is _status.bound_gilstate: CPython's own record that a state is the
     * one in its thread's gilstate slot, which its debug builds assert
     * (docs/thread-states.md). Checked on a live state (binding.c). */
    long status_offset;
    unsigned bound_gilstate_mask;
};

/* The row for 3.minor, or NULL if the shim does not know that version. */
const struct gs_port *gs_port_for(int minor);
/* Parse Py_GetVersion(): 1 with *major, *minor and whether it names a
 * free-threaded build (no row fits one: the shim passes calls through),
 * 0 if it is not a version string. */
int gs_port_parse_version(const char *v, int *major, int *minor, int *free_threaded);
/* The oldest and newest versions with a row, for messages. */
int gs_port_oldest(void);
int gs_port_newest(void);

#endif
