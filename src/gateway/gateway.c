/* The model gateway of one sandbox: a small HTTP/1.1 server on a unix
 * socket whose every request is forwarded to the model upstream through
 * httpc, its answer streamed back as it arrives and its token usage
 * metered on the way (gateway.h states the rules).
 *
 * A hand-written server rather than libevhtp: the gateway needs a
 * response that streams while the request's connection stays usable for
 * the next one, flow control against the upstream, and an exact moment
 * when the client is gone; each is a few lines over a bufferevent.
 *
 * Ownership: a connection (gw_conn) belongs to the gateway; a forward
 * (gw_fwd) belongs to its httpc request and is freed in on_done. When
 * the client goes first, the forward is detached (conn and g set to NULL)
 * and cancelled, so on_done only frees it. Connections are closed in two
 * phases: conn_close frees the bufferevent at once and queues the struct
 * for the reap event, so no caller up the stack touches freed memory. */
#include "corral/gateway.h"
#include "corral/unixaddr.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "corral/buf.h"
#include "corral/config.h"
#include "corral/crypto.h"
#include "corral/httpc.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"

#define GW_MAX_HEAD (64 * 1024) /* request line and headers */
#define GW_MAX_HEADERS 128
#define GW_MAX_PIPELINED (1 << 20) /* input accepted during a forward */
#define GW_OUT_HIGH (1 << 20)      /* unsent output that pauses upstream */
#define GW_OUT_LOW (256 * 1024)    /* ... and that resumes it */
#define GW_MAX_EVENT (1 << 20)     /* SSE event data kept for metering */
#define GW_MAX_JSON (4 << 20)      /* JSON answer kept for metering */
#define GW_DRAIN_TIMEOUT_S 30      /* to write a last response */
#define GW_BACKLOG 64
#define GW_MODEL_MAX 128           /* longer model ids are reported as "" */

enum gw_state {
    GW_HEAD,    /* reading a request head, or idle between requests */
    GW_BODY,    /* reading its body */
    GW_FORWARD, /* the upstream request is in flight */
    GW_DRAIN,   /* the last response is queued; close once written */
    GW_DEAD,    /* closed; the struct waits for the reap event */
};

enum gw_chunk { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };

/* The request being read. */
struct gw_req {
    char *method;
    char *target; /* origin-form: path and query */
    char **hdrs;  /* forwarded "Name: value" lines */
    size_t nhdrs;
    bool http11;
    bool keep_alive;
    bool expect_continue;
    bool chunked;
    enum gw_chunk ch; /* chunked decoding state */
    uint64_t left;    /* body or chunk bytes still to read */
    size_t trailer_bytes;
    struct buf body;
};

enum gw_meter { M_IN, M_OUT, M_CACHE_CREATE, M_CACHE_READ, M_COUNT };

static const char *const meter_keys[M_COUNT] = {"input_tokens", "output_tokens",
                                                "cache_creation_input_tokens",
                                                "cache_read_input_tokens"};

struct gw_conn;

/* One forwarded request, owned by its httpc request (freed in on_done). */
struct gw_fwd {
    struct gateway *g;    /* NULL once detached */
    struct gw_conn *conn; /* NULL once detached */
    struct httpc_req *hr;
    char *method;
    char *path; /* without the query, for the log */
    uint64_t started_us;
    uint64_t bytes; /* body bytes received */
    int status;     /* 0 until the head */
    bool head_sent;
    bool chunked_out;      /* the client gets chunked framing */
    bool no_body;          /* HEAD, 204, 304 */
    bool paused;           /* httpc paused for flow control */
    bool sse, json;        /* by Content-Type: how to meter */
    uint64_t cur[M_COUNT]; /* this answer's (cumulative) token counts */
    struct buf line;       /* SSE: the partial line */
    struct buf data;       /* SSE: the event's data lines */
    bool cr;               /* SSE: the previous line ended with CR */
    bool line_overflow;    /* SSE: this line exceeded the cap */
    bool skip_event;       /* SSE: this event's data exceeded the cap */
    struct buf body;       /* JSON: the answer, parsed at the end */
    bool body_overflow;
    char model[GW_MODEL_MAX]; /* named by the answer; "" until then */
};

struct gw_conn {
    struct gateway *g;
    struct bufferevent *bev;
    enum gw_state state;
    struct gw_req req;
    struct gw_fwd *fwd; /* in GW_FORWARD */
    struct gw_conn *prev, *next;
};

struct gateway {
    struct server *srv;
    char *chat_id;
    char *sock_path;
    char *upstream;   /* model_upstream_url without a trailing '/' */
    char *key_header; /* "x-api-key: <key>", or NULL */
    struct evconnlistener *lev;
    struct event *reap;    /* frees dead connections */
    struct gw_conn *conns; /* live, doubly linked */
    struct gw_conn *dead;  /* closed, linked through next */
    int nconns;
    long connect_ms, total_ms;
    dev_t sock_dev; /* the socket file we created, so close */
    ino_t sock_ino; /* removes only that one */
    struct gateway_usage usage;
    gateway_meter_fn meter_fn; /* budgets: told every increment */
    void *meter_arg;
    bool refuse;               /* answer 402 instead of forwarding */
    char *refuse_msg;
    uint64_t refusals;
};

