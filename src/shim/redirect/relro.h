/* SPDX-License-Identifier: MIT */
/*
 * The pages of PT_GNU_RELRO that glibc made read-only (_dl_protect_relro):
 * both ends rounded down to the run-time page size, so the last, partial
 * page stays writable. It also holds .data when the object was linked for
 * a smaller page than the machine's (4 KiB alignment on a 64 KiB-page arm64
 * kernel): made read-only after a GOT store, the process would fault at its
 * next write there. Pure, for tests/arm64/test_relro.c.
 */
#ifndef GILSHIM_REDIRECT_RELRO_H
#define GILSHIM_REDIRECT_RELRO_H
#include <link.h>
#include <stddef.h>

/* [lo, hi): the read-only span; empty (lo == hi) when RELRO fits in one page */
struct relro_span {
    ElfW(Addr) lo, hi;
};

static inline struct relro_span gs_relro_span(ElfW(Addr) start, size_t len, size_t pagesize)
{
    ElfW(Addr) mask = ~(ElfW(Addr))(pagesize - 1);
    struct relro_span s = {start & mask, (start + len) & mask};
    return s;
}

static inline int gs_relro_contains(struct relro_span s, ElfW(Addr) a)
{
    return a >= s.lo && a < s.hi;
}
#endif
