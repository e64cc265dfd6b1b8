/* SPDX-License-Identifier: MIT */
/*
 * The foundation of src/shim/: configuration (GILSHIM_*, read once) and
 * messages. Uses nothing of CPython and no other layer (docs/architecture.md).
 */
#ifndef GILSHIM_BASE_H
#define GILSHIM_BASE_H

#include <stddef.h>

#define GS_HIDDEN __attribute__((visibility("hidden")))
#define GS_EXPORT __attribute__((visibility("default")))

/* --- configuration (GILSHIM_*, read once; see README "Environment") --- */
enum gs_mode { GS_MODE_ROUTE = 0, GS_MODE_OFF = 1, GS_MODE_DIAGNOSE = 2 };
enum gs_on_finalize { GS_FIN_PARK = 0, GS_FIN_EXIT = 1, GS_FIN_ABORT = 2 };
enum gs_log_level { GS_LOG_QUIET = 0, GS_LOG_WARN = 1, GS_LOG_INFO = 2, GS_LOG_DEBUG = 3 };

enum gs_patch { GS_PATCH_AUTO = 0, GS_PATCH_ALWAYS = 1, GS_PATCH_NEVER = 2 };
enum gs_format { GS_FORMAT_TEXT = 0, GS_FORMAT_JSON = 1 };

struct gs_config {
    int mode;
    int patch;
    int on_finalize;
    int log_level;
    long drain_ms;
    int log_format;
    long count_interval_ms;  /* diagnose mode's counts lines */
};
GS_HIDDEN const struct gs_config *gs_config(void);
/* 1 once gs_config() returns the values read from the environment. */
GS_HIDDEN int gs_config_final(void);

/* --- messages (docs/messages.md): one line each, stderr or GILSHIM_LOG;
 * text "gilshim[pid:tid]: ..." or, with GILSHIM_LOG_FORMAT=json, one JSON
 * object of schema GS_LOG_SCHEMA --- */
#define GS_LOG_SCHEMA 1
/* event: the JSON "event" name; extra: more JSON members ("k":v,...) or NULL */
GS_HIDDEN void gs_logx(int level, const char *event, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define gs_log(level, ...) gs_logx(level, "message", NULL, __VA_ARGS__)
GS_HIDDEN void gs_emit(int level, const char *event, const char *extra, const char *text);
/* s as a quoted JSON string into buf; returns its length. */
GS_HIDDEN size_t gs_json_str(char *buf, size_t cap, const char *s);
/* "site":{...} members for a code address into buf; returns buf. */
GS_HIDDEN const char *gs_json_site(const char *key, const void *addr, char *buf, size_t len);
/* "object(symbol+0xoff)" for a code address, into buf. */
GS_HIDDEN const char *gs_describe_addr(const void *addr, char *buf, size_t len);

#endif