static void conn_process(struct gw_conn *c);
static void conn_close(struct gw_conn *c, const char *why);

/* ---- small helpers ---- */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* True when the comma-separated list has tok (case-insensitive). */
static bool list_has(const char *list, size_t len, const char *tok, size_t tl)
{
    const char *p = list, *end = list + len;
    while (p < end) {
        while (p < end && (is_ows(*p) || *p == ','))
            p++;
        const char *q = p;
        while (q < end && *q != ',')
            q++;
        const char *e = q;
        while (e > p && is_ows(e[-1]))
            e--;
        if ((size_t)(e - p) == tl && strncasecmp(p, tok, tl) == 0)
            return true;
        p = q;
    }
    return false;
}

static bool name_in(const char *name, size_t n, const char *const *set)
{
    for (; *set; set++)
        if (strlen(*set) == n && strncasecmp(name, *set, n) == 0)
            return true;
    return false;
}

/* Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way. */
static const char *const hop_by_hop[] = {"connection",
                                         "keep-alive",
                                         "proxy-connection",
                                         "te",
                                         "trailer",
                                         "transfer-encoding",
                                         "upgrade",
                                         "proxy-authenticate",
                                         "proxy-authorization",
                                         NULL};

/* Request headers the gateway replaces or that curl sets itself. */
static const char *const req_drop[] = {
    "host",      "content-length", "expect", "accept-encoding",
    "x-api-key", "authorization",  NULL};

/* Response headers that no longer describe the body the client gets. */
static const char *const resp_drop[] = {"content-length", "content-encoding",
                                        NULL};

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return "Status";
    }
}

