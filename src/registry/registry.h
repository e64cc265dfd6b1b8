/* SPDX-License-Identifier: MIT */
/*
 * The registry owns gilshim's state: the interpreters it has seen, one
 * record per OS thread that touched it, that thread's cached thread states
 * (rows), its Ensure frames and its GIL-released regions. It knows nothing
 * of CPython or dlsym: interpreters and thread states are opaque pointers,
 * so it is unit-tested without Python.
 *
 * Concurrency: a thread record is written only by its own thread, except
 * row->state (atomic, see gs_row) and the stale-TSS mailbox. Adding or
 * removing rows, thread records and orphaned thread states happens under
 * one mutex, which the interpreter-end sweep also takes; hot paths never
 * take it.
 */
#ifndef GILSHIM_REGISTRY_H
#define GILSHIM_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GS_HIDDEN __attribute__((visibility("hidden")))
/* Thread-locals are read on every interposed call. initial-exec makes each
 * read one instruction instead of a __tls_get_addr call; the few bytes come
 * from the static TLS surplus glibc keeps for libraries loaded later. */
#define GS_TLS __thread __attribute__((tls_model("initial-exec")))

enum gs_interp_state { GS_ALIVE = 0, GS_ENDING = 1, GS_DEAD = 2 };

/* A thread state whose thread has exited without deleting it: deleting
 * needs its interpreter's GIL, which the thread joining the exiting one
 * may hold (src/shim/policy/lifecycle.c). Whoever next holds that GIL
 * through the shim claims it, deletes it, then drops the entry. */
struct gs_orphan {
    void *tstate;
    int claimed;               /* being deleted (under lock) */
    int cleared;               /* cleared already by a PyThreadState_Delete
                                  caller: only to be deleted (under lock) */
    struct gs_orphan *next;
};

/* One per interpreter seen, per runtime generation. Never freed, so a
 * pointer to it (kept in a child thread's TLS, say) never dangles; its
 * state says whether ptr may still be used. */
struct gs_interp {
    void *ptr;                 /* PyInterpreterState *, only while ALIVE;
                                  read lock-free with __atomic builtins,
                                  relaxed: only compared (find_ptr), and
                                  its state, seq_cst, decides */
    int64_t id;
    uint64_t generation;
    _Atomic int state;
    /* thread states of exited threads, to delete with its GIL (gs_orphan);
     * changed under the lock, read without it as a hint */
    _Atomic(struct gs_orphan *) orphans;
    int hook_registered;       /* its exit hook is in place (under lock) */
    _Atomic int exit_begun;    /* CPython has called its exit hook: the
                                  interpreter's atexit functions are running */
    _Atomic long in_flight;    /* diagnose mode: stock Ensures running in it */
    _Atomic uintptr_t guards;  /* PEP 788 guards open on it, or GS_GUARDS_CLOSED
                                  once its end has passed them (src/shim/policy/guards.c) */
    struct gs_interp *next;    /* set before the entry is published (release,
                                  read with acquire), then fixed */
};

/*
 * A cached thread state of one (thread x interpreter). The state word is
 * the whole protocol between the owning thread and whoever ends the
 * interpreter:
 *   IDLE -> BUSY   owner, CAS, then re-reads interp->state (both seq_cst,
 *                  so owner and ender cannot both miss each other)
 *   BUSY -> IDLE   owner, after it detached
 *   IDLE -> DEAD   ender, CAS; the ender then deletes the thread state
 *   BUSY           the ender waits, GIL released, for IDLE
 *   BUSY -> DEAD   owner at its exit: the tstate deleted, or handed to
 *                  interp->orphans first (gs_orphan_push), which the ender
 *                  empties after each walk of the rows
 * A DEAD row's tstate is never touched again through the row.
 *
 * Memory order, on weakly ordered machines too (aarch64); each is restated
 * where it is used:
 *   - every change of the word is a read-modify-write (CAS) or a store by
 *     the one thread that holds it BUSY, so owner and ender never both win
 *     a row: that needs only the word's single modification order;
 *   - BUSY -> IDLE is a release store, and every CAS that can read that
 *     IDLE acquires: the owner's last use of the state (SaveThread, and
 *     drop_gil's reads after unlocking) happens before the ender's delete;
 *   - the owner's claim and its load of interp->state, and the ender's
 *     ENDING store and its CASes, are seq_cst: not needed for an existing
 *     row (the ender's CAS then reads BUSY by modification order), but they
 *     put the four in one order, which is what the spin model assumes
 *     (docs/row-protocol-model.md, "Memory order");
 *   - a new row is published in t->rows under the registry lock that the
 *     ender walks under, and its tstate with a release store read with
 *     acquire by other threads (find_deleted, collect).
 */
