/* SPDX-License-Identifier: MIT */
/*
 * How calls reach the shim: symbol interposition, GOT patching, the dlopen
 * hook. Mechanism only: which names, and the functions they reach, are the
 * entry layer's (docs/architecture.md).
 */
#ifndef GILSHIM_REDIRECT_H
#define GILSHIM_REDIRECT_H

#include "../base/base.h"

/* --- how calls reach the shim (gotpatch.c) --- */
enum gs_redirect {
    GS_REDIRECT_NONE = 0,       /* no CPython seen at load */
    GS_REDIRECT_INTERPOSE = 1,  /* our exported names come first */
    GS_REDIRECT_GOT = 2,        /* CPython's come first: import slots rewritten */
    GS_REDIRECT_EXPLICIT = 3,   /* linked by an extension, not preloaded */
};
GS_HIDDEN int gs_redirect_method(void);
/* A name whose calls are redirected, and where to: the entry layer's own
 * function (a hidden alias, never a symbol another object could win). */
struct gs_redirect_target {
    const char *name;
    void *to;
};
/* At load (the entry layer's constructor): decide how calls reach the
 * shim and, for GOT patching, rewrite the import slots of every object
 * loaded so far for these n names; the table must outlive the process. */
GS_HIDDEN void gs_redirect_init(const struct gs_redirect_target *targets, size_t n);
GS_HIDDEN void gs_patch_loaded_objects(void);

#endif
