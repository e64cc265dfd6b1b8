/* SPDX-License-Identifier: MIT */
/* The library: knows nothing of Python. */
#include <pthread.h>
#include "ticker.h"

struct job { void (*cb)(void *); void *arg; int n; };

static void *worker(void *p)
{
    struct job *job = p;
    for (int i = 0; i < job->n; i++)
        job->cb(job->arg);
    return NULL;
}

int ticker_run(void (*cb)(void *), void *arg, int n)
{
    struct job job = { cb, arg, n };
    pthread_t t;
    int rc = pthread_create(&t, NULL, worker, &job);
    if (rc == 0)
        rc = pthread_join(t, NULL);
    return rc;
}
