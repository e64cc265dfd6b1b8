# SPDX-License-Identifier: MIT
# cython: language_level=3
# A Cython extension that calls back from a thread it starts itself:
# `with gil` in a nogil function is PyGILState_Ensure/Release in the
# generated C (tests/e2e/clients.py, cython-thread).
cdef extern from "pthread.h" nogil:
    ctypedef unsigned long pthread_t
    ctypedef void *(*start_routine)(void *) nogil
    int pthread_create(pthread_t *, const void *, start_routine, void *)
    int pthread_join(pthread_t, void **)

cdef object _fn = None
cdef long _result = -1

cdef void *worker(void *arg) noexcept nogil:
    global _result
    with gil:
        _result = _fn()
    return NULL

def call_on_new_thread(fn):
    global _fn, _result
    cdef pthread_t th
    cdef int rc
    _fn, _result = fn, -1
    with nogil:
        rc = pthread_create(&th, NULL, worker, NULL)
        if rc == 0:
            pthread_join(th, NULL)
    if rc:
        raise OSError(rc, "pthread_create")
    return _result
