/* Private to src/http: the connection bookkeeping shared by http.c and
 * reply.c. */
#ifndef CORRAL_HTTP_INT_H
#define CORRAL_HTTP_INT_H

#include <evhtp/evhtp.h>

#include "corral/http.h"

struct http_conn;
struct lingering;

struct req_alloc {
    struct req_alloc *next;
    char data[];
};

struct http_server {
    struct server *srv;
    evhtp_t *htp;
    struct http_conn *conns; /* open connections, doubly linked */
    int connections;
    int inflight;            /* requests not yet answered */
    struct http_conn *dead;  /* closed, freed on the next iteration */
    struct lingering *lingering; /* answered at close, draining */
    struct event *reaper;    /* frees the dead list */
    uint64_t closed_ids;     /* request ids of answers given at close */
    uint64_t request_ids;    /* request ids: unique per process */
};

/* Finishes r once answered: metrics, access log, in-flight count; frees
 * it when evhtp is done with it too. */
void http_req_finished(struct req *r);
/* Sends a complete response on a connection evhtp no longer owns and
 * closes it once written (limits hit mid-parse, header timeout). Call
 * from an evhtp hook (evhtp then frees its connection) or pass
 * free_conn to free it here. */
void http_close_with_status(struct http_conn *hc, int status,
                            const char *code, const char *detail,
                            bool free_conn);

#endif
