/* SPDX-License-Identifier: MIT */
/*
 * The row protocol (src/registry/registry.h) as spin explores it: owner
 * threads cycling through PyGILState_Ensure/Release on their cached row of
 * one sub-interpreter, the thread that ends it (Py_EndInterpreter, whose
 * atexit callback runs sweep() in src/shim/policy/lifecycle.c), each owner's exit
 * (reap_thread, which leaves the state to the interpreter's orphans for
 * the next holder of its GIL, here the sweep), and cffi freeing the states of exited threads through the
 * interposed PyThreadState_Delete (gs_thread_state_delete).
 *
 * Kept: the row word and its CAS, the interpreter's state word, the GIL as
 * a lock whose release is followed by reads of the state released (drop_gil,
 * CPython gh-104341), the registry mutex rows are added, pruned and walked
 * under, the stale-TSS mailbox that makes an owner prune a row another
 * thread killed, and CPython's "not the last thread" check after the atexit
 * callbacks. Not kept: time. The drain's deadline may pass at any round, as
 * GILSHIM_DRAIN_MS may be 0. docs/row-protocol-model.md lists the rest.
 *
 * Each atomic block is one shared access of the C code (a load, a store, a
 * CAS, a section under the registry lock) with the thread-local work next
 * to it, which commutes with everything else.
 *
 * Properties: assertions P1-P3, and ltl ender_ends for P4.
 *   P1 no state is deleted while its owner uses it: from its call of
 *      PyEval_RestoreThread (take_gil reads the state before it waits) until
 *      its PyEval_SaveThread has returned
 *   P2 no state is deleted or cleared twice, or used once deleted
 *   P3 no state is made or attached in an interpreter that has ended, after
 *      a complete drain or one that gave up
 *   P5 no state the shim cached is left in an ended interpreter unless a
 *      callback was still in flight when the drain gave up
 *   P4 sweep() returns, in every execution
 *
 * Switches (spin -D...): SEED_BUG_EARLY_IDLE, SEED_BUG_REAP_NO_CLAIM,
 * SEED_BUG_CHECK_BEFORE_CLAIM and SEED_BUG_NO_DEADLINE each put in a bug
 * that P1, P2, P3 or P4 must catch (tests/run-model.sh requires it).
 * SEED_BUG_GIVE_UP_ON_SETUP and SEED_BUG_REAP_SKIPS_ENDING put back the
 * two races this model found in the C code (docs/row-protocol-model.md,
 * "Findings"), which P3 and P5 must catch. SEED_BUG_DEAD_BEFORE_PUSH marks an
 * exiting owner's row DEAD before its state is on the orphan list, which
 * the sweep may then miss (P5). SEED_BUG_MAILBOX_ONCE puts back a third
 * race found in the C code (a debug build's assert, cffi-threads on
 * python3.14d): the exiting owner reads its mailbox only before it
 * pushes its state, so cffi's clear just after is missed and the reaper
 * clears the state again (P2). NOWN, NCYCLES, DRAIN_ROUNDS,
 * NO_CFFI and NO_BLOCKING size the model.
 */

#ifndef NOWN
#define NOWN 2          /* owner threads, one row each */
#endif
#ifndef NCYCLES
#define NCYCLES 2       /* Ensure/Release cycles per owner */
#endif
#ifndef DRAIN_ROUNDS
#define DRAIN_ROUNDS 2  /* the deadline passes by this round at the latest */
#endif

/* enum gs_row_state, enum gs_interp_state */
#define IDLE 0
#define BUSY 1
#define DEAD 2
#define ALIVE 0
#define ENDING 1

/* a PyThreadState: not made yet, made, freed */
#define TS_NONE 0
#define TS_LIVE 1
#define TS_GONE 2
#define NTS (2 * NOWN)  /* owner o makes at most two: 2o+1, 2o+2 */

/* GIL holders; owner o is o+1 */
#define FREE 0
#define ENDER (NOWN + 1)
#define CFFI (NOWN + 2)

