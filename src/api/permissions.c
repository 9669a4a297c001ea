/* Tool approvals (API.md "Permissions"): a chat's requests, the user's
 * answer to a pending one, and the chat's remembered rules. The request
 * and rule objects are built by PostgreSQL (store_perm.h) and go out
 * verbatim. An answer is checked against the stored row first, then
 * handed to the live runtime (chats_permission_answer), which owns the
 * pending request: only it can tell the CLI and resolve the row. Another
 * user's chat, a deleted one and malformed ids are all 404. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/api.h"
#include "corral/chats.h"
#include "corral/ids.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/store.h"
#include "corral/store_perm.h"

#define DENY_MESSAGE_MAX 4096 /* bytes */

/* List state in r->state (free()d with the req). */
struct list_op {
    int limit; /* the page size asked for */
};

/* An answer's validated body, kept across the store lookup. The strings
 * point into data (one allocation, free()d with the req); NULL when
 * absent. */
struct answer_op {
    const char *chat_id, *request_id; /* path parameters, owned by r */
    bool allow, remember;
    char *message, *updated_input, *answers;
    char data[];
};

/* ---- lists ---- */

/* Rows (json, cursor) of store_perm_list or store_rules_list. */
static void on_listed(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_list_rows(r, reply))
        return;
    const PGresult *res = reply->res;
    int n = PQntuples(res), limit = ((struct list_op *)r->state)->limit;
    if (n == 0) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    if (n == 1 && !pg_val(res, 0, 0))
        n = 0; /* the chat's placeholder row: an empty page */
    req_reply_page(r, res, n, limit, 0, 1, NULL);
}

/* Reads the chat id and the paging parameters of a list; NULL after
 * answering. */
static const char *list_start(struct req *r, int *limit,
                              const char **cursor)
{
    const char *chat_id = req_path_uuid(r, "id", "chat");
    if (!chat_id || !req_page(r, limit, cursor))
        return NULL;
    struct store_message_key key; /* the same "ts|id" form */
    if (*cursor && !store_message_cursor_parse(*cursor, &key)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return NULL;
    }
    struct list_op *op = xcalloc(1, sizeof(*op));
    op->limit = *limit;
    r->state = op;
    return chat_id;
}

void api_permissions_list(struct req *r)
{
    const char *status = req_query(r, "status");
    if (status && strcmp(status, "pending") != 0) {
        req_problem(r, 400, "bad_query", "status may only be pending");
        return;
    }
    int limit;
    const char *cursor;
    const char *chat_id = list_start(r, &limit, &cursor);
    if (!chat_id)
        return;
    store_perm_list(r->srv->pg, chat_id, r->auth.user_id, status != NULL,
                    cursor, limit, on_listed, r);
}

void api_permission_rules_list(struct req *r)
{
    int limit;
    const char *cursor;
    const char *chat_id = list_start(r, &limit, &cursor);
    if (!chat_id)
        return;
    store_rules_list(r->srv->pg, chat_id, r->auth.user_id, cursor, limit,
                     on_listed, r);
}

/* ---- rule delete ---- */

static void on_rule_deleted(void *arg, const struct pg_reply *reply)
{
    req_reply_deleted(arg, reply, "permission rule");
}

void api_permission_rules_delete(struct req *r)
{
    const char *chat_id = req_path_uuid(r, "id", "chat");
    const char *rule_id =
        chat_id ? req_path_uuid(r, "rule_id", "permission rule") : NULL;
    if (!rule_id)
        return;
    store_rule_delete(r->srv->pg, chat_id, r->auth.user_id, rule_id,
                      on_rule_deleted, r);
}

/* ---- answer ---- */

static void reply_not_pending(struct req *r)
{
    req_problem(r, 409, "permission_not_pending",
                "the request is no longer pending (decided, expired or "
                "withdrawn)");
}

/* The raw text of an optional object member (NULL, len 0 when absent or
 * null); false after answering 422 for another type. */
static bool body_object(struct req *r, const char *field, const char **raw,
                        size_t *len)
{
    int tok = json_get(r->json, 0, field);
    *raw = NULL;
    *len = 0;
    if (tok < 0 || json_type(r->json, tok) == JSON_NULL)
        return true;
    if (json_type(r->json, tok) != JSON_OBJECT) {
        req_problem(r, 422, "validation_failed", "%s must be an object",
                    field);
        return false;
    }
    *raw = json_raw(r->json, tok, len);
    return true;
}

/* decision: required "allow" or "deny"; *allow set. */
static bool body_decision(struct req *r, bool *allow)
{
    int tok = json_get(r->json, 0, "decision");
    if (tok < 0 || json_type(r->json, tok) == JSON_NULL) {
        req_problem(r, 422, "validation_failed", "decision is required");
        return false;
    }
    *allow = json_str_eq(r->json, tok, "allow");
    if (!*allow && !json_str_eq(r->json, tok, "deny")) {
        req_problem(r, 422, "validation_failed",
                    "decision must be allow or deny");
        return false;
    }
    return true;
}

