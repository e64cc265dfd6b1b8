/* SPDX-License-Identifier: MIT */
/*
 * Where CPython binds a thread state to its OS thread for PyGILState: found,
 * read and cleared here, for the policy above. Facts and mechanisms only.
 */
#define _GNU_SOURCE
#include "cpython.h"
#include "../../registry/registry.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*
 * CPython's gilstate TSS slot: a pthread key ("autoTSSkey") through 3.14,
 * a thread-local word of libpython (_Py_tss_gilstate) from 3.15. Deleting
 * a thread state that another thread's slot points to leaves that slot
 * dangling, and on 3.12+ PyThreadState_Delete also clears the *calling*
 * thread's slot. Neither is exported, so find it once: the only key, or
 * the only word of libpython's thread-local block, whose value on this
 * thread is the thread state CPython reports as this thread's. A word is
 * looked for only while nothing is attached, since the attached-state word
 * then holds the same state.
 */
pthread_key_t gs_tss_key;
_Atomic int gs_tss_key_state;
static long g_word_off;
static _Atomic int g_word_tries;
static GS_TLS void **tl_word;

void **gs_tss_word(void)
{
    if (__builtin_expect(tl_word != NULL, 1))
        return tl_word;
    size_t size;
    char *block = gs_py_tls_block(&size);
    return block ? (tl_word = (void **)(block + g_word_off)) : NULL;
}

static void not_identified(int n)
{
    atomic_store(&gs_tss_key_state, 2);
    gs_log(GS_LOG_INFO, "CPython's thread-state %s not identified (%d candidates); "
           "threads whose cached state an interpreter end deletes keep a stale slot",
           py.port->gilstate_in_tls ? "word" : "key", n);
}

static void discover_tss_word_of(void *mine)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    size_t size = 0;
    char *block;
    if (py.UncheckedGet() || !(block = gs_py_tls_block(&size)))
        return;  /* not now: another try on a later call */
    pthread_mutex_lock(&lock);
    if (!atomic_load(&gs_tss_key_state)) {
        int n = 0;
        size_t found = 0;
        for (size_t o = 0; o + sizeof(void *) <= size; o += sizeof(void *))
            if (*(void *const *)(block + o) == mine) {
                found = o;
                n++;
            }
        if (n == 1) {
            g_word_off = (long)found;
            atomic_store(&gs_tss_key_state, 1);
        } else if (atomic_fetch_add(&g_word_tries, 1) >= 16) {
            not_identified(n);
        }
    }
    pthread_mutex_unlock(&lock);
}

static void discover_tss_key_of(void *mine)
{
    if (atomic_load(&gs_tss_key_state) || !mine)
        return;
    if (py.port->gilstate_in_tls) {
        discover_tss_word_of(mine);
        return;
    }
    int found = -1, n = 0;
    for (int k = 0; k < 1024; k++)
        if (pthread_getspecific((pthread_key_t)k) == mine) {
            found = k;
            n++;
        }
    if (n == 1) {
        gs_tss_key = (pthread_key_t)found;
        atomic_store(&gs_tss_key_state, 1);
    } else {
        not_identified(n);
    }
}

PyThreadState *gs_tss_get_slow(void)
{
    PyThreadState *mine = py.GILState_GetThisThreadState();
    /* the first thread seen with a bound state finds the key for all */
    discover_tss_key_of(mine);
    return mine;
}


/*
 * The slot read in memory, for the fast paths: on 3.12+ reading it is the
 * one check left on the way to a cached state (rule 2 must see a state the
 * thread bound there itself), and pthread_getspecific is a call. glibc keeps
 * a thread's first 32 key values in its descriptor (pthread_self()) and
 * publishes where, for libthread_db: the _thread_db_* descriptors gdb reads
 * thread-specific data with ({size in bits, count, offset} each). The
 * layout is checked on the shim's own key, whose value is known, before it
 * is used. The key's sequence number is not checked, so a value left from
 * a deleted key reads as still set: that only sends the call to the
 * general path, which reads the slot properly (ensure_row_tss).
 */
