/* log: JSON-lines logging to stderr or a file (reopened on SIGHUP).
 * Each record is one line: {"ts","level","msg", ...fields}. The log sink is
 * one of the two mutable globals the house style allows. Never log secrets;
 * callers redact query strings and credentials before logging. */
#ifndef CORRAL_LOG_H
#define CORRAL_LOG_H

#include <stdbool.h>

#include "corral/json.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* path NULL or "" or "-" logs to stderr. 0, or -1 if the file can't open. */
int log_open(const char *path, enum log_level min);
/* Reopens the file (after rotation). 0 or -1; on failure the old sink stays. */
int log_reopen(void);
void log_close(void);
bool log_enabled(enum log_level level);
int log_level_parse(const char *s, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* Structured record: log_begin returns a writer positioned inside the
 * record's object after "ts","level","msg"; add fields with json_w_k*,
 * then call log_end. Returns NULL when the level is disabled (then do not
 * call log_end). Not re-entrant: one record at a time. */
struct json_w *log_begin(enum log_level level, const char *msg);
void log_end(struct json_w *w);

#endif
