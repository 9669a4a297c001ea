/* Incremental parsers for the bench clients: an SSE event stream
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html) fed in
 * arbitrary pieces, and an HTTP/1.1 chunked body decoder in front of it.
 * Neither allocates until a line spans two reads or an event has data. */
#ifndef BENCH_SSE_PARSE_H
#define BENCH_SSE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define SSE_ID_MAX 63
#define SSE_TYPE_MAX 63

struct sse_event {
    const char *id;     /* NULL when the event had no id: line */
    const char *type;   /* "message" when the event had no event: line */
    const char *data;   /* data: lines joined by '\n', NUL-terminated */
    size_t data_len;
};

struct sse_cbs {
    void (*on_event)(void *arg, const struct sse_event *ev);
    void (*on_comment)(void *arg, const char *text, size_t len);
};

struct sse_parser {
    char *line;          /* a line not yet ended, carried between feeds */
    size_t line_len, line_cap;
    char *data;          /* the current event's data */
    size_t data_len, data_cap;
    bool has_data, has_id, skip_lf;
    char id[SSE_ID_MAX + 1];
    char type[SSE_TYPE_MAX + 1];
};

void sse_parser_init(struct sse_parser *p);
/* Frees the buffers; the parser may be fed again (a fresh stream). */
void sse_parser_reset(struct sse_parser *p);
/* Parses len bytes; the callbacks fire for every complete event and
 * comment line. */
void sse_parser_feed(struct sse_parser *p, const char *buf, size_t len,
                     const struct sse_cbs *cbs, void *arg);

/* Chunked transfer decoding. */
enum chunk_state { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR,
                   CH_DATA_LF, CH_TRAILER, CH_DONE, CH_ERROR };
struct chunk_decoder {
    enum chunk_state state;
    size_t left;        /* bytes left in the current chunk */
    int digits;
    int trailer_len;    /* length of the current trailer line */
};

void chunk_init(struct chunk_decoder *d);
/* Decodes in place: *len bytes of buf become the body bytes they hold
 * (compacted to the front); returns the number of body bytes. The state
 * says when the body ended (CH_DONE) or was malformed (CH_ERROR). */
size_t chunk_decode(struct chunk_decoder *d, char *buf, size_t len);

#endif
