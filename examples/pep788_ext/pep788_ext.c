/* SPDX-License-Identifier: MIT */
/*
 * An extension written only against CPython 3.15's PEP 788 API, built from
 * this one source for 3.9 to 3.15. Below 3.15, <gilshim/pep788.h> gives it
 * that API and it links `pkg-config --libs gilshim`; from 3.15 on it needs
 * no gilshim at all.
 *
 * Its threads call back into the interpreter that handed them a view or a
 * guard. tests/pep788/test_pep788.py drives it from sub-interpreters; the
 * second half of this file is what that test needs to see the order of
 * events and the end of the runtime.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if PY_VERSION_HEX < 0x030F0000
#include <gilshim/pep788.h>
#endif

/* Views and guards live outside any interpreter: a few slots, filled and
 * emptied by the test in order. */
#define SLOTS 8
static PyInterpreterView *views[SLOTS];
static PyInterpreterGuard *guards[SLOTS];

static int slot_arg(PyObject *arg, int *slot)
{
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred())
        return -1;
    if (s < 0 || s >= SLOTS) {
        PyErr_SetString(PyExc_IndexError, "slot out of range");
        return -1;
    }
    *slot = (int)s;
    return 0;
}

/* The attached interpreter's sys._pep788_marker, read in C: no object
 * crosses interpreters. */
static void marker(char *buf, size_t len)
{
    PyObject *m = PySys_GetObject("_pep788_marker");
    const char *s = m && PyUnicode_Check(m) ? PyUnicode_AsUTF8(m) : NULL;
    snprintf(buf, len, "%s", s ? s : "?");
    PyErr_Clear();
}

static PyObject *where(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    char m[32];
    marker(m, sizeof m);
    return PyUnicode_FromString(m);
}

static PyObject *keep_view(PyObject *self, PyObject *arg)
{
    (void)self;
    int s;
    if (slot_arg(arg, &s))
        return NULL;
    PyInterpreterView *v = PyInterpreterView_FromCurrent();
    if (!v)
        return NULL;  /* with an exception */
    if (views[s])
        PyInterpreterView_Close(views[s]);
    views[s] = v;
    Py_RETURN_NONE;
}

static PyObject *keep_main_view(PyObject *self, PyObject *arg)
{
    (void)self;
    int s;
    if (slot_arg(arg, &s))
        return NULL;
    PyInterpreterView *v = PyInterpreterView_FromMain();
    if (!v)  /* without an exception */
        return PyErr_Format(PyExc_RuntimeError, "PyInterpreterView_FromMain gave NULL");
    if (views[s])
        PyInterpreterView_Close(views[s]);
    views[s] = v;
    Py_RETURN_NONE;
}

static PyObject *keep_guard(PyObject *self, PyObject *arg)
{
    (void)self;
    int s;
    if (slot_arg(arg, &s))
        return NULL;
    PyInterpreterGuard *g = PyInterpreterGuard_FromCurrent();
    if (!g)
        return NULL;  /* with an exception */
    if (guards[s])
        PyInterpreterGuard_Close(guards[s]);
    guards[s] = g;
    Py_RETURN_NONE;
}

static PyObject *close_guard(PyObject *self, PyObject *arg)
{
    (void)self;
    int s;
    if (slot_arg(arg, &s))
        return NULL;
    PyInterpreterGuard_Close(guards[s]);
    guards[s] = NULL;
    Py_RETURN_NONE;
}

/* --- a callback from a thread of the extension's own --- */

struct call {
    int through_view;  /* else through a guard */
    int slot;
    PyObject *fn;      /* the caller's; called only in the caller's interpreter */
    char caller[32];   /* its marker */
    char ran_in[32];   /* where the thread found itself attached */
    char result[64];   /* str(fn()) */
    int got;           /* Ensure gave a token */
};