enum gs_row_state { GS_ROW_IDLE = 0, GS_ROW_BUSY = 1, GS_ROW_DEAD = 2 };

/* A thread's rows live in its record, and further ones in blocks it owns:
 * a thread that wakes for a callback finds its rows where its record is.
 * Rows of one thread may share a cache line, as only their owner writes
 * them on the hot paths; record and blocks are line-aligned, so rows of
 * threads running in parallel never do. Slots are reused, never freed,
 * until the thread goes: a row pointer stays valid while the row is. */
#define GS_CACHE_LINE 64
struct gs_row {
    struct gs_interp *interp;  /* NULL: a free slot */
    void *tstate;
    _Atomic int state;
    int tss_note;           /* owner only: what the shim knows of its CPython
                               TSS slot (enum gs_tss_note, src/shim/policy/policy.h);
                               0 when unknown */
} __attribute__((aligned(32)));

#define GS_ROW_BLOCK 8
struct gs_row_block {
    struct gs_row r[GS_ROW_BLOCK];
    struct gs_row_block *next;
} __attribute__((aligned(GS_CACHE_LINE)));

/* Which rule picked the interpreter (docs/routing.md). */
enum gs_rule {
    GS_RULE_NONE = 0,
    GS_RULE_ATTACHED = 1,   /* thread already attached: nest */
    GS_RULE_RELEASED = 2,   /* inside a GIL-released region: re-attach it */
    GS_RULE_BOUND = 3,      /* gilshim_bind_thread */
    GS_RULE_CREATOR = 4,    /* inherited from the creating thread */
    GS_RULE_MAIN = 5,       /* nothing known: main, as stock does */
};

/* What an Ensure did, so that its Release undoes exactly that. */
enum gs_frame_kind {
    GS_FRAME_FREE = 0,
    GS_FRAME_NESTED,        /* was attached; nothing to undo */
    GS_FRAME_REATTACH,      /* re-attached a released tstate; detach it */
    GS_FRAME_ROW,           /* attached a row; detach, row back to IDLE */
    GS_FRAME_SWITCH,        /* explicit: detached prev, attached a row; swap back */
    GS_FRAME_STOCK,         /* stock PyGILState_Ensure ran; stock Release undoes it */
};

/* The fast paths (src/shim/route.c) write only the members their kind
 * uses, and kind, returned and explicit_api at once through tag; prev and
 * counted are read only for the kinds and mode that set them. */
struct gs_frame {
    union {
        struct {
            unsigned char kind;         /* gs_frame_kind */
            unsigned char returned;     /* PyGILState_STATE handed out */
            unsigned char explicit_api; /* from gilshim_ensure: a token;
                                           2: it also holds a guard on its
                                           interpreter (gilshim_ensure_guarded) */
            unsigned char unused;
        };
        uint32_t tag;
    };
    void *tstate;           /* attached by/at this Ensure */
    struct gs_row *row;     /* ROW, SWITCH */
    const void *caller;     /* return address of the Ensure call */
    void *prev;             /* SWITCH: tstate to re-attach on release */
    struct gs_interp *counted;  /* diagnose mode: whose in_flight it counts */
};

/* kind, returned and explicit_api as one word, to write or compare at once */
static inline uint32_t gs_frame_tag(int kind, int returned, int explicit_api)
{
    struct gs_frame f = {.kind = (unsigned char)kind, .returned = (unsigned char)returned,
                         .explicit_api = (unsigned char)explicit_api};
    return f.tag;
}

/* Eight open Ensures inline in the thread record; deeper nesting (rare)
 * allocates more chunks of eight. */
#define GS_FRAME_CHUNK 8
struct gs_frame_chunk {
    struct gs_frame f[GS_FRAME_CHUNK];
    struct gs_frame_chunk *next;
};