static void set_idle_timeout(struct gw_conn *c, int ms)
{
    struct timeval tv = ms_to_timeval(ms);
    bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* Moves n bytes from in to the end of b. */
static void take(struct evbuffer *in, struct buf *b, size_t n)
{
    if (!n)
        return;
    buf_reserve(b, n);
    evbuffer_remove(in, b->data + b->len, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void req_reset(struct gw_req *rq)
{
    free(rq->method);
    free(rq->target);
    for (size_t i = 0; i < rq->nhdrs; i++)
        free(rq->hdrs[i]);
    free(rq->hdrs);
    buf_deinit(&rq->body);
    memset(rq, 0, sizeof(*rq));
}

/* ---- metering ---- */

static uint64_t *usage_field(struct gateway_usage *u, int i)
{
    uint64_t *tot[M_COUNT] = {&u->input_tokens, &u->output_tokens,
                              &u->cache_creation_input_tokens,
                              &u->cache_read_input_tokens};
    return tot[i];
}

/* Remembers the model the answer names (a string; anything else is
 * ignored), for the meter callback. */
static void meter_model(struct gw_fwd *f, const struct json_doc *doc, int tok)
{
    size_t n;
    char *m = json_str_dup(doc, tok, &n);
    if (m && n < sizeof(f->model) && !memchr(m, '\0', n))
        memcpy(f->model, m, n + 1);
    free(m);
}

/* SSE and JSON usage counts are cumulative within one answer, so each
 * new value adds only its increase over the last one seen. The increase
 * of one usage object goes to the meter callback in one call. */
static void meter_usage(struct gw_fwd *f, const struct json_doc *doc, int obj)
{
    if (json_type(doc, obj) != JSON_OBJECT)
        return;
    struct gateway_usage delta = {0};
    bool any = false;
    for (int i = 0; i < M_COUNT; i++) {
        int64_t v;
        if (json_get_int64(doc, json_get(doc, obj, meter_keys[i]), &v) != 0 ||
            v < 0 || (uint64_t)v <= f->cur[i])
            continue;
        *usage_field(&delta, i) = (uint64_t)v - f->cur[i];
        *usage_field(&f->g->usage, i) += (uint64_t)v - f->cur[i];
        f->cur[i] = (uint64_t)v;
        any = true;
    }
    if (any && f->g->meter_fn)
        f->g->meter_fn(f->g->meter_arg, f->model, &delta);
}

static void sse_event(struct gw_fwd *f)
{
    const char *d = f->data.data;
    size_t n = f->data.len;
    /* Only two event types carry usage; skip parsing the text deltas. */
    if (!d || !n || f->skip_event ||
        (!memmem(d, n, "message_start", 13) &&
         !memmem(d, n, "message_delta", 13)))
        return;
    struct json_doc *doc;
    if (json_parse(d, n, &json_default_limits, &doc, NULL) != 0)
        return;
    int type = json_get(doc, 0, "type");
    if (json_str_eq(doc, type, "message_start")) {
        meter_model(f, doc, json_path(doc, 0, "message.model"));
        meter_usage(f, doc, json_path(doc, 0, "message.usage"));
    } else if (json_str_eq(doc, type, "message_delta"))
        meter_usage(f, doc, json_get(doc, 0, "usage"));
    json_doc_free(doc);
}

/* One complete SSE line (without its terminator). */
static void sse_line(struct gw_fwd *f)
{
    const char *l = f->line.data;
    size_t n = f->line.len;
    if (n == 0) { /* a blank line ends the event */
        sse_event(f);
        buf_reset(&f->data);
        f->skip_event = false;
        return;
    }
    if (n < 5 || memcmp(l, "data:", 5) != 0)
        return; /* event:, id:, retry:, comments */
    l += 5;
    n -= 5;
    if (n && *l == ' ') {
        l++;
        n--;
    }
    if (f->data.len + n + 1 > GW_MAX_EVENT) {
        f->skip_event = true;
        return;
    }
    if (f->data.len)
        buf_putc(&f->data, '\n');
    buf_append(&f->data, l, n);
}

/* Splits the stream into lines (CRLF, LF or CR) across chunk bounds. */
static void sse_feed(struct gw_fwd *f, const char *p, size_t n)
{
    while (n > 0) {
        if (f->cr) {
            f->cr = false;
            if (*p == '\n') {
                p++;
                n--;
                continue;
            }
        }
        size_t i = 0;
        while (i < n && p[i] != '\n' && p[i] != '\r')
            i++;
        if (f->line_overflow || f->line.len + i > GW_MAX_EVENT)
            f->line_overflow = true; /* too long to meter: skip it */
        else
            buf_append(&f->line, p, i);
        if (i == n)
            return; /* the line continues in the next chunk */
        f->cr = p[i] == '\r';
        if (f->line_overflow)
            f->skip_event = true;
        else
            sse_line(f);
        f->line_overflow = false;
        buf_reset(&f->line);
        p += i + 1;
        n -= i + 1;
    }
}

static void meter_body(struct gw_fwd *f, const char *p, size_t n)
{
    f->bytes += n;
    if (f->sse) {
        sse_feed(f, p, n);
    } else if (f->json && !f->body_overflow) {
        if (f->body.len + n > GW_MAX_JSON) {
            f->body_overflow = true;
            buf_deinit(&f->body);
        } else {
            buf_append(&f->body, p, n);
        }
    }
}

static void meter_json(struct gw_fwd *f)
{
    static const struct json_limits lim = {
        .max_bytes = GW_MAX_JSON, .max_depth = 64, .max_tokens = 1 << 19};
    struct json_doc *doc;
    if (!f->json || f->body_overflow || !f->body.len)
        return;
    if (json_parse(f->body.data, f->body.len, &lim, &doc, NULL) != 0)
        return;
    meter_model(f, doc, json_get(doc, 0, "model"));
    meter_usage(f, doc, json_get(doc, 0, "usage"));
    json_doc_free(doc);
}

/* ---- forwards ---- */

static void fwd_log(const struct gw_fwd *f, const char *err)
{
    struct json_w *w = log_begin(LOG_INFO, "gateway request");
    if (!w)
        return;
    json_w_kstr(w, "chat_id", f->g->chat_id);
    json_w_kstr(w, "method", f->method);
    json_w_kstr(w, "path", f->path);
    json_w_kint(w, "status", f->status);
    json_w_kint(w, "duration_us", (int64_t)(server_mono_us() - f->started_us));
    for (int i = 0; i < M_COUNT; i++)
        json_w_kint(w, meter_keys[i], (int64_t)f->cur[i]);
    json_w_kint(w, "bytes", (int64_t)f->bytes);
    if (err)
        json_w_kstr(w, "error", err);
    log_end(w);
}

static void fwd_free(struct gw_fwd *f)
{
    buf_deinit(&f->line);
    buf_deinit(&f->data);
    buf_deinit(&f->body);
    free(f->method);
    free(f->path);
    free(f);
}

/* The client is gone (or the gateway closes): log what happened so far,
 * then let on_done free the forward. */
static void fwd_detach(struct gw_fwd *f, const char *why)
{
    fwd_log(f, why);
    f->conn = NULL;
    f->g = NULL;
    httpc_cancel(f->hr);
}

/* Walks a "Name: value\r\n" block; false at its end. Lines without a
 * name are skipped. */
struct hdr_iter {
    const char *p, *end;
};

static bool hdr_next(struct hdr_iter *it, const char **name, size_t *nlen,
                     const char **val, size_t *vlen)
{
    while (it->p < it->end) {
        const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
        const char *le = nl ? nl : it->end, *line = it->p;
        it->p = nl ? nl + 1 : it->end;
        if (le > line && le[-1] == '\r')
            le--;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line)
            continue;
        const char *v = colon + 1;
        while (v < le && is_ows(*v))
            v++;
        while (le > v && is_ows(le[-1]))
            le--;
        *name = line;
        *nlen = (size_t)(colon - line);
        *val = v;
        *vlen = (size_t)(le - v);
        return true;
    }
    return false;
}

static void copy_resp_headers(struct gw_fwd *f, struct buf *out,
                              const char *hdrs, size_t len)
{
    const char *n, *v, *conn = "";
    size_t nl, vl, conn_len = 0;
    struct hdr_iter it = {hdrs, hdrs + len};
    while (hdr_next(&it, &n, &nl, &v, &vl))
        if (nl == 10 && strncasecmp(n, "connection", 10) == 0) {
            conn = v; /* a single Connection header is the norm */
            conn_len = vl;
        }
    it = (struct hdr_iter){hdrs, hdrs + len};
    while (hdr_next(&it, &n, &nl, &v, &vl)) {
        if (name_in(n, nl, hop_by_hop) || name_in(n, nl, resp_drop) ||
            list_has(conn, conn_len, n, nl))
            continue;
        if (nl == 12 && strncasecmp(n, "content-type", 12) == 0) {
            f->sse = vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
            f->json = vl >= 16 && strncasecmp(v, "application/json", 16) == 0;
        }
        buf_append(out, n, (size_t)(v + vl - n));
        buf_puts(out, "\r\n");
    }
}

static void fwd_on_head(void *arg, int status, const char *hdrs, size_t len)
{
    struct gw_fwd *f = arg;
    struct gw_conn *c = f->conn;
    if (!c)
        return;
    f->status = status;
    f->no_body = !strcmp(f->method, "HEAD") || status == 204 || status == 304;
    struct buf h;
    buf_init(&h);
    buf_printf(&h, "HTTP/1.1 %d %s\r\n", status, reason(status));
    copy_resp_headers(f, &h, hdrs, len);
    if (!f->no_body) {
        /* A 1.0 client has no chunked framing: end the body by closing. */
        f->chunked_out = c->req.http11;
        if (f->chunked_out)
            buf_puts(&h, "Transfer-Encoding: chunked\r\n");
        else
            c->req.keep_alive = false;
    }
    if (!c->req.keep_alive)
        buf_puts(&h, "Connection: close\r\n");
    buf_puts(&h, "\r\n");
    bufferevent_write(c->bev, h.data, h.len);
    buf_deinit(&h);
    f->head_sent = true;
}

static void fwd_on_body(void *arg, const char *data, size_t len)
{
    struct gw_fwd *f = arg;
    struct gw_conn *c = f->conn;
    if (!c)
        return;
    meter_body(f, data, len);
    if (f->no_body)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (f->chunked_out)
        evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add(out, data, len);
    if (f->chunked_out)
        evbuffer_add(out, "\r\n", 2);
    if (!f->paused && evbuffer_get_length(out) > GW_OUT_HIGH) {
        /* The client reads slower than the upstream sends: let the
         * upstream's window fill instead of our memory. */
        f->paused = true;
        httpc_pause(f->hr, true);
    }
}

/* ---- responses ---- */

/* The response is complete: wait for the next request, or close once
 * the output is written. */
static void conn_next(struct gw_conn *c)
{
    bool keep = c->req.keep_alive;
    req_reset(&c->req);
    if (!keep) {
        c->state = GW_DRAIN;
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
        set_idle_timeout(c, GW_DRAIN_TIMEOUT_S * 1000);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            conn_close(c, NULL);
        return;
    }
    c->state = GW_HEAD;
    set_idle_timeout(c, GATEWAY_IDLE_TIMEOUT_MS);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        conn_process(c); /* a pipelined request */
}

/* An Anthropic-style error answer from the gateway itself. */
static void reply_error(struct gw_conn *c, int status, const char *type,
                        const char *msg, bool close)
{
    struct buf body, head;
    buf_init(&body);
    buf_init(&head);
    struct json_w w;
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "error");
    json_w_key(&w, "error");
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", type);
    json_w_kstr(&w, "message", msg);
    json_w_obj_end(&w);
    json_w_obj_end(&w);
    if (close)
        c->req.keep_alive = false;
    buf_printf(&head,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\n%s\r\n",
               status, reason(status), body.len,
               c->req.keep_alive ? "" : "Connection: close\r\n");
    bufferevent_write(c->bev, head.data, head.len);
    if (!c->req.method || strcmp(c->req.method, "HEAD") != 0)
        bufferevent_write(c->bev, body.data, body.len);
    buf_deinit(&head);
    buf_deinit(&body);
    conn_next(c);
}

static void fwd_on_done(void *arg, const char *err)
{
    struct gw_fwd *f = arg;
    struct gw_conn *c = f->conn;
    if (!c) { /* detached: already logged */
        fwd_free(f);
        return;
    }
    c->fwd = NULL;
    if (!err)
        meter_json(f);
    fwd_log(f, err);
    if (err && !f->head_sent) {
        char msg[512];
        snprintf(msg, sizeof(msg), "upstream request failed: %s", err);
        reply_error(c, 502, "api_error", msg, false);
    } else if (err) {
        /* Mid-body: what arrived is flushed, then the close without a
         * last chunk tells the client that the answer is incomplete. */
        c->req.keep_alive = false;
        conn_next(c);
    } else {
        if (f->chunked_out)
            bufferevent_write(c->bev, "0\r\n\r\n", 5);
        conn_next(c);
    }
    fwd_free(f);
}

static const struct httpc_cbs fwd_cbs = {
    .on_head = fwd_on_head,
    .on_body = fwd_on_body,
    .on_done = fwd_on_done,
};

/* Over budget: answered here, the upstream never sees the request. */
static void refuse_request(struct gw_conn *c)
{
    struct gateway *g = c->g;
    g->refusals++;
    log_info("gateway %s: %s %.*s refused (budget)", g->chat_id,
             c->req.method, (int)strcspn(c->req.target, "?"), c->req.target);
    buf_deinit(&c->req.body);
    reply_error(c, 402, "billing_error", g->refuse_msg, false);
}

static void forward_start(struct gw_conn *c)
{
    struct gateway *g = c->g;
    struct gw_req *rq = &c->req;
    if (g->refuse) {
        refuse_request(c);
        return;
    }
    const char **hdrs = xcalloc(rq->nhdrs + 2, sizeof(*hdrs));
    size_t n = 0;
    for (size_t i = 0; i < rq->nhdrs; i++)
        hdrs[n++] = rq->hdrs[i];
    if (g->key_header)
        hdrs[n++] = g->key_header;
    struct buf url;
    buf_init(&url);
    buf_printf(&url, "%s%s", g->upstream, rq->target);
    struct gw_fwd *f = xcalloc(1, sizeof(*f));
    f->g = g;
    f->conn = c;
    f->method = xstrdup(rq->method);
    f->path = xstrndup(rq->target, strcspn(rq->target, "?"));
    f->started_us = server_mono_us();
    struct httpc_req_opts o = {
        .method = rq->method,
        .url = url.data,
        .headers = hdrs,
        .body = rq->body.data,
        .body_len = rq->body.len,
        .timeout_ms = g->total_ms,
        .connect_timeout_ms = g->connect_ms,
        .accept_encoding = "", /* decode here: metering reads plain text */
    };
    f->hr = httpc_request(g->srv->httpc, &o, &fwd_cbs, f);
    buf_deinit(&url);
    free(hdrs);
    buf_deinit(&rq->body); /* httpc copied it */
    if (!f->hr) {
        fwd_free(f);
        reply_error(c, 502, "api_error", "the gateway is shutting down", true);
        return;
    }
    g->usage.requests++;
    c->fwd = f;
    c->state = GW_FORWARD;
    bufferevent_set_timeouts(c->bev, NULL, NULL); /* answers take minutes */
}

/* ---- requests ---- */

static int parse_request_line(struct gw_req *rq, char *line, const char **why)
{
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    *why = "malformed request line";
    if (!sp2 || sp1 == line)
        return -1;
    *sp1 = *sp2 = '\0';
    const char *target = sp1 + 1, *version = sp2 + 1;
    for (const char *p = line; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return -1;
    /* Origin-form only: an absolute URL would make us an open proxy. */
    *why = "the request target must be a path";
    if (target[0] != '/')
        return -1;
    for (const char *p = target; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -1;
    *why = "unsupported HTTP version";
    if (strcmp(version, "HTTP/1.1") == 0)
        rq->http11 = true;
    else if (strcmp(version, "HTTP/1.0") != 0)
        return -1;
    rq->method = xstrdup(line);
    rq->target = xstrdup(target);
    return 0;
}

/* Strict syntax (no obs-fold, token names, no control bytes), so that
 * what we forward is what we understood. 0 or an HTTP status. */
static int check_headers(const char *p, const char *end, const char **why)
{
    int count = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *le = nl ? nl : end;
        p = nl ? nl + 1 : end;
        if (le > line && le[-1] == '\r')
            le--;
        const char *q = line;
        while (q < le && is_tchar((unsigned char)*q))
            q++;
        if (q == line || q == le || *q != ':') {
            *why = "malformed header line";
            return 400;
        }
        for (q++; q < le; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f) {
                *why = "control character in a header value";
                return 400;
            }
        if (++count > GW_MAX_HEADERS) {
            *why = "too many header fields";
            return 431;
        }
    }
    return 0;
}

static int parse_uint(const char *s, size_t n, int base, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 15)
        return -1; /* 15 digits cannot overflow in either base */
    for (size_t i = 0; i < n; i++) {
        int d;
        char ch = s[i];
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (base == 16 && ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (base == 16 && ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            return -1;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    *out = v;
    return 0;
}

static bool name_is(const char *n, size_t nl, const char *lit)
{
    return strlen(lit) == nl && strncasecmp(n, lit, nl) == 0;
}

/* Body framing, Expect and Connection. 0 or an HTTP status. */
static int read_framing(struct gw_req *rq, const char *p, const char *end,
                        const char **conn, size_t *conn_len, const char **why)
{
    bool has_len = false;
    uint64_t len = 0, x;
    const char *n, *v;
    size_t nl, vl;
    struct hdr_iter it = {p, end};
    while (hdr_next(&it, &n, &nl, &v, &vl)) {
        if (name_is(n, nl, "content-length")) {
            if (parse_uint(v, vl, 10, &x) != 0 || (has_len && x != len)) {
                *why = "invalid Content-Length";
                return 400;
            }
            has_len = true;
            len = x;
        } else if (name_is(n, nl, "transfer-encoding")) {
            if (!name_is(v, vl, "chunked")) {
                *why = "unsupported Transfer-Encoding";
                return 501;
            }
            rq->chunked = true;
        } else if (name_is(n, nl, "connection")) {
            *conn = v;
            *conn_len = vl;
        } else if (name_is(n, nl, "expect")) {
            rq->expect_continue = name_is(v, vl, "100-continue");
        }
    }
    /* Both at once is the request-smuggling shape: refuse it. */
    *why = "both Content-Length and Transfer-Encoding";
    if (rq->chunked && has_len)
        return 400;
    *why = "request body too large";
    if (len > GATEWAY_MAX_BODY)
        return 413;
    rq->left = len;
    rq->keep_alive = rq->http11 && !list_has(*conn, *conn_len, "close", 5);
    if (len)
        buf_reserve(&rq->body, (size_t)len);
    return 0;
}

static void collect_forwarded(struct gw_req *rq, const char *p, const char *end,
                              const char *conn, size_t conn_len)
{
    const char *n, *v;
    size_t nl, vl;
    struct hdr_iter it = {p, end};
    rq->hdrs = xcalloc(GW_MAX_HEADERS, sizeof(*rq->hdrs));
    while (hdr_next(&it, &n, &nl, &v, &vl)) {
        if (name_in(n, nl, hop_by_hop) || name_in(n, nl, req_drop) ||
            list_has(conn, conn_len, n, nl))
            continue;
        struct buf line;
        buf_init(&line);
        buf_append(&line, n, nl);
        if (vl) {
            buf_puts(&line, ": ");
            buf_append(&line, v, vl);
        } else {
            buf_putc(&line, ';'); /* curl's spelling of an empty value */
        }
        rq->hdrs[rq->nhdrs++] = buf_steal(&line, NULL);
    }
}

/* 0, or an HTTP status with *why. head is NUL-terminated and ends with
 * CRLF CRLF. */
static int parse_head(struct gw_req *rq, char *head, size_t n, const char **why)
{
    if (memchr(head, '\0', n)) {
        *why = "NUL byte in the request head";
        return 400;
    }
    char *eol = strstr(head, "\r\n");
    *eol = '\0';
    if (parse_request_line(rq, head, why) != 0)
        return 400;
    const char *p = eol + 2, *end = head + n - 2;
    const char *conn = "";
    size_t conn_len = 0;
    int st = check_headers(p, end, why);
    if (!st)
        st = read_framing(rq, p, end, &conn, &conn_len, why);
    if (!st)
        collect_forwarded(rq, p, end, conn, conn_len);
    return st;
}

static const char *error_type(int status)
{
    return status == 413 ? "request_too_large" : "invalid_request_error";
}

/* 1 when a head was parsed (now GW_BODY), 0 for more input, -1 when the
 * connection answered an error. */
static int read_head(struct gw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    char two[2];
    /* Empty lines before a request are allowed (RFC 9112 §2.2). */
    while (evbuffer_copyout(in, two, 2) == 2 && two[0] == '\r' &&
           two[1] == '\n')
        evbuffer_drain(in, 2);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0 && evbuffer_get_length(in) <= GW_MAX_HEAD)
        return 0;
    if (end.pos < 0 || (size_t)end.pos + 4 > GW_MAX_HEAD) {
        reply_error(c, 431, "invalid_request_error", "request head too large",
                    true);
        return -1;
    }
    size_t n = (size_t)end.pos + 4;
    char *head = xmalloc(n + 1);
    evbuffer_remove(in, head, n);
    head[n] = '\0';
    const char *why = NULL;
    int st = parse_head(&c->req, head, n, &why);
    free(head);
    if (st) {
        log_warn("gateway %s: bad request: %s", c->g->chat_id, why);
        reply_error(c, st, error_type(st), why, true);
        return -1;
    }
    c->state = GW_BODY;
    c->req.ch = CH_SIZE;
    if (c->req.expect_continue && (c->req.chunked || c->req.left))
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 1;
}

static int body_error(struct gw_conn *c, int status, const char *why)
{
    log_warn("gateway %s: bad request body: %s", c->g->chat_id, why);
    reply_error(c, status, error_type(status), why, true);
    return -1;
}

/* One line of chunked framing: a size, the end of a chunk's data, or a
 * trailer. 0 to go on, 1 at the end of the body, -1 after an error. */
static int chunk_line(struct gw_conn *c, const char *line, size_t len)
{
    struct gw_req *rq = &c->req;
    uint64_t size;
    switch (rq->ch) {
    case CH_SIZE:
        if (parse_uint(line, strcspn(line, "; \t"), 16, &size) != 0)
            return body_error(c, 400, "invalid chunk size");
        if (size > GATEWAY_MAX_BODY - rq->body.len)
            return body_error(c, 413, "request body too large");
        rq->left = size;
        rq->ch = size ? CH_DATA : CH_TRAILER;
        return 0;
    case CH_DATA_END:
        if (len)
            return body_error(c, 400, "chunk data longer than its size");
        rq->ch = CH_SIZE;
        return 0;
    case CH_TRAILER:
        if (!len)
            return 1;
        rq->trailer_bytes += len; /* trailers are dropped */
        if (rq->trailer_bytes > GW_MAX_HEAD)
            return body_error(c, 431, "trailers too large");
        return 0;
    case CH_DATA: return 0; /* not reached: data is not read by lines */
    }
    return 0;
}

static int read_chunked(struct gw_conn *c)
{
    struct gw_req *rq = &c->req;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        if (rq->ch == CH_DATA) {
            size_t n = evbuffer_get_length(in);
            if (n > rq->left)
                n = (size_t)rq->left;
            take(in, &rq->body, n);
            rq->left -= n;
            if (rq->left)
                return 0;
            rq->ch = CH_DATA_END;
        }
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
        if (!line)
            return evbuffer_get_length(in) > 4096
                       ? body_error(c, 400, "chunk framing line too long")
                       : 0;
        int rc = chunk_line(c, line, len);
        free(line);
        if (rc)
            return rc;
    }
}

/* 1 when the body is complete, 0 for more input, -1 after an error. */
static int read_body(struct gw_conn *c)
{
    struct gw_req *rq = &c->req;
    if (rq->chunked)
        return read_chunked(c);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);
    if (n > rq->left)
        n = (size_t)rq->left;
    take(in, &rq->body, n);
    rq->left -= n;
    return rq->left == 0;
}

/* ---- connections ---- */

static void conn_process(struct gw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        switch (c->state) {
        case GW_HEAD:
            if (read_head(c) <= 0)
                return;
            break;
        case GW_BODY:
            if (read_body(c) > 0)
                forward_start(c);
            return;
        case GW_FORWARD:
            /* Pipelined input waits for the answer; only so much. */
            if (evbuffer_get_length(in) > GW_MAX_PIPELINED)
                conn_close(c, "client sent too much during a request");
            return;
        case GW_DRAIN: evbuffer_drain(in, evbuffer_get_length(in)); return;
        case GW_DEAD: return;
        }
    }
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
    conn_process(arg);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    size_t pending = evbuffer_get_length(bufferevent_get_output(bev));
    if (c->state == GW_FORWARD && c->fwd && c->fwd->paused &&
        pending <= GW_OUT_LOW) {
        c->fwd->paused = false;
        httpc_pause(c->fwd->hr, false);
    } else if (c->state == GW_DRAIN && pending == 0) {
        conn_close(c, NULL);
    }
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_close(arg, (what & BEV_EVENT_TIMEOUT) ? "client timed out"
                                               : "client disconnected");
}

