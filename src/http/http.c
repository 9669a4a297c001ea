/* corrald's HTTP front: libevhtp on the server's event base, one generic
 * callback that routes, checks limits and authenticates, and per-connection
 * bookkeeping for the header deadline (DESIGN.md §7: armed at accept,
 * cleared when the head is complete, so trickled bytes don't extend it). */
#include <arpa/inet.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "corral/api.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/metrics.h"
#include "corral/server.h"
#include "corral/upload.h"
#include "http_int.h"

struct http_conn {
    struct http_server *hs;
    evhtp_connection_t *conn;
    struct event *deadline;   /* header deadline, then keep-alive idle */
    struct http_conn *prev, *next;
    bool reading_head;        /* the deadline is the header deadline */
    bool dead;                /* evhtp freed the connection; we free soon */
    bool body_too_large;      /* the current request's body hit the cap */
    uint64_t body_bytes;      /* of the current request */
    struct upload *upload;    /* the current request's streamed body */
    char ip[64];
};

static void free_dead_conns(struct http_server *hs)
{
    while (hs->dead) {
        struct http_conn *hc = hs->dead;
        hs->dead = hc->next;
        free(hc);
    }
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    free_dead_conns(arg);
}

/* Two-phase teardown: evhtp runs request-fini hooks after the connection
 * fini hook, and they still look the connection up, so the struct waits
 * on the dead list until the next loop iteration. */
static void conn_unlink(struct http_conn *hc)
{
    struct http_server *hs = hc->hs;
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        hs->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    hs->connections--;
    upload_free(hc->upload); /* a body cut off: its temp file goes */
    hc->upload = NULL;
    event_free(hc->deadline);
    hc->deadline = NULL;
    hc->dead = true;
    hc->conn = NULL;
    hc->next = hs->dead;
    hs->dead = hc;
    event_active(hs->reaper, EV_TIMEOUT, 0);
}

static void arm_deadline(struct http_conn *hc, int ms)
{
    struct timeval tv = ms_to_timeval(ms);
    evtimer_add(hc->deadline, &tv);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *hc = arg;
    if (hc->reading_head) {
        /* Head incomplete: a slow or stalled client. */
        metrics_count(hc->hs->srv->metrics, "http_header_timeouts", 1);
        http_close_with_status(hc, 408, "header_timeout",
                               "request head not received in time", true);
        return;
    }
    evhtp_connection_free(hc->conn); /* idle keep-alive: just close */
}

static evhtp_res on_conn_fini(evhtp_connection_t *c, void *arg)
{
    conn_unlink(arg);
    return EVHTP_RES_OK;
}

static evhtp_res on_headers_start(evhtp_request_t *ev, void *arg)
{
    struct http_conn *hc = arg;
    hc->reading_head = true;
    hc->body_too_large = false;
    hc->body_bytes = 0;
    upload_free(hc->upload);
    hc->upload = NULL;
    arm_deadline(hc, hc->hs->srv->cfg->header_timeout_ms);
    return EVHTP_RES_OK;
}

static uint64_t content_length(evhtp_headers_t *hdrs, bool *present)
{
    const char *v = evhtp_header_find(hdrs, "Content-Length");
    *present = v != NULL;
    return v ? strtoull(v, NULL, 10) : 0;
}

static enum http_method method_of(evhtp_request_t *ev);

/* The route's streamed-body flags, 0 for an ordinary route. */
static unsigned stream_flags(evhtp_request_t *ev)
{
    const struct route *rt = NULL;
    struct route_params params;
    if (!ev->uri || !ev->uri->path || !ev->uri->path->full ||
        router_match(http_routes, http_routes_count, method_of(ev),
                     ev->uri->path->full, &rt, &params) != ROUTER_FOUND)
        return 0;
    return rt->flags & (ROUTE_STREAM_BODY | ROUTE_STREAM_RAW);
}

/* A streamed body goes to a temp file chunk by chunk (upload.h); its own
 * limit is checked here, before a byte of the body, when announced. */
