/* SPDX-License-Identifier: MIT */
/* Stand-ins for C libraries with threads of their own, for the programs
 * of tests/lifecycle/programs.sh. Built without Python. */
#define _GNU_SOURCE
#include <pthread.h>
#include <time.h>

typedef void (*tick)(void);
typedef void (*tick1)(int);

/* A daemon thread (a meter, a poller): once started it calls back every
 * 0.5 ms until the process ends, and nobody stops it. */
static void *ticker(void *p)
{
    tick cb = (tick)p;
    for (;;) {
        cb();
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int ticker_start(tick cb)
{
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &a, ticker, (void *)cb);
    pthread_attr_destroy(&a);
    return rc;
}

/* A worker pool of one thread, made by the first pool_call and kept for
 * later calls (a thread that outlives the call that created it). */
typedef tick1 job;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static job g_job;
static int g_arg, g_pending;
static unsigned g_done;

static void *pool_worker(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&g_lock);
    for (;;) {
        while (!g_pending)
            pthread_cond_wait(&g_cond, &g_lock);
        job j = g_job;
        int arg = g_arg;
        g_pending = 0;
        pthread_mutex_unlock(&g_lock);
        j(arg);
        pthread_mutex_lock(&g_lock);
        g_done++;
        pthread_cond_broadcast(&g_cond);
    }
    return NULL;
}

/* Run j(arg) on the pool's thread; wait for it unless nowait. */
int pool_call(job j, int arg, int nowait)
{
    static pthread_t th;
    static int started;
    pthread_mutex_lock(&g_lock);
    if (!started) {
        if (pthread_create(&th, NULL, pool_worker, NULL)) {
            pthread_mutex_unlock(&g_lock);
            return -1;
        }
        started = 1;
    }
    g_job = j;
    g_arg = arg;
    g_pending = 1;
    unsigned done = g_done;
    pthread_cond_broadcast(&g_cond);
    while (!nowait && g_done == done)
        pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

/* A device-like library: lib_start makes its thread, which calls back
 * once at once and once more on its way out; lib_stop (called from an
 * atexit function, as such libraries do) stops it and joins it. */
static pthread_t g_dev;
static int g_dev_stop;
static tick1 g_dev_cb;

static void *device(void *unused)
{
    (void)unused;
    g_dev_cb(1);
    pthread_mutex_lock(&g_lock);
    while (!g_dev_stop)
        pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
    g_dev_cb(2);
    return NULL;
}

int lib_start(tick1 cb)
{
    g_dev_cb = cb;
    g_dev_stop = 0;
    return pthread_create(&g_dev, NULL, device, NULL);
}

/* 0 once joined; 1 if the thread has not ended within 3 s */
int lib_stop(void)
{
    pthread_mutex_lock(&g_lock);
    g_dev_stop = 1;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    return pthread_timedjoin_np(g_dev, NULL, &ts) ? 1 : 0;
}
