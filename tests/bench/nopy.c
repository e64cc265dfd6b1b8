/* SPDX-License-Identifier: MIT */
/*
 * pthread_create + join in a process without Python: run with libgilshim
 * preloaded, the interposed pthread_create (which must find no CPython and
 * step aside) against libc's own, interleaved in one process. Prints
 * "create NS" and "create_real NS" (ns per create+join, best of ROUNDS).
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 7
#define N 2000

static void *nothing(void *p) { return p; }

int main(void)
{
    int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc || !(*(void **)&real = dlsym(libc, "pthread_create")))
        return 1;
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < ROUNDS; r++)
        for (int which = 0; which < 2; which++) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            for (int i = 0; i < N; i++) {
                pthread_t th;
                if ((which ? real : pthread_create)(&th, NULL, nothing, NULL) != 0)
                    abort();
                pthread_join(th, NULL);
            }
            clock_gettime(CLOCK_MONOTONIC, &b);
            double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / N;
            if (ns < best[which])
                best[which] = ns;
        }
    printf("create %.0f\ncreate_real %.0f\n", best[0], best[1]);
    return 0;
}
