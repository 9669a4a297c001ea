/* Answers and request accessors. Every answer goes through send_reply,
 * which copies the bytes to evhtp (or drops them when the client left)
 * and then finishes the request exactly once. */
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/base64.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/pg.h"
#include "corral/server.h"
#include "http_int.h"

const char *req_param(const struct req *r, const char *name)
{
    return router_param(&r->params, name);
}

const char *req_query_raw(const struct req *r)
{
    return r->ev && r->ev->uri->query_raw
               ? (const char *)r->ev->uri->query_raw : NULL;
}

const char *req_header(const struct req *r, const char *name)
{
    return r->ev ? evhtp_header_find(r->ev->headers_in, name) : NULL;
}

/* Percent-decodes s[0..n) into a string that lives as long as r ('+' is
 * a space in query strings). */
static const char *url_decode_keep(struct req *r, const char *s, size_t n)
{
    struct req_alloc *a = xmalloc(sizeof(*a) + n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_digit(s[i + 1])) >= 0 &&
            (lo = hex_digit(s[i + 2])) >= 0) {
            a->data[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            a->data[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    a->data[o] = '\0';
    a->next = r->allocs;
    r->allocs = a;
    return a->data;
}

const char *req_query(const struct req *r, const char *name)
{
    if (!r->ev || !r->ev->uri->query_raw)
        return NULL;
    const char *q = (const char *)r->ev->uri->query_raw;
    size_t nlen = strlen(name);
    while (*q) {
        size_t len = strcspn(q, "&");
        if (len > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=')
            return url_decode_keep((struct req *)r, q + nlen + 1,
                                   len - nlen - 1);
        q += len + (q[len] == '&');
    }
    return NULL;
}

void req_add_header(struct req *r, const char *name, const char *value)
{
    if (r->ev)
        evhtp_headers_add_header(r->ev->headers_out,
                                 evhtp_header_new(name, value, 1, 1));
}

static void head_content_length(struct req *r, size_t len)
{
    char n[32];
    snprintf(n, sizeof(n), "%zu", len);
    req_add_header(r, "Content-Length", n);
}

/* The single exit of every request: exactly once per req. */
static void send_reply(struct req *r, int status, const char *content_type,
                       const void *data, size_t len)
{
    if (r->replied) {
        log_error("request %s answered twice (status %d)", r->id, status);
        return;
    }
    r->replied = true;
    r->status = status;
    if (r->ev) {
        evhtp_request_t *ev = r->ev;
        req_add_header(r, "X-Request-Id", r->id);
        if (content_type)
            req_add_header(r, "Content-Type", content_type);
        if (r->srv->shutting_down)
            evhtp_request_set_keepalive(ev, 0);
        if (r->method == HTTP_HEAD)
            head_content_length(r, len); /* the GET's headers, no body */
        else if (len)
            evbuffer_add(ev->buffer_out, data, len);
        bool paused = ev->conn->flags & EVHTP_CONN_FLAG_PAUSED;
        evhtp_send_reply(ev, (evhtp_res)status);
        if (paused)
            evhtp_request_resume(ev);
    }
    http_req_finished(r);
}

void req_reply(struct req *r, int status, const char *content_type,
               const void *data, size_t len)
{
    send_reply(r, status, content_type, data, len);
}

void req_reply_json(struct req *r, int status, const struct buf *body)
{
    send_reply(r, status, "application/json", body ? body->data : NULL,
               body ? body->len : 0);
}

void req_reply_empty(struct req *r, int status)
{
    send_reply(r, status, NULL, NULL, 0);
}

static const char *status_title(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Error";
    }
}

void req_problem(struct req *r, int status, const char *code,
                 const char *fmt, ...)
{
    struct buf detail, body;
    buf_init(&detail);
    buf_init(&body);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&detail, fmt, ap);
    va_end(ap);
    struct json_w w;
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "about:blank");
    json_w_kstr(&w, "title", status_title(status));
    json_w_kint(&w, "status", status);
    json_w_kstr(&w, "detail", buf_cstr(&detail));
    json_w_kstr(&w, "code", code);
    json_w_obj_end(&w);
    send_reply(r, status, "application/problem+json", body.data, body.len);
    buf_deinit(&detail);
    buf_deinit(&body);
}

void req_store_error(struct req *r, int pg_status, const char *err)
{
    if (pg_status == PG_E_UNAVAILABLE || pg_status == PG_E_TIMEOUT ||
        pg_status == PG_E_CANCELLED) {
        req_add_header(r, "Retry-After", "1");
        req_problem(r, 503, "db_unavailable", "the database is unavailable");
        return;
    }
    log_error("request %s: database error: %s", r->id, err ? err : "?");
    req_problem(r, 500, "internal_error", "internal error");
}
