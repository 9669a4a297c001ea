/* GET /api/v1/chats/{id}/stream: a chat's events over SSE (API.md
 * "Stream (SSE)", DESIGN.md §4).
 *
 * Before any stream starts, and answered as problem+json:
 * - 400 bad_query: Last-Event-ID or ?after= is not a non-negative decimal
 *   integer (the header wins when both are present; neither: live only);
 * - 406 not_acceptable: an Accept header with no range that allows
 *   text/event-stream (itself, text/ wildcard or the full wildcard, not
 *   at q=0); without an Accept header the stream is served;
 * - 404 not_found: the chat does not exist, is deleted or is not the
 *   caller's (never 403).
 * Then the response head goes out (200 text/event-stream, close-delimited)
 * and the socket is handed to the SSE hub, which subscribes to the bus. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>

#include "corral/api.h"
#include "corral/bus.h"
#include "corral/ids.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/sse.h"

#define SEQ_MAX_DIGITS 18 /* fits int64_t */

struct stream_state {
    char chat_id[BUS_CHAT_ID_LEN + 1];
    char user_id[USER_ID_LEN + 1];
    int64_t after;
};

/* A non-negative decimal integer, or -1. */
static int64_t parse_seq(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SEQ_MAX_DIGITS)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return -1;
    return strtoll(s, NULL, 10);
}

/* One media range of Accept (with its parameters) allows SSE unless q=0. */
static bool range_allows(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    size_t start = i;
    while (i < n && s[i] != ';' && s[i] != ' ' && s[i] != '\t')
        i++;
    size_t len = i - start;
    const char *m = s + start;
    bool match = (len == 17 && strncasecmp(m, "text/event-stream", 17) == 0) ||
                 (len == 6 && strncasecmp(m, "text/*", 6) == 0) ||
                 (len == 3 && strncmp(m, "*/*", 3) == 0);
    if (!match)
        return false;
    for (; i + 2 < n; i++) {
        if ((s[i] == 'q' || s[i] == 'Q') && s[i + 1] == '=' &&
            (i == 0 || s[i - 1] == ';' || s[i - 1] == ' ')) {
            const char *q = s + i + 2;
            size_t k = 0;
            while (i + 2 + k < n && (q[k] == '0' || q[k] == '.'))
                k++;
            /* q=0, q=0.0 ...: explicitly not acceptable */
            return !(k > 0 && (i + 2 + k == n || q[k] == ';' ||
                               q[k] == ' ' || q[k] == ','));
        }
    }
    return true;
}

static bool accept_allows_sse(const char *accept)
{
    if (!accept)
        return true;
    const char *p = accept;
    for (;;) {
        size_t n = strcspn(p, ",");
        if (range_allows(p, n))
            return true;
        if (!p[n])
            return false;
        p += n + 1;
    }
}

static void stream_on_checked(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct stream_state st = *(struct stream_state *)r->state;
    struct server *srv = r->srv;
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    if (PQntuples(reply->res) == 0) {
        req_problem(r, 404, "not_found", "chat not found");
        return;
    }
    /* Proxies must not buffer the stream. */
    req_add_header(r, "X-Accel-Buffering", "no");
    /* r is finished by this call: st is a copy. */
    struct bufferevent *bev = req_take_connection(r, 200, "text/event-stream");
    if (!bev)
        return; /* the client left */
    struct sse_hub *hub = srv->bus ? bus_sse_hub(srv->bus) : NULL;
    if (!hub) {
        bufferevent_free(bev); /* no bus (never in corrald): just close */
        return;
    }
    /* On failure the socket is closed already; the client reconnects. */
    (void)sse_serve(hub, bev, st.chat_id, st.user_id, st.after);
}

void api_chat_stream(struct req *r)
{
    const char *id = req_param(r, "id");
    const char *hdr = req_header(r, "Last-Event-ID");
    const char *q = req_query(r, "after");
    int64_t after = -1;
    if (hdr || q) {
        after = parse_seq(hdr ? hdr : q);
        if (after < 0) {
            req_problem(r, 400, "bad_query", "%s must be a non-negative "
                        "integer", hdr ? "Last-Event-ID" : "after");
            return;
        }
    }
    if (!accept_allows_sse(req_header(r, "Accept"))) {
        req_problem(r, 406, "not_acceptable",
                    "this endpoint serves text/event-stream");
        return;
    }
    if (!id || !ids_is_uuid(id)) {
        req_problem(r, 404, "not_found", "chat not found");
        return;
    }
    struct stream_state *st = xcalloc(1, sizeof(*st));
    for (size_t i = 0; i < BUS_CHAT_ID_LEN; i++)
        st->chat_id[i] = (char)tolower((unsigned char)id[i]);
    snprintf(st->user_id, sizeof(st->user_id), "%s", r->auth.user_id);
    st->after = after;
    r->state = st;
    store_events_chat_check(r->srv->pg, st->chat_id, st->user_id,
                            stream_on_checked, r);
}
