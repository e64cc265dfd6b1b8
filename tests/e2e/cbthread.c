/* SPDX-License-Identifier: MIT */
/* A stand-in for a C library with callbacks (portaudio, GStreamer, ...):
 * it calls back either on a worker thread it creates itself, or
 * synchronously on the caller's thread. Built without Python. */
#include <pthread.h>

typedef int (*callback)(int);

struct work {
    callback cb;
    int arg, result;
};

static void *worker(void *p)
{
    struct work *w = p;
    w->result = w->cb(w->arg);
    return NULL;
}

int cb_on_new_thread(callback cb, int arg)
{
    struct work w = {cb, arg, -1};
    pthread_t th;
    if (pthread_create(&th, NULL, worker, &w))
        return -2;
    pthread_join(th, NULL);
    return w.result;
}

int cb_sync(callback cb, int arg) { return cb(arg); }

/* nthreads threads at once, each calling cb(arg) ncalls times, then
 * exiting: the churn of a real callback library. Returns the sum. */
struct many {
    callback cb;
    int arg, ncalls, sum;
};

static void *many_worker(void *p)
{
    struct many *m = p;
    for (int i = 0; i < m->ncalls; i++)
        m->sum += m->cb(m->arg);
    return NULL;
}

int cb_many_threads(callback cb, int arg, int nthreads, int ncalls)
{
    struct many m[64];
    pthread_t th[64];
    int sum = 0, n = nthreads < 64 ? nthreads : 64, started = 0;
    for (int i = 0; i < n; i++) {
        m[i] = (struct many){cb, arg, ncalls, 0};
        if (pthread_create(&th[i], NULL, many_worker, &m[i]))
            break;
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        sum += m[i].sum;
    }
    return started == n ? sum : -2;
}

/* A worker that outlives the call, as a library's thread pool does: made
 * on the first call, it then serves every call, one at a time, until the
 * process ends. Returns cb(arg) as the worker ran it. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static struct work *pool_job;
static int pool_started;

static void *pool_worker(void *p)
{
    (void)p;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (!pool_job)
            pthread_cond_wait(&pool_cv, &pool_mu);
        struct work *w = pool_job;
        pthread_mutex_unlock(&pool_mu);
        w->result = w->cb(w->arg);
        pthread_mutex_lock(&pool_mu);
        pool_job = NULL;
        pthread_cond_broadcast(&pool_cv);
    }
    return NULL;
}

int cb_pool_call(callback cb, int arg)
{
    struct work w = {cb, arg, -1};
    pthread_t th;
    pthread_mutex_lock(&pool_mu);
    if (!pool_started) {
        if (pthread_create(&th, NULL, pool_worker, NULL)) {
            pthread_mutex_unlock(&pool_mu);
            return -2;
        }
        pthread_detach(th);
        pool_started = 1;
    }
    while (pool_job)
        pthread_cond_wait(&pool_cv, &pool_mu);
    pool_job = &w;
    pthread_cond_broadcast(&pool_cv);
    while (pool_job == &w)
        pthread_cond_wait(&pool_cv, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    return w.result;
}
