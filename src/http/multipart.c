/* Incremental multipart/form-data parsing (include/corral/multipart.h).
 *
 * The body scan matches the delimiter byte by byte across chunks. A
 * boundary holds no CR (RFC 2046 bchars), so the delimiter's only CR is
 * its first byte: a partial match that fails can never hide the start of
 * another match, and its bytes are re-emitted from the delimiter itself.
 * No input byte is ever held back in a buffer of ours. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "corral/multipart.h"

static int fail(struct multipart *m, const char *why)
{
    m->state = MP_ERROR;
    m->error = why;
    return -1;
}

static bool bchar(unsigned char c)
{
    return isalnum(c) || strchr("'()+_,-./:=? ", c) != NULL;
}

bool multipart_init(struct multipart *m, const char *boundary,
                    const struct multipart_cbs *cbs, void *arg)
{
    size_t n = strlen(boundary);
    memset(m, 0, sizeof(*m));
    if (n < 1 || n > MULTIPART_BOUNDARY_MAX || boundary[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!bchar((unsigned char)boundary[i]))
            return false;
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary, n);
    m->dlen = n + 4;
    m->match = 2; /* the body may open with the delimiter, CRLF implied */
    m->state = MP_PREAMBLE;
    m->cbs = cbs;
    m->arg = arg;
    return true;
}

/* Copies the value of param (e.g. filename) out of a header value:
 * quoted (backslash escapes) or a token. False when absent. */
static bool header_param(const char *v, const char *param, char *out,
                         size_t n)
{
    size_t plen = strlen(param);
    const char *p = v;
    while ((p = strchr(p, ';')) != NULL) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, param, plen) != 0 || p[plen] != '=')
            continue;
        p += plen + 1;
        size_t o = 0;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (o + 1 < n)
                    out[o++] = *p;
            }
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++)
                if (o + 1 < n)
                    out[o++] = *p;
        }
        out[o] = '\0';
        return true;
    }
    return false;
}

static void copy_trimmed(char *out, size_t n, const char *v)
{
    size_t len = strcspn(v, ";");
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len >= n)
        len = n - 1;
    memcpy(out, v, len);
    out[len] = '\0';
}

static int header_line(struct multipart *m)
{
    m->line[m->line_len] = '\0';
    if (++m->header_lines > MULTIPART_HEADERS_MAX)
        return fail(m, "too many part header lines");
    char *colon = strchr(m->line, ':');
    if (!colon || colon == m->line)
        return fail(m, "malformed part header line");
    *colon = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    struct multipart_part *pt = &m->part;
    if (strcasecmp(m->line, "Content-Disposition") == 0) {
        if (strncasecmp(v, "form-data", 9) != 0)
            return fail(m, "part disposition is not form-data");
        header_param(v, "name", pt->name, sizeof(pt->name));
        pt->has_filename = header_param(v, "filename", pt->filename,
                                        sizeof(pt->filename));
    } else if (strcasecmp(m->line, "Content-Type") == 0) {
        copy_trimmed(pt->content_type, sizeof(pt->content_type), v);
    }
    return 0;
}

/* Header bytes up to the blank line; returns bytes consumed or -1. */
static long feed_headers(struct multipart *m, const char *d, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = d[i];
        if (c != '\n') {
            if (m->line_len >= MULTIPART_LINE_MAX)
                return fail(m, "part header line too long");
            m->line[m->line_len++] = c;
            continue;
        }
        if (m->line_len == 0 || m->line[m->line_len - 1] != '\r')
            return fail(m, "part header line not ended by CRLF");
        m->line_len--;
        if (m->line_len == 0) { /* the blank line: the body follows */
            m->state = MP_BODY;
            m->match = 0;
            if (m->cbs->on_part && m->cbs->on_part(m->arg, &m->part))
                return fail(m, "stopped by the receiver");
            return (long)i + 1;
        }
        if (header_line(m) < 0)
            return -1;
        m->line_len = 0;
    }
    return (long)len;
}

