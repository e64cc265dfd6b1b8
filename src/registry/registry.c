/* SPDX-License-Identifier: MIT */
/* Interpreters, thread records, rows, frames: see registry.h. */
#define _GNU_SOURCE
#include "registry.h"

#include "alloc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A plain mutex, not pthread_once or a lazily-initialised lock: the registry
 * is re-entered from CPython code the shim calls (destructors that call
 * PyGILState_Ensure), and must work from the first call of the first thread. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct gs_interp *) g_interps;
static struct gs_thread *g_threads;
static size_t g_nthreads;
_Atomic uint64_t gs_generation_now = 1;
static _Atomic size_t g_nrows;
_Atomic size_t gs_orphans_now;

static pthread_key_t g_key;
static _Atomic int g_key_state;  /* 0 none, 1 creating, 2 ready */
GS_TLS struct gs_thread *gs_tl_self;
static gs_thread_reaper g_reaper;

void gs_registry_lock(void) { pthread_mutex_lock(&g_lock); }
void gs_registry_unlock(void) { pthread_mutex_unlock(&g_lock); }
void gs_set_thread_reaper(gs_thread_reaper fn) { g_reaper = fn; }

/* Under the lock: forget in's orphans, whose states CPython has freed. */
static void orphans_forget(struct gs_interp *in)
{
    struct gs_orphan *o = atomic_load(&in->orphans);
    atomic_store(&in->orphans, NULL);
    while (o) {
        struct gs_orphan *n = o->next;
        free(o);
        atomic_fetch_sub(&gs_orphans_now, 1);
        o = n;
    }
}

void gs_runtime_ended(void)
{
    gs_registry_lock();
    /* DEAD (seq_cst) before ptr goes (relaxed): a finder that still reads
     * the old ptr then reads the state, and may see ALIVE only as it could
     * have had it run just before; the claim protocol then decides. */
    for (struct gs_interp *in = atomic_load(&g_interps); in; in = in->next) {
        orphans_forget(in);
        atomic_store(&in->state, GS_DEAD);
        __atomic_store_n(&in->ptr, NULL, __ATOMIC_RELAXED);
    }
    /* Rows of a finished runtime point to freed memory: mark them dead so
     * no thread, exiting or not, touches them. */
    for (struct gs_thread *t = g_threads; t; t = t->next_thread)
        for (size_t i = 0; i < t->nrows; i++)
            atomic_store(&t->rows[i]->state, GS_ROW_DEAD);
    /* seq_cst, read with acquire (gs_generation): whoever sees the new
     * generation also sees every DEAD above */
    atomic_fetch_add(&gs_generation_now, 1);
    gs_registry_unlock();
}

static struct gs_interp *find_ptr(struct gs_interp *in, void *ptr, uint64_t gen)
{
    for (; in; in = in->next)
        if (__atomic_load_n(&in->ptr, __ATOMIC_RELAXED) == ptr && in->generation == gen &&
            atomic_load(&in->state) != GS_DEAD)
            return in;
    return NULL;
}

struct gs_interp *gs_interp_find_ptr(void *ptr)
{
    return find_ptr(atomic_load_explicit(&g_interps, memory_order_acquire), ptr, gs_generation());
}

struct gs_interp *gs_interp_intern(void *ptr, int64_t id)
{
    uint64_t gen = gs_generation();
    struct gs_interp *in = find_ptr(atomic_load_explicit(&g_interps, memory_order_acquire), ptr, gen);
    if (in && in->id == id)
        return in;
    gs_registry_lock();
    for (in = atomic_load(&g_interps); in; in = in->next) {
        if (in->generation != gen || in->id != id)
            continue;
        if (in->ptr == ptr && atomic_load(&in->state) != GS_DEAD)
            break;
        /* Same id, new address: the old one ended without telling us
         * (no exit hook yet). Ids are never reused within a runtime, so
         * this cannot happen; be safe and retire the stale entry. */
        atomic_store(&in->state, GS_DEAD);
        __atomic_store_n(&in->ptr, NULL, __ATOMIC_RELAXED);
    }
    if (!in && (in = gs_calloc("interpreter entry", 1, sizeof *in))) {
        in->ptr = ptr;
        in->id = id;
        in->generation = gen;
        atomic_init(&in->state, GS_ALIVE);
        in->next = atomic_load(&g_interps);
        /* release: the lock-free finders load the head with acquire and
         * must see the fields above; writers are ordered by the lock */
        atomic_store_explicit(&g_interps, in, memory_order_release);
    }
    gs_registry_unlock();
    return in;
}

