/* SPDX-License-Identifier: MIT */
/*
 * The program tests/check-secure.sh makes setuid root and runs as an
 * unprivileged user: it says which settings gilshim took. Linked with
 * libgilshim, so reading them needs no preload.
 *
 *   secure          AT_SECURE and the mode
 *   secure plain    built with -DWITH_PYTHON: also a foreign thread's
 *                   PyGILState_Ensure, which logs at GILSHIM_LOG_LEVEL=debug
 *   secure late     and then a PyGILState_Ensure after Py_FinalizeEx, for
 *                   GILSHIM_ON_FINALIZE to decide ("late: parked", or abort)
 */
#define _GNU_SOURCE 1
#ifdef WITH_PYTHON
#include <Python.h>
#endif

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

#include "gilshim.h"

#ifdef WITH_PYTHON
static volatile int late_returned;

static void *callback(void *late)
{
    PyGILState_STATE g = PyGILState_Ensure();
    if (late)
        late_returned = 1;
    else if (PyRun_SimpleString("x = 6 * 7"))
        return NULL;
    PyGILState_Release(g);
    return NULL;
}
#endif

int main(int argc, char **argv)
{
    printf("at_secure: %lu\n", getauxval(AT_SECURE));
    printf("mode: %s\n", gilshim_mode());
    fflush(stdout);
#ifdef WITH_PYTHON
    pthread_t th;
    Py_InitializeEx(0);
    pthread_create(&th, NULL, callback, NULL);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    printf("callback: ran\n");
    fflush(stdout);
    if (Py_FinalizeEx() != 0)
        return 1;
    if (argc > 1 && !strcmp(argv[1], "late")) {
        pthread_create(&th, NULL, callback, (void *)1);
        struct timespec ts = {0, 300 * 1000000L};
        nanosleep(&ts, NULL);
        /* a parked thread holds nothing: exit leaves it behind */
        printf("late: %s\n", late_returned ? "returned" : "parked");
        fflush(stdout);
    }
#else
    (void)argc;
    (void)argv;
#endif
    return 0;
}
