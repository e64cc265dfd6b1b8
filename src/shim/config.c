/* GILSHIM_* environment variables (README "Environment") and messages.
 * Read once, on first use, without pthread_once: the first reader may be
 * inside a CPython callback that re-enters the shim. Racing first readers
 * parse the same environment; the race is benign. */
#define _GNU_SOURCE
#include "shim.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct gs_config g_cfg = {GS_MODE_ROUTE, GS_PATCH_AUTO, GS_FIN_PARK, GS_LOG_WARN, 1000};
static _Atomic int g_cfg_state;  /* 0 unread, 1 reading, 2 read */
static int g_log_fd = 2;
static _Atomic int g_log_count;
#define GS_LOG_CAP 200

struct choice { const char *name; int value; };

static void pick(const char *var, const struct choice *c, int *out)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return;
    for (; c->name; c++)
        if (!strcasecmp(v, c->name)) {
            *out = c->value;
            return;
        }
    gs_log(GS_LOG_WARN, "%s=%s: unknown value, ignored", var, v);
}

static void read_config(void)
{
    static const struct choice modes[] = {
        {"route", GS_MODE_ROUTE}, {"off", GS_MODE_OFF}, {"diagnose", GS_MODE_DIAGNOSE}, {0, 0}};
    static const struct choice fins[] = {
        {"park", GS_FIN_PARK}, {"exit", GS_FIN_EXIT}, {"abort", GS_FIN_ABORT}, {0, 0}};
    static const struct choice levels[] = {{"quiet", GS_LOG_QUIET}, {"warn", GS_LOG_WARN},
                                           {"info", GS_LOG_INFO},   {"debug", GS_LOG_DEBUG},
                                           {"0", GS_LOG_QUIET},     {"1", GS_LOG_WARN},
                                           {"2", GS_LOG_INFO},      {"3", GS_LOG_DEBUG},
                                           {0, 0}};
    /* The log destination first, so that warnings about the others go there. */
    const char *file = getenv("GILSHIM_LOG");
    if (file && *file) {
        int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            g_log_fd = fd;
        else
            gs_log(GS_LOG_WARN, "GILSHIM_LOG=%s: %s; logging to stderr", file, strerror(errno));
    }
    pick("GILSHIM_LOG_LEVEL", levels, &g_cfg.log_level);
    static const struct choice patch[] = {
        {"auto", GS_PATCH_AUTO}, {"always", GS_PATCH_ALWAYS}, {"never", GS_PATCH_NEVER},
        {"1", GS_PATCH_ALWAYS}, {"yes", GS_PATCH_ALWAYS}, {"on", GS_PATCH_ALWAYS},
        {"0", GS_PATCH_NEVER}, {"no", GS_PATCH_NEVER}, {"off", GS_PATCH_NEVER}, {0, 0}};
    pick("GILSHIM_MODE", modes, &g_cfg.mode);
    pick("GILSHIM_PATCH", patch, &g_cfg.patch);
    pick("GILSHIM_ON_FINALIZE", fins, &g_cfg.on_finalize);
    const char *d = getenv("GILSHIM_DRAIN_MS");
    if (d && *d) {
        char *end;
        errno = 0;
        long ms = strtol(d, &end, 10);
        if (errno || *end || ms < 0 || ms > 3600000)
            gs_log(GS_LOG_WARN, "GILSHIM_DRAIN_MS=%s: not a number of milliseconds (0-3600000), "
                   "keeping %ld", d, g_cfg.drain_ms);
        else
            g_cfg.drain_ms = ms;
    }
}

const struct gs_config *gs_config(void)
{
    int s = atomic_load_explicit(&g_cfg_state, memory_order_acquire);
    if (s == 2)
        return &g_cfg;
    int expect = 0;
    if (atomic_compare_exchange_strong(&g_cfg_state, &expect, 1)) {
        read_config();
        atomic_store_explicit(&g_cfg_state, 2, memory_order_release);
    }
    /* A re-entrant or concurrent reader sees the defaults, or the values
     * as far as they are parsed: never a torn int. */
    return &g_cfg;
}

void gs_log(int level, const char *fmt, ...)
{
    if (atomic_load_explicit(&g_cfg_state, memory_order_acquire) == 2 && level > g_cfg.log_level)
        return;
    if (atomic_load_explicit(&g_cfg_state, memory_order_acquire) != 2 && level > GS_LOG_WARN)
        return;
    int n = atomic_fetch_add(&g_log_count, 1);
    if (level <= GS_LOG_WARN && n >= GS_LOG_CAP) {
        if (n == GS_LOG_CAP) {
            char cap[96];
            int k = snprintf(cap, sizeof cap, "gilshim[%d]: %d messages; further ones suppressed\n",
                             (int)getpid(), GS_LOG_CAP);
            if (write(g_log_fd, cap, (size_t)k) < 0) { /* nowhere else to say it */ }
        }
        return;
    }
    char buf[1024];
    int len = snprintf(buf, sizeof buf, "gilshim[%d:%d]: ", (int)getpid(), (int)syscall(SYS_gettid));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + len, sizeof buf - (size_t)len - 1, fmt, ap);
    va_end(ap);
    len += m < 0 ? 0 : (m > (int)sizeof buf - len - 2 ? (int)sizeof buf - len - 2 : m);
    buf[len++] = '\n';
    if (write(g_log_fd, buf, (size_t)len) < 0) { /* nowhere else to say it */ }
}

const char *gs_describe_addr(const void *addr, char *buf, size_t len)
{
    Dl_info info;
    if (addr && dladdr(addr, &info) && info.dli_fname) {
        const char *obj = strrchr(info.dli_fname, '/');
        obj = obj ? obj + 1 : info.dli_fname;
        if (info.dli_sname)
            snprintf(buf, len, "%s(%s+0x%lx)", obj, info.dli_sname,
                     (unsigned long)((const char *)addr - (const char *)info.dli_saddr));
        else
            snprintf(buf, len, "%s(+0x%lx)", obj,
                     (unsigned long)((const char *)addr - (const char *)info.dli_fbase));
    } else {
        snprintf(buf, len, "%p", addr);
    }
    return buf;
}