static evhtp_res start_upload(struct http_conn *hc, evhtp_request_t *ev,
                              evhtp_headers_t *hdrs, unsigned flags)
{
    const struct config *cfg = hc->hs->srv->cfg;
    bool present;
    uint64_t len = content_length(hdrs, &present);
    uint64_t limit = (uint64_t)((flags & ROUTE_STREAM_BODY)
                                    ? cfg->attachment_max_bytes
                                    : cfg->workspace_put_max_bytes);
    const char *ct = evhtp_header_find(hdrs, "Content-Type");
    bool multipart = (flags & ROUTE_STREAM_BODY) && ct &&
                     strncasecmp(ct, "multipart/", 10) == 0;
    if (present && len > limit + (multipart ? 65536 : 0)) {
        http_close_with_status(hc, 413, "body_too_large",
                               "the upload exceeds its size limit", false);
        return EVHTP_RES_ERROR;
    }
    hc->upload = upload_new(cfg->data_dir, ct,
                            (flags & ROUTE_STREAM_BODY) != 0, limit);
    return EVHTP_RES_OK; /* without a temp file the handler answers 500 */
}

static evhtp_res on_headers(evhtp_request_t *ev, evhtp_headers_t *hdrs,
                            void *arg)
{
    struct http_conn *hc = arg;
    evtimer_del(hc->deadline);
    unsigned sflags = stream_flags(ev);
    if (sflags)
        return start_upload(hc, ev, hdrs, sflags);
    bool present;
    uint64_t len = content_length(hdrs, &present);
    if (present && len > (uint64_t)hc->hs->srv->cfg->max_body_bytes) {
        /* Refuse before reading a byte of the body. */
        http_close_with_status(hc, 413, "body_too_large",
                               "request body exceeds max_body_bytes", false);
        return EVHTP_RES_ERROR;
    }
    return EVHTP_RES_OK;
}

/* Feeds a streamed body and drains it, so evhtp keeps nothing of it. */
static evhtp_res feed_upload(struct http_conn *hc, struct evbuffer *buf)
{
    struct evbuffer_iovec v[8];
    int n;
    while ((n = evbuffer_peek(buf, -1, NULL, v, 8)) > 0) {
        size_t used = 0;
        for (int i = 0; i < n && i < 8; i++) {
            if (upload_feed(hc->upload, v[i].iov_base, v[i].iov_len) < 0) {
                http_close_with_status(hc, 413, "body_too_large",
                                       "the upload exceeds its size limit",
                                       false);
                return EVHTP_RES_ERROR;
            }
            used += v[i].iov_len;
        }
        evbuffer_drain(buf, used);
    }
    return EVHTP_RES_OK;
}

static evhtp_res on_body(evhtp_request_t *ev, struct evbuffer *buf, void *arg)
{
    struct http_conn *hc = arg;
    if (hc->upload)
        return feed_upload(hc, buf);
    if (stream_flags(ev)) { /* no temp file: drop the body, answer 500 */
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return EVHTP_RES_OK;
    }
    hc->body_bytes += evbuffer_get_length(buf);
    if (hc->body_bytes > (uint64_t)hc->hs->srv->cfg->max_body_bytes) {
        /* A chunked body grew past the cap. */
        http_close_with_status(hc, 413, "body_too_large",
                               "request body exceeds max_body_bytes", false);
        return EVHTP_RES_ERROR;
    }
    return EVHTP_RES_OK;
}

static void format_ip(const struct sockaddr *sa, char *out, size_t n)
{
    out[0] = '\0';
    if (!sa)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)
                                ->sin_addr, out, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)
                                 ->sin6_addr, out, (socklen_t)n);
}

static evhtp_res on_accept(evhtp_connection_t *c, void *arg)
{
    struct http_server *hs = arg;
    if (hs->srv->shutting_down ||
        hs->connections >= hs->srv->cfg->max_connections)
        return EVHTP_RES_ERROR;
    struct http_conn *hc = xcalloc(1, sizeof(*hc));
    hc->hs = hs;
    hc->conn = c;
    hc->deadline = evtimer_new(hs->srv->base, on_deadline, hc);
    format_ip(c->saddr, hc->ip, sizeof(hc->ip));
    hc->next = hs->conns;
    if (hs->conns)
        hs->conns->prev = hc;
    hs->conns = hc;
    hs->connections++;
    hc->reading_head = true; /* waiting for the first head */
    arm_deadline(hc, hs->srv->cfg->header_timeout_ms);
    evhtp_connection_set_hook(c, evhtp_hook_on_connection_fini,
                              (evhtp_hook)on_conn_fini, hc);
    evhtp_connection_set_hook(c, evhtp_hook_on_headers_start,
                              (evhtp_hook)on_headers_start, hc);
    evhtp_connection_set_hook(c, evhtp_hook_on_headers,
                              (evhtp_hook)on_headers, hc);
    evhtp_connection_set_hook(c, evhtp_hook_on_read, (evhtp_hook)on_body, hc);
    return EVHTP_RES_OK;
}

