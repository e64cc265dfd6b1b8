/* SPDX-License-Identifier: MIT */
/* The extension: ticker.run(callable, n) calls callable n times from the
 * library's thread, through PyGILState_Ensure as every such binding does;
 * ticker.interp_id() says which interpreter the caller runs in. Built
 * multi-phase (loads in any sub-interpreter), or with -DTICKER_SINGLE_PHASE
 * as an extension that CPython refuses in an own-GIL one. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "ticker.h"

static void on_tick(void *arg)
{
    PyGILState_STATE s = PyGILState_Ensure();
    PyObject *r = PyObject_CallObject((PyObject *)arg, NULL);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)arg);
    Py_XDECREF(r);
    PyGILState_Release(s);
}

static PyObject *run(PyObject *self, PyObject *args)
{
    PyObject *cb;
    int n = 1, rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "O|i", &cb, &n))
        return NULL;
    Py_INCREF(cb);
    Py_BEGIN_ALLOW_THREADS
    rc = ticker_run(on_tick, cb, n);
    Py_END_ALLOW_THREADS
    Py_DECREF(cb);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *interp_id(PyObject *self, PyObject *unused)
{
    (void)self; (void)unused;
    return PyLong_FromLongLong(PyInterpreterState_GetID(PyInterpreterState_Get()));
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS, "run(callable, n=1): call it n times from the library's thread"},
    {"interp_id", interp_id, METH_NOARGS, "the id of the calling interpreter"},
    {NULL, NULL, 0, NULL},
};

#ifdef TICKER_SINGLE_PHASE
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "ticker", NULL, -1, methods,
                                 NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit_ticker(void) { return PyModule_Create(&def); }
#else
static PyModuleDef_Slot slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "ticker", NULL, 0, methods,
                                 slots, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit_ticker(void) { return PyModuleDef_Init(&def); }
#endif