static void *call_thread(void *p)
{
    struct call *c = p;
    PyThreadStateToken *t = c->through_view ? PyThreadState_EnsureFromView(views[c->slot])
                                            : PyThreadState_Ensure(guards[c->slot]);
    if (!t)
        return NULL;
    c->got = 1;
    marker(c->ran_in, sizeof c->ran_in);
    /* the callable is the caller's: touch it only in its own interpreter */
    if (!strcmp(c->ran_in, c->caller)) {
        PyObject *r = PyObject_CallNoArgs(c->fn);
        PyObject *s = r ? PyObject_Str(r) : NULL;
        snprintf(c->result, sizeof c->result, "%s", s ? PyUnicode_AsUTF8(s) : "<error>");
        Py_XDECREF(s);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyThreadState_Release(t);
    return NULL;
}

/* call_on_thread(kind, slot, fn): fn() from a new thread of this
 * extension, attached through views[slot] (kind "view") or guards[slot]
 * ("guard"). Returns (interpreter the thread ran in, str(fn())), or None
 * when the Ensure gave NULL. */
static PyObject *call_on_thread(PyObject *self, PyObject *args)
{
    (void)self;
    const char *kind;
    int slot, rc;
    PyObject *fn;
    if (!PyArg_ParseTuple(args, "siO", &kind, &slot, &fn))
        return NULL;
    if (slot < 0 || slot >= SLOTS)
        return PyErr_Format(PyExc_IndexError, "slot out of range");
    struct call c = {.through_view = !strcmp(kind, "view"), .slot = slot, .fn = fn};
    marker(c.caller, sizeof c.caller);
    pthread_t th;
    Py_BEGIN_ALLOW_THREADS
    rc = pthread_create(&th, NULL, call_thread, &c);
    if (rc == 0)
        pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    if (rc)
        return PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
    if (!c.got)
        Py_RETURN_NONE;
    return Py_BuildValue("(ss)", c.ran_in, c.result);
}

/* --- nesting and switching on one thread --- */

struct nest {
    int sub_view, main_guard;
    char trace[256];
};

static void step(struct nest *n, const char *what)
{
    char m[32];
    marker(m, sizeof m);
    size_t len = strlen(n->trace);
    snprintf(n->trace + len, sizeof n->trace - len, "%s%s:%s", len ? " " : "", what, m);
}

static void *nest_thread(void *p)
{
    struct nest *n = p;
    PyThreadStateToken *t1 = PyThreadState_EnsureFromView(views[n->sub_view]);
    if (!t1) {
        snprintf(n->trace, sizeof n->trace, "EnsureFromView(sub): NULL");
        return NULL;
    }
    step(n, "view");
    PyThreadState *sub_state = PyThreadState_Get();
    PyThreadStateToken *t2 = PyThreadState_Ensure(guards[n->main_guard]);  /* switch */
    if (!t2) {
        step(n, "guard:NULL");
        PyThreadState_Release(t1);
        return NULL;
    }
    step(n, "guard");
    PyThreadState *main_state = PyThreadState_Get();
    PyThreadStateToken *t3 = PyThreadState_Ensure(guards[n->main_guard]);  /* nested */
    step(n, t3 ? "nested" : "nested:NULL");
    if (t3 && PyThreadState_Get() != main_state)
        step(n, "nested-changed-state");
    PyThreadStateToken *t4 = PyThreadState_EnsureFromView(views[n->sub_view]);  /* back */
    step(n, t4 ? "view" : "view:NULL");
    if (t4)
        PyThreadState_Release(t4);
    step(n, "release");
    if (PyThreadState_Get() != main_state)
        step(n, "not-restored");
    if (t3)
        PyThreadState_Release(t3);
    step(n, "release");
    PyThreadState_Release(t2);
    step(n, "release");
    if (PyThreadState_Get() != sub_state)
        step(n, "not-restored");
    PyThreadState_Release(t1);
    return NULL;
}

/* nest_and_switch(sub_view_slot, main_guard_slot): on a new thread, where
 * each Ensure and Release of a nested sequence leaves it attached. */
static PyObject *nest_and_switch(PyObject *self, PyObject *args)
{
    (void)self;
    struct nest n = {0};
    pthread_t th;
    int rc;
    if (!PyArg_ParseTuple(args, "ii", &n.sub_view, &n.main_guard))
        return NULL;
    if (n.sub_view < 0 || n.sub_view >= SLOTS || n.main_guard < 0 || n.main_guard >= SLOTS)
        return PyErr_Format(PyExc_IndexError, "slot out of range");
    Py_BEGIN_ALLOW_THREADS
    rc = pthread_create(&th, NULL, nest_thread, &n);
    if (rc == 0)
        pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    if (rc)
        return PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
    return PyUnicode_FromString(n.trace);
}

/* switch_here(guard_slot): on the calling thread, attached here: Ensure
 * through the guard, then Release. Returns "<in Ensure> <after Release>". */
static PyObject *switch_here(PyObject *self, PyObject *arg)
{
    (void)self;
    int s;
    char inside[32] = "NULL", after[32];
    if (slot_arg(arg, &s))
        return NULL;
    PyThreadState *mine = PyThreadState_Get();
    PyThreadStateToken *t = PyThreadState_Ensure(guards[s]);
    if (t) {
        marker(inside, sizeof inside);
        PyThreadState_Release(t);
    }
    marker(after, sizeof after);
    if (PyThreadState_Get() != mine)
        return PyErr_Format(PyExc_AssertionError, "Release did not restore the caller's state");
    return PyUnicode_FromFormat("%s %s", inside, after);
}

/* probe_view(slot): (FromView gave a guard, it set an exception,
 * EnsureFromView gave a token, it set an exception), for a view that may
 * have outlived its interpreter. */
static PyObject *probe_view(PyObject *self, PyObject *arg)
{
    (void)self;
    int s;
    if (slot_arg(arg, &s))
        return NULL;
    PyInterpreterGuard *g = PyInterpreterGuard_FromView(views[s]);
    int g_exc = PyErr_Occurred() != NULL;
    PyErr_Clear();
    if (g)
        PyInterpreterGuard_Close(g);
    PyThreadStateToken *t = PyThreadState_EnsureFromView(views[s]);
    if (t)
        PyThreadState_Release(t);
    int t_exc = PyErr_Occurred() != NULL;
    PyErr_Clear();
    return Py_BuildValue("(OOOO)", g ? Py_True : Py_False, g_exc ? Py_True : Py_False,
                         t ? Py_True : Py_False, t_exc ? Py_True : Py_False);
}

/* --- what the test needs to see: events in order, the runtime's end --- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[32][96];
static double log_ms[32];
static int log_n;
static _Atomic int marks;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void event(const char *text)
{
    pthread_mutex_lock(&log_lock);
    if (log_n < 32) {
        snprintf(log_text[log_n], sizeof log_text[0], "%s", text);
        log_ms[log_n++] = now_ms();
    }
    pthread_mutex_unlock(&log_lock);
}

/* mark(text): an event from Python; wakes workers waiting for one. */
static PyObject *mark(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *s = PyUnicode_AsUTF8(arg);
    if (!s)
        return NULL;
    event(s);
    atomic_fetch_add(&marks, 1);
    Py_RETURN_NONE;
}

/* events(): [(ms, text)], and the log emptied */
static PyObject *events(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *list = PyList_New(0);
    pthread_mutex_lock(&log_lock);
    for (int i = 0; list && i < log_n; i++) {
        PyObject *e = Py_BuildValue("(ds)", log_ms[i], log_text[i]);
        if (!e || PyList_Append(list, e) < 0)
            Py_CLEAR(list);
        Py_XDECREF(e);
    }
    log_n = 0;
    pthread_mutex_unlock(&log_lock);
    return list;
}

struct holder {
    PyInterpreterGuard *guard;
    int slot;
    int delay_ms;
    int after_marks;
    PyObject *fn;
};

static void *holder_thread(void *p)
{
    struct holder *h = p;
    PyInterpreterGuard *g = h->guard;
    while (atomic_load(&marks) < h->after_marks)
        usleep(1000);
    usleep((useconds_t)h->delay_ms * 1000);
    PyThreadStateToken *t = PyThreadState_Ensure(g);
    if (t) {
        char m[32], text[96];
        marker(m, sizeof m);
        PyObject *r = PyObject_CallNoArgs(h->fn);
        snprintf(text, sizeof text, "worker: a callback through the guard ran in %s%s", m,
                 r ? "" : " and failed");
        Py_XDECREF(r);
        PyErr_Clear();
        Py_DECREF(h->fn);
        PyThreadState_Release(t);
        event(text);
    } else {
        event("worker: PyThreadState_Ensure(guard) gave NULL");
    }
    event("worker: closing the guard");
    PyInterpreterGuard_Close(g);
    free(h);
    return NULL;
}

/* hold_guard(slot, delay_ms, fn): hand guards[slot] to a new detached
 * thread. After the next mark() and delay_ms it calls fn() through the
 * guard, then closes it. */
static PyObject *hold_guard(PyObject *self, PyObject *args)
{
    (void)self;
    struct holder *h = calloc(1, sizeof *h);
    pthread_t th;
    pthread_attr_t attr;
    if (!h)
        return PyErr_NoMemory();
    if (!PyArg_ParseTuple(args, "iiO", &h->slot, &h->delay_ms, &h->fn) || h->slot < 0 ||
        h->slot >= SLOTS || !guards[h->slot]) {
        free(h);
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "no guard in that slot");
    }
    Py_INCREF(h->fn);
    h->after_marks = atomic_load(&marks) + 1;
    h->guard = guards[h->slot];  /* the thread's now */
    guards[h->slot] = NULL;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, holder_thread, h);
    pthread_attr_destroy(&attr);
    if (rc)
        return PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
    Py_RETURN_NONE;
}