struct gs_interp *gs_interp_find_view(int64_t id, uint64_t gen)
{
    struct gs_interp *in = atomic_load_explicit(&g_interps, memory_order_acquire);
    while (in && !(in->id == id && in->generation == gen))
        in = in->next;
    return in;
}

void gs_interp_foreach(void (*fn)(struct gs_interp *, void *), void *arg)
{
    gs_registry_lock();
    for (struct gs_interp *in = atomic_load(&g_interps); in; in = in->next)
        fn(in, arg);
    gs_registry_unlock();
}

/* --- threads --- */

static void thread_destructor(void *p)
{
    struct gs_thread *t = p;
    if (!t)
        return;
    /* Keep gs_tl_self valid while the reaper runs: CPython may call back into
     * the shim (object finalizers calling PyGILState_Ensure). */
    t->in_teardown = 1;
    if (g_reaper)
        g_reaper(t);
    gs_thread_teardown(t);
}

static int key_ready(void)
{
    /* acquire, paired with the release below: 2 means g_key is written */
    int s = atomic_load_explicit(&g_key_state, memory_order_acquire);
    if (s == 2)
        return 1;
    gs_registry_lock();
    if (atomic_load(&g_key_state) == 0) {
        if (pthread_key_create(&g_key, thread_destructor) == 0)
            atomic_store_explicit(&g_key_state, 2, memory_order_release);
    }
    gs_registry_unlock();
    return atomic_load(&g_key_state) == 2;
}

int gs_thread_key(pthread_key_t *key)
{
    if (atomic_load_explicit(&g_key_state, memory_order_acquire) != 2)
        return 0;
    *key = g_key;
    return 1;
}

struct gs_thread *gs_thread_create(void)
{
    struct gs_thread *t;
    if (!key_ready() || !(t = gs_aligned_alloc("thread record", GS_CACHE_LINE, sizeof *t)))
        return NULL;
    memset(t, 0, sizeof *t);
    t->tid = (pid_t)syscall(SYS_gettid);
    atomic_init(&t->stale_tss, NULL);
    gs_registry_lock();
    t->next_thread = g_threads;
    if (g_threads)
        g_threads->prev_thread = t;
    g_threads = t;
    g_nthreads++;
    gs_registry_unlock();
    pthread_setspecific(g_key, t);
    gs_tl_self = t;
    return t;
}

/* Frame chunks and row blocks beyond the ones the record holds. */
static void free_overflow(struct gs_thread *t)
{
    struct gs_frame_chunk *c = t->first_chunk.next;
    while (c) {
        struct gs_frame_chunk *n = c->next;
        free(c);
        c = n;
    }
    struct gs_row_block *b = t->more_rows;
    while (b) {
        struct gs_row_block *n = b->next;
        free(b);
        b = n;
    }
}

void gs_thread_teardown(struct gs_thread *t)
{
    gs_registry_lock();
    if (t->prev_thread)
        t->prev_thread->next_thread = t->next_thread;
    else if (g_threads == t)
        g_threads = t->next_thread;
    if (t->next_thread)
        t->next_thread->prev_thread = t->prev_thread;
    g_nthreads--;
    atomic_fetch_sub(&g_nrows, t->nrows);
    gs_registry_unlock();
    free(t->rows);
    free_overflow(t);
    if (gs_tl_self == t) {
        gs_tl_self = NULL;
        if (atomic_load(&g_key_state) == 2)
            pthread_setspecific(g_key, NULL);
    }
    free(t);
}

