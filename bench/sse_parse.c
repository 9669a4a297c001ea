/* The bench clients' incremental SSE and chunked-body parsers. */
#include "sse_parse.h"

#include <stdlib.h>
#include <string.h>

#define KEEP_MAX 4096 /* larger buffers are freed after use: an idle
                         subscriber must stay small */

static void *grow(void *p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    p = realloc(p, n);
    if (!p)
        abort();
    *cap = n;
    return p;
}

void sse_parser_init(struct sse_parser *p)
{
    memset(p, 0, sizeof(*p));
}

void sse_parser_reset(struct sse_parser *p)
{
    free(p->line);
    free(p->data);
    sse_parser_init(p);
}

static void append_data(struct sse_parser *p, const char *s, size_t n)
{
    p->data = grow(p->data, &p->data_cap, p->data_len + n + 2);
    memcpy(p->data + p->data_len, s, n);
    p->data_len += n;
    p->data[p->data_len++] = '\n';
    p->has_data = true;
}

static void dispatch(struct sse_parser *p, const struct sse_cbs *cbs,
                     void *arg)
{
    if (p->has_data) {
        p->data[--p->data_len] = '\0'; /* the last '\n' */
        struct sse_event ev = {
            .id = p->has_id ? p->id : NULL,
            .type = p->type[0] ? p->type : "message",
            .data = p->data,
            .data_len = p->data_len,
        };
        if (cbs->on_event)
            cbs->on_event(arg, &ev);
    }
    p->has_data = p->has_id = false;
    p->type[0] = '\0';
    p->data_len = 0;
    if (p->data_cap > KEEP_MAX) {
        free(p->data);
        p->data = NULL;
        p->data_cap = 0;
    }
}

static void copy_field(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static void process_line(struct sse_parser *p, const char *s, size_t n,
                         const struct sse_cbs *cbs, void *arg)
{
    if (n == 0) {
        dispatch(p, cbs, arg);
        return;
    }
    if (s[0] == ':') {
        if (cbs->on_comment)
            cbs->on_comment(arg, s + 1, n - 1);
        return;
    }
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        append_data(p, v, vlen);
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        copy_field(p->type, sizeof(p->type), v, vlen);
    } else if (flen == 2 && memcmp(s, "id", 2) == 0) {
        if (!memchr(v, '\0', vlen)) {
            copy_field(p->id, sizeof(p->id), v, vlen);
            p->has_id = true;
        }
    } /* retry and unknown fields: ignored */
}

static void carry(struct sse_parser *p, const char *s, size_t n)
{
    p->line = grow(p->line, &p->line_cap, p->line_len + n);
    memcpy(p->line + p->line_len, s, n);
    p->line_len += n;
}

static const char *find_eol(const char *s, const char *end)
{
    for (; s < end; s++)
        if (*s == '\n' || *s == '\r')
            return s;
    return NULL;
}

void sse_parser_feed(struct sse_parser *p, const char *buf, size_t len,
                     const struct sse_cbs *cbs, void *arg)
{
    const char *s = buf, *end = buf + len;
    while (s < end) {
        if (p->skip_lf) {          /* a CR ended the last feed */
            p->skip_lf = false;
            if (*s == '\n') {
                s++;
                continue;
            }
        }
        const char *eol = find_eol(s, end);
        if (!eol) {
            carry(p, s, (size_t)(end - s));
            return;
        }
        if (p->line_len) {
            carry(p, s, (size_t)(eol - s));
            process_line(p, p->line, p->line_len, cbs, arg);
            p->line_len = 0;
            if (p->line_cap > KEEP_MAX) {
                free(p->line);
                p->line = NULL;
                p->line_cap = 0;
            }
        } else {
            process_line(p, s, (size_t)(eol - s), cbs, arg);
        }
        if (*eol == '\r') {
            if (eol + 1 == end)
                p->skip_lf = true;
            else if (eol[1] == '\n')
                eol++;
        }
        s = eol + 1;
    }
}

/* ---- chunked bodies ---- */

void chunk_init(struct chunk_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* One byte of the framing (not chunk data). */
static void frame_byte(struct chunk_decoder *d, char c)
{
    switch (d->state) {
    case CH_SIZE:
        if (hexval(c) >= 0 && d->digits < 15) {
            d->left = d->left * 16 + (size_t)hexval(c);
            d->digits++;
        } else if (d->digits && (c == ';' || c == ' ' || c == '\t')) {
            d->state = CH_EXT;
        } else if (d->digits && c == '\r') {
            d->state = CH_SIZE_LF;
        } else {
            d->state = CH_ERROR;
        }
        break;
    case CH_EXT:
        if (c == '\r')
            d->state = CH_SIZE_LF;
        break;
    case CH_SIZE_LF:
        if (c != '\n')
            d->state = CH_ERROR;
        else if (d->left == 0)
            d->state = CH_TRAILER, d->trailer_len = 0;
        else
            d->state = CH_DATA;
        break;
    case CH_DATA_CR:
        d->state = c == '\r' ? CH_DATA_LF : CH_ERROR;
        break;
    case CH_DATA_LF:
        d->state = c == '\n' ? CH_SIZE : CH_ERROR;
        d->left = 0;
        d->digits = 0;
        break;
    case CH_TRAILER:
        if (c == '\n') {
            if (d->trailer_len == 0)
                d->state = CH_DONE;
            d->trailer_len = 0;
        } else if (c != '\r') {
            d->trailer_len++;
        }
        break;
    case CH_DATA:
    case CH_DONE:
    case CH_ERROR:
        break;
    }
}

size_t chunk_decode(struct chunk_decoder *d, char *buf, size_t len)
{
    size_t in = 0, out = 0;
    while (in < len && d->state != CH_DONE && d->state != CH_ERROR) {
        if (d->state == CH_DATA) {
            size_t n = len - in < d->left ? len - in : d->left;
            memmove(buf + out, buf + in, n);
            in += n;
            out += n;
            d->left -= n;
            if (d->left == 0)
                d->state = CH_DATA_CR;
        } else {
            frame_byte(d, buf[in++]);
        }
    }
    return out;
}
