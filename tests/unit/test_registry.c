/* SPDX-License-Identifier: MIT */
/* Registry unit tests: linked directly, no Python, each test in its own
 * process (Criterion). Interpreters and thread states are fake pointers. */
#define _GNU_SOURCE  /* pthread_barrier_t */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "registry/registry.h"

static int fake[512];
#define TS(i) ((void *)&fake[i])

Test(route, rules_apply_in_order)
{
    struct gs_interp bound = {0}, creator = {0};
    struct gs_route_in in = {TS(1), TS(2), &bound, &creator};
    cr_assert_eq(gs_route_decide(&in).rule, GS_RULE_ATTACHED);
    cr_assert_eq(gs_route_decide(&in).tstate, TS(1));
    in.attached = NULL;
    cr_assert_eq(gs_route_decide(&in).rule, GS_RULE_RELEASED);
    cr_assert_eq(gs_route_decide(&in).tstate, TS(2));
    in.released = NULL;
    cr_assert_eq(gs_route_decide(&in).interp, &bound);
    in.bound = NULL;
    cr_assert_eq(gs_route_decide(&in).rule, GS_RULE_CREATOR);
    in.creator = NULL;
    struct gs_route r = gs_route_decide(&in);
    cr_assert_eq(r.rule, GS_RULE_MAIN);
    cr_assert_null(r.interp);
}

Test(released, nested_regions_close_innermost_first)
{
    struct gs_thread *t = gs_thread_self();
    cr_assert_null(gs_released_top(t));
    gs_released_push(t, TS(1));
    gs_released_push(t, TS(1));  /* re-attached by a callback, released again */
    gs_released_restore(t, TS(1));
    cr_assert_eq(gs_released_top(t), TS(1), "the outer region is still open");
    gs_released_restore(t, TS(1));
    cr_assert_null(gs_released_top(t));
}

Test(released, switching_to_another_state_abandons_regions)
{
    struct gs_thread *t = gs_thread_self();
    gs_released_push(t, TS(1));  /* sub detached ... */
    gs_released_restore(t, TS(2));  /* ... main attached instead */
    cr_assert_null(gs_released_top(t));
    gs_released_push(t, TS(1));
    gs_released_push(t, TS(2));
    gs_released_restore(t, TS(1));  /* closes TS(2)'s region inside it too */
    cr_assert_null(gs_released_top(t));
}

Test(released, overflow_is_counted)
{
    struct gs_thread *t = gs_thread_self();
    for (int i = 0; i < GS_RELEASED_MAX + 5; i++)
        gs_released_push(t, TS(i % 16));
    for (int i = 0; i < 5; i++)
        gs_released_restore(t, TS(0));
    cr_assert_eq(t->nreleased, GS_RELEASED_MAX);
}

Test(frames, tokens_stay_valid_across_chunks)
{
    struct gs_thread *t = gs_thread_self();
    struct gs_frame *f[100];
    for (int i = 0; i < 100; i++) {
        f[i] = gs_frame_push(t);
        f[i]->kind = GS_FRAME_NESTED;
        f[i]->tstate = TS(i % 16);
    }
    size_t idx;
    cr_assert(gs_frame_lookup(t, f[70], &idx));
    cr_assert_eq(idx, 70);
    for (int i = 99; i >= 0; i--) {
        cr_assert_eq(gs_frame_top(t), f[i]);
        gs_frame_pop(t);
        cr_assert_not(gs_frame_lookup(t, f[i], NULL), "a released token is not live");
    }
    cr_assert_null(gs_frame_top(t));
}

Test(rows, one_per_interpreter_and_freed_with_the_thread)
{
    struct gs_thread *t = gs_thread_self();
    struct gs_interp *a = gs_interp_intern(TS(1), 1), *b = gs_interp_intern(TS(2), 2);
    cr_assert_eq(gs_interp_intern(TS(1), 1), a, "interned once");
    size_t base = gs_row_count();
    struct gs_row *ra = gs_row_add(t, a, TS(3), GS_ROW_IDLE);
    struct gs_row *rb = gs_row_add(t, b, TS(4), GS_ROW_IDLE);
    cr_assert_eq(gs_row_find(t, a), ra);
    cr_assert_eq(gs_row_find(t, b), rb);
    cr_assert(gs_row_is_mine(t, TS(3)));
    cr_assert_not(gs_row_is_mine(t, TS(5)));
    cr_assert_eq(gs_row_count(), base + 2);
    size_t with_two = gs_registry_bytes();
    cr_assert_geq(with_two, sizeof *t, "the record, which holds the first rows");
    atomic_store(&ra->state, GS_ROW_DEAD);
    gs_row_prune(t);
    cr_assert_null(gs_row_find(t, a));
    cr_assert_eq(gs_row_count(), base + 1);
    gs_thread_teardown(t);
    cr_assert_eq(gs_row_count(), base);
    cr_assert_eq(gs_registry_bytes(), 0, "no bytes held after the thread goes");
    cr_assert_null(gs_thread_peek());
}