/* ---- requests ---- */

static struct http_conn *conn_of(evhtp_request_t *ev)
{
    evhtp_hooks_t *hooks = evhtp_connection_get_hooks(ev->conn);
    return hooks ? hooks->on_connection_fini_arg : NULL;
}

static void free_req(struct req *r)
{
    upload_free(r->upload);
    buf_deinit(&r->body);
    json_doc_free(r->json);
    free(r->state);
    while (r->allocs) {
        struct req_alloc *a = r->allocs;
        r->allocs = a->next;
        free(a);
    }
    free(r);
}

static evhtp_res on_req_fini(evhtp_request_t *ev, void *arg)
{
    struct req *r = arg;
    struct http_conn *hc = conn_of(ev);
    if (hc && !hc->dead) /* the connection now idles until the next head */
        arm_deadline(hc, r->srv->cfg->keepalive_timeout_ms);
    r->ev = NULL;
    r->evhtp_done = true;
    if (r->replied)
        free_req(r);
    return EVHTP_RES_OK;
}

void http_req_finished(struct req *r)
{
    struct http_server *hs = r->srv->http;
    uint64_t dur = server_mono_us() - r->start_us;
    int idx = r->route ? (int)(r->route - http_routes) : -1;
    metrics_observe_request(r->srv->metrics, idx, r->status, dur);
    struct json_w *w = log_begin(LOG_INFO, "request");
    if (w) {
        json_w_kstr(w, "request_id", r->id);
        json_w_kstr(w, "method", http_method_name(r->method));
        json_w_kstr(w, "route", r->route ? r->route->name : "unmatched");
        json_w_kint(w, "status", r->status);
        json_w_kint(w, "duration_us", (int64_t)dur);
        json_w_kstr(w, "client", r->client_ip);
        if (r->auth.ok)
            json_w_kstr(w, "user_id", r->auth.user_id);
        log_end(w);
    }
    hs->inflight--;
    if (r->evhtp_done)
        free_req(r);
}

static bool valid_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > REQ_ID_MAX)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.") == n;
}

static void set_request_id(struct req *r)
{
    const char *given = evhtp_header_find(r->ev->headers_in, "X-Request-Id");
    if (given && valid_request_id(given)) {
        snprintf(r->id, sizeof(r->id), "%s", given);
        return;
    }
    snprintf(r->id, sizeof(r->id), "%llx-%llx",
             (unsigned long long)server_now(),
             (unsigned long long)++r->srv->http->request_ids);
}

static void set_client_ip(struct req *r, struct http_conn *hc)
{
    const char *fwd = r->srv->cfg->trust_proxy
                          ? evhtp_header_find(r->ev->headers_in,
                                              "X-Forwarded-For")
                          : NULL;
    if (fwd) {
        size_t n = strcspn(fwd, ", ");
        snprintf(r->client_ip, sizeof(r->client_ip), "%.*s", (int)n, fwd);
    } else if (hc) {
        snprintf(r->client_ip, sizeof(r->client_ip), "%s", hc->ip);
    }
}

static enum http_method method_of(evhtp_request_t *ev)
{
    /* evhtp's enum has WebDAV methods we never route: a lookup table
     * keeps the switch-enum rule meaningful elsewhere. */
    static const struct {
        htp_method from;
        enum http_method to;
    } map[] = {
        {htp_method_GET, HTTP_GET},     {htp_method_HEAD, HTTP_HEAD},
        {htp_method_POST, HTTP_POST},   {htp_method_PUT, HTTP_PUT},
        {htp_method_PATCH, HTTP_PATCH}, {htp_method_DELETE, HTTP_DELETE},
        {htp_method_OPTIONS, HTTP_OPTIONS},
    };
    htp_method m = evhtp_request_get_method(ev);
    for (size_t i = 0; i < ARRAY_SIZE(map); i++)
        if (map[i].from == m)
            return map[i].to;
    return HTTP_OTHER;
}