void gs_registry_after_fork_child(void *keep_tstate, void *keep_interp)
{
    /* Only the forking thread survives; the others' records describe
     * threads that do not exist here. Their rows' tstates belong to
     * CPython, which PyOS_AfterFork_Child deletes along with every
     * sub-interpreter, so forget them without touching them. */
    pthread_mutex_init(&g_lock, NULL);
    struct gs_thread *t = g_threads, *keep = gs_tl_self;
    while (t) {
        struct gs_thread *n = t->next_thread;
        if (t != keep) {
            atomic_fetch_sub(&g_nrows, t->nrows);
            free(t->rows);
            free_overflow(t);
            free(t);
        }
        t = n;
    }
    g_threads = keep;
    g_nthreads = keep ? 1 : 0;
    uint64_t gen = gs_generation();
    /* Orphans are states of other threads, all deleted by CPython here. */
    for (struct gs_interp *in = atomic_load(&g_interps); in; in = in->next)
        orphans_forget(in);
    for (struct gs_interp *in = atomic_load(&g_interps); in; in = in->next)
        if (in->generation == gen && (!keep_interp || in->ptr != keep_interp)) {
            atomic_store(&in->state, GS_DEAD);
            __atomic_store_n(&in->ptr, NULL, __ATOMIC_RELAXED);
        }
    if (keep) {
        keep->next_thread = keep->prev_thread = NULL;
        keep->tid = (pid_t)syscall(SYS_gettid);
        /* The forking thread's own cached states survive only if attached:
         * CPython keeps the current thread state and deletes the rest. */
        for (size_t i = 0; i < keep->nrows; i++)
            if (keep->rows[i]->tstate != keep_tstate || !keep_tstate)
                atomic_store(&keep->rows[i]->state, GS_ROW_DEAD);
        gs_row_prune(keep);
    }
}

size_t gs_thread_count(void)
{
    gs_registry_lock();
    size_t n = g_nthreads;
    gs_registry_unlock();
    return n;
}

/* --- rows --- */

struct gs_row *gs_row_scan(struct gs_thread *t, struct gs_interp *in)
{
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i]->interp == in) {
            t->last_row = t->rows[i];
            return t->rows[i];
        }
    return NULL;
}

/* A free slot of t's (owner only: slots are taken by their owner and
 * freed by gs_row_prune, which only the owner calls). */
static struct gs_row *free_slot(struct gs_thread *t)
{
    for (size_t k = 0; k < GS_ROW_BLOCK; k++)
        if (!t->row_slots[k].interp)
            return &t->row_slots[k];
    struct gs_row_block **b = &t->more_rows;
    for (; *b; b = &(*b)->next)
        for (size_t k = 0; k < GS_ROW_BLOCK; k++)
            if (!(*b)->r[k].interp)
                return &(*b)->r[k];
    struct gs_row_block *n = gs_aligned_alloc("row block", GS_CACHE_LINE, sizeof *n);
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    gs_registry_lock();  /* gs_registry_bytes walks the blocks */
    *b = n;
    gs_registry_unlock();
    return &n->r[0];
}

static void slot_free(struct gs_row *r)
{
    r->interp = NULL;
    r->tstate = NULL;
    r->tss_note = 0;
    atomic_store(&r->state, GS_ROW_IDLE);
}

struct gs_row *gs_row_add(struct gs_thread *t, struct gs_interp *in, void *tstate, int state)
{
    struct gs_row *r = free_slot(t);
    if (!r)
        return NULL;
    /* Plain writes: no other thread can reach r until it is in t->rows,
     * which is under the lock that every walker of other threads' rows
     * (gs_rows_of_interp) holds; the mutex orders them before any read. */
    r->interp = in;
    r->tstate = tstate;
    atomic_init(&r->state, state);
    gs_registry_lock();
    if (t->nrows == t->caprows) {
        size_t cap = t->caprows ? 2 * t->caprows : 4;
        struct gs_row **n = gs_realloc("row list", t->rows, cap * sizeof *n);
        if (!n) {
            gs_registry_unlock();
            slot_free(r);
            return NULL;
        }
        t->rows = n;
        t->caprows = cap;
    }
    t->rows[t->nrows++] = r;
    /* seq_cst; gs_row_acquire adds the row before making its state, so a
     * thread handed that state later through CPython (under its locks)
     * reads a count of at least one in gs_thread_state_delete */
    atomic_fetch_add(&g_nrows, 1);
    gs_registry_unlock();
    t->last_row = r;
    return r;
}

