/* SPDX-License-Identifier: MIT */
/* One row per CPython version (versions.h). Offsets are those of a default
 * (GIL) build on x86-64 and are checked against each version's headers by
 * tests/embed; where a check on a live state fails, the shim falls back to
 * CPython's own calls (resolve.c), so a wrong row costs speed, not safety. */
#include "versions.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Each fact is named where it is set; a zero is the oldest behaviour. */
#define UNTIL_3_11 \
    .shared_current = 1, .exc_is_type = 1, .sub_counts_threads = 1
#define FROM_3_12 .gilstate_follows = 1, .bound_gilstate_mask = 1u << 3
static const struct gs_port rows[] = {
    {.minor = 9, UNTIL_3_11, .thread_id_offset = 176, .exc_offset = 88,
     .gilstate_counter_offset = 160},
    {.minor = 10, UNTIL_3_11, .thread_id_offset = 176, .exc_offset = 88,
     .gilstate_counter_offset = 160},
    {.minor = 11, UNTIL_3_11, .thread_id_offset = 152, .exc_offset = 96,
     .gilstate_counter_offset = 136},
    {.minor = 12, FROM_3_12, .exc_offset = 96, .gilstate_counter_offset = 120, .status_offset = 24},
    {.minor = 13, FROM_3_12, .exc_offset = 112, .gilstate_counter_offset = 136, .status_offset = 32},
    {.minor = 14, FROM_3_12, .exc_offset = 112, .gilstate_counter_offset = 136, .status_offset = 32,
     .end_deletes_others = 1, .late_caller = GS_LATE_HANGS, .python_after_atexit = 1},
    {.minor = 15, FROM_3_12, .exc_offset = 136, .gilstate_counter_offset = 160, .status_offset = 32,
     .end_deletes_others = 1, .late_caller = GS_LATE_HANGS, .after_fini = GS_AFTER_HANGS,
     .gilstate_in_tls = 1, .pep788 = 1, .python_after_atexit = 1},
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

/* Python/getversion.c: PY_VERSION, then " (" for a GIL build, or
 * " experimental free-threading build (" (3.13) and " free-threading
 * build (" (3.14+) for a free-threaded one. Only the words between the
 * version and the build information count. */
int gs_port_parse_version(const char *v, int *major, int *minor, int *free_threaded)
{
    *free_threaded = 0;
    if (!v || sscanf(v, "%d.%d", major, minor) != 2)
        return 0;
    const char *words = strchr(v, ' ');
    const char *info = strchr(v, '(');
    if (words && (!info || words < info)) {
        static const char mark[] = "free-threading build";
        size_t n = info ? (size_t)(info - words) : strlen(words);
        for (size_t i = 0; i + sizeof mark - 1 <= n; i++)
            if (!memcmp(words + i, mark, sizeof mark - 1)) {
                *free_threaded = 1;
                break;
            }
    }
    return 1;
}
