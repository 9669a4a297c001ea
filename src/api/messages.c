/* Sending messages, retry, interrupt and chat status (API.md "Messages
 * and runs"). The rows are stored first (one statement, scoped by owner),
 * then the user_message event is published, then the run is queued; the
 * 202 names the event id just before user_message so a stream opened
 * with it loses nothing of the turn. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corral/api.h"
#include "corral/bus.h"
#include "corral/chats.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/quota.h"
#include "corral/server.h"
#include "corral/store_attach.h"
#include "corral/store_runs.h"
#include "corral/store_usage.h"

#define CONTENT_MAX_CHARS 100000
#define THINKING_MAX 200000
#define ATTACHMENTS_MAX 20

struct send_state {
    struct run_spec spec;
    char *content_json;  /* the user's text as a JSON string */
    char *options_json;
    char *model;         /* NULL: the chat's */
    struct buf answer;   /* message and reply objects, kept for the 202 */
    /* The attachment ids asked for, lowercase, in order; NULL: none. */
    char (*att_ids)[UUID_STR_LEN + 1];
    int natt;
    char *att_json;      /* their objects (JSON array text), once resolved */
    bool retry;          /* the ids come from the message retried */
};

static void send_state_free(struct send_state *s)
{
    free(s->content_json);
    free(s->options_json);
    free(s->model);
    free(s->att_ids);
    free(s->att_json);
    buf_deinit(&s->answer);
}

/* For a send's store callback: true when reply is usable; else the send
 * is freed and answered (503/500 for a failed query; 404 `no such
 * <what>` unless exactly one row came, when what is not NULL). */
static bool send_reply_ok(struct req *r, const struct pg_reply *reply,
                          const char *what)
{
    if (reply->status == PG_OK && (!what || PQntuples(reply->res) == 1))
        return true;
    send_state_free(r->state);
    if (reply->status != PG_OK)
        req_store_error(r, reply->status, reply->errmsg);
    else
        req_problem(r, 404, "not_found", "no such %s", what ? what : "row");
    return false;
}