Test(rows, more_than_the_record_holds_reuse_their_slots)
{
    struct gs_thread *t = gs_thread_self();
    enum { N = 3 * GS_ROW_BLOCK + 1 };
    struct gs_interp *in[N];
    struct gs_row *r[N];
    size_t base = gs_row_count(), alone = gs_registry_bytes();
    for (int k = 0; k < N; k++) {
        in[k] = gs_interp_intern(TS(100 + k), 100 + k);
        r[k] = gs_row_add(t, in[k], TS(200 + k), GS_ROW_IDLE);
        cr_assert(r[k]);
        for (int j = 0; j < k; j++)
            cr_assert_neq(r[j], r[k], "rows %d and %d share a slot", j, k);
    }
    for (int k = 0; k < N; k++) {
        cr_assert_eq(gs_row_find(t, in[k]), r[k]);
        cr_assert_eq(r[k]->tstate, TS(200 + k), "row %d kept its state", k);
    }
    cr_assert_eq(gs_row_count(), base + N);
    size_t full = gs_registry_bytes();
    cr_assert_geq(full, alone + 3 * sizeof(struct gs_row_block), "three blocks beyond the record");
    /* rows that go leave slots that the next rows take: no more memory */
    for (int k = 0; k < N; k += 2)
        atomic_store(&r[k]->state, GS_ROW_DEAD);
    gs_row_prune(t);
    for (int k = 0; k < N; k += 2) {
        struct gs_row *again = gs_row_add(t, in[k], TS(300 + k), GS_ROW_IDLE);
        cr_assert(again);
        cr_assert_eq(gs_row_find(t, in[k]), again);
    }
    for (int k = 1; k < N; k += 2)
        cr_assert_eq(gs_row_find(t, in[k])->tstate, TS(200 + k), "row %d untouched", k);
    cr_assert_eq(gs_registry_bytes(), full);
    cr_assert_eq(gs_row_count(), base + N);
    gs_thread_teardown(t);
    cr_assert_eq(gs_row_count(), base);
    cr_assert_eq(gs_registry_bytes(), 0, "no bytes held after the thread goes");
}

/* A row whose thread state could not be made (PyThreadState_New failed)
 * goes at once: the next call for its interpreter adds one again. */
Test(rows, a_row_that_never_held_a_state_is_forgotten)
{
    struct gs_thread *t = gs_thread_self();
    struct gs_interp *a = gs_interp_intern(TS(400), 400), *b = gs_interp_intern(TS(401), 401);
    size_t base = gs_row_count();
    struct gs_row *ra = gs_row_add(t, a, TS(410), GS_ROW_IDLE);
    struct gs_row *rb = gs_row_add(t, b, NULL, GS_ROW_BUSY);
    t->fast_row = rb;
    atomic_store(&rb->state, GS_ROW_DEAD);
    gs_row_forget(t, rb);
    cr_assert_null(gs_row_find(t, b));
    cr_assert_null(t->fast_row);
    cr_assert_eq(gs_row_find(t, a), ra);
    cr_assert_eq(gs_row_count(), base + 1);
    struct gs_row *again = gs_row_add(t, b, TS(411), GS_ROW_IDLE);
    cr_assert_eq(again, rb, "its slot is taken again");
    cr_assert_eq(gs_row_find(t, b), again);
    gs_thread_teardown(t);
    cr_assert_eq(gs_row_count(), base);
}

static void *exiting_thread(void *p)
{
    struct gs_interp *in = p;
    struct gs_thread *t = gs_thread_self();
    gs_row_add(t, in, TS(7), GS_ROW_IDLE);
    return NULL;
}