byte interp = ALIVE;    /* gs_interp.state */
bool ended;             /* Py_EndInterpreter freed the interpreter */
bool aborted;           /* Py_FatalError("not the last thread") */
bool ender_done;        /* sweep() returned */
bool gave_up;           /* ... with callbacks in flight ("ended_in_flight") */
byte gil = FREE;        /* the interpreter's GIL */
bool reglock;           /* g_lock, src/registry/registry.c */

/* one row slot per owner, in its thread record */
bool row_used[NOWN];    /* r->interp set and r in t->rows */
byte row[NOWN];         /* r->state */
byte row_ts[NOWN];      /* r->tstate, 0 for NULL */
byte stale[NOWN];       /* t->stale_tss: the state it names, 0 for NULL */

byte ts[NTS + 1];       /* each PyThreadState */
bool tcleared[NTS + 1]; /* ... PyThreadState_Clear has run on it */
bool use[NTS + 1];      /* its owner uses it (P1) */
bool canary[NTS + 1];   /* cffi's canary is in its dict */
bool zombie[NTS + 1];   /* ... and its thread has exited */
byte nzombies;
/* interp->orphans: a state its exited owner left (gs_orphan_push), 0 not
 * listed, 1 listed, 2 claimed by a reaper (gs_orphan_claim); and whether a
 * delete from outside cleared it (the reaper then only deletes it) */
byte orphan[NTS + 1];
bool ocleared[NTS + 1];

#define ENDED ended

/* PyThreadState_Clear: the dict goes, and with it cffi's canary, which
 * takes itself off the zombie list (thread_canary_dealloc). */
inline clear_state(t) {
    assert(ts[t] == TS_LIVE);   /* P2 */
    assert(!tcleared[t]);       /* P2: cleared once (debug builds assert) */
    tcleared[t] = 1;
    canary[t] = 0;
    if
    :: zombie[t] -> zombie[t] = 0; nzombies--
    :: else
    fi
}

/* A state freed by a thread other than the one using it. */
inline delete_foreign(t) {
    assert(!use[t]);            /* P1 */
    assert(ts[t] == TS_LIVE);   /* P2 */
    ts[t] = TS_GONE
}

/* PyEval_RestoreThread of a row's state. After an abort the ender keeps
 * the GIL: whoever waits for it stops there (the process is gone). */
inline restore_thread(me, t) {
    atomic {
        use[t] = 1;
        assert(!ENDED);         /* P3 */
        assert(ts[t] == TS_LIVE)
    };
    if
    :: atomic { gil == FREE -> gil = me }
    :: aborted -> goto done
    fi
}

/* PyEval_SaveThread: drop_gil unlocks, then still reads the state and its
 * interpreter; the use ends when it returns. */
inline save_thread(t) {
    gil = FREE;
    atomic {
        assert(ts[t] == TS_LIVE);
        use[t] = 0
    }
}

/* the CAS IDLE -> BUSY of gs_row_attach, gs_row_acquire, reap_thread */
inline claim(o, ok) {
    atomic {
        if
        :: row[o] == IDLE -> row[o] = BUSY; ok = 1
        :: else -> ok = 0
        fi
    }
}

/* cffi_thread_shutdown: the thread's last canary, if still alive */
inline make_zombie(t) {
    atomic {
        if
        :: t && canary[t] -> zombie[t] = 1; nzombies++
        :: else
        fi
    }
}

