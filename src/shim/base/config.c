/* SPDX-License-Identifier: MIT */
/* GILSHIM_* environment variables (README "Environment") and messages.
 * Read once, on first use, without pthread_once: the first reader may be
 * inside a CPython callback that re-enters the shim. Racing first readers
 * parse the same environment; the race is benign.
 * Every variable is read through setting(), and none in secure-execution
 * mode (docs/security.md). */
#define _GNU_SOURCE
#include "base.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct gs_config g_cfg = {GS_MODE_ROUTE, GS_PATCH_AUTO, GS_FIN_PARK, GS_LOG_WARN, 1000,
                                 GS_FORMAT_TEXT, 1000};
static _Atomic int g_cfg_state;  /* 0 unread, 1 reading, 2 read */
static int g_log_fd = 2;
static _Atomic int g_log_count;
#define GS_LOG_CAP 200

/* AT_SECURE (setuid, setgid, file capabilities): the environment was
 * written by a less privileged caller, who could otherwise have a
 * privileged process create or append to any file (GILSHIM_LOG), stop
 * its threads or abort it. glibc ignores LD_PRELOAD and MALLOC_* there
 * for the same reason; the defaults hold, silently. */
static const char *setting(const char *var)
{
    return getauxval(AT_SECURE) ? NULL : getenv(var);
}

struct choice { const char *name; int value; };

static void pick(const char *var, const struct choice *c, int *out)
{
    const char *v = setting(var);
    if (!v || !*v)
        return;
    for (; c->name; c++)
        if (!strcasecmp(v, c->name)) {
            *out = c->value;
            return;
        }
    gs_log(GS_LOG_WARN, "%s=%s: unknown value, ignored", var, v);
}

static void millis(const char *var, long *out)
{
    const char *d = setting(var);
    if (d && *d) {
        char *end;
        errno = 0;
        long ms = strtol(d, &end, 10);
        if (errno || *end || ms < 0 || ms > 3600000)
            gs_log(GS_LOG_WARN, "%s=%s: not a number of milliseconds (0-3600000), keeping %ld",
                   var, d, *out);
        else
            *out = ms;
    }
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
    const char *file = setting("GILSHIM_LOG");
    if (file && *file) {
        int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            g_log_fd = fd;
        else
            gs_log(GS_LOG_WARN, "GILSHIM_LOG=%s: %s; logging to stderr", file, strerror(errno));
    }
    static const struct choice formats[] = {{"text", GS_FORMAT_TEXT}, {"json", GS_FORMAT_JSON},
                                            {0, 0}};
    pick("GILSHIM_LOG_FORMAT", formats, &g_cfg.log_format);
    pick("GILSHIM_LOG_LEVEL", levels, &g_cfg.log_level);
    static const struct choice patch[] = {
        {"auto", GS_PATCH_AUTO}, {"always", GS_PATCH_ALWAYS}, {"never", GS_PATCH_NEVER},
        {"1", GS_PATCH_ALWAYS}, {"yes", GS_PATCH_ALWAYS}, {"on", GS_PATCH_ALWAYS},
        {"0", GS_PATCH_NEVER}, {"no", GS_PATCH_NEVER}, {"off", GS_PATCH_NEVER}, {0, 0}};
    pick("GILSHIM_MODE", modes, &g_cfg.mode);
    pick("GILSHIM_PATCH", patch, &g_cfg.patch);
    pick("GILSHIM_ON_FINALIZE", fins, &g_cfg.on_finalize);
    millis("GILSHIM_DRAIN_MS", &g_cfg.drain_ms);
    millis("GILSHIM_COUNT_INTERVAL_MS", &g_cfg.count_interval_ms);
}

int gs_config_final(void) { return atomic_load_explicit(&g_cfg_state, memory_order_acquire) == 2; }

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

/* Append s to buf as a JSON string body (no quotes). */
static size_t json_escape(char *buf, size_t cap, size_t len, const char *s)
{
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
        } else {
            buf[len++] = (char)c;
        }
    }
    return len;
}