/* The runtime's end, seen from a thread that keeps calling in. */
static int race_slot;
static _Atomic long race_cycles;
static _Atomic int race_state;  /* 0 running, 1 got NULL */

static void *race_thread(void *unused)
{
    (void)unused;
    for (;;) {
        PyThreadStateToken *t = PyThreadState_EnsureFromView(views[race_slot]);
        if (!t)
            break;
        PyObject *o = PyLong_FromLong(atomic_load(&race_cycles));
        Py_XDECREF(o);
        PyThreadState_Release(t);
        atomic_fetch_add(&race_cycles, 1);
        usleep(200);
    }
    atomic_store(&race_state, 1);
    return NULL;
}

/* Last in Py_FinalizeEx: the thread must have been refused by now. */
static void race_report(void)
{
    for (int i = 0; i < 10000 && !atomic_load(&race_state); i++)
        usleep(1000);
    if (atomic_load(&race_state))
        fprintf(stderr, "race: after %ld callbacks, PyThreadState_EnsureFromView gave NULL "
                "while the runtime finalized\n", atomic_load(&race_cycles));
    else
        fprintf(stderr, "race: the thread was still calling in when Py_FinalizeEx ended\n");
    fflush(stderr);
}

/* race_finalize(slot): a thread calls in through views[slot] until it is
 * refused; returns once it has run 10 callbacks. */