proctype Owner(byte o)
{
    byte me = o + 1, n, t, ct, nts = 2 * o + 1;
    bool ok, cffi_first, cl;
    do
    :: n == NCYCLES -> break
    :: n < NCYCLES ->
        /* PyGILState_Ensure. The row fast path (gs_ensure -> ensure_row ->
         * gs_row_attach; gilshim_ensure's is the same): claim, then the
         * interpreter, seq_cst after the CAS. */
        atomic { n++; ok = row_used[o] && !stale[o] };
        if
        :: ok ->
            claim(o, ok);
            if
            :: ok ->
                atomic {
                    if
                    :: interp == ALIVE -> goto attach
                    :: else -> row[o] = IDLE
                    fi
                }
            :: else
            fi
        :: else
        fi;
        /* ensure_general: a row another thread killed is pruned first
         * (gs_fix_stale_tss -> gs_row_prune, under the registry lock) */
        atomic {
            if
            :: stale[o] && !reglock ->
                stale[o] = 0;
                if
                :: row_used[o] && row[o] == DEAD -> row_used[o] = 0; row_ts[o] = 0
                :: else
                fi
            :: !stale[o]
            fi
        };
        /* gs_row_acquire */
#ifdef SEED_BUG_CHECK_BEFORE_CLAIM
        atomic {
            if
            :: interp != ALIVE -> goto fail
            :: else
            fi
        };
#endif
        if
        :: row_used[o] ->
            claim(o, ok);
            if
            :: !ok -> goto fail         /* EGONE: killed, not pruned */
            :: else
            fi
        :: else ->
            /* gs_row_add: born BUSY without a state, so that a sweep from
             * now on waits for it; published under the registry lock */
            atomic { !reglock -> row_used[o] = 1; row[o] = BUSY; row_ts[o] = 0 }
        fi;
#ifndef SEED_BUG_CHECK_BEFORE_CLAIM
        atomic {
            if
            :: interp != ALIVE ->
                if
                :: row_ts[o] -> row[o] = IDLE
                :: else -> row[o] = DEAD
                fi;
                goto fail
            :: else
            fi
        };
#endif
        if
        :: !row_ts[o] ->
            /* PyThreadState_New(in->ptr), published with release */
            atomic {
                assert(nts <= 2 * o + 2);
                assert(!ENDED);         /* P3 */
                ts[nts] = TS_LIVE;
                row_ts[o] = nts;
                nts++
            }
        :: else
        fi;
attach:
        t = row_ts[o];
        restore_thread(me, t);
#ifndef NO_CFFI
        atomic { canary[t] = 1; ct = t };   /* cffi's gil_ensure */
#endif
#ifndef NO_BLOCKING
        /* the callback may block with the GIL released
         * (Py_BEGIN_ALLOW_THREADS) while its row stays BUSY, for good */
        if
        :: skip
        :: save_thread(t);
            if
            :: restore_thread(me, t)
            :: skip;
end_blocked:    false
            fi
        fi;
#endif
        if
        :: /* PyGILState_Release: gs_row_release (shim.h) */
#ifdef SEED_BUG_EARLY_IDLE
            row[o] = IDLE;
#endif
            save_thread(t);
#ifndef SEED_BUG_EARLY_IDLE
            row[o] = IDLE;
#endif
        :: /* the thread exits with this Ensure open: reap_thread
            * releases the GIL, then its BUSY rows go back to IDLE */
            save_thread(t);
            atomic { if :: row[o] == BUSY -> row[o] = IDLE :: else fi };
            goto leave
        fi
    od;
    /* it lives on, idle, or exits */
    if
    :: goto done
    :: goto leave
    fi;
fail:
    /* gs_fail_safe: GILSHIM_ON_FINALIZE=park blocks holding nothing (abort
     * ends the process), =exit calls pthread_exit */
    if
    :: goto done
    :: goto leave
    fi;
leave:
    /* Its TLS destructors, in either order: cffi's (the canary of a state
     * not yet cleared becomes a zombie) and gilshim's (reap_thread, then
     * gs_thread_teardown unlinks the record and its rows). */
#ifndef NO_CFFI
    if
    :: cffi_first = 1; make_zombie(ct)
    :: cffi_first = 0
    fi;
#endif
    if
    :: row_used[o] ->
#ifdef SEED_BUG_REAP_NO_CLAIM
        ok = row[o] != DEAD;
        if :: ok -> row[o] = BUSY :: else fi;
#else
        claim(o, ok);
#endif
        if
        :: !ok
        :: ok ->
            /* Touch only an interpreter that is alive (the runtime
             * finalizing is not modeled: a sub-interpreter ends here). */
            atomic {
#ifndef SEED_BUG_REAP_SKIPS_ENDING
                if
                :: interp == DEAD || !row_ts[o] -> row[o] = DEAD; goto torn
                :: else
                fi
#else
                if
                :: interp != ALIVE || !row_ts[o] -> row[o] = DEAD; goto torn
                :: else
                fi
#endif
            };
            t = row_ts[o];
            /* the mailbox: cleared already by cffi's delete (find_deleted) */
            atomic { cl = stale[o] == t };
            if
            :: !cl ->
                /* gs_orphan_push under the registry lock, then DEAD: the
                 * state is left to the next holder of the GIL */
#ifdef SEED_BUG_DEAD_BEFORE_PUSH
                row[o] = DEAD;
                atomic { !reglock -> orphan[t] = 1 }
#else
#ifdef SEED_BUG_MAILBOX_ONCE
                atomic { !reglock -> orphan[t] = 1 };
#else
                /* the mailbox read again under the lock cffi's delete
                 * writes it under: before, the entry says so; after, that
                 * delete finds the entry and marks it */
                atomic { !reglock -> orphan[t] = 1; ocleared[t] = stale[o] == t };
#endif
                row[o] = DEAD
#endif
            :: /* out of memory for the entry, or cleared already:
                * RestoreThread, PyThreadState_Clear unless cleared (the
                * mailbox read again with the GIL), DeleteCurrent (which
                * frees the state, then drops the GIL), then DEAD */
                restore_thread(me, t);
                atomic {
                    if
                    :: !cl && stale[o] != t -> clear_state(t)
                    :: else
                    fi
                };
                atomic { assert(ts[t] == TS_LIVE); ts[t] = TS_GONE; use[t] = 0; gil = FREE };
                row[o] = DEAD
            fi
        fi
    :: else
    fi;
torn:
    atomic { !reglock -> row_used[o] = 0 };
#ifndef NO_CFFI
    if
    :: !cffi_first -> make_zombie(ct)
    :: else
    fi;
#endif
done:
    skip
}

