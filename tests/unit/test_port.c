// SPDX-License-Identifier: MIT
/* src/shim/port/versions.c on its own: the version strings CPython's
 * Py_GetVersion() gives (Python/getversion.c: PY_VERSION, the build
 * words, "(" build info ")" and the compiler), GIL and free-threaded. */
#include "../../src/shim/port/versions.h"

#include <criterion/criterion.h>

static void parsed(const char *v, int major, int minor, int free_threaded)
{
    int ma = -1, mi = -1, ft = -1;
    cr_assert_eq(gs_port_parse_version(v, &ma, &mi, &ft), 1, "not parsed: %s", v);
    cr_assert_eq(ma, major, "%s", v);
    cr_assert_eq(mi, minor, "%s", v);
    cr_assert_eq(ft, free_threaded, "%s: free-threaded %d, want %d", v, ft, free_threaded);
}

Test(version, gil_builds)
{
    parsed("3.9.18 (main, May  9 2026, 07:30:12) \n[GCC 12.2.0]", 3, 9, 0);
    parsed("3.11.2 (main, Mar 13 2023, 12:18:29) [GCC 12.2.0]", 3, 11, 0);
    parsed("3.13.0 (main, Oct  7 2024, 05:02:14) [GCC 13.2.0]", 3, 13, 0);
    parsed("3.14.0 (main, Oct  7 2025, 09:34:52) [GCC 15.2.0]", 3, 14, 0);
    parsed("3.15.0a1+ (heads/main:0123abc, Nov  1 2025, 10:00:00) [GCC 15.2.0]", 3, 15, 0);
    /* the words are looked for before the build information only */
    parsed("3.14.0 (heads/free-threading build:abc, Oct  7 2025) [GCC 15.2.0]", 3, 14, 0);
}

Test(version, free_threaded_builds)
{
    /* 3.13: "%.80s experimental free-threading build (%.80s) %.80s" */
    parsed("3.13.0 experimental free-threading build (main, Oct  7 2024, 05:02:14) [GCC 13.2.0]",
           3, 13, 1);
    parsed("3.13.5 experimental free-threading build (main, Jun 11 2025, 15:36:57) [Clang 20.1.4 ]",
           3, 13, 1);
    /* 3.14 on: "%.80s free-threading build (%.80s) %.80s" */
    parsed("3.14.0 free-threading build (main, Oct  7 2025, 09:34:52) [GCC 15.2.0]", 3, 14, 1);
    parsed("3.15.0a2 free-threading build (main, Nov 19 2025, 12:00:00) [GCC 15.2.0]", 3, 15, 1);
}

Test(version, not_a_version)
{
    int ma, mi, ft;
    cr_assert_eq(gs_port_parse_version("PyPy", &ma, &mi, &ft), 0);
    cr_assert_eq(gs_port_parse_version(NULL, &ma, &mi, &ft), 0);
}

Test(version, no_row_for_unknown)
{
    cr_assert_null(gs_port_for(8));
    cr_assert_not_null(gs_port_for(gs_port_newest()));
}
