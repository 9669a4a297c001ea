#include "corral/framer.h"

#include <string.h>

void framer_init(struct framer *f, size_t max_line)
{
    buf_init(&f->pending);
    f->max_line = max_line;
    f->discarding = false;
}

void framer_deinit(struct framer *f)
{
    buf_deinit(&f->pending);
}

static void emit(struct framer *f, const char *line, size_t len,
                 const struct framer_cbs *cbs, void *arg)
{
    if (len && line[len - 1] == '\r')
        len--;
    cbs->on_line(arg, line, len);
}

/* Handles the bytes up to (not including) one newline. */
static void end_line(struct framer *f, const char *data, size_t len,
                     const struct framer_cbs *cbs, void *arg)
{
    if (f->discarding) {
        f->discarding = false;
        return;
    }
    if (f->pending.len + len > f->max_line) {
        size_t seen = f->pending.len + len;
        buf_reset(&f->pending);
        if (cbs->on_overlong)
            cbs->on_overlong(arg, seen);
        return;
    }
    if (f->pending.len == 0) { /* the common case: no copy */
        emit(f, data, len, cbs, arg);
        return;
    }
    buf_append(&f->pending, data, len);
    emit(f, f->pending.data, f->pending.len, cbs, arg);
    buf_reset(&f->pending);
}

void framer_feed(struct framer *f, const char *data, size_t len,
                 const struct framer_cbs *cbs, void *arg)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        if (!nl) {
            if (f->discarding)
                return;
            if (f->pending.len + len > f->max_line) {
                if (cbs->on_overlong)
                    cbs->on_overlong(arg, f->pending.len + len);
                buf_reset(&f->pending);
                f->discarding = true;
                return;
            }
            buf_append(&f->pending, data, len);
            return;
        }
        size_t n = (size_t)(nl - data);
        end_line(f, data, n, cbs, arg);
        data += n + 1;
        len -= n + 1;
    }
}
