/* SPDX-License-Identifier: MIT */
/*
 * A legacy extension that cannot be preloaded against: it calls back from a
 * thread it creates. Two lines make it route correctly without LD_PRELOAD:
 * the include below, and linking with `pkg-config --libs gilshim`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

#include <gilshim/redirect.h>

struct work {
    PyObject *fn;
    long result;
};

static void *worker(void *p)
{
    struct work *w = p;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallNoArgs(w->fn);
    w->result = r ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    PyErr_Clear();
    PyGILState_Release(g);
    return NULL;
}

static PyObject *call_on_new_thread(PyObject *self, PyObject *fn)
{
    (void)self;
    struct work w = {fn, -2};
    pthread_t th;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pthread_create(&th, NULL, worker, &w);
    if (rc == 0)
        pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    if (rc)
        return PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
    return PyLong_FromLong(w.result);
}

static PyObject *redirection(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyUnicode_FromString(gilshim_redirection());
}

static PyMethodDef methods[] = {
    {"call_on_new_thread", call_on_new_thread, METH_O, "call fn() on a new C thread"},
    {"redirection", redirection, METH_NOARGS, "how gilshim is reached in this process"},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "legacy", NULL, 0, methods, slots};

PyMODINIT_FUNC PyInit_legacy(void) { return PyModuleDef_Init(&def); }