static bool valid_model(const char *m)
{
    size_t n = strlen(m);
    return n >= 1 && n <= 100 &&
           strspn(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789._:-[]") == n;
}

static bool valid_mode(const char *m)
{
    return !strcmp(m, "ask") || !strcmp(m, "auto") || !strcmp(m, "plan");
}

static void on_user_event(void *arg, int64_t seq, const char *err)
{
    struct req *r = arg;
    struct send_state *s = r->state;
    if (seq < 0) {
        /* The rows exist and the run is queued; only the resume point is
         * unknown, so the client is sent back to the start. */
        log_warn("chat %s: user_message event not stored: %s",
                 s->spec.chat_id, err ? err : "?");
        seq = 1;
    }
    char last[24], stream[128];
    snprintf(last, sizeof(last), "%lld", (long long)(seq - 1));
    snprintf(stream, sizeof(stream), "/api/v1/chats/%s/stream?after=%s",
             s->spec.chat_id, last);
    buf_printf(&s->answer, ",\"last_event_id\":%s,\"stream\":", last);
    json_escape_str(&s->answer, stream, strlen(stream));
    buf_putc(&s->answer, '}');
    struct buf answer = s->answer; /* the reply may free r and its state */
    buf_init(&s->answer);
    send_state_free(s);
    req_reply_json(r, 202, &answer);
    buf_deinit(&answer);
}

static void publish_user_message(struct req *r)
{
    struct send_state *s = r->state;
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", s->spec.user_message_id);
    json_w_key(&w, "content");
    json_w_raw(&w, s->content_json, strlen(s->content_json));
    json_w_key(&w, "attachments");
    json_w_raw(&w, s->att_json ? s->att_json : "[]",
               s->att_json ? strlen(s->att_json) : 2);
    json_w_obj_end(&w);
    bus_publish(r->srv->bus, s->spec.chat_id, s->spec.user_message_id,
                "user_message", data.data, data.len, true, on_user_event, r);
    buf_reset(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", s->spec.reply_id);
    json_w_kstr(&w, "status", "queued");
    json_w_kstr(&w, "phase", "queued");
    json_w_obj_end(&w);
    bus_publish(r->srv->bus, s->spec.chat_id, s->spec.reply_id,
                "message_status", data.data, data.len, true, NULL, NULL);
    buf_deinit(&data);
}

static void on_stored(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct send_state *s = r->state;
    if (!send_reply_ok(r, reply, "chat"))
        return;
    buf_puts(&s->answer, "{\"message\":");
    buf_puts(&s->answer, pg_val(reply->res, 0, 0));
    buf_puts(&s->answer, ",\"reply\":");
    buf_puts(&s->answer, pg_val(reply->res, 0, 1));
    publish_user_message(r);
    chats_enqueue(r->srv->chats, &s->spec);
}

static void send_store(struct req *r)
{
    struct send_state *s = r->state;
    const char *params[9] = {
        s->spec.chat_id, s->spec.owner_id, s->spec.user_message_id,
        s->spec.reply_id, s->spec.run_id, s->content_json, s->options_json,
        s->model, s->att_json ? s->att_json : "[]",
    };
    store_send_message(r->srv->pg, params, on_stored, r);
}

/* Over quota (quota.h): 507 for the owner; anyone else gets the 404
 * the insert would have given. */
static void on_quota_owner(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    send_state_free(r->state);
    if (!req_store_row(r, reply, "chat"))
        return;
    req_problem(r, 507, "quota_exceeded",
                "the chat's workspace is over its disk quota of %d MB",
                r->srv->cfg->workspace_quota_mb);
}

/* The index of the first id asked for that is not among the objects
 * found (JSON array text), or -1. */
static int first_missing(const struct send_state *s, const char *found)
{
    struct json_doc *d = NULL;
    if (json_parse(found, strlen(found), NULL, &d, NULL) != JSON_OK)
        return 0;
    int missing = -1;
    for (int i = 0; i < s->natt && missing < 0; i++) {
        bool seen = false;
        for (int k = 0; k < json_len(d, 0) && !seen; k++)
            seen = json_str_eq(d, json_get(d, json_at(d, 0, k), "id"),
                               s->att_ids[i]);
        if (!seen)
            missing = i;
    }
    json_doc_free(d);
    return missing;
}

static void on_attachments(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct send_state *s = r->state;
    if (!send_reply_ok(r, reply, "chat"))
        return;
    const char *found = pg_val(reply->res, 0, 0);
    int missing = first_missing(s, found);
    if (missing >= 0) {
        char id[UUID_STR_LEN + 1];
        bool retry = s->retry;
        memcpy(id, s->att_ids[missing], sizeof(id));
        send_state_free(s);
        if (retry)
            req_problem(r, 409, "attachment_deleted", "attachment %s of "
                        "the message retried was deleted", id);
        else
            req_problem(r, 422, "validation_failed", "attachments[%d]: %s "
                        "is not an attachment of this chat", missing, id);
        return;
    }
    s->att_json = xstrdup(found);
    send_store(r);
}

/* Turns the ids into the attachments' objects, checking each is one of
 * this chat's. An attachment deleted between this and the insert leaves
 * the message naming it: its run then fails (sandbox_failed). */
static void resolve_attachments(struct req *r)
{
    struct send_state *s = r->state;
    struct buf arr;
    buf_init(&arr);
    buf_putc(&arr, '{');
    for (int i = 0; i < s->natt; i++)
        buf_printf(&arr, "%s%s", i ? "," : "", s->att_ids[i]);
    buf_putc(&arr, '}');
    store_attach_resolve(r->srv->pg, buf_cstr(&arr), s->spec.chat_id,
                         s->spec.owner_id, on_attachments, r);
    buf_deinit(&arr);
}

/* Over the month's budget nothing is stored (DESIGN.md §5). The check
 * and the insert are two statements, so two sends racing at the limit
 * may both pass: the gateway's refusal bounds what a turn then spends. */
static void on_budget(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct send_state *s = r->state;
    if (!send_reply_ok(r, reply, NULL))
        return;
    const char *limit = pg_val(reply->res, 0, BUDGET_LIMIT);
    const char *spent = pg_val(reply->res, 0, BUDGET_SPENT);
    /* Both are exact decimals with at most 6 places and well under 2^53
     * millionths, so their doubles compare as the decimals do. */
    if (limit && spent && strtod(spent, NULL) >= strtod(limit, NULL)) {
        send_state_free(s);
        req_problem(r, 402, "budget_exceeded",
                    "monthly budget reached: %s USD spent this month of a "
                    "%s USD limit", spent, limit);
        return;
    }
    if (workspace_quota_over(r->srv, s->spec.chat_id)) {
        store_chat_owned(r->srv->pg, s->spec.chat_id, r->auth.user_id,
                         on_quota_owner, r);
        return;
    }
    if (s->natt > 0)
        resolve_attachments(r);
    else
        send_store(r);
}

/* Stores and queues a turn; s is r->state, filled but for the ids. */
static void send_start(struct req *r)
{
    struct send_state *s = r->state;
    struct chat_live live;
    const char *chat_id = req_param(r, "id");
    /* Only the owner learns the queue is full; anyone else gets the
     * insert's 404. */
    if (chats_live(r->srv->chats, chat_id, &live) &&
        live.queued >= r->srv->cfg->max_queued_messages &&
        strcmp(live.owner_id, r->auth.user_id) == 0) {
        send_state_free(s);
        req_rate_limited(r, 5, "queue_full");
        return;
    }
    snprintf(s->spec.chat_id, sizeof(s->spec.chat_id), "%s", chat_id);
    snprintf(s->spec.owner_id, sizeof(s->spec.owner_id), "%s",
             r->auth.user_id);
    if (ids_uuid7(s->spec.user_message_id) < 0 ||
        ids_uuid7(s->spec.reply_id) < 0 || ids_uuid7(s->spec.run_id) < 0) {
        send_state_free(s);
        req_problem(r, 500, "internal_error", "no randomness");
        return;
    }
    store_budget_state(r->srv->pg, s->spec.owner_id, on_budget, r);
}

/* Reads the optional run options of a send into s. */
static bool read_options(struct req *r, struct send_state *s)
{
    char *model = NULL, *mode = NULL;
    int64_t thinking = -1;
    int tok = json_get(r->json, 0, "max_thinking_tokens");
    if (!req_json_str(r, "model", false, 1, 100, &model) ||
        !req_json_str(r, "permission_mode", false, 1, 8, &mode))
        goto fail;
    if (model && !valid_model(model)) {
        req_problem(r, 422, "validation_failed", "model is not a model id");
        goto fail;
    }
    if (mode && !valid_mode(mode)) {
        req_problem(r, 422, "validation_failed",
                    "permission_mode must be ask, auto or plan");
        goto fail;
    }
    if (tok >= 0 && json_type(r->json, tok) != JSON_NULL &&
        (json_get_int64(r->json, tok, &thinking) < 0 || thinking < 0 ||
         thinking > THINKING_MAX)) {
        req_problem(r, 422, "validation_failed",
                    "max_thinking_tokens must be an integer 0 to %d",
                    THINKING_MAX);
        goto fail;
    }
    struct buf o;
    struct json_w w;
    buf_init(&o);
    json_w_init(&w, &o);
    json_w_obj_begin(&w);
    if (mode)
        json_w_kstr(&w, "permission_mode", mode);
    if (thinking >= 0)
        json_w_kint(&w, "max_thinking_tokens", thinking);
    json_w_obj_end(&w);
    s->options_json = buf_steal(&o, NULL);
    s->model = model;
    free(mode);
    return true;
fail:
    free(model);
    free(mode);
    return false;
}

/* Adds the id at index i (a JSON string token) to s; false after a 422. */
static bool add_attachment_id(struct req *r, struct send_state *s, int tok,
                              int i)
{
    char *id = json_str_dup(r->json, tok, NULL);
    if (!id || !ids_is_uuid(id)) {
        free(id);
        req_problem(r, 422, "validation_failed",
                    "attachments[%d] is not an attachment id", i);
        return false;
    }
    for (char *c = id; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    for (int k = 0; k < s->natt; k++) {
        if (strcmp(s->att_ids[k], id) == 0) {
            free(id);
            req_problem(r, 422, "validation_failed",
                        "attachments[%d] repeats attachments[%d]", i, k);
            return false;
        }
    }
    memcpy(s->att_ids[s->natt++], id, UUID_STR_LEN + 1);
    free(id);
    return true;
}

/* `attachments`: absent, null or a list of at most ATTACHMENTS_MAX
 * distinct ids; that they are this chat's is checked with the store. */
static bool read_attachments(struct req *r, struct send_state *s)
{
    int att = json_get(r->json, 0, "attachments");
    if (att < 0 || json_type(r->json, att) == JSON_NULL)
        return true;
    if (json_type(r->json, att) != JSON_ARRAY) {
        req_problem(r, 422, "validation_failed",
                    "attachments must be a list of attachment ids");
        return false;
    }
    int n = json_len(r->json, att);
    if (n > ATTACHMENTS_MAX) {
        req_problem(r, 422, "validation_failed",
                    "attachments: at most %d per message (%d given)",
                    ATTACHMENTS_MAX, n);
        return false;
    }
    s->att_ids = xcalloc((size_t)n + 1, sizeof(*s->att_ids));
    for (int i = 0; i < n; i++)
        if (!add_attachment_id(r, s, json_at(r->json, att, i), i))
            return false;
    return true;
}

static bool read_content(struct req *r, struct send_state *s)
{
    char *text = NULL;
    if (!req_json_str(r, "content", true, 1, CONTENT_MAX_CHARS, &text))
        return false;
    if (!read_attachments(r, s)) {
        free(text);
        return false;
    }
    struct buf c;
    buf_init(&c);
    json_escape_str(&c, text, strlen(text));
    s->content_json = buf_steal(&c, NULL);
    free(text);
    return true;
}

void api_messages_send(struct req *r)
{
    if (!ids_is_uuid(req_param(r, "id"))) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    struct send_state *s = xcalloc(1, sizeof(*s));
    buf_init(&s->answer);
    r->state = s;
    if (!read_content(r, s) || !read_options(r, s)) {
        send_state_free(s);
        return;
    }
    send_start(r);
}

/* ---- retry ---- */

/* The ids of the attachments stored on the message retried (their
 * objects, JSON array text): resolved again, so a deleted one is seen. */
static bool retry_attachments(struct send_state *s, const char *json)
{
    struct json_doc *d = NULL;
    s->retry = true;
    if (!json || json_parse(json, strlen(json), NULL, &d, NULL) != JSON_OK)
        return false;
    int n = json_type(d, 0) == JSON_ARRAY ? json_len(d, 0) : 0;
    bool ok = n <= ATTACHMENTS_MAX;
    s->att_ids = xcalloc((size_t)n + 1, sizeof(*s->att_ids));
    for (int i = 0; i < n && ok; i++) {
        char *id = json_str_dup(d, json_get(d, json_at(d, 0, i), "id"),
                                NULL);
        ok = id && ids_is_uuid(id);
        if (ok)
            memcpy(s->att_ids[s->natt++], id, UUID_STR_LEN + 1);
        free(id);
    }
    json_doc_free(d);
    return ok;
}

static void on_retry_source(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct send_state *s = r->state;
    if (!send_reply_ok(r, reply, "reply"))
        return;
    const char *status = pg_val(reply->res, 0, 4);
    if (strcmp(status, "failed") != 0 && strcmp(status, "cancelled") != 0) {
        send_state_free(s);
        req_problem(r, 409, "not_retryable",
                    "only a failed or cancelled reply can be retried (this "
                    "one is %s)", status);
        return;
    }
    if (!retry_attachments(s, pg_val(reply->res, 0, 3))) {
        send_state_free(s);
        req_problem(r, 500, "internal_error", "the message's attachments "
                    "are not readable");
        return;
    }
    s->content_json = xstrdup(pg_val(reply->res, 0, 0));
    s->options_json = xstrdup(pg_val(reply->res, 0, 1));
    const char *model = pg_val(reply->res, 0, 2);
    s->model = model ? xstrdup(model) : NULL;
    send_start(r);
}

void api_messages_retry(struct req *r)
{
    const char *chat = req_param(r, "id"), *mid = req_param(r, "mid");
    if (!ids_is_uuid(chat) || !ids_is_uuid(mid)) {
        req_problem(r, 404, "not_found", "no such reply");
        return;
    }
    struct send_state *s = xcalloc(1, sizeof(*s));
    buf_init(&s->answer);
    r->state = s;
    store_retry_source(r->srv->pg, chat, r->auth.user_id, mid,
                       on_retry_source, r);
}

/* ---- interrupt ---- */

static void on_interrupt_owned(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    bool drop = *(bool *)r->state;
    if (!req_store_row(r, reply, "chat"))
        return;
    int n = chats_interrupt(r->srv->chats, req_param(r, "id"), drop);
    struct buf body;
    buf_init(&body);
    buf_printf(&body, "{\"runs_affected\":%d}", n);
    req_reply_json(r, 202, &body);
    buf_deinit(&body);
}

void api_chat_interrupt(struct req *r)
{
    bool drop = false;
    if (!ids_is_uuid(req_param(r, "id"))) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    if (!req_json_bool(r, "drop_queue", false, &drop, NULL))
        return;
    bool *state = xmalloc(sizeof(bool));
    *state = drop;
    r->state = state;
    store_chat_owned(r->srv->pg, req_param(r, "id"), r->auth.user_id,
                     on_interrupt_owned, r);
}

/* ---- status ---- */

static void on_status_seq(void *arg, int64_t seq, const char *err)
{
    struct req *r = arg;
    struct chat_live live;
    if (seq < 0) {
        req_store_error(r, PG_E_UNAVAILABLE, err);
        return;
    }
    bool known = chats_live(r->srv->chats, req_param(r, "id"), &live);
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "status", known ? live.status : "idle");
    json_w_key(&w, "run");
    if (known && live.has_run) {
        json_w_obj_begin(&w);
        json_w_kstr(&w, "message_id", live.message_id);
        json_w_kstr(&w, "phase", live.phase);
        char when[40] = "";
        time_t secs = (time_t)(live.started_unix_ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + n, sizeof(when) - n, ".%03dZ",
                 (int)(live.started_unix_ms % 1000));
        json_w_kstr(&w, "started_at", live.started_unix_ms ? when : NULL);
        json_w_obj_end(&w);
    } else {
        json_w_null(&w);
    }
    json_w_kint(&w, "queued", known ? live.queued : 0);
    json_w_kint(&w, "last_event_id", seq);
    json_w_obj_end(&w);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

static void on_status_owned(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "chat"))
        return;
    bus_last_seq(r->srv->bus, req_param(r, "id"), on_status_seq, r);
}

void api_chat_status(struct req *r)
{
    if (!ids_is_uuid(req_param(r, "id"))) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    store_chat_owned(r->srv->pg, req_param(r, "id"), r->auth.user_id,
                     on_status_owned, r);
}