int gs_row_is_mine(struct gs_thread *t, void *tstate)
{
    if (!t || !tstate)
        return 0;
    struct gs_row *r = t->last_row;
    if (r && r->tstate == tstate)
        return atomic_load(&r->state) != GS_ROW_DEAD;
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i]->tstate == tstate && atomic_load(&t->rows[i]->state) != GS_ROW_DEAD)
            return 1;
    return 0;
}

/* r leaves t's caches and its slot is free again (under the lock, once r
 * is out of t->rows). */
static void row_gone(struct gs_thread *t, struct gs_row *r)
{
    if (t->last_row == r)
        t->last_row = NULL;
    if (t->fast_row == r)
        t->fast_row = NULL;
    for (size_t k = 0; k < GS_VIEW_CACHE; k++)
        if (t->view_rows[k] == r)
            t->view_rows[k] = NULL;
    slot_free(r);
    atomic_fetch_sub(&g_nrows, 1);
}

void gs_row_prune(struct gs_thread *t)
{
    gs_registry_lock();
    size_t j = 0;
    for (size_t i = 0; i < t->nrows; i++) {
        if (atomic_load(&t->rows[i]->state) == GS_ROW_DEAD)
            row_gone(t, t->rows[i]);
        else
            t->rows[j++] = t->rows[i];
    }
    t->nrows = j;
    gs_registry_unlock();
}

void gs_row_forget(struct gs_thread *t, struct gs_row *r)
{
    gs_registry_lock();
    for (size_t i = 0; i < t->nrows; i++)
        if (t->rows[i] == r) {
            memmove(&t->rows[i], &t->rows[i + 1], (t->nrows - i - 1) * sizeof *t->rows);
            t->nrows--;
            row_gone(t, r);
            break;
        }
    gs_registry_unlock();
}

void gs_rows_of_interp(struct gs_interp *in,
                       int (*fn)(struct gs_thread *, struct gs_row *, void *), void *arg)
{
    gs_registry_lock();
    for (struct gs_thread *t = g_threads; t; t = t->next_thread)
        for (size_t i = 0; i < t->nrows; i++)
            if (t->rows[i]->interp == in && fn(t, t->rows[i], arg)) {
                gs_registry_unlock();
                return;
            }
    gs_registry_unlock();
}

size_t gs_row_count(void) { return atomic_load(&g_nrows); }

size_t gs_registry_bytes(void)
{
    size_t bytes = 0;
    gs_registry_lock();
    for (struct gs_thread *t = g_threads; t; t = t->next_thread) {
        bytes += sizeof *t + t->caprows * sizeof *t->rows;
        for (struct gs_frame_chunk *c = t->first_chunk.next; c; c = c->next)
            bytes += sizeof *c;
        for (struct gs_row_block *b = t->more_rows; b; b = b->next)
            bytes += sizeof *b;
    }
    bytes += atomic_load(&gs_orphans_now) * sizeof(struct gs_orphan);
    gs_registry_unlock();
    return bytes;
}

/* --- orphaned thread states --- */

int gs_orphan_push(struct gs_interp *in, struct gs_thread *owner, void *tstate)
{
    struct gs_orphan *o = gs_calloc("orphaned thread state", 1, sizeof *o);
    if (!o)
        return -1;
    o->tstate = tstate;
    gs_registry_lock();
    o->cleared = atomic_load(&owner->stale_tss) == tstate;
    o->next = atomic_load(&in->orphans);
    atomic_store(&in->orphans, o);
    atomic_fetch_add(&gs_orphans_now, 1);
    gs_registry_unlock();
    return 0;
}

/* Under the lock: in's entry for tstate, or NULL. */
static struct gs_orphan *orphan_find(struct gs_interp *in, void *tstate)
{
    struct gs_orphan *o = atomic_load(&in->orphans);
    while (o && o->tstate != tstate)
        o = o->next;
    return o;
}

void *gs_orphan_claim(struct gs_interp *in, int *cleared)
{
    void *t = NULL;
    gs_registry_lock();
    for (struct gs_orphan *o = atomic_load(&in->orphans); o; o = o->next)
        if (!o->claimed) {
            o->claimed = 1;
            t = o->tstate;
            *cleared = o->cleared;
            break;
        }
    gs_registry_unlock();
    return t;
}

