/* buf: a growable byte buffer. Transparent value type; the owner embeds it,
 * calls buf_init() and finally buf_deinit(). data is NUL-terminated after
 * every append (the NUL is not counted in len), so data may be used as a C
 * string when the content has no NUL bytes. */
#ifndef CORRAL_BUF_H
#define CORRAL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
};

void buf_init(struct buf *b);
void buf_deinit(struct buf *b);
/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);
/* Ensures room for extra more bytes plus the NUL. */
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Returns a C string ("" when empty); never NULL. */
const char *buf_cstr(struct buf *b);
/* Hands the heap block to the caller (who frees it) and re-inits b. */
char *buf_steal(struct buf *b, size_t *len);

#endif