static struct req *req_new(struct http_server *hs, evhtp_request_t *ev)
{
    struct req *r = xcalloc(1, sizeof(*r));
    struct http_conn *hc = conn_of(ev);
    r->srv = hs->srv;
    r->ev = ev;
    r->method = method_of(ev);
    r->start_us = server_mono_us();
    buf_init(&r->body);
    set_request_id(r);
    set_client_ip(r, hc);
    if (hc) {
        hc->reading_head = false;
        evtimer_del(hc->deadline); /* handlers may take their time */
    }
    evhtp_request_set_hook(ev, evhtp_hook_on_request_fini,
                           (evhtp_hook)on_req_fini, r);
    hs->inflight++;
    return r;
}

/* ---- dispatch ---- */

static bool is_json_content_type(const char *ct)
{
    if (!ct)
        return false;
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    if (n != 16 || strncasecmp(ct, "application/json", 16) != 0)
        return false;
    const char *params = ct + strcspn(ct, ";");
    /* JSON is UTF-8 (RFC 8259); any other declared charset is refused. */
    const char *cs = strcasestr(params, "charset=");
    return !cs || strncasecmp(cs + 8, "utf-8", 5) == 0 ||
           strncasecmp(cs + 8, "\"utf-8\"", 7) == 0;
}

static void run_handler(struct req *r)
{
    r->route->handler(r);
}

static bool parse_json_body(struct req *r)
{
    if (!is_json_content_type(req_header(r, "Content-Type"))) {
        req_problem(r, 415, "unsupported_media_type",
                    "Content-Type must be application/json");
        return false;
    }
    const struct config *cfg = r->srv->cfg;
    struct json_limits lim = {
        .max_bytes = (size_t)cfg->max_body_bytes,
        .max_depth = cfg->json_max_depth,
        .max_tokens = cfg->json_max_tokens,
    };
    const char *why = NULL;
    int rc = json_parse(r->body.data ? r->body.data : "", r->body.len, &lim,
                        &r->json, &why);
    if (rc != JSON_OK) {
        req_problem(r, 400, "invalid_json", "request body: %s",
                    why ? why : "malformed JSON");
        return false;
    }
    if (json_type(r->json, 0) != JSON_OBJECT) {
        req_problem(r, 400, "invalid_json",
                    "request body must be a JSON object");
        return false;
    }
    return true;
}

static void parse_body_then_run(struct req *r)
{
    unsigned f = r->route->flags;
    if ((f & ROUTE_JSON_OPTIONAL) && r->body.len == 0) {
        json_parse("{}", 2, NULL, &r->json, NULL); /* an empty body: {} */
    } else if ((f & (ROUTE_JSON_BODY | ROUTE_JSON_OPTIONAL)) &&
               !parse_json_body(r)) {
        return;
    }
    run_handler(r);
}

static void dispatch(struct req *r)
{
    struct route_params *params = &r->params;
    const char *path = r->ev->uri->path->full;
    enum router_result rr = router_match(http_routes, http_routes_count,
                                         r->method, path, &r->route, params);
    if (rr == ROUTER_NOT_FOUND) {
        req_problem(r, 404, "not_found", "no such endpoint");
        return;
    }
    if (rr == ROUTER_METHOD_MISMATCH) {
        char allow[128];
        router_allow(http_routes, http_routes_count, path, allow,
                     sizeof(allow));
        req_add_header(r, "Allow", allow);
        req_problem(r, 405, "method_not_allowed", "use one of: %s", allow);
        return;
    }
    /* Authentication comes first: a stranger gets 401 whatever the body,
     * and no parsing work is spent on them. */
    if (r->route->flags & (ROUTE_AUTH | ROUTE_ADMIN))
        auth_authenticate(r, parse_body_then_run);
    else
        parse_body_then_run(r);
}

