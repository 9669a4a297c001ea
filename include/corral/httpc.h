/* httpc: outbound HTTP on libcurl's multi interface driven by the loop
 * (the hiperfifo pattern: socket and timer callbacks, one timer). Names
 * are resolved at start-up: callers pass CURLOPT_RESOLVE-style entries
 * via httpc_new, so no resolver call runs on the loop. Responses stream
 * to the caller as they arrive. Each request's on_done fires exactly
 * once (also with "cancelled" from httpc_cancel or httpc_free). */
#ifndef CORRAL_HTTPC_H
#define CORRAL_HTTPC_H

#include <stddef.h>

struct event_base;
struct httpc;
struct httpc_req;

struct httpc_cbs {
    /* Once, when the status line and headers are complete. headers is
     * "Name: value\r\n"... (borrowed). */
    void (*on_head)(void *arg, int status, const char *headers, size_t len);
    void (*on_body)(void *arg, const char *data, size_t len);
    /* err NULL on success. */
    void (*on_done)(void *arg, const char *err);
};

struct httpc_req_opts {
    const char *method;          /* "GET", "POST", ... */
    const char *url;
    const char *const *headers;  /* NULL-terminated "Name: value" */
    const void *body;            /* copied */
    size_t body_len;
    long timeout_ms;             /* whole request; 0 = none */
    long connect_timeout_ms;
};

/* resolve: NULL-terminated "host:port:address" entries (CURLOPT_RESOLVE). */
struct httpc *httpc_new(struct event_base *base, const char *const *resolve);
void httpc_free(struct httpc *h);
struct httpc_req *httpc_request(struct httpc *h,
                                const struct httpc_req_opts *opts,
                                const struct httpc_cbs *cbs, void *arg);
/* on_done("cancelled") fires from the loop afterwards. */
void httpc_cancel(struct httpc_req *r);

#endif
