/* SPDX-License-Identifier: MIT */
/* One row per CPython version (versions.h). Offsets are those of a default
 * (GIL) build on x86-64 and are checked against each version's headers by
 * tests/embed; where a check on a live state fails, the shim falls back to
 * CPython's own calls (resolve.c), so a wrong row costs speed, not safety. */
#include "versions.h"

#include <stddef.h>

/* Each fact is named where it is set; a zero is the oldest behaviour. */
#define UNTIL_3_11 \
    .shared_current = 1, .exc_is_type = 1, .sub_counts_threads = 1, .finalize_leaves_subs = 1
#define FROM_3_12 .gilstate_follows = 1
static const struct gs_port rows[] = {
    {.minor = 9, UNTIL_3_11, .thread_id_offset = 176, .exc_offset = 88,
     .gilstate_counter_offset = 160},
    {.minor = 10, UNTIL_3_11, .thread_id_offset = 176, .exc_offset = 88,
     .gilstate_counter_offset = 160},
    {.minor = 11, UNTIL_3_11, .thread_id_offset = 152, .exc_offset = 96,
     .gilstate_counter_offset = 136},
    {.minor = 12, FROM_3_12, .exc_offset = 96, .gilstate_counter_offset = 120,
     .finalize_leaves_subs = 1},
    {.minor = 13, FROM_3_12, .exc_offset = 112, .gilstate_counter_offset = 136},
    {.minor = 14, FROM_3_12, .exc_offset = 112, .gilstate_counter_offset = 136,
     .end_deletes_others = 1, .late_caller = GS_LATE_HANGS},
    {.minor = 15, FROM_3_12, .exc_offset = 136, .gilstate_counter_offset = 160,
     .end_deletes_others = 1, .late_caller = GS_LATE_HANGS, .after_fini = GS_AFTER_HANGS,
     .gilstate_in_tls = 1, .pep788 = 1},
};
#define NROWS (sizeof rows / sizeof rows[0])

const struct gs_port *gs_port_for(int minor)
{
    for (size_t i = 0; i < NROWS; i++)
        if (rows[i].minor == minor)
            return &rows[i];
    return NULL;
}

int gs_port_oldest(void) { return rows[0].minor; }
int gs_port_newest(void) { return rows[NROWS - 1].minor; }