/* CORS: answers preflights and marks responses for allowed origins. */
static bool origin_allowed(const struct config *cfg, const char *origin)
{
    if (!cfg->cors_origins || !origin)
        return false;
    if (strcmp(cfg->cors_origins, "*") == 0)
        return true;
    size_t n = strlen(origin);
    for (const char *p = cfg->cors_origins; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, origin, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

static bool handle_cors(struct req *r)
{
    const char *origin = req_header(r, "Origin");
    if (!origin_allowed(r->srv->cfg, origin))
        return false;
    req_add_header(r, "Access-Control-Allow-Origin", origin);
    req_add_header(r, "Vary", "Origin");
    if (r->method != HTTP_OPTIONS ||
        !req_header(r, "Access-Control-Request-Method"))
        return false;
    req_add_header(r, "Access-Control-Allow-Methods",
                   "GET, POST, PUT, PATCH, DELETE, OPTIONS");
    req_add_header(r, "Access-Control-Allow-Headers",
                   "Authorization, Content-Type, Last-Event-ID, X-Request-Id");
    req_add_header(r, "Access-Control-Max-Age", "600");
    req_reply_empty(r, 204);
    return true;
}

static void on_request(evhtp_request_t *ev, void *arg)
{
    struct http_server *hs = arg;
    struct req *r = req_new(hs, ev);
    struct http_conn *hc = conn_of(ev);
    if (hc && hc->upload) { /* the streamed body is complete */
        r->upload = hc->upload;
        hc->upload = NULL;
        upload_finish(r->upload);
    }
    size_t n = evbuffer_get_length(ev->buffer_in);
    if (n) {
        buf_reserve(&r->body, n);
        evbuffer_remove(ev->buffer_in, r->body.data, n);
        r->body.len = n;
        r->body.data[n] = '\0';
    }
    r->in_handler = true;
    if (!handle_cors(r))
        dispatch(r);
    r->in_handler = false;
    if (r->taken) { /* the handler took the socket: r is ours to free */
        free_req(r);
        return;
    }
    if (!r->replied && r->ev && !r->evhtp_done) {
        /* The answer comes later: stop reading this connection until it
         * does (evhtp resumes it in req_reply). */
        evhtp_request_pause(ev);
    }
}

/* ---- the server ---- */

struct http_server *http_server_new(struct server *srv)
{
    struct http_server *hs = xcalloc(1, sizeof(*hs));
    hs->srv = srv;
    hs->htp = evhtp_new(srv->base, NULL);
    hs->reaper = evtimer_new(srv->base, on_reap, hs);
    if (!hs->htp)
        goto fail;
    /* No "100 Continue": a 413 must not invite the body first. */
    evhtp_disable_flag(hs->htp, EVHTP_FLAG_ENABLE_100_CONT);
    evhtp_set_gencb(hs->htp, on_request, hs);
    evhtp_set_post_accept_cb(hs->htp, on_accept, hs);
    /* Our own checks answer 413 first; this is a backstop that closes. */
    int64_t cap = srv->cfg->max_body_bytes;
    if (srv->cfg->attachment_max_bytes > cap)
        cap = srv->cfg->attachment_max_bytes;
    if (srv->cfg->workspace_put_max_bytes > cap)
        cap = srv->cfg->workspace_put_max_bytes;
    evhtp_set_max_body_size(hs->htp, (uint64_t)cap * 2 + 131072);
    if (evhtp_bind_socket(hs->htp, srv->cfg->listen_host,
                          srv->cfg->listen_port, 1024) != 0) {
        log_error("cannot listen on %s:%u", srv->cfg->listen_host,
                  srv->cfg->listen_port);
        goto fail;
    }
    return hs;
fail:
    if (hs->htp)
        evhtp_free(hs->htp);
    event_free(hs->reaper);
    free(hs);
    return NULL;
}

void http_server_stop_accepting(struct http_server *hs)
{
    evhtp_unbind_socket(hs->htp);
}

int http_server_inflight(const struct http_server *hs)
{
    return hs->inflight;
}

int http_server_connections(const struct http_server *hs)
{
    return hs->connections;
}

void http_server_close_idle(struct http_server *hs)
{
    struct http_conn *hc = hs->conns, *next;
    for (; hc; hc = next) {
        next = hc->next;
        if (hc->conn && !hc->conn->request)
            evhtp_connection_free(hc->conn);
        else if (hc->conn && hc->reading_head)
            evhtp_connection_free(hc->conn);
    }
}

static void lingering_free(struct lingering *l);

void http_server_free(struct http_server *hs)
{
    if (!hs)
        return;
    while (hs->conns)
        evhtp_connection_free(hs->conns->conn);
    evhtp_unbind_socket(hs->htp); /* evhtp_free leaves the listener */
    evhtp_free(hs->htp);
    free_dead_conns(hs);
    while (hs->lingering)
        lingering_free(hs->lingering);
    event_free(hs->reaper);
    free(hs);
}

/* ---- closing a connection evhtp no longer owns ---- */

/* A socket answered at close, kept until the client has read the answer;
 * listed so that shutdown frees the ones still draining. */
struct lingering {
    struct lingering *next, **pprev;
    struct bufferevent *bev;
};

static void lingering_add(struct http_server *hs, struct bufferevent *bev)
{
    struct lingering *l = xcalloc(1, sizeof(*l));
    l->bev = bev;
    l->next = hs->lingering;
    if (l->next)
        l->next->pprev = &l->next;
    l->pprev = &hs->lingering;
    hs->lingering = l;
}

static void lingering_free(struct lingering *l)
{
    *l->pprev = l->next;
    if (l->next)
        l->next->pprev = l->pprev;
    bufferevent_free(l->bev);
    free(l);
}

static void owned_on_event(struct bufferevent *bev, short what, void *arg)
{
    lingering_free(arg);
}

static void owned_on_read(struct bufferevent *bev, void *arg)
{
    evbuffer_drain(bufferevent_get_input(bev),
                   evbuffer_get_length(bufferevent_get_input(bev)));
}

/* Lingering close: closing a socket with unread input makes the kernel
 * send RST, which can destroy the answer before the client reads it. So
 * half-close, then drain until the client closes or the timeout hits. */
static void owned_on_write(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    bufferevent_setcb(bev, owned_on_read, NULL, owned_on_event, arg);
    bufferevent_enable(bev, EV_READ);
}

void http_close_with_status(struct http_conn *hc, int status,
                            const char *code, const char *detail,
                            bool free_conn)
{
    evhtp_connection_t *c = hc->conn;
    struct bufferevent *bev = evhtp_connection_take_ownership(c);
    conn_unlink(hc); /* take_ownership removed our fini hook */
    struct buf body;
    buf_init(&body);
    struct json_w w;
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "about:blank");
    json_w_kstr(&w, "title", status == 413 ? "Payload Too Large"
                                           : "Request Timeout");
    json_w_kint(&w, "status", status);
    json_w_kstr(&w, "detail", detail);
    json_w_kstr(&w, "code", code);
    json_w_obj_end(&w);
    struct evbuffer *out = bufferevent_get_output(bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: "
                        "application/problem+json\r\nContent-Length: %zu\r\n"
                        "X-Request-Id: %llx-c%llx\r\n"
                        "Connection: close\r\n\r\n",
                        status, status == 413 ? "Payload Too Large"
                                              : "Request Timeout",
                        body.len, (unsigned long long)server_now(),
                        (unsigned long long)++hc->hs->closed_ids);
    evbuffer_add(out, body.data, body.len);
    buf_deinit(&body);
    struct timeval tv = {5, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    lingering_add(hc->hs, bev);
    bufferevent_setcb(bev, NULL, owned_on_write, owned_on_event,
                      hc->hs->lingering);
    bufferevent_enable(bev, EV_WRITE);
    if (free_conn)
        evhtp_connection_free(c);
}

/* ---- handing a connection over (SSE, WebSocket) ---- */

static int add_header_line(evhtp_kv_t *kv, void *arg)
{
    evbuffer_add_printf(arg, "%s: %s\r\n", kv->key, kv->val);
    return 0;
}

static void free_evhtp_conn(evutil_socket_t fd, short what, void *arg)
{
    evhtp_connection_free(arg);
}

struct bufferevent *req_take_connection(struct req *r, int status,
                                        const char *content_type)
{
    evhtp_request_t *ev = r->ev;
    r->status = status;
    r->replied = true;
    if (!ev) {
        http_req_finished(r);
        return NULL;
    }
    struct http_conn *hc = conn_of(ev);
    evhtp_connection_t *c = ev->conn;
    struct bufferevent *bev = evhtp_connection_take_ownership(c);
    struct evbuffer *out = bufferevent_get_output(bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d OK\r\nContent-Type: %s\r\n"
                        "Cache-Control: no-cache\r\nConnection: close\r\n"
                        "X-Request-Id: %s\r\n", status, content_type, r->id);
    evhtp_kvs_for_each(ev->headers_out, add_header_line, out);
    evbuffer_add(out, "\r\n", 2);
    if (hc)
        conn_unlink(hc); /* take_ownership removed our hooks */
    r->ev = NULL;
    r->taken = true;
    /* Its fini hook is gone too. Inside the handler, on_request frees r
     * and evhtp's read callback frees the connection. */
    r->evhtp_done = !r->in_handler;
    if (!r->in_handler)
        event_base_once(r->srv->base, -1, EV_TIMEOUT, free_evhtp_conn, c,
                        NULL);
    http_req_finished(r);
    return bev;
}
