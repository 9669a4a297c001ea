/* http: corrald's HTTP/1.1 front on libevhtp (one event base, no evhtp
 * threads) and the request context handed to route handlers.
 *
 * Life of a request: evhtp parses the head and body; http.c checks limits
 * (body size 413, Content-Type 415 for JSON routes, JSON syntax 400),
 * authenticates (401/403), then calls the route's handler. A handler must
 * answer exactly once, now or later, with one of the req_reply_* or
 * req_problem functions. The struct req stays valid until then even if
 * the client disconnects meanwhile (the answer is then dropped), so async
 * completions may keep a plain pointer to it. */
#ifndef CORRAL_HTTP_H
#define CORRAL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"
#include "corral/json.h"
#include "corral/router.h"

struct server;
struct evhtp_request;
struct bufferevent;

#define REQ_ID_MAX 64
#define USER_ID_LEN 36

struct auth_ctx {
    bool ok;
    char user_id[USER_ID_LEN + 1];
    bool admin;
    bool via_api_key;
};

struct req {
    struct server *srv;
    struct evhtp_request *ev;     /* NULL once the client went away */
    const struct route *route;
    struct route_params params;
    enum http_method method;
    char id[REQ_ID_MAX + 1];      /* request id (X-Request-Id) */
    char client_ip[64];
    struct buf body;              /* the request body */
    struct json_doc *json;        /* parsed body for ROUTE_JSON_BODY */
    struct auth_ctx auth;
    uint64_t start_us;
    int status;                   /* the answer's status once sent */
    bool replied;
    bool evhtp_done;              /* evhtp has finished with ev */
    bool in_handler;              /* inside evhtp's request callback */
    bool taken;                   /* req_take_connection took the socket */
    void *state;                  /* handler state, free()d with the req */
    struct upload *upload;        /* streamed body (ROUTE_STREAM_*), freed
                                     with the req */
    struct req_alloc *allocs;     /* freed with the req (decoded query) */
};

struct http_server;

/* Binds cfg->listen and starts serving on srv->base. NULL on failure
 * (logged). */
struct http_server *http_server_new(struct server *srv);
/* Stops accepting new connections; open ones finish their requests. */
void http_server_stop_accepting(struct http_server *hs);
/* Requests being handled and connections open. */
int http_server_inflight(const struct http_server *hs);
int http_server_connections(const struct http_server *hs);
/* Closes idle keep-alive connections (used at shutdown). */
void http_server_close_idle(struct http_server *hs);
void http_server_free(struct http_server *hs);
/* The route table (also printed by corrald --print-routes). */
extern const struct route http_routes[];
extern const size_t http_routes_count;

/* Request accessors. */
const char *req_param(const struct req *r, const char *name);
/* Query parameter (decoded) or NULL. */
const char *req_query(const struct req *r, const char *name);
const char *req_header(const struct req *r, const char *name);
/* The query string as received (still percent-encoded) or NULL. */
const char *req_query_raw(const struct req *r);

/* Answers. body may be NULL (no body). These take ownership of nothing:
 * the bytes are copied. */
void req_reply_json(struct req *r, int status, const struct buf *body);
void req_reply(struct req *r, int status, const char *content_type,
               const void *data, size_t len);
void req_reply_empty(struct req *r, int status);
/* RFC 9457 problem+json with a stable snake_case code. */
void req_problem(struct req *r, int status, const char *code,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Adds a response header to the answer about to be sent. */
void req_add_header(struct req *r, const char *name, const char *value);
/* Long-lived answers (SSE, WebSocket): writes the status line, the
 * headers added so far, Content-Type and `Connection: close` (the body is
 * close-delimited), then hands the socket over as a bare bufferevent
 * (DESIGN.md §4). The req counts as answered; evhtp's connection is freed
 * once its callback stack has unwound. Owner of the bufferevent: the
 * caller, with no callbacks set and reading disabled. NULL when the client
 * already left (the req is finished anyway). */
struct bufferevent *req_take_connection(struct req *r, int status,
                                        const char *content_type);
/* 503 for a store failure, 500 otherwise; logs err. */
void req_store_error(struct req *r, int pg_status, const char *err);

#endif

/* ---- body field helpers (src/http/fields.c) ----
 * Each reads a member of the JSON body object. On a wrong type or a value
 * out of bounds it answers 422 naming the field and returns false; a
 * missing optional member leaves *out untouched and returns true. */
bool req_json_str(struct req *r, const char *field, bool required,
                  size_t min_len, size_t max_len, char **out);
bool req_json_bool(struct req *r, const char *field, bool required,
                   bool *out, bool *present);
/* Reads ?limit= (default 50, 1..200) and ?cursor= (opaque base64url);
 * answers 400 and returns false when malformed. *cursor is NULL or a
 * decoded string owned by r. */
bool req_page(struct req *r, int *limit, const char **cursor);
/* Appends "next_cursor": opaque form of last (or null when last is NULL). */
void json_w_next_cursor(struct json_w *w, const char *last);
/* Whether every member of the body object is one of known[0..n-1]; else
 * answers 422 naming the first unknown member (a typo never passes
 * silently) and returns false. */
bool req_json_known_members(struct req *r, const char *const *known,
                            size_t n);
/* The path parameter name when it is a UUID; else answers 404 `no such
 * <what>` (a malformed id never reaches the database) and returns NULL. */
const char *req_path_uuid(struct req *r, const char *name, const char *what);
/* For a paged list's store callback: answers a cursor PostgreSQL refused
 * (400 bad_query) or a failed query (503/500) and returns false. */
struct pg_reply;
bool req_list_rows(struct req *r, const struct pg_reply *reply);
/* For a store callback: answers a failed query (503/500) or an empty
 * result (404 `no such <what>`) and returns false; true when reply holds
 * a row. */
struct pg_reply;
struct pg_result;
bool req_store_row(struct req *r, const struct pg_reply *reply,
                   const char *what);
/* Answers 200 with a page of a list: {"items": [...], "next_cursor"} from
 * the first n rows of res (the query asked for limit + 1: more than limit
 * rows means another page, whose cursor is column cursor_col of the last
 * row shown). Each item is written by write, or is the JSON text of
 * column json_col when write is NULL. */
void req_reply_page(struct req *r, const struct pg_result *res, int n,
                    int limit, int json_col, int cursor_col,
                    void (*write)(struct json_w *w,
                                  const struct pg_result *res, int row));
/* For a DELETE's store callback: 204 when a row went, 404 `no such
 * <what>` when none did, 503/500 when the query failed. */
void req_reply_deleted(struct req *r, const struct pg_reply *reply,
                       const char *what);
/* Answers 200 with row 0 of reply written by write, or as above. */
void req_reply_row(struct req *r, const struct pg_reply *reply,
                   const char *what,
                   void (*write)(struct json_w *w,
                                 const struct pg_result *res, int row));
/* 429 with Retry-After. */
void req_rate_limited(struct req *r, int retry_after_s, const char *code);