/* message: optional string of at most DENY_MESSAGE_MAX bytes, no NUL.
 * *out is a heap copy or NULL. */
static bool body_message(struct req *r, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int tok = json_get(r->json, 0, "message");
    if (tok < 0 || json_type(r->json, tok) == JSON_NULL)
        return true;
    if (json_type(r->json, tok) != JSON_STRING) {
        req_problem(r, 422, "validation_failed", "message must be a string");
        return false;
    }
    char *s = json_str_dup(r->json, tok, len);
    if (*len > DENY_MESSAGE_MAX || memchr(s, '\0', *len)) {
        free(s);
        req_problem(r, 422, "validation_failed", "message must be at most "
                    "%d bytes without NUL", DENY_MESSAGE_MAX);
        return false;
    }
    *out = s;
    return true;
}

/* Copies n bytes of src into *cursor as a C string; returns the copy. */
static char *stash(char **cursor, const char *src, size_t n)
{
    char *dst = *cursor;
    memcpy(dst, src, n);
    dst[n] = '\0';
    *cursor += n + 1;
    return dst;
}

/* One allocation holding the op and its three strings (each may be
 * NULL). */
static struct answer_op *answer_op_new(const char *msg, size_t msg_len,
                                       const char *ui, size_t ui_len,
                                       const char *ans, size_t ans_len)
{
    struct answer_op *op =
        xcalloc(1, sizeof(*op) + msg_len + ui_len + ans_len + 3);
    char *cur = op->data;
    op->message = msg ? stash(&cur, msg, msg_len) : NULL;
    op->updated_input = ui ? stash(&cur, ui, ui_len) : NULL;
    op->answers = ans ? stash(&cur, ans, ans_len) : NULL;
    return op;
}

/* Reads and checks the whole body before anything happens, so a 422
 * leaves the request pending. Members that belong to the other decision
 * are refused rather than ignored: a client that sends them has a bug. */
static struct answer_op *read_answer(struct req *r)
{
    bool allow, remember = false;
    const char *ui, *ans;
    size_t ui_len, ans_len, msg_len;
    char *msg = NULL;
    struct answer_op *op = NULL;
    if (!body_decision(r, &allow) ||
        !req_json_bool(r, "remember", false, &remember, NULL) ||
        !body_message(r, &msg, &msg_len) ||
        !body_object(r, "updated_input", &ui, &ui_len) ||
        !body_object(r, "answers", &ans, &ans_len))
        goto out;
    if (!allow && (ui || ans)) {
        req_problem(r, 422, "validation_failed", "%s is only allowed with "
                    "decision allow", ui ? "updated_input" : "answers");
        goto out;
    }
    if (allow && msg) {
        req_problem(r, 422, "validation_failed",
                    "message is only allowed with decision deny");
        goto out;
    }
    op = answer_op_new(msg, msg_len, ui, ui_len, ans, ans_len);
    op->allow = allow;
    op->remember = remember;
out:
    free(msg);
    return op;
}

/* The runtime's UPDATE: one row (the request JSON) when it resolved the
 * request, none when something else resolved it first. */
static void on_answered(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    const char *json = PQntuples(reply->res) > 0 ? pg_val(reply->res, 0, 0)
                                                 : NULL;
    if (!json) {
        reply_not_pending(r);
        return;
    }
    struct buf body;
    buf_init(&body);
    buf_append(&body, json, strlen(json));
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

/* The stored request (json, status): absent is 404, decided is 409; a
 * pending one goes to the runtime, which answers -1 when it no longer
 * holds it (expired, withdrawn, its run ended, another process). */
static void on_request_found(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "permission request"))
        return;
    if (strcmp(pg_val(reply->res, 0, 1), "pending") != 0) {
        reply_not_pending(r);
        return;
    }
    struct answer_op *op = r->state;
    struct perm_answer a = {
        .request_id = op->request_id,
        .user_id = r->auth.user_id,
        .allow = op->allow,
        .remember = op->remember,
        .message = op->message,
        .updated_input = op->updated_input,
        .answers = op->answers,
    };
    if (chats_permission_answer(r->srv->chats, op->chat_id, &a, on_answered,
                                r) < 0)
        reply_not_pending(r);
}

void api_permissions_answer(struct req *r)
{
    const char *chat_id = req_path_uuid(r, "id", "chat");
    const char *request_id =
        chat_id ? req_path_uuid(r, "rid", "permission request") : NULL;
    if (!request_id)
        return;
    struct answer_op *op = read_answer(r);
    if (!op)
        return;
    op->chat_id = chat_id;
    op->request_id = request_id;
    r->state = op;
    store_perm_get(r->srv->pg, chat_id, r->auth.user_id, request_id,
                   on_request_found, r);
}