static _Atomic int g_slot_state;  /* 0 unknown, 1 usable, 2 not */
static size_t g_specific_off, g_block_keys, g_stride, g_data_off;

static void *const *slot_of(pthread_key_t key)
{
    if (key >= g_block_keys)
        return NULL;  /* not in the descriptor's own first block */
    char *const *level1 = (char *const *)((char *)pthread_self() + g_specific_off);
    return level1[0] ? (void *const *)(level1[0] + key * g_stride + g_data_off) : NULL;
}

/* 1 if the layout checks out, -1 if it cannot, 0 if it cannot be told yet
 * (the values it could be checked on are out of the first block, or NULL). */
static int slot_layout(struct gs_thread *self)
{
    void *libc = gs_real_dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    const uint32_t *spec = libc ? dlsym(libc, "_thread_db_pthread_specific") : NULL;
    const uint32_t *l2 = libc ? dlsym(libc, "_thread_db_pthread_key_data_level2_data") : NULL;
    const uint32_t *data = libc ? dlsym(libc, "_thread_db_pthread_key_data_data") : NULL;
    if (!spec || !l2 || !data || data[0] != 8 * sizeof(void *) || !l2[0] || l2[0] % 8 || !l2[1])
        return -1;
    g_specific_off = spec[2];
    g_block_keys = l2[1];
    g_stride = l2[0] / 8;
    g_data_off = data[2];
    /* a key whose value is known and not NULL: the shim's own (its
     * record), else CPython's if it is set */
    pthread_key_t key;
    void *value = self;
    if (!gs_thread_key(&key) || key >= g_block_keys || pthread_getspecific(key) != value) {
        key = gs_tss_key;
        value = pthread_getspecific(key);
        if (key >= g_block_keys)
            return -1;
        if (!value)
            return 0;
    }
    void *const *slot = slot_of(key);
    return slot && *slot == value ? 1 : -1;
}

int gs_reads_tss_directly(void)
{
    if (gs_py_state() == GS_PY_PRESENT && py.port->gilstate_in_tls)
        return atomic_load(&gs_tss_key_state) == 1;
    return atomic_load(&g_slot_state) == 1;
}

void gs_learn_tss_slot(struct gs_thread *self)
{
    self->tss_slot = NULL;  /* the key may have changed since */
    int s = atomic_load_explicit(&g_slot_state, memory_order_acquire);
    if (atomic_load_explicit(&gs_tss_key_state, memory_order_acquire) != 1)
        return;
    if (py.port->gilstate_in_tls) {
        self->tss_slot = (void *const *)gs_tss_word();
        return;
    }
    if (s == 2)
        return;
    if (s == 0) {
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&lock);
        if (!(s = atomic_load(&g_slot_state))) {
            int k = slot_layout(self);
            s = k > 0 ? 1 : k < 0 ? 2 : 0;
            atomic_store_explicit(&g_slot_state, s, memory_order_release);
            if (s == 2)
                gs_log(GS_LOG_INFO, "glibc's thread-specific data layout not identified; "
                       "CPython's TSS slot is read with pthread_getspecific");
        }
        pthread_mutex_unlock(&lock);
    }
    void *const *slot;
    /* Written again through glibc first: a thread that never set the key
     * holds an old sequence number with it, and a value written in memory
     * (gs_gilstate_bind) would read as NULL. */
    pthread_setspecific(gs_tss_key, pthread_getspecific(gs_tss_key));
    if (s == 1 && (slot = slot_of(gs_tss_key)) && *slot == pthread_getspecific(gs_tss_key))
        self->tss_slot = slot;
}

void gs_gilstate_bind_slow(PyThreadState *t)
{
    if (atomic_load_explicit(&gs_tss_key_state, memory_order_acquire) != 1 || gs_tss_read())
        return;  /* CPython binds it as it attaches it */
    gs_tss_write(t);
    *gs_status_word(t) |= py.bound_gilstate_mask;
}

