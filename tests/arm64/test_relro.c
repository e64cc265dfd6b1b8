/* SPDX-License-Identifier: MIT */
/*
 * GOT patching's RELRO span (src/shim/redirect/relro.h) against glibc's
 * _dl_protect_relro: only whole pages are read-only, by the run-time page
 * size, so a slot on the last, partial page is left as it is.
 */
#include <criterion/criterion.h>

#include "shim/redirect/relro.h"

/* a 4 KiB-linked object: RELRO 0x3e00..0x4000, its GOT at the end */
Test(relro, page_4k_whole_page_is_read_only)
{
    struct relro_span s = gs_relro_span(0x3e00, 0x200, 4096);
    cr_expect_eq(s.lo, 0x3000);
    cr_expect_eq(s.hi, 0x4000);
    cr_expect(gs_relro_contains(s, 0x3ff8), "a GOT slot of a whole RELRO page");
    cr_expect(!gs_relro_contains(s, 0x4010), ".data after RELRO");
}

/* the same object on a 64 KiB-page kernel: nothing whole, nothing read-only */
Test(relro, page_64k_partial_page_stays_writable)
{
    struct relro_span s = gs_relro_span(0x3e00, 0x200, 65536);
    cr_expect_eq(s.lo, s.hi, "no whole 64 KiB page in RELRO");
    cr_expect(!gs_relro_contains(s, 0x3ff8), "the GOT shares its page with .data: left writable");
}

/* RELRO over a page boundary ending mid-page: the tail page stays writable */
Test(relro, tail_page_excluded)
{
    struct relro_span s = gs_relro_span(0x12e00, 0x1300, 4096);
    cr_expect_eq(s.lo, 0x12000);
    cr_expect_eq(s.hi, 0x14000);
    cr_expect(gs_relro_contains(s, 0x12e00));
    cr_expect(gs_relro_contains(s, 0x13ff8));
    cr_expect(!gs_relro_contains(s, 0x14008), "a slot on the partial last page");
}

/* 64 KiB pages, a 64 KiB-linked object (aarch64's default): RELRO ends on
 * a page boundary and its pages are read-only as on 4 KiB */
Test(relro, page_64k_aligned_end)
{
    struct relro_span s = gs_relro_span(0x1fde8, 0x218, 65536);
    cr_expect_eq(s.lo, 0x10000);
    cr_expect_eq(s.hi, 0x20000);
    cr_expect(gs_relro_contains(s, 0x1fff8));
}
