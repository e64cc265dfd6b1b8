/* Internal interfaces between the files of src/shim/. */
#ifndef GILSHIM_SHIM_H
#define GILSHIM_SHIM_H

#include "../registry/registry.h"
#include "../../include/gilshim.h"
#include "cpython.h"

/* --- configuration (GILSHIM_*, read once; see README "Environment") --- */
enum gs_mode { GS_MODE_ROUTE = 0, GS_MODE_OFF = 1, GS_MODE_DIAGNOSE = 2 };
enum gs_on_finalize { GS_FIN_PARK = 0, GS_FIN_EXIT = 1, GS_FIN_ABORT = 2 };
enum gs_log_level { GS_LOG_QUIET = 0, GS_LOG_WARN = 1, GS_LOG_INFO = 2, GS_LOG_DEBUG = 3 };

enum gs_patch { GS_PATCH_AUTO = 0, GS_PATCH_ALWAYS = 1, GS_PATCH_NEVER = 2 };

struct gs_config {
    int mode;
    int patch;
    int on_finalize;
    int log_level;
    long drain_ms;
};
GS_HIDDEN const struct gs_config *gs_config(void);

/* --- messages: "gilshim[pid:tid]: ...", stderr or GILSHIM_LOG --- */
GS_HIDDEN void gs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "object(symbol+0xoff)" for a code address, into buf. */
GS_HIDDEN const char *gs_describe_addr(const void *addr, char *buf, size_t len);

/* --- routing core (route.c) --- */
GS_HIDDEN int gs_ensure(const void *caller);
GS_HIDDEN void gs_release(int oldstate, const void *caller);
GS_HIDDEN PyThreadState *gs_this_thread_state(void);
GS_HIDDEN int gs_check(void);
GS_HIDDEN PyThreadState *gs_save_thread(void);
GS_HIDDEN void gs_restore_thread(PyThreadState *t);
/* The owner of a thread about to be created by the calling thread. */
GS_HIDDEN struct gs_interp *gs_creator_owner(void);
/* The routing decision (README "Routing rules") for the calling thread,
 * given what it has attached; interp NULL with GS_RULE_MAIN. */
GS_HIDDEN struct gs_route gs_route_for(struct gs_thread *self, PyThreadState *attached);
GS_HIDDEN const char *gs_rule_name(int rule);
/* Entry for the interpreter of an attached tstate (and place its hook). */
GS_HIDDEN struct gs_interp *gs_interp_of(PyThreadState *t, int attached);
GS_HIDDEN struct gs_interp *gs_main_interp(void);
/* Attach the calling thread's row for in; NULL + *err on failure. */
GS_HIDDEN struct gs_row *gs_row_acquire(struct gs_thread *self, struct gs_interp *in, int *err);
GS_HIDDEN void gs_row_detach(struct gs_row *r);
GS_HIDDEN void gs_fix_stale_tss(struct gs_thread *self);
/* Clear the calling thread's CPython TSS slot if it holds t (detached). */
GS_HIDDEN void gs_unbind_tss(PyThreadState *t);
/* Pop f (the top frame) and undo what its Ensure did. */
GS_HIDDEN void gs_frame_undo(struct gs_thread *self, struct gs_frame *f);
GS_HIDDEN extern __thread struct gs_interp *gs_tl_creator;

/* --- GILSHIM_MODE=diagnose (diagnose.c): stock outcome, reported --- */
GS_HIDDEN int gs_diagnose_ensure(const void *caller);

/* --- how calls reach the shim (gotpatch.c) --- */
enum gs_redirect {
    GS_REDIRECT_NONE = 0,       /* no CPython seen at load */
    GS_REDIRECT_INTERPOSE = 1,  /* our exported names come first */
    GS_REDIRECT_GOT = 2,        /* CPython's come first: import slots rewritten */
    GS_REDIRECT_EXPLICIT = 3,   /* linked by an extension, not preloaded */
};
GS_HIDDEN int gs_redirect_method(void);
/* Hidden aliases of the exported CPython names (interpose.c). */
GS_HIDDEN int gs_entry_Ensure(void);
GS_HIDDEN void gs_entry_Release(int);
GS_HIDDEN void *gs_entry_GetThisThreadState(void);
GS_HIDDEN int gs_entry_Check(void);
GS_HIDDEN void *gs_entry_SaveThread(void);
GS_HIDDEN void gs_entry_RestoreThread(void *);
GS_HIDDEN void gs_patch_loaded_objects(void);

/* --- lifecycle (lifecycle.c) --- */
GS_HIDDEN int gs_runtime_finalizing(void);
/* Called attached to in: make sure in's exit hook is registered. */
GS_HIDDEN void gs_place_exit_hook(struct gs_interp *in);
/* The fail-safe path of PyGILState_Ensure (no error channel). */
GS_HIDDEN void gs_fail_safe(const char *why, const void *caller) __attribute__((noreturn));
GS_HIDDEN void gs_lifecycle_init(void);
/* Delete a tstate owned by another (idle) thread without disturbing the
 * calling thread's CPython TSS slot (the owner's is repaired through its
 * stale_tss mailbox). Caller is attached to the tstate's interpreter. */
GS_HIDDEN void gs_delete_foreign_tstate(PyThreadState *t);

#endif