void gs_gilstate_rebind_foreign(void *const *slot, PyThreadState *t)
{
    /* The owner binds before it waits for the GIL; a clear under the GIL
     * is a read-modify-write of the same word. Seen in the owner's slot,
     * its own OR is done or still to come: either way the flag ends set. */
    if (py.bound_gilstate_mask && slot && __atomic_load_n((void *const *)slot, __ATOMIC_ACQUIRE) == t)
        __atomic_fetch_or(gs_status_word(t), py.bound_gilstate_mask, __ATOMIC_RELAXED);
}

void gs_bind_to_delete(void *const *slot, PyThreadState *t)
{
    if (py.gilstate_follows) {
        gs_gilstate_bind(slot, t, 0);
        return;
    }
    /* <= 3.11: glibc may have emptied the slot already (thread exit runs
     * the key destructors in turn); a debug build's allocator then finds
     * no GIL (PyGILState_Check) as the state is cleared. Deleting it as
     * the current state empties the slot again. */
    if (atomic_load_explicit(&gs_tss_key_state, memory_order_acquire) == 1 && !gs_tss_read())
        gs_tss_write(t);
}

void gs_gilstate_unbind_slow(PyThreadState *t)
{
    if (__builtin_expect(atomic_load_explicit(&gs_tss_key_state, memory_order_acquire) == 0, 0))
        gs_tss_get_slow();  /* t is detached and bound: the moment to find the slot */
    if (atomic_load_explicit(&gs_tss_key_state, memory_order_acquire) != 1 || gs_tss_read() != (void *)t)
        return;
    gs_tss_write(NULL);
    /* without the flag's place, the flag stays set (release builds ignore
     * it; a debug build's next attach of t asserts) */
    *gs_status_word(t) &= py.bound_gilstate_keep;
}

void gs_learn_gilstate_flag(PyThreadState *t)
{
    static _Atomic int checked;
    const struct gs_port *row = py.port;
    if (!row->bound_gilstate_mask || atomic_exchange(&checked, 1))
        return;
    unsigned w = *(const unsigned *)((const char *)t + row->status_offset);
    /* Attached, fresh from PyThreadState_New: initialized, bound, not
     * unbound, bound_gilstate, active, the first five flags of _status in
     * 3.12-3.15; and the slot names it. */
    if ((w & 0x1fu) == (0x13u | row->bound_gilstate_mask) && row->bound_gilstate_mask == 8 &&
        gs_tss_get() == t) {
        __atomic_store_n(&py.bound_gilstate_keep, ~row->bound_gilstate_mask, __ATOMIC_RELAXED);
        __atomic_store_n(&py.bound_gilstate_mask, row->bound_gilstate_mask, __ATOMIC_RELEASE);
    } else {
        gs_log(GS_LOG_INFO, "a thread state's gilstate flag is not where expected (word %#x at "
               "offset %ld); idle thread states keep it set (CPython's debug builds assert on that)",
               w, row->status_offset);
    }
}

void gs_delete_foreign_tstate(PyThreadState *t, int cleared)
{
    int have_key = atomic_load(&gs_tss_key_state) == 1;
    void *saved = have_key ? gs_tss_read() : NULL;
    /* Still bound to its owner's slot (not an idle row's state, which is
     * unbound): CPython would unbind it from *this* thread's slot, and a
     * debug build asserts there. Its owner's slot is repaired through its
     * stale_tss mailbox. */
    unsigned m = py.bound_gilstate_mask;
    if (m && (*gs_status_word(t) & m) && saved != (void *)t)
        *gs_status_word(t) &= ~m;
    if (!cleared)  /* clearing twice asserts on debug builds; on release ones
                    * it runs the dict's finalizers again */
        py.ThreadState_Clear(t);
    py.ThreadState_Delete(t);
    if (have_key && saved != (void *)t && gs_tss_read() != saved)
        gs_tss_write(saved);
}

