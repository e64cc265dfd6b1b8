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
