/* SPDX-License-Identifier: MIT */
/*
 * PEP 788's interpreter guards (docs/pep788.md): while one is open, the
 * interpreter's end waits for it. Each interpreter entry counts its open
 * guards in one word, as CPython 3.15 counts them in the interpreter:
 *   n -> n+1       gs_guard_take, CAS, never from GS_GUARDS_CLOSED
 *   n -> n-1       gs_guard_put; 1 -> 0 wakes a waiting ender
 *   0 -> CLOSED    gs_guards_drain, CAS, from the interpreter's exit hook;
 *                  while n > 0 it waits, GIL released, for as long as it
 *                  takes (a message after GILSHIM_DRAIN_MS)
 * A guard can be taken while the ender waits (3.15 allows that too), none
 * once the word is CLOSED. The ender changes the interpreter's state (and
 * so refuses callbacks) only after that, so the holder of a guard can
 * still attach while the end waits for it.
 */
#define _GNU_SOURCE
#include "policy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_put_last = PTHREAD_COND_INITIALIZER;
/* Enders waiting: a last guard closed wakes them only if there are any
 * (seq_cst both sides: an ender counted before its check fails is seen,
 * one counted later sees the count at zero). */
static _Atomic int g_waiters;

int gs_guard_take(struct gs_interp *in)
{
    uintptr_t n = atomic_load(&in->guards);
    do {
        if (n == GS_GUARDS_CLOSED)
            return -1;
    } while (!atomic_compare_exchange_weak(&in->guards, &n, n + 1));
    /* An interpreter whose exit hook has not run is never CLOSED: its
     * entry's state tells whether it has gone (every entry is DEAD once
     * the runtime has; main's hook CLOSES every live one first). */
    if (atomic_load(&in->state) != GS_ALIVE || in->generation != gs_generation()) {
        gs_guard_put(in);
        return -1;
    }
    return 0;
}

void gs_guard_put(struct gs_interp *in)
{
    if (atomic_fetch_sub(&in->guards, 1) == 1 && atomic_load(&g_waiters)) {
        /* under the lock: the ender cannot be between its check and its wait */
        pthread_mutex_lock(&g_lock);
        pthread_cond_broadcast(&g_put_last);
        pthread_mutex_unlock(&g_lock);
    }
}

/* 1 once in's guards are CLOSED (by this call or an earlier one). */
static int close_if_none(struct gs_interp *in)
{
    uintptr_t zero = 0;
    return atomic_compare_exchange_strong(&in->guards, &zero, GS_GUARDS_CLOSED) ||
           zero == GS_GUARDS_CLOSED;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Wait on the condition for at most ~100 ms (its clock is CLOCK_REALTIME;
 * elapsed time is measured on CLOCK_MONOTONIC by the caller). */
static void wait_a_while(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&g_put_last, &g_lock, &ts);
}

void gs_guards_drain(struct gs_interp *in)
{
    if (close_if_none(in))
        return;
    long start = now_ms(), warn_at = start + gs_config()->drain_ms;
    int warned = 0;
    /* Holders need this GIL to attach, and to finish what they hold it for. */
    PyThreadState *me = py.SaveThread();
    pthread_mutex_lock(&g_lock);
    atomic_fetch_add(&g_waiters, 1);
    while (!close_if_none(in)) {
        if (!warned && now_ms() >= warn_at) {
            uintptr_t n = atomic_load(&in->guards);
            pthread_mutex_unlock(&g_lock);
            char extra[96];
            snprintf(extra, sizeof extra, "\"interpreter\":%lld,\"guards\":%lu", (long long)in->id,
                     (unsigned long)n);
            gs_logx(GS_LOG_WARN, "guard_wait", extra,
                    "interpreter %lld ends: waiting for %lu open interpreter guard(s) after "
                    "GILSHIM_DRAIN_MS=%ld, for as long as it takes, as CPython 3.15 does; "
                    "every PyInterpreterGuard must be closed", (long long)in->id,
                    (unsigned long)n, gs_config()->drain_ms);
            warned = 1;
            pthread_mutex_lock(&g_lock);
            continue;
        }
        wait_a_while();
    }
    atomic_fetch_sub(&g_waiters, 1);
    pthread_mutex_unlock(&g_lock);
    py.RestoreThread(me);
    if (warned)
        gs_log(GS_LOG_WARN, "interpreter %lld ends: its last guard was closed after %ld ms",
               (long long)in->id, now_ms() - start);
}

struct gs_interp *gs_frame_interp(const struct gs_frame *f)
{
    if (f->row)
        return f->row->interp;
    /* NESTED, REATTACH, or a SWITCH back to a state held lower down: the
     * frame's state is open, so its interpreter is alive */
    return gs_interp_find_ptr(py.ThreadState_GetInterpreter(f->tstate));
}
