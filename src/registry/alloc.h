/* SPDX-License-Identifier: MIT */
/*
 * Every heap allocation of the shim, and every CPython call that makes a
 * thread state for it, goes through here: the place a test makes them fail.
 *
 * In the shipped library each wrapper is the libc call itself and
 * gs_fault() is the constant 0, so the code compiled is the same as
 * without them. Built with -DGILSHIM_FAULT_INJECTION (tests/run-faults.sh,
 * build/fault/, never installed), each call is counted and the Nth fails:
 * see alloc.c. site names the call in what the test build prints.
 *
 * Python-free and below every layer of src/shim/, so that the registry
 * and each layer above use the same one.
 */
#ifndef GILSHIM_ALLOC_H
#define GILSHIM_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

#ifndef GS_HIDDEN
#define GS_HIDDEN __attribute__((visibility("hidden")))
#endif

#ifdef GILSHIM_FAULT_INJECTION
/* 1 if this call is the one to fail (GILSHIM_TEST_FAIL_ALLOC, alloc.c). */
GS_HIDDEN int gs_fault(const char *site);
#else
#define gs_fault(site) ((void)(site), 0)
#endif

static inline void *gs_malloc(const char *site, size_t n)
{
    return gs_fault(site) ? NULL : malloc(n);
}

static inline void *gs_calloc(const char *site, size_t n, size_t size)
{
    return gs_fault(site) ? NULL : calloc(n, size);
}

static inline void *gs_realloc(const char *site, void *p, size_t n)
{
    return gs_fault(site) ? NULL : realloc(p, n);
}

static inline void *gs_aligned_alloc(const char *site, size_t align, size_t n)
{
    return gs_fault(site) ? NULL : aligned_alloc(align, n);
}

#endif