static _Atomic int reaped;
static void count_reap(struct gs_thread *t) { atomic_fetch_add(&reaped, (int)t->nrows); }

Test(rows, thread_exit_reaps_and_frees)
{
    gs_set_thread_reaper(count_reap);
    struct gs_interp *in = gs_interp_intern(TS(1), 1);
    size_t before = gs_thread_count();
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, exiting_thread, in);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&reaped), 8);
    cr_assert_eq(gs_thread_count(), before);
    cr_assert_eq(gs_row_count(), 0);
}

Test(interps, runtime_end_kills_views_and_rows)
{
    struct gs_thread *t = gs_thread_self();
    uint64_t g = gs_generation();
    struct gs_interp *in = gs_interp_intern(TS(1), 0);
    struct gs_row *r = gs_row_add(t, in, TS(2), GS_ROW_IDLE);
    cr_assert_eq(gs_interp_find_view(0, g), in);
    gs_runtime_ended();
    cr_assert_eq(atomic_load(&in->state), GS_DEAD);
    cr_assert_eq(atomic_load(&r->state), GS_ROW_DEAD);
    cr_assert_eq(gs_generation(), g + 1);
    cr_assert_null(gs_interp_find_view(0, g + 1), "ids restart; old views stay invalid");
    cr_assert_neq(gs_interp_intern(TS(1), 0), in, "same address, new runtime: a new entry");
}

/* The row protocol of registry.h: an owner attaching and an ender sweeping
 * never both proceed. */
static struct gs_interp proto_in;
static struct gs_row proto_row;
static _Atomic int owner_in, ender_deleted, conflicts;

static void *owner(void *p)
{
    (void)p;
    for (int i = 0; i < 200000; i++) {
        int idle = GS_ROW_IDLE;
        if (!atomic_compare_exchange_strong(&proto_row.state, &idle, GS_ROW_BUSY))
            return NULL;  /* dead */
        if (atomic_load(&proto_in.state) != GS_ALIVE) {
            atomic_store(&proto_row.state, GS_ROW_IDLE);
            return NULL;
        }
        atomic_store(&owner_in, 1);
        if (atomic_load(&ender_deleted))
            atomic_fetch_add(&conflicts, 1);
        atomic_store(&owner_in, 0);
        atomic_store(&proto_row.state, GS_ROW_IDLE);
    }
    return NULL;
}

Test(protocol, owner_and_ender_exclude_each_other, .timeout = 30)
{
    for (int round = 0; round < 50; round++) {
        atomic_store(&proto_in.state, GS_ALIVE);
        atomic_store(&proto_row.state, GS_ROW_IDLE);
        atomic_store(&ender_deleted, 0);
        pthread_t th;
        pthread_create(&th, NULL, owner, NULL);
        for (volatile int spin = 0; spin < round * 100; spin++)
            ;
        atomic_store(&proto_in.state, GS_ENDING);
        for (;;) {
            int idle = GS_ROW_IDLE;
            if (atomic_compare_exchange_strong(&proto_row.state, &idle, GS_ROW_DEAD))
                break;
        }
        atomic_store(&ender_deleted, 1);
        if (atomic_load(&owner_in))
            atomic_fetch_add(&conflicts, 1);
        pthread_join(th, NULL);
    }
    cr_assert_eq(atomic_load(&conflicts), 0);
}

static pthread_barrier_t g_forked;

/* A thread that has a record and rows and is still running when the
 * process forks; it never ends, as it would not exist in the child. */
static void *other_thread_with_rows(void *interp)
{
    gs_row_add(gs_thread_self(), interp, TS(14), GS_ROW_IDLE);
    pthread_barrier_wait(&g_forked);
    for (;;)
        pause();
    return NULL;
}

