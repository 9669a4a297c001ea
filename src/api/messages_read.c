/* Reading messages (API.md "Messages and runs"): the list of a chat by
 * creation and one message in full. The json columns go out verbatim:
 * PostgreSQL validated them on the way in. Another user's chat or
 * message, a message of another chat and malformed ids are all 404. */
#include <stdio.h>
#include <string.h>

#include "corral/api.h"
#include "corral/ids.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/store.h"

/* Handler state in r->state (free()d with the req). */
struct msg_op {
    int limit; /* list: the page size asked for */
};

/* key: the column's JSON text, or null when SQL NULL. */
static void write_raw(struct json_w *w, const char *key, const char *json)
{
    json_w_key(w, key);
    if (json)
        json_w_raw(w, json, strlen(json));
    else
        json_w_null(w);
}

/* key: text as a JSON number. float8's text is one unless it is NaN or
 * Infinity, which JSON cannot carry: those become null. */
static void write_number(struct json_w *w, const char *key, const char *text)
{
    struct json_doc *doc = NULL;
    bool ok = text && json_parse(text, strlen(text), &json_default_limits,
                                 &doc, NULL) == JSON_OK &&
              json_type(doc, 0) == JSON_NUMBER;
    json_doc_free(doc);
    write_raw(w, key, ok ? text : NULL);
}

static void write_message(struct json_w *w, const PGresult *res, int row)
{
    json_w_obj_begin(w);
    json_w_kstr(w, "id", pg_val(res, row, MSG_ID));
    json_w_kstr(w, "chat_id", pg_val(res, row, MSG_CHAT_ID));
    json_w_kstr(w, "role", pg_val(res, row, MSG_ROLE));
    json_w_kstr(w, "origin", pg_val(res, row, MSG_ORIGIN));
    json_w_kstr(w, "reply_to", pg_val(res, row, MSG_REPLY_TO));
    json_w_kstr(w, "status", pg_val(res, row, MSG_STATUS));
    write_raw(w, "content", pg_val(res, row, MSG_CONTENT));
    write_raw(w, "attachments", pg_val(res, row, MSG_ATTACHMENTS));
    json_w_kstr(w, "model", pg_val(res, row, MSG_MODEL));
    write_raw(w, "usage", pg_val(res, row, MSG_USAGE));
    write_number(w, "cost_usd", pg_val(res, row, MSG_COST));
    write_raw(w, "error", pg_val(res, row, MSG_ERROR));
    json_w_kstr(w, "created_at", pg_val(res, row, MSG_CREATED));
    json_w_kstr(w, "started_at", pg_val(res, row, MSG_STARTED));
    json_w_kstr(w, "completed_at", pg_val(res, row, MSG_COMPLETED));
    json_w_obj_end(w);
}

/* ---- list ---- */

static void on_messages_listed(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_list_rows(r, reply))
        return;
    const PGresult *res = reply->res;
    int n = PQntuples(res), limit = ((struct msg_op *)r->state)->limit;
    if (n == 0) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    if (n == 1 && !pg_val(res, 0, MSG_ID))
        n = 0; /* the chat's placeholder row: no (further) messages */
    req_reply_page(r, res, n, limit, 0, MSG_CURSOR, write_message);
}

void api_messages_list(struct req *r)
{
    const char *chat_id = req_path_uuid(r, "id", "chat");
    if (!chat_id)
        return;
    const char *order = req_query(r, "order");
    if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
        req_problem(r, 400, "bad_query", "order must be asc or desc");
        return;
    }
    int limit;
    const char *cursor;
    if (!req_page(r, &limit, &cursor))
        return;
    struct store_message_key key;
    if (cursor && !store_message_cursor_parse(cursor, &key)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    struct msg_op *op = xcalloc(1, sizeof(*op));
    op->limit = limit;
    r->state = op;
    store_message_list(r->srv->pg, chat_id, r->auth.user_id,
                       order && strcmp(order, "desc") == 0,
                       cursor ? &key : NULL, lim, on_messages_listed, r);
}

/* ---- get ---- */

static void on_message(void *arg, const struct pg_reply *reply)
{
    req_reply_row(arg, reply, "message", write_message);
}

void api_messages_get(struct req *r)
{
    const char *chat_id = req_path_uuid(r, "id", "chat");
    const char *id = chat_id ? req_path_uuid(r, "mid", "message") : NULL;
    if (!id)
        return;
    store_message_get(r->srv->pg, id, chat_id, r->auth.user_id, on_message,
                      r);
}