static PyObject *race_finalize(PyObject *self, PyObject *arg)
{
    (void)self;
    pthread_t th;
    pthread_attr_t attr;
    if (slot_arg(arg, &race_slot))
        return NULL;
    if (Py_AtExit(race_report) < 0)
        return PyErr_Format(PyExc_RuntimeError, "Py_AtExit failed");
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, race_thread, NULL);
    pthread_attr_destroy(&attr);
    if (rc)
        return PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
    Py_BEGIN_ALLOW_THREADS
    while (atomic_load(&race_cycles) < 10 && !atomic_load(&race_state))
        usleep(1000);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"where", where, METH_NOARGS, "the running interpreter's sys._pep788_marker"},
    {"keep_view", keep_view, METH_O, "views[slot] = PyInterpreterView_FromCurrent()"},
    {"keep_main_view", keep_main_view, METH_O, "views[slot] = PyInterpreterView_FromMain()"},
    {"keep_guard", keep_guard, METH_O, "guards[slot] = PyInterpreterGuard_FromCurrent()"},
    {"close_guard", close_guard, METH_O, "PyInterpreterGuard_Close(guards[slot])"},
    {"call_on_thread", call_on_thread, METH_VARARGS, "fn() from a new thread, through a view or a guard"},
    {"nest_and_switch", nest_and_switch, METH_VARARGS, "nested Ensures across two interpreters"},
    {"switch_here", switch_here, METH_O, "Ensure through a guard on the calling thread"},
    {"probe_view", probe_view, METH_O, "FromView and EnsureFromView on a kept view"},
    {"mark", mark, METH_O, "log an event"},
    {"events", events, METH_NOARGS, "the logged events"},
    {"hold_guard", hold_guard, METH_VARARGS, "give a guard to a thread that closes it later"},
    {"race_finalize", race_finalize, METH_O, "a thread calling in until the runtime's end"},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot module_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pep788_ext",
    .m_methods = methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit_pep788_ext(void) { return PyModuleDef_Init(&def); }
