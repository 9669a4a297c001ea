/* JSON-lines log sink. The sink (file + level) is one of the two mutable
 * globals the house style allows: every module logs, and threading a
 * logger through every call would buy nothing in a single-threaded
 * process. */
#include "corral/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "corral/buf.h"
#include "corral/mem.h"

static struct {
    FILE *fp;          /* NULL means stderr */
    char *path;        /* NULL when logging to stderr */
    enum log_level min;
    struct buf line;   /* the record being built */
    struct json_w w;
    bool open_record;
} sink = {.min = LOG_INFO};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static FILE *sink_fp(void)
{
    return sink.fp ? sink.fp : stderr;
}

int log_open(const char *path, enum log_level min)
{
    sink.min = min;
    if (!path || !*path || strcmp(path, "-") == 0)
        return 0;
    FILE *fp = fopen(path, "a");
    if (!fp)
        return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    log_close();
    sink.fp = fp;
    sink.path = xstrdup(path);
    return 0;
}

int log_reopen(void)
{
    if (!sink.path)
        return 0;
    FILE *fp = fopen(sink.path, "a");
    if (!fp)
        return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    fclose(sink.fp);
    sink.fp = fp;
    return 0;
}

void log_close(void)
{
    if (sink.fp)
        fclose(sink.fp);
    sink.fp = NULL;
    free(sink.path);
    sink.path = NULL;
}

bool log_enabled(enum log_level level)
{
    return level >= sink.min;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

static void put_timestamp(void)
{
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    json_w_kstr(&sink.w, "ts", when);
}

struct json_w *log_begin(enum log_level level, const char *msg)
{
    if (!log_enabled(level) || sink.open_record)
        return NULL;
    sink.open_record = true;
    buf_reset(&sink.line);
    json_w_init(&sink.w, &sink.line);
    json_w_obj_begin(&sink.w);
    put_timestamp();
    json_w_kstr(&sink.w, "level", level_names[level]);
    json_w_kstr(&sink.w, "msg", msg);
    return &sink.w;
}

void log_end(struct json_w *w)
{
    json_w_obj_end(w);
    buf_putc(&sink.line, '\n');
    fwrite(sink.line.data, 1, sink.line.len, sink_fp());
    fflush(sink_fp());
    sink.open_record = false;
    if (sink.line.cap > 65536)
        buf_deinit(&sink.line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    struct buf msg;
    buf_init(&msg);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    struct json_w *w = log_begin(level, buf_cstr(&msg));
    if (w)
        log_end(w);
    buf_deinit(&msg);
}
