/* One row per CPython version (versions.h). Offsets are those of a default
 * (GIL) build on x86-64 and are checked against each version's headers by
 * tests/embed; where a check on a live state fails, the shim falls back to
 * CPython's own calls (resolve.c), so a wrong row costs speed, not safety. */
#include "versions.h"

#include <stddef.h>

static const struct gs_port rows[] = {
    /* minor shared follows is_type in_tls pep788 late     thread_id exc */
    {9,  1, 0, 1, 0, 0, GS_LATE_EXITS, 176, 88},
    {10, 1, 0, 1, 0, 0, GS_LATE_EXITS, 176, 88},
    {11, 1, 0, 1, 0, 0, GS_LATE_EXITS, 152, 96},
    {12, 0, 1, 0, 0, 0, GS_LATE_EXITS, 0, 96},
    {13, 0, 1, 0, 0, 0, GS_LATE_EXITS, 0, 112},
    {14, 0, 1, 0, 0, 0, GS_LATE_HANGS, 0, 112},
    {15, 0, 1, 0, 1, 1, GS_LATE_HANGS, 0, 136},
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