/* sweep() in src/shim/policy/lifecycle.c, from the atexit callback inside
 * Py_EndInterpreter: attached, so holding the GIL but while it sleeps. */
proctype Ender()
{
    byte i, busy, nv, rounds, t;
    byte victims[NOWN];
    bool setup, killed;
    atomic { gil == FREE -> gil = ENDER };
    interp = ENDING;
    do
    :: /* gs_rows_of_interp(in, collect, &s): the walk holds the registry
        * lock; each row's CAS can meet its owner's, which does not */
        atomic { !reglock -> reglock = 1; busy = 0; nv = 0; i = 0; setup = 0 };
        do
        :: i == NOWN -> break
        :: i < NOWN ->
            atomic {
                if
                :: !row_used[i]
                :: row_used[i] && row[i] == IDLE ->
                    row[i] = DEAD;
                    if
                    :: row_ts[i] -> victims[nv] = row_ts[i]; nv++; killed = 1
                    :: else
                    fi
                :: row_used[i] && row[i] == BUSY ->
                    busy++;
                    /* a row being made has no state yet; its
                     * PyThreadState_New must not outlast the drain */
                    setup = setup || !row_ts[i]
                :: row_used[i] && row[i] == DEAD
                fi
            };
            /* the owner's TSS slot may hold it: its mailbox */
            atomic {
                if
                :: killed -> stale[i] = row_ts[i]; killed = 0
                :: else
                fi;
                i++
            }
        od;
        reglock = 0;
        /* gs_delete_foreign_tstate: Clear, then Delete, with the GIL */
        do
        :: nv == 0 -> break
        :: nv > 0 -> atomic { nv--; clear_state(victims[nv]); delete_foreign(victims[nv]); victims[nv] = 0 }
        od;
        /* gs_reap_orphans, after the walk: claim one under the lock,
         * delete it with the GIL, drop its entry under the lock */
        do
        :: atomic {
                !reglock -> t = 1;
                do
                :: t <= NTS && orphan[t] != 1 -> t++
                :: t <= NTS && orphan[t] == 1 -> orphan[t] = 2; break
                :: t > NTS -> t = 0; break
                od
            };
            if
            :: t == 0 -> break
            :: else
            fi;
            atomic {
                if
                :: !ocleared[t] -> clear_state(t)
                :: else
                fi;
                delete_foreign(t)
            };
            atomic { !reglock -> orphan[t] = 0; ocleared[t] = 0; t = 0 }
        od;
        if
        :: busy == 0 -> break
        :: busy > 0 ->
            if
#ifdef SEED_BUG_NO_DEADLINE
            :: true
#else
            :: rounds < DRAIN_ROUNDS
#ifndef SEED_BUG_GIVE_UP_ON_SETUP
            :: setup
            :: !setup -> gave_up = 1; break  /* the deadline has passed */
#else
            :: gave_up = 1; break
#endif
#endif
            fi;
            /* callbacks in flight need this GIL to finish */
            gil = FREE;
            atomic { gil == FREE -> gil = ENDER; if :: rounds < DRAIN_ROUNDS -> rounds++ :: else fi }
        fi
    od;
    interp = DEAD;
    /* Py_EndInterpreter, after the atexit callbacks: any state left in the
     * interpreter is fatal; else the interpreter is freed */
    atomic {
        ender_done = 1;
        i = 1;
        do
        :: i <= NTS && ts[i] != TS_LIVE -> i++
        :: i <= NTS && ts[i] == TS_LIVE -> aborted = 1; break
        :: i > NTS -> ended = 1; break
        od;
        /* P5: a state the shim cached is left only with a callback in
         * flight */
        assert(!aborted || gave_up);
        i = 0
    };
    /* back to main, whose GIL this is; a fatal error keeps it */
    if
    :: !aborted -> gil = FREE
    :: else
    fi
}

