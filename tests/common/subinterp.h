/* SPDX-License-Identifier: MIT */
/*
 * Sub-interpreters for the test programs (embed, lifecycle, stress): one
 * way to make them and one way to end them, on every version. Include
 * after Python.h.
 */
#ifndef GILSHIM_TEST_SUBINTERP_H
#define GILSHIM_TEST_SUBINTERP_H

#define HAVE_OWN_GIL (PY_VERSION_HEX >= 0x030C0000)

/* A sub-interpreter with its own GIL (3.12+, own_gil) or main's, left
 * attached on the calling thread; NULL if CPython refused. */
static inline PyThreadState *test_new_sub(int own_gil)
{
#if HAVE_OWN_GIL
    if (own_gil) {
        PyThreadState *sub = NULL;
        PyInterpreterConfig cfg = {
            .use_main_obmalloc = 0, .allow_fork = 0, .allow_exec = 0, .allow_threads = 1,
            .allow_daemon_threads = 0, .check_multi_interp_extensions = 1,
            .gil = PyInterpreterConfig_OWN_GIL,
        };
        if (PyStatus_Exception(Py_NewInterpreterFromConfig(&sub, &cfg)))
            sub = NULL;
        return sub;
    }
#endif
    (void)own_gil;
    return Py_NewInterpreter();
}

/* Move the calling thread from whatever it holds to t (GILs may differ). */
static inline void test_switch_to(PyThreadState *t)
{
    PyEval_SaveThread();
    PyEval_RestoreThread(t);
}

/* End sub from the calling thread and attach back. Py_EndInterpreter
 * returns with no thread state but, when sub shared back's GIL, still
 * holding that GIL. */
static inline void test_end_sub(PyThreadState *sub, PyThreadState *back, int own_gil)
{
    test_switch_to(sub);
    Py_EndInterpreter(sub);
    if (own_gil)
        PyEval_RestoreThread(back);
    else
        PyThreadState_Swap(back);
}

#endif