#define GS_RELEASED_MAX 16
#define GS_VIEW_CACHE 8

/* What the fast paths (src/shim/route.c, api.c) read comes first, in one
 * cache line; then the view cache and the first frames. A turn of a thread
 * that slept since its last callback then costs few cache misses. */
struct gs_thread {
    size_t depth;                     /* open Ensure frames */
    size_t nreleased;                 /* open GIL-released regions (kept) */
    /* where CPython keeps the thread state attached on this thread
     * (src/shim/port/resolve.c), once known: read directly on the fast paths */
    void *const *py_current;
    /* where glibc keeps this thread's value of CPython's TSS key, once
     * known (src/shim/port/binding.c) */
    void *const *tss_slot;
    /* the row rules 3-5 last gave this thread: the fast path's guess,
     * cleared when the binding changes or the row goes */
    struct gs_row *fast_row;
    /* a tstate deleted (or about to be) by another thread that may sit in this
     * thread's CPython TSS slot; cleared by this thread on its next call */
    _Atomic(void *) stale_tss;
    size_t released_overflow;         /* regions deeper than GS_RELEASED_MAX */
    pid_t tid;
    /* inside PyThreadState_New for one of its rows, which can re-enter
     * PyGILState_Ensure (tracemalloc's allocator hooks do) */
    int in_setup;
    /* gilshim_ensure's guess: the row last used for a view of interpreter
     * id, at id % GS_VIEW_CACHE (ids are small and sequential); checked
     * against the view before use, cleared when the row goes */
    struct gs_row *view_rows[GS_VIEW_CACHE];
    /* Ensure frames: chunks never move, so a frame can be a token */
    struct gs_frame_chunk first_chunk;
    /* GIL-released regions opened through PyEval_SaveThread, innermost
     * last; deeper nesting than GS_RELEASED_MAX is counted, not kept */
    void *released[GS_RELEASED_MAX];
    /* the thread's first GS_ROW_BLOCK row slots; more in more_rows */
    struct gs_row row_slots[GS_ROW_BLOCK];
    struct gs_row_block *more_rows;
    /* the rows in use: pointers into the slots; grows under the registry
     * lock, which whoever walks other threads' rows holds */
    struct gs_row **rows;
    size_t nrows, caprows;
    struct gs_row *last_row;          /* hot-path cache */
    /* rule 3 (rule 4's interpreter lives in TLS set before the thread's
     * start routine runs, see src/shim/interpose.c) */
    struct gs_interp *bound;
    /* interpreters whose exit hook should be placed the next time this
     * thread is attached to them (it learnt of them while detached) */
    struct gs_interp *pending_hook;
    int in_teardown;
    struct gs_thread *next_thread, *prev_thread;
} __attribute__((aligned(GS_CACHE_LINE)));
_Static_assert(offsetof(struct gs_thread, view_rows) == GS_CACHE_LINE,
               "what the fast paths read fits one cache line");

/* gilshim_ensure's cached row for a view of interpreter id */
static inline struct gs_row **gs_view_row(struct gs_thread *t, int64_t id)
{
    return &t->view_rows[(uint64_t)id % GS_VIEW_CACHE];
}

/* --- lifecycle of the registry itself --- */
GS_HIDDEN void gs_registry_lock(void);
GS_HIDDEN void gs_registry_unlock(void);
GS_HIDDEN extern _Atomic uint64_t gs_generation_now;
/* acquire: pairs with gs_runtime_ended's increment, made after every
 * interpreter of the old generation was marked DEAD */
static inline uint64_t gs_generation(void)
{
    return atomic_load_explicit(&gs_generation_now, memory_order_acquire);
}
/* The runtime has gone: every interpreter DEAD, a new generation begins. */
GS_HIDDEN void gs_runtime_ended(void);

/* --- interpreters ---
 * Entries are only ever prepended and never freed, so the finders walk the
 * list without the lock. */
/* Find or add the entry for ptr in the current generation; NULL on ENOMEM. */
GS_HIDDEN struct gs_interp *gs_interp_intern(void *ptr, int64_t id);
GS_HIDDEN struct gs_interp *gs_interp_find_ptr(void *ptr);
GS_HIDDEN struct gs_interp *gs_interp_find_view(int64_t id, uint64_t gen);
GS_HIDDEN void gs_interp_foreach(void (*fn)(struct gs_interp *, void *), void *arg);