int gs_orphan_mark_cleared(struct gs_interp *in, void *tstate)
{
    gs_registry_lock();
    struct gs_orphan *o = orphan_find(in, tstate);
    if (o)
        o->cleared = 1;
    gs_registry_unlock();
    return o != NULL;
}

/* Under the lock: unlink and free in's entry for tstate; where only an
 * unclaimed one may go and it is claimed, mark it cleared instead (the
 * caller, a delete from outside, has cleared it). */
static int orphan_drop(struct gs_interp *in, void *tstate, int only_unclaimed)
{
    struct gs_orphan *o = atomic_load(&in->orphans), *prev = NULL;
    for (; o && o->tstate != tstate; prev = o, o = o->next)
        ;
    if (!o)
        return 0;
    if (o->claimed && only_unclaimed) {
        o->cleared = 1;
        return 2;
    }
    if (prev)
        prev->next = o->next;
    else
        atomic_store(&in->orphans, o->next);
    free(o);
    atomic_fetch_sub(&gs_orphans_now, 1);
    return 1;
}

void gs_orphan_done(struct gs_interp *in, void *tstate)
{
    gs_registry_lock();
    orphan_drop(in, tstate, 0);
    gs_registry_unlock();
}

int gs_orphan_take(struct gs_interp *in, void *tstate)
{
    gs_registry_lock();
    int r = orphan_drop(in, tstate, 1);
    gs_registry_unlock();
    return r;
}

size_t gs_orphan_count(void) { return atomic_load(&gs_orphans_now); }

/* --- frames --- */

struct gs_frame *gs_frame_slot(struct gs_thread *t, size_t i, int grow)
{
    struct gs_frame_chunk *c = &t->first_chunk;
    while (i >= GS_FRAME_CHUNK) {
        if (!c->next) {
            if (!grow || !(c->next = gs_calloc("Ensure frame chunk", 1, sizeof *c->next)))
                return NULL;
        }
        c = c->next;
        i -= GS_FRAME_CHUNK;
    }
    return &c->f[i];
}

struct gs_frame *gs_frame_at(struct gs_thread *t, size_t i)
{
    return t && i < t->depth ? gs_frame_slot(t, i, 0) : NULL;
}

int gs_frame_lookup(struct gs_thread *t, const struct gs_frame *f, size_t *idx)
{
    if (!t || !f)
        return 0;
    size_t base = 0;
    for (struct gs_frame_chunk *c = &t->first_chunk; c; c = c->next, base += GS_FRAME_CHUNK) {
        if (f >= c->f && f < c->f + GS_FRAME_CHUNK) {
            size_t i = base + (size_t)(f - c->f);
            if (i >= t->depth || f->kind == GS_FRAME_FREE)
                return 0;
            if (idx)
                *idx = i;
            return 1;
        }
    }
    return 0;
}

/* --- GIL-released regions --- */

void gs_released_restore_slow(struct gs_thread *t, void *tstate)
{
    if (t->released_overflow && t->nreleased == GS_RELEASED_MAX) {
        /* Regions past the bound were counted, not kept: close the
         * innermost counted one, a fair guess when they nest properly. */
        t->released_overflow--;
        return;
    }
    size_t i = t->nreleased;
    while (i && t->released[i - 1] != tstate)
        i--;
    t->nreleased = i ? i - 1 : 0;
}

/* --- routing --- */

struct gs_route gs_route_decide(const struct gs_route_in *in)
{
    struct gs_route r = {GS_RULE_MAIN, NULL, NULL};
    if (in->attached) {
        r.rule = GS_RULE_ATTACHED;
        r.tstate = in->attached;
    } else if (in->released) {
        r.rule = GS_RULE_RELEASED;
        r.tstate = in->released;
    } else if (in->bound) {
        r.rule = GS_RULE_BOUND;
        r.interp = in->bound;
    } else if (in->creator) {
        r.rule = GS_RULE_CREATOR;
        r.interp = in->creator;
    }
    return r;
}