static void conn_close(struct gw_conn *c, const char *why)
{
    struct gateway *g = c->g;
    if (c->state == GW_DEAD)
        return;
    if (c->fwd) {
        fwd_detach(c->fwd, why ? why : "connection closed");
        c->fwd = NULL;
    }
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        g->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g->nconns--;
    c->state = GW_DEAD;
    c->prev = NULL;
    c->next = g->dead;
    g->dead = c;
    event_active(g->reap, EV_TIMEOUT, 0);
}

static void reap_dead(struct gateway *g)
{
    while (g->dead) {
        struct gw_conn *c = g->dead;
        g->dead = c->next;
        req_reset(&c->req);
        free(c);
    }
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    reap_dead(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg)
{
    struct gateway *g = arg;
    if (g->nconns >= GATEWAY_MAX_CONNS) {
        log_warn("gateway %s: connection limit reached", g->chat_id);
        close(fd);
        return;
    }
    struct gw_conn *c = xcalloc(1, sizeof(*c));
    c->g = g;
    c->state = GW_HEAD;
    c->bev = bufferevent_socket_new(g->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->next = g->conns;
    if (g->conns)
        g->conns->prev = c;
    g->conns = c;
    g->nconns++;
    bufferevent_setcb(c->bev, conn_on_read, conn_on_write, conn_on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, GW_OUT_LOW, 0);
    set_idle_timeout(c, GATEWAY_IDLE_TIMEOUT_MS);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- the gateway ---- */

/* A listening unix socket at path, mode 0600. -1 with *err. */
static int listen_unix(const char *path, struct stat *st, const char **err)
{
    struct sockaddr_un sa;
    struct stat old;
    int dirfd;
    if (unixaddr_make(path, &sa, &dirfd) < 0) {
        *err = "gateway socket path unusable";
        return -1;
    }
    if (lstat(path, &old) == 0) {
        if (!S_ISSOCK(old.st_mode)) {
            *err = "gateway socket path exists and is not a socket";
            if (dirfd >= 0)
                close(dirfd);
            return -1;
        }
        unlink(path); /* stale, from an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = "gateway socket() failed";
        if (dirfd >= 0)
            close(dirfd);
        return -1;
    }
    /* Linux gives the socket file the socket inode's mode less the umask:
     * 0600 before bind means it is never open to others, even briefly.
     * The chmod after bind covers systems that ignore it. */
    (void)fchmod(fd, 0600);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (dirfd >= 0)
        close(dirfd);
    if (rc != 0) {
        *err = "gateway bind() failed";
        close(fd);
        return -1;
    }
    if (chmod(path, 0600) != 0 || lstat(path, st) != 0 ||
        listen(fd, GW_BACKLOG) != 0) {
        *err = "gateway socket set-up failed";
        unlink(path);
        close(fd);
        return -1;
    }
    return fd;
}

static bool upstream_ok(const char *url)
{
    return url && (strncasecmp(url, "http://", 7) == 0 ||
                   strncasecmp(url, "https://", 8) == 0);
}

struct gateway *gateway_open(struct server *srv, const char *chat_id,
                             const char *sock_path, const char **err)
{
    const struct config *cfg = srv->cfg;
    struct stat st;
    if (!srv->httpc) {
        *err = "no outbound HTTP client";
        return NULL;
    }
    if (!upstream_ok(cfg->model_upstream_url)) {
        *err = "model_upstream_url is not an http(s) URL";
        return NULL;
    }
    int fd = listen_unix(sock_path, &st, err);
    if (fd < 0)
        return NULL;
    struct gateway *g = xcalloc(1, sizeof(*g));
    g->lev = evconnlistener_new(srv->base, on_accept, g,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                0, fd); /* 0: listen() was called */
    if (!g->lev) {
        *err = "evconnlistener_new failed";
        unlink(sock_path);
        close(fd);
        free(g);
        return NULL;
    }
    g->srv = srv;
    g->chat_id = xstrdup(chat_id ? chat_id : "");
    g->sock_path = xstrdup(sock_path);
    g->sock_dev = st.st_dev;
    g->sock_ino = st.st_ino;
    size_t ul = strlen(cfg->model_upstream_url);
    while (ul > 0 && cfg->model_upstream_url[ul - 1] == '/')
        ul--;
    g->upstream = xstrndup(cfg->model_upstream_url, ul);
    if (cfg->model_api_key && *cfg->model_api_key) {
        struct buf kh;
        buf_init(&kh);
        buf_printf(&kh, "x-api-key: %s", cfg->model_api_key);
        g->key_header = buf_steal(&kh, NULL);
    }
    g->reap = event_new(srv->base, -1, 0, on_reap, g);
    g->connect_ms = GATEWAY_CONNECT_TIMEOUT_MS;
    g->total_ms = GATEWAY_UPSTREAM_TIMEOUT_MS;
    return g;
}

void gateway_close(struct gateway *g)
{
    if (!g)
        return;
    evconnlistener_free(g->lev);
    struct stat st;
    /* Only our own socket: a newer gateway may have replaced it. */
    if (lstat(g->sock_path, &st) == 0 && st.st_dev == g->sock_dev &&
        st.st_ino == g->sock_ino)
        unlink(g->sock_path);
    while (g->conns)
        conn_close(g->conns, "gateway closed");
    reap_dead(g);
    event_free(g->reap);
    if (g->key_header) {
        crypto_zero(g->key_header, strlen(g->key_header));
        free(g->key_header);
    }
    free(g->refuse_msg);
    free(g->upstream);
    free(g->sock_path);
    free(g->chat_id);
    free(g);
}

void gateway_get_usage(const struct gateway *g, struct gateway_usage *out)
{
    *out = g->usage;
}

void gateway_set_timeouts(struct gateway *g, long connect_ms, long total_ms)
{
    g->connect_ms = connect_ms;
    g->total_ms = total_ms;
}

void gateway_set_meter(struct gateway *g, gateway_meter_fn fn, void *arg)
{
    g->meter_fn = fn;
    g->meter_arg = arg;
}

void gateway_set_refuse(struct gateway *g, bool refuse, const char *message)
{
    g->refuse = refuse;
    free(g->refuse_msg);
    g->refuse_msg = xstrdup(message && *message ? message
                                                : "monthly budget reached");
}

uint64_t gateway_refusals(const struct gateway *g)
{
    return g->refusals;
}