size_t gs_json_str(char *buf, size_t cap, const char *s)
{
    if (cap < 3)
        return 0;
    size_t len = 0;
    buf[len++] = '"';
    len = json_escape(buf, cap - 1, len, s ? s : "");
    buf[len++] = '"';
    buf[len] = 0;
    return len;
}

static const char *const level_names[] = {"quiet", "warn", "info", "debug"};

void gs_emit(int level, const char *event, const char *extra, const char *text)
{
    if (atomic_load_explicit(&g_cfg_state, memory_order_acquire) == 2 && level > g_cfg.log_level)
        return;
    if (atomic_load_explicit(&g_cfg_state, memory_order_acquire) != 2 && level > GS_LOG_WARN)
        return;
    int json = g_cfg.log_format == GS_FORMAT_JSON;
    /* Diagnose mode's counts are the account a report sums: never capped. */
    int n = strcmp(event, "counts") ? atomic_fetch_add(&g_log_count, 1) : 0;
    if (level <= GS_LOG_WARN && n >= GS_LOG_CAP) {
        if (n == GS_LOG_CAP) {
            char cap[160];
            int k = json ? snprintf(cap, sizeof cap, "{\"gilshim\":%d,\"event\":\"suppressed\","
                                    "\"level\":\"warn\",\"pid\":%d,\"message\":\"%d messages; "
                                    "further ones suppressed\"}\n", GS_LOG_SCHEMA, (int)getpid(), GS_LOG_CAP)
                         : snprintf(cap, sizeof cap, "gilshim[%d]: %d messages; further ones suppressed\n",
                                    (int)getpid(), GS_LOG_CAP);
            if (write(g_log_fd, cap, (size_t)k) < 0) { /* nowhere else to say it */ }
        }
        return;
    }
    char buf[4096];
    size_t len;
    int pid = (int)getpid(), tid = (int)syscall(SYS_gettid);
    if (json) {
        len = (size_t)snprintf(buf, sizeof buf, "{\"gilshim\":%d,\"event\":\"%s\",\"level\":\"%s\","
                               "\"pid\":%d,\"tid\":%d,", GS_LOG_SCHEMA, event,
                               level_names[level < 0 || level > 3 ? 1 : level], pid, tid);
        if (extra && *extra && len + strlen(extra) + 16 < sizeof buf)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s,", extra);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "\"message\":");
        len += gs_json_str(buf + len, sizeof buf - len - 2, text);
        buf[len++] = '}';
    } else {
        len = (size_t)snprintf(buf, sizeof buf, "gilshim[%d:%d]: %s", pid, tid, text);
        if (len > sizeof buf - 2)
            len = sizeof buf - 2;
    }
    buf[len++] = '\n';
    if (write(g_log_fd, buf, len) < 0) { /* nowhere else to say it */ }
}

void gs_logx(int level, const char *event, const char *extra, const char *fmt, ...)
{
    if (atomic_load_explicit(&g_cfg_state, memory_order_acquire) == 2 && level > g_cfg.log_level)
        return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    gs_emit(level, event, extra, text);
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

const char *gs_json_site(const char *key, const void *addr, char *buf, size_t len)
{
    Dl_info info;
    char obj[512], sym[512];
    if (addr && dladdr(addr, &info) && info.dli_fname) {
        const char *o = strrchr(info.dli_fname, '/');
        gs_json_str(obj, sizeof obj, o ? o + 1 : info.dli_fname);
        if (info.dli_sname) {
            gs_json_str(sym, sizeof sym, info.dli_sname);
            snprintf(buf, len, "\"%s\":{\"object\":%s,\"symbol\":%s,\"offset\":%lu}", key, obj, sym,
                     (unsigned long)((const char *)addr - (const char *)info.dli_saddr));
        } else {
            snprintf(buf, len, "\"%s\":{\"object\":%s,\"symbol\":null,\"offset\":%lu}", key, obj,
                     (unsigned long)((const char *)addr - (const char *)info.dli_fbase));
        }
    } else {
        snprintf(buf, len, "\"%s\":{\"object\":null,\"symbol\":null,\"offset\":%lu}", key,
                 (unsigned long)(uintptr_t)addr);
    }
    return buf;
}
