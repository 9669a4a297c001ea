/* httpc: outbound HTTP on libcurl's multi interface driven by the loop
 * (the hiperfifo pattern: socket and timer callbacks, one timer). Names
 * are resolved at start-up: callers pass CURLOPT_RESOLVE-style entries
 * via httpc_new (build them with httpc_resolve_url before the loop runs),
 * so no resolver call runs on the loop. Responses stream to the caller as
 * they arrive. Each request's on_done fires exactly once (also with
 * "cancelled" from httpc_cancel or httpc_free).
 *
 * The headers sent are the caller's plus Host, Content-Length (for a
 * body) and Accept-Encoding (when opts.accept_encoding is set): httpc
 * suppresses curl's defaults Accept, Expect: 100-continue and the form
 * Content-Type, so a forwarded request carries what its client sent.
 * Redirects are not followed; only http and https are allowed. */
#ifndef CORRAL_HTTPC_H
#define CORRAL_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct httpc;
struct httpc_req;

/* Callbacks fire from the loop, never from inside the httpc_* call that
 * caused them (except on_done from httpc_free). After httpc_cancel only
 * on_done fires. */
struct httpc_cbs {
    /* Once, when the status line and headers of the final response are
     * complete (1xx interim blocks such as 100 Continue are skipped), and
     * always before the first on_body. headers is the block without the
     * status line: "Name: value\r\n"... (borrowed, valid during the
     * call). Not called when the transfer fails before the head. */
    void (*on_head)(void *arg, int status, const char *headers, size_t len);
    /* Body bytes as they arrive (decoded when accept_encoding is set);
     * borrowed. */
    void (*on_body)(void *arg, const char *data, size_t len);
    /* Exactly once, last. err NULL when the whole response arrived; else
     * a description (borrowed, valid during the call), "cancelled" after
     * httpc_cancel/httpc_free. The request handle is freed after this
     * returns. HTTP error statuses are not errors here: see on_head. */
    void (*on_done)(void *arg, const char *err);
};

struct httpc_req_opts {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" */
    const void *body;           /* copied */
    size_t body_len;
    long timeout_ms; /* whole request; 0 = none */
    long connect_timeout_ms;
    /* NULL: no Accept-Encoding, the body arrives as sent. "": offer every
     * coding curl supports and decode the body (the response head still
     * names the upstream's Content-Encoding). */
    const char *accept_encoding;
};

/* resolve: NULL-terminated "host:port:address[,address...]" entries
 * (CURLOPT_RESOLVE), copied; NULL for none. NULL on failure (curl). The
 * caller owns the result (httpc_free). */
struct httpc *httpc_new(struct event_base *base, const char *const *resolve);
/* Cancels every request (each on_done("cancelled") fires before this
 * returns, or, when called from inside an httpc callback, once the
 * callback stack unwinds) and frees h. */
void httpc_free(struct httpc *h);
/* Starts a request. Returns NULL (and on_done never fires) only when h is
 * being freed; any other failure, set-up included, arrives at on_done.
 * The handle is valid until on_done returns. */
struct httpc_req *httpc_request(struct httpc *h,
                                const struct httpc_req_opts *opts,
                                const struct httpc_cbs *cbs, void *arg);
/* Stops the transfer: no more on_head/on_body; on_done("cancelled") fires
 * from the loop afterwards. Safe from inside any callback. */
void httpc_cancel(struct httpc_req *r);
/* Flow control: pause stops on_body deliveries (the data waits in curl,
 * and the connection's receive window fills); resume restarts them from
 * the loop. Safe from inside any callback. */
void httpc_pause(struct httpc_req *r, bool pause);

/* Start-up only (calls getaddrinfo, which blocks): resolves the host of
 * url once and appends its CURLOPT_RESOLVE entry "host:port:addr,..." to
 * the NULL-terminated list *resolve (NULL for a new list; reallocated).
 * Nothing is appended for an IP literal or "localhost", which need no
 * lookup. 0, or -1 with *err (static) set. Free with httpc_resolve_free. */
int httpc_resolve_url(const char *url, char ***resolve, const char **err)
    __attribute__((warn_unused_result));
void httpc_resolve_free(char **resolve);

#endif