#ifndef NO_CFFI
/* Another thread's callback: cffi's thread_canary_free_zombies (with the
 * GIL) clears and deletes the states it kept for exited threads, the
 * delete through the interposed one (gs_thread_state_delete). */
proctype Cffi()
{
    byte t, o, k;
    bool found, ours;
    do
    :: k == NOWN -> break
    :: k < NOWN ->
end_wait:
        atomic {
            gil == FREE && nzombies > 0 ->
            gil = CFFI;
            k++;
            t = 1;
            do
            :: t < NTS && !zombie[t] -> t++
            :: zombie[t] -> break
            od;
            clear_state(t);
            found = 0; ours = 0; o = 0
        };
        /* gs_interp_find_ptr finds no DEAD entry: then PyThreadState_Delete
         * straight away; else gs_rows_of_interp(in, find_deleted, &d) */
        atomic {
            !reglock ->
            if
            :: interp == DEAD -> goto real
            :: else
            fi;
            reglock = 1;
            do
            :: o == NOWN -> break
            :: o < NOWN && row_used[o] && row[o] != DEAD && row_ts[o] == t -> found = 1; break
            :: o < NOWN && !(row_used[o] && row[o] != DEAD && row_ts[o] == t) -> o++
            od
        };
        if
        :: found ->
            atomic { if :: row[o] == IDLE -> row[o] = DEAD; ours = 1 :: else fi };
            /* either way the owner's mailbox: the state is cleared */
            stale[o] = t
        :: else
        fi;
        reglock = 0;
        /* gs_orphan_take: an unclaimed orphan is taken out and deleted
         * here; a claimed one is its reaper's, marked cleared.
         * gs_orphan_mark_cleared: where the owner was reaping it, the
         * entry it may have pushed already is marked. */
        atomic {
            !reglock ->
            if
            :: !found && orphan[t] == 1 -> orphan[t] = 0
#ifdef SEED_BUG_MAILBOX_ONCE
            :: !found && orphan[t] == 2 -> found = 1
#else
            :: !found && orphan[t] >= 2 -> found = 1; ocleared[t] = 1
            :: found && !ours && orphan[t] != 0 -> ocleared[t] = 1
#endif
            :: else
            fi
        };
real:
        atomic {
            if
            :: found && !ours   /* its thread is using or reaping it */
            :: else -> delete_foreign(t)
            fi;
            gil = FREE;
            t = 0; o = 0; found = 0; ours = 0
        }
    od
}
#endif

init {
    atomic {
        byte o = 0;
        do
        :: o < NOWN -> run Owner(o); o++
        :: o == NOWN -> break
        od;
        run Ender();
#ifndef NO_CFFI
        run Cffi()
#endif
    }
}

ltl ender_ends { <> ender_done }
