/* Checkpoints of a chat (API.md "Files, workspace, checkpoints"): the
 * list, and restoring one. The snapshots are taken by the run pipeline
 * (src/run/checkpoint.c); a restore goes through the chats runtime, which
 * holds the chat's run slot while the helper rewrites the trees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/api.h"
#include "corral/bus.h"
#include "corral/chats.h"
#include "corral/ids.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/store_checkpoints.h"

#define CKPT_JSON_MAX 512

/* ---- list ---- */

static void on_listed(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    int limit = *(int *)r->state;
    if (!req_store_row(r, reply, "chat"))
        return;
    const PGresult *res = reply->res;
    int n = PQgetisnull(res, 0, 0) ? 0 : PQntuples(res); /* placeholder */
    req_reply_page(r, res, n, limit, 1, 0, NULL);
}

void api_checkpoints_list(struct req *r)
{
    const char *chat_id = req_param(r, "id");
    int limit;
    const char *cursor;
    if (!ids_is_uuid(chat_id)) {
        req_problem(r, 404, "not_found", "no such chat");
        return;
    }
    if (!req_page(r, &limit, &cursor))
        return;
    if (cursor && !ids_is_uuid(cursor)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    int *state = xmalloc(sizeof(int));
    *state = limit;
    r->state = state;
    store_checkpoint_list(r->srv->pg, chat_id, r->auth.user_id, cursor, lim,
                          on_listed, r);
}

/* ---- restore ---- */

struct restore_state {
    char chat_id[CHATS_ID_LEN + 1];
    char cid[CHATS_ID_LEN + 1];
    char checkpoint[CKPT_JSON_MAX]; /* the row's JSON object */
};

/* A `message_status` event per reverted message: streams show them
 * undone without re-reading the list. */
static void publish_reverted(struct req *r, const char *chat_id,
                             const char *ids_json)
{
    struct json_doc *d = NULL;
    if (!ids_json ||
        json_parse(ids_json, strlen(ids_json), NULL, &d, NULL) != JSON_OK)
        return;
    for (int i = 0;; i++) {
        char *id = json_str_dup(d, json_at(d, 0, i), NULL);
        if (!id)
            break;
        struct buf data;
        struct json_w w;
        buf_init(&data);
        json_w_init(&w, &data);
        json_w_obj_begin(&w);
        json_w_kstr(&w, "message_id", id);
        json_w_kstr(&w, "status", "reverted");
        json_w_obj_end(&w);
        bus_publish(r->srv->bus, chat_id, id, "message_status", data.data,
                    data.len, true, NULL, NULL);
        buf_deinit(&data);
        free(id);
    }
    json_doc_free(d);
}

static void on_reverted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct restore_state *st = r->state;
    if (reply->status != PG_OK || PQntuples(reply->res) != 1) {
        chats_restore_done(r->srv->chats, st->chat_id, NULL);
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    const PGresult *res = reply->res;
    publish_reverted(r, st->chat_id, pg_val(res, 0, 1));
    chats_restore_done(r->srv->chats, st->chat_id, pg_val(res, 0, 2));
    struct buf body;
    buf_init(&body);
    /* The checkpoint object with one member more: how many messages the
     * restore marked reverted. */
    size_t n = strlen(st->checkpoint);
    buf_append(&body, st->checkpoint, n - 1);
    buf_printf(&body, ",\"reverted\":%s}", pg_val(res, 0, 0));
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

static void on_restored(void *arg, const char *err)
{
    struct req *r = arg;
    struct restore_state *st = r->state;
    if (err) {
        log_error("chat %s: restore of %s failed: %s", st->chat_id, st->cid,
                  err);
        chats_restore_done(r->srv->chats, st->chat_id, NULL);
        req_problem(r, 500, "restore_failed", "the checkpoint could not be "
                                              "restored");
        return;
    }
    store_checkpoint_revert(r->srv->pg, st->chat_id, st->cid, on_reverted, r);
}

static void on_found(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct restore_state *st = r->state;
    if (!req_store_row(r, reply, "checkpoint"))
        return;
    snprintf(st->checkpoint, sizeof(st->checkpoint), "%s",
             pg_val(reply->res, 0, 0));
    if (chats_restore(r->srv->chats, st->chat_id, st->cid, on_restored, r) <
        0)
        req_problem(r, 409, "run_active", "the chat has a run; wait for it "
                                          "or interrupt it first");
}

void api_checkpoints_restore(struct req *r)
{
    const char *chat_id = req_param(r, "id");
    const char *cid = req_param(r, "cid");
    if (!ids_is_uuid(chat_id) || !ids_is_uuid(cid)) {
        req_problem(r, 404, "not_found", "no such checkpoint");
        return;
    }
    struct restore_state *st = xcalloc(1, sizeof(*st));
    r->state = st;
    /* Canonical lowercase: the runtime and the store paths key on it. */
    for (int i = 0; i < CHATS_ID_LEN; i++) {
        st->chat_id[i] = (char)(chat_id[i] | (chat_id[i] >= 'A' ? 0x20 : 0));
        st->cid[i] = (char)(cid[i] | (cid[i] >= 'A' ? 0x20 : 0));
    }
    store_checkpoint_get(r->srv->pg, st->chat_id, r->auth.user_id, st->cid,
                         on_found, r);
}