Test(fork, child_keeps_only_its_thread_and_its_attached_row)
{
    struct gs_interp *main_in = gs_interp_intern(TS(10), 0), *sub = gs_interp_intern(TS(11), 1);
    struct gs_thread *me = gs_thread_self();
    gs_row_add(me, main_in, TS(12), GS_ROW_BUSY);  /* attached when it forks */
    gs_row_add(me, sub, TS(13), GS_ROW_IDLE);
    pthread_t th;
    pthread_barrier_init(&g_forked, NULL, 2);
    cr_assert(pthread_create(&th, NULL, other_thread_with_rows, main_in) == 0);
    pthread_barrier_wait(&g_forked);
    cr_assert_eq(gs_thread_count(), 2);
    cr_assert_eq(gs_row_count(), 3);
    /* what the pthread_atfork child handler does, without forking */
    gs_registry_after_fork_child(TS(12), TS(10));
    cr_assert_eq(gs_thread_count(), 1);
    cr_assert_eq(gs_row_count(), 1, "only the attached row survives");
    cr_assert_not_null(gs_row_find(me, main_in));
    cr_assert_null(gs_row_find(me, sub));
    cr_assert_eq(atomic_load(&sub->state), GS_DEAD, "CPython deletes sub-interpreters in the child");
    cr_assert_eq(atomic_load(&main_in->state), GS_ALIVE);
}

/* Thread states left by exited threads: claimed one at a time, each claim
 * hidden from a delete made elsewhere, which takes only unclaimed ones. */
Test(orphans, claimed_once_and_taken_only_unclaimed)
{
    struct gs_interp *in = gs_interp_intern((void *)0x7100, 71);
    struct gs_thread *me = gs_thread_self();
    cr_assert(in && me);
    int a, b, c;
    size_t before = gs_orphan_count();
    int cleared = -1;
    cr_assert_eq(gs_orphan_push(in, me, &a), 0);
    cr_assert_eq(gs_orphan_push(in, me, &b), 0);
    cr_assert_eq(gs_orphan_push(in, me, &c), 0);
    cr_assert_eq(gs_orphan_count(), before + 3);
    void *first = gs_orphan_claim(in, &cleared);
    cr_assert(first == &a || first == &b || first == &c);
    cr_assert_eq(cleared, 0);
    cr_assert_eq(gs_orphan_take(in, first), 2, "a claimed orphan is its reaper's");
    void *other = first == &b ? &c : &b;
    cr_assert_eq(gs_orphan_take(in, other), 1, "an unclaimed one is taken out");
    cr_assert_eq(gs_orphan_take(in, other), 0);
    gs_orphan_done(in, first);
    cr_assert_eq(gs_orphan_take(in, first), 0);
    void *last = gs_orphan_claim(in, &cleared);
    cr_assert(last && last != first && last != other);
    cr_assert_null(gs_orphan_claim(in, &cleared), "nothing left unclaimed");
    gs_orphan_done(in, last);
    cr_assert_null(atomic_load(&in->orphans));
    cr_assert_eq(gs_orphan_count(), before);
}

/* A state cleared by a PyThreadState_Delete caller (cffi) while its exited
 * owner was leaving it as an orphan: whichever way the delete tells of the
 * clear, its reaper gets the entry as cleared, and only deletes it. */
Test(orphans, a_clear_from_outside_reaches_the_reaper)
{
    struct gs_interp *in = gs_interp_intern((void *)0x7300, 73);
    struct gs_thread *me = gs_thread_self();
    cr_assert(in && me);
    int a, b, d;
    int cleared = -1;
    /* the mailbox written before the push */
    atomic_store(&me->stale_tss, &a);
    cr_assert_eq(gs_orphan_push(in, me, &a), 0);
    atomic_store(&me->stale_tss, NULL);
    /* the delete found the row BUSY, after the push: marked */
    cr_assert_eq(gs_orphan_push(in, me, &b), 0);
    cr_assert(gs_orphan_mark_cleared(in, &b));
    /* nothing came from outside */
    cr_assert_eq(gs_orphan_push(in, me, &d), 0);
    cr_assert_not(gs_orphan_mark_cleared(in, &cleared), "no entry, nothing marked");
    int seen = 0;
    void *t;
    while ((t = gs_orphan_claim(in, &cleared))) {
        cr_assert_eq(cleared, t != &d, "orphan %c", t == &a ? 'a' : t == &b ? 'b' : 'd');
        gs_orphan_done(in, t);
        seen++;
    }
    cr_assert_eq(seen, 3);
}

Test(orphans, forgotten_when_the_runtime_ends)
{
    struct gs_interp *in = gs_interp_intern((void *)0x7200, 72);
    int a;
    cr_assert_eq(gs_orphan_push(in, gs_thread_self(), &a), 0);
    gs_runtime_ended();
    cr_assert_null(atomic_load(&in->orphans));
    cr_assert_eq(gs_orphan_count(), 0);
}