static long feed_after_delim(struct multipart *m, const char *d, size_t len)
{
    size_t i = 0;
    for (; i < len && m->state == MP_AFTER_DELIM; i++) {
        char c = d[i];
        if (m->after_len == 0 && (c == ' ' || c == '\t'))
            continue; /* transport padding (RFC 2046) */
        m->after[m->after_len++] = c;
        if (m->after_len < 2)
            continue;
        if (m->after[0] == '-' && m->after[1] == '-') {
            m->state = MP_DONE;
        } else if (m->after[0] == '\r' && m->after[1] == '\n') {
            m->state = MP_HEADERS;
            m->line_len = 0;
            m->header_lines = 0;
            memset(&m->part, 0, sizeof(m->part));
        } else {
            return fail(m, "malformed delimiter line");
        }
    }
    return (long)i;
}

static int emit(struct multipart *m, const char *d, size_t n)
{
    if (n == 0 || m->state != MP_BODY || !m->cbs->on_data)
        return 0;
    if (m->cbs->on_data(m->arg, d, n))
        return fail(m, "stopped by the receiver");
    return 0;
}

/* Body (or preamble) bytes up to and including a delimiter. */
static long feed_body(struct multipart *m, const char *d, size_t len)
{
    size_t run = 0; /* start of data not yet emitted */
    for (size_t i = 0; i < len; i++) {
        if (d[i] == m->delim[m->match]) {
            if (m->match == 0 && emit(m, d + run, i - run) < 0)
                return -1;
            if (++m->match < m->dlen)
                continue;
            bool in_part = m->state == MP_BODY;
            m->state = MP_AFTER_DELIM;
            m->after_len = 0;
            m->match = 0;
            if (in_part && m->cbs->on_part_end &&
                m->cbs->on_part_end(m->arg))
                return fail(m, "stopped by the receiver");
            return (long)i + 1;
        }
        if (m->match > 0) {
            /* The held bytes were data after all. */
            if (emit(m, m->delim, m->match) < 0)
                return -1;
            m->match = 0;
            run = i;
            if (d[i] == m->delim[0]) {
                m->match = 1;
                continue;
            }
        }
    }
    if (m->match == 0 && emit(m, d + run, len - run) < 0)
        return -1;
    return (long)len;
}

int multipart_feed(struct multipart *m, const char *data, size_t len)
{
    while (len > 0) {
        long used = 0;
        switch (m->state) {
        case MP_PREAMBLE:
        case MP_BODY:
            used = feed_body(m, data, len);
            break;
        case MP_AFTER_DELIM:
            used = feed_after_delim(m, data, len);
            break;
        case MP_HEADERS:
            used = feed_headers(m, data, len);
            break;
        case MP_DONE:
            return 0; /* the epilogue is ignored */
        case MP_ERROR:
            return -1;
        }
        if (used < 0)
            return -1;
        data += used;
        len -= (size_t)used;
    }
    return m->state == MP_ERROR ? -1 : 0;
}

int multipart_finish(struct multipart *m)
{
    if (m->state == MP_DONE)
        return 0;
    if (m->state != MP_ERROR)
        fail(m, "the body ends before the final boundary");
    return -1;
}

bool multipart_boundary(const char *ct, char *out, size_t n)
{
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) != 0 ||
        (ct[19] != ';' && ct[19] != ' ' && ct[19] != '\0'))
        return false;
    char b[MULTIPART_BOUNDARY_MAX + 2];
    if (!header_param(ct + 19, "boundary", b, sizeof(b)))
        return false;
    size_t len = strlen(b);
    if (len < 1 || len > MULTIPART_BOUNDARY_MAX || len + 1 > n)
        return false;
    struct multipart probe;
    if (!multipart_init(&probe, b, NULL, NULL))
        return false;
    memcpy(out, b, len + 1);
    return true;
}