/* --- threads --- */
GS_HIDDEN extern GS_TLS struct gs_thread *gs_tl_self;
GS_HIDDEN struct gs_thread *gs_thread_create(void);
/* The calling thread's record, or NULL if it has none yet. */
static inline struct gs_thread *gs_thread_peek(void) { return gs_tl_self; }
/* The calling thread's record, created on first use; NULL on ENOMEM. */
static inline struct gs_thread *gs_thread_self(void)
{
    struct gs_thread *t = gs_tl_self;
    return __builtin_expect(t != NULL, 1) ? t : gs_thread_create();
}
/* The pthread key whose value on each thread is its record (for its exit
 * destructor); 0 until the first record exists. */
GS_HIDDEN int gs_thread_key(pthread_key_t *key);
/* Called by the thread-exit destructor before the record is freed, to
 * destroy the thread's live rows. Set by the shim. */
typedef void (*gs_thread_reaper)(struct gs_thread *);
GS_HIDDEN void gs_set_thread_reaper(gs_thread_reaper fn);
/* Unlink and free the calling thread's record (thread exit, tests). */
GS_HIDDEN void gs_thread_teardown(struct gs_thread *t);
/* fork child: forget every other thread's record (their threads are gone),
 * every interpreter but the one at keep_interp, and the forking thread's
 * rows but the one whose tstate is keep_tstate (both may be NULL). */
GS_HIDDEN void gs_registry_after_fork_child(void *keep_tstate, void *keep_interp);
GS_HIDDEN size_t gs_thread_count(void);

/* --- rows --- */
GS_HIDDEN struct gs_row *gs_row_scan(struct gs_thread *t, struct gs_interp *in);
static inline struct gs_row *gs_row_find(struct gs_thread *t, struct gs_interp *in)
{
    struct gs_row *r = t->last_row;
    return r && r->interp == in ? r : gs_row_scan(t, in);
}
/* A new row in the given gs_row_state; stable address; NULL on ENOMEM. */
GS_HIDDEN struct gs_row *gs_row_add(struct gs_thread *t, struct gs_interp *in, void *tstate,
                                  int state);
GS_HIDDEN int gs_row_is_mine(struct gs_thread *t, void *tstate);
/* Drop DEAD rows of t (owner only). */
GS_HIDDEN void gs_row_prune(struct gs_thread *t);
/* Drop r, a row of t that never held a thread state, whatever its state:
 * its slot is free again and a later gs_row_add may take it (owner only). */
GS_HIDDEN void gs_row_forget(struct gs_thread *t, struct gs_row *r);
/* Under the registry lock: for every row of interp in every thread, call fn.
 * fn returns nonzero to stop. */
GS_HIDDEN void gs_rows_of_interp(struct gs_interp *in,
                                 int (*fn)(struct gs_thread *, struct gs_row *, void *),
                                 void *arg);
GS_HIDDEN size_t gs_row_count(void);
/* Heap held for thread records, their frame chunks and rows. */
GS_HIDDEN size_t gs_registry_bytes(void);

/* --- orphaned thread states (struct gs_orphan) ---
 * Push: tstate, a state of owner's, as an orphan of in: 0, or -1 on ENOMEM
 * (nothing pushed); cleared if owner's stale_tss mailbox names it, read
 * under the registry lock, which find_deleted (src/shim/policy/lifecycle.c)
 * writes it under. Claim: the first unclaimed one's tstate, marked
 * claimed, or NULL, and whether it was cleared; the claimer deletes it
 * (clearing it first unless so) and then calls gs_orphan_done. For a
 * delete from outside the shim, of a state that caller has cleared: take,
 * 1 if tstate was an unclaimed orphan of in (now dropped: the caller
 * deletes it), 2 if it is claimed (now marked cleared: its claimer deletes
 * it), 0 if not an orphan; mark_cleared, where its owner is still reaping
 * it, marks an entry for tstate, if there is one, and says so. */
