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
