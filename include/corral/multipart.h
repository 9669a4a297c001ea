/* multipart: an incremental multipart/form-data parser (RFC 7578 over
 * RFC 2046). Pure: no I/O, no allocation. Bytes are fed as they arrive, in
 * chunks of any size (a delimiter may be split anywhere); part bodies come
 * out through on_data in pieces, never buffered whole.
 *
 * Framing: the delimiter is CRLF "--" boundary; the first one may start
 * the body without the CRLF; a preamble before it and an epilogue after
 * the close delimiter ("--" boundary "--") are ignored. Part headers must
 * end their lines with CRLF. */
#ifndef CORRAL_MULTIPART_H
#define CORRAL_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#define MULTIPART_BOUNDARY_MAX 70  /* RFC 2046 */
#define MULTIPART_LINE_MAX 2048    /* one part header line */
#define MULTIPART_HEADERS_MAX 16   /* header lines per part */

/* What a part's headers said. Strings are NUL-terminated; empty when
 * absent. filename is the raw value (callers sanitise it). */
struct multipart_part {
    char name[128];
    char filename[1024];
    char content_type[128];
    bool has_filename;
};

/* Each callback returns 0 to go on, or non-zero to stop parsing
 * (multipart_feed then fails with "stopped by the receiver"). */
struct multipart_cbs {
    int (*on_part)(void *arg, const struct multipart_part *part);
    int (*on_data)(void *arg, const char *data, size_t len);
    int (*on_part_end)(void *arg);
};

enum multipart_state {
    MP_PREAMBLE,   /* before the first delimiter */
    MP_AFTER_DELIM, /* "--" (close) or CRLF (a part follows) */
    MP_HEADERS,
    MP_BODY,
    MP_DONE,       /* after the close delimiter */
    MP_ERROR,
};

/* Embedded by its owner; multipart_init before use. */
struct multipart {
    enum multipart_state state;
    const struct multipart_cbs *cbs;
    void *arg;
    char delim[MULTIPART_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
    size_t dlen;
    size_t match;        /* bytes of delim matched so far */
    char after[2];       /* MP_AFTER_DELIM: bytes seen */
    size_t after_len;
    char line[MULTIPART_LINE_MAX + 1];
    size_t line_len;
    int header_lines;
    struct multipart_part part;
    const char *error;   /* static text once state is MP_ERROR */
};

/* Extracts the boundary parameter of a multipart/form-data Content-Type
 * into out (size at least MULTIPART_BOUNDARY_MAX + 1). False when the type
 * is not multipart/form-data or the boundary is missing or invalid. */
bool multipart_boundary(const char *content_type, char *out, size_t n);
/* False when boundary is not 1..70 valid characters. */
bool multipart_init(struct multipart *m, const char *boundary,
                    const struct multipart_cbs *cbs, void *arg);
/* 0, or -1 once the input is malformed (m->error says why; further feeds
 * fail too). */
int multipart_feed(struct multipart *m, const char *data, size_t len);
/* At the end of the body: 0 when the close delimiter was seen, else -1
 * with m->error set (e.g. a missing final boundary). */
int multipart_finish(struct multipart *m);

#endif