GS_HIDDEN int gs_orphan_push(struct gs_interp *in, struct gs_thread *owner, void *tstate);
GS_HIDDEN void *gs_orphan_claim(struct gs_interp *in, int *cleared);
GS_HIDDEN void gs_orphan_done(struct gs_interp *in, void *tstate);
GS_HIDDEN int gs_orphan_take(struct gs_interp *in, void *tstate);
GS_HIDDEN int gs_orphan_mark_cleared(struct gs_interp *in, void *tstate);
/* Orphans in all interpreters, claimed or not; read as a hint on hot paths. */
GS_HIDDEN extern _Atomic size_t gs_orphans_now;
GS_HIDDEN size_t gs_orphan_count(void);

/* --- frames --- */
GS_HIDDEN struct gs_frame *gs_frame_slot(struct gs_thread *t, size_t i, int grow);
/* A zeroed frame on top of t's stack; NULL on ENOMEM. */
static inline struct gs_frame *gs_frame_push(struct gs_thread *t)
{
    struct gs_frame *f = __builtin_expect(t->depth < GS_FRAME_CHUNK, 1)
                             ? &t->first_chunk.f[t->depth]
                             : gs_frame_slot(t, t->depth, 1);
    if (f) {
        *f = (struct gs_frame){0};
        t->depth++;
    }
    return f;
}
static inline struct gs_frame *gs_frame_top(struct gs_thread *t)
{
    if (!t || !t->depth)
        return NULL;
    size_t i = t->depth - 1;
    return __builtin_expect(i < GS_FRAME_CHUNK, 1) ? &t->first_chunk.f[i] : gs_frame_slot(t, i, 0);
}
/* Pop f, which the caller has from gs_frame_top(t). */
static inline void gs_frame_drop(struct gs_thread *t, struct gs_frame *f)
{
    f->kind = GS_FRAME_FREE;
    t->depth--;
}
static inline void gs_frame_pop(struct gs_thread *t)
{
    struct gs_frame *f = gs_frame_top(t);
    if (f)
        gs_frame_drop(t, f);
}
/* The open frame at depth index i (0: outermost), or NULL. */
GS_HIDDEN struct gs_frame *gs_frame_at(struct gs_thread *t, size_t i);
/* 1 if f is a live frame of t (a valid token); its depth index in *idx. */
GS_HIDDEN int gs_frame_lookup(struct gs_thread *t, const struct gs_frame *f, size_t *idx);

/* --- GIL-released regions --- */
static inline void gs_released_push(struct gs_thread *t, void *tstate)
{
    if (__builtin_expect(t->nreleased < GS_RELEASED_MAX, 1))
        t->released[t->nreleased++] = tstate;
    else
        t->released_overflow++;
}
/* The thread attaches tstate (PyEval_RestoreThread). If tstate opened one
 * of the open regions, that region and the ones inside it are closed;
 * otherwise the thread switched to another thread state and every open
 * region is abandoned: attached now, it has none until it detaches again. */
GS_HIDDEN void gs_released_restore_slow(struct gs_thread *t, void *tstate);
/* The common case of gs_released_restore: 1 if tstate opened the innermost
 * region, which is now closed; 0, and nothing changed, otherwise. */
static inline int gs_released_close_innermost(struct gs_thread *t, void *tstate)
{
    if (__builtin_expect(t->nreleased && !t->released_overflow &&
                         t->released[t->nreleased - 1] == tstate, 1)) {
        t->nreleased--;
        return 1;
    }
    return 0;
}
static inline void gs_released_restore(struct gs_thread *t, void *tstate)
{
    if (!gs_released_close_innermost(t, tstate))
        gs_released_restore_slow(t, tstate);
}
static inline void *gs_released_top(const struct gs_thread *t)
{
    return t && t->nreleased ? t->released[t->nreleased - 1] : NULL;
}

/* --- the pure routing decision --- */
struct gs_route_in {
    void *attached;                 /* tstate attached on this thread, or NULL */
    void *released;                 /* innermost released tstate, or NULL */
    struct gs_interp *bound;
    struct gs_interp *creator;
};
struct gs_route {
    int rule;                       /* gs_rule */
    void *tstate;                   /* ATTACHED / RELEASED */
    struct gs_interp *interp;       /* BOUND / CREATOR; NULL means main */
};
GS_HIDDEN struct gs_route gs_route_decide(const struct gs_route_in *in);

#endif
