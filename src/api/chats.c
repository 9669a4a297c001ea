/* Chats (API.md "Chats"): create, list, get, update, delete. Rows are
 * written first; the live runtime (chats.h) is told afterwards, and fills
 * in status and sandbox state for chats it is running. Another user's
 * chat, a deleted one and a malformed id are all 404. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/api.h"
#include "corral/chats.h"
#include "corral/ids.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/store.h"

#define TITLE_MAX 200
#define MODEL_MAX 100
#define PROMPT_MAX 32768

/* Handler state in r->state (free()d with the req). */
struct chat_op {
    int status; /* the answer's status when a chat row comes back */
    int limit;  /* list: the page size asked for */
};

/* The optional body members of POST and PATCH; strings are heap copies
 * (fields_clear), NULL when absent. */
struct chat_fields {
    char *title, *model, *mode, *prompt;
    bool pinned, archived, has_pinned, has_archived;
};

static struct chat_op *op_new(struct req *r, int status)
{
    struct chat_op *op = xcalloc(1, sizeof(*op));
    op->status = status;
    r->state = op;
    return op;
}

static void fields_clear(struct chat_fields *f)
{
    free(f->title);
    free(f->model);
    free(f->mode);
    free(f->prompt);
}

static bool model_valid(const char *m)
{
    for (const char *p = m; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (*p >= '0' && *p <= '9') || strchr("._:-", *p)))
            return false;
    return true;
}

static bool mode_valid(const char *m)
{
    return strcmp(m, "ask") == 0 || strcmp(m, "auto") == 0 ||
           strcmp(m, "plan") == 0;
}

/* Reads and checks every member before anything is stored, so a 422
 * leaves no trace. with_flags: PATCH's pinned and archived. */
static bool read_fields(struct req *r, struct chat_fields *f, bool with_flags)
{
    if (!req_json_str(r, "title", false, 0, TITLE_MAX, &f->title) ||
        !req_json_str(r, "model", false, 1, MODEL_MAX, &f->model) ||
        !req_json_str(r, "permission_mode", false, 0, SIZE_MAX, &f->mode) ||
        !req_json_str(r, "system_prompt_append", false, 0, PROMPT_MAX,
                      &f->prompt))
        return false;
    if (f->model && !model_valid(f->model)) {
        req_problem(r, 422, "validation_failed", "model may contain only "
                    "letters, digits and . _ : -");
        return false;
    }
    if (f->mode && !mode_valid(f->mode)) {
        req_problem(r, 422, "validation_failed",
                    "permission_mode must be one of ask, auto, plan");
        return false;
    }
    if (!with_flags)
        return true;
    return req_json_bool(r, "pinned", false, &f->pinned, &f->has_pinned) &&
           req_json_bool(r, "archived", false, &f->archived,
                         &f->has_archived);
}

static void write_chat(struct req *r, struct json_w *w, const PGresult *res,
                       int row)
{
    const char *id = pg_val(res, row, CHAT_ID);
    const char *status = pg_val(res, row, CHAT_STATUS);
    const char *sandbox = pg_val(res, row, CHAT_SANDBOX_STATE);
    struct chat_live live = {0};
    /* A chat this process runs: its runtime knows better than the rows. */
    if (r->srv->chats && chats_live(r->srv->chats, id, &live)) {
        if (live.status)
            status = live.status;
        if (live.sandbox_state)
            sandbox = live.sandbox_state;
    }
    json_w_obj_begin(w);
    json_w_kstr(w, "id", id);
    json_w_kstr(w, "title", pg_val(res, row, CHAT_TITLE));
    json_w_kstr(w, "model", pg_val(res, row, CHAT_MODEL));
    json_w_kstr(w, "permission_mode", pg_val(res, row, CHAT_PERMISSION_MODE));
    json_w_kstr(w, "system_prompt_append", pg_val(res, row, CHAT_PROMPT));
    json_w_kbool(w, "pinned", strcmp(pg_val(res, row, CHAT_PINNED), "t") == 0);
    json_w_kbool(w, "archived",
                 strcmp(pg_val(res, row, CHAT_ARCHIVED), "t") == 0);
    json_w_kstr(w, "status", status);
    json_w_kstr(w, "created_at", pg_val(res, row, CHAT_CREATED));
    json_w_kstr(w, "updated_at", pg_val(res, row, CHAT_UPDATED));
    json_w_kstr(w, "last_activity_at", pg_val(res, row, CHAT_ACTIVITY));
    json_w_key(w, "sandbox");
    json_w_obj_begin(w);
    json_w_kstr(w, "provider", r->srv->cfg->sandbox);
    json_w_kstr(w, "state", sandbox);
    json_w_obj_end(w);
    json_w_obj_end(w);
}

static bool store_failed(struct req *r, const struct pg_reply *reply)
{
    if (reply->status == PG_OK)
        return false;
    req_store_error(r, reply->status, reply->errmsg);
    return true;
}

static void not_found(struct req *r)
{
    req_problem(r, 404, "not_found", "no such chat");
}

/* Answers with the chat of row 0 (404 when there is none). */
static void reply_chat(struct req *r, const PGresult *res)
{
    if (PQntuples(res) != 1) {
        not_found(r);
        return;
    }
    struct buf body;
    buf_init(&body);
    struct json_w w;
    json_w_init(&w, &body);
    write_chat(r, &w, res, 0);
    req_reply_json(r, ((struct chat_op *)r->state)->status, &body);
    buf_deinit(&body);
}

static void on_chat_row(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!store_failed(r, reply))
        reply_chat(r, reply->res);
}

/* ---- create ---- */

void api_chats_create(struct req *r)
{
    struct chat_fields f = {0};
    char id[UUID_STR_LEN + 1], session[UUID_STR_LEN + 1];
    op_new(r, 201);
    if (!read_fields(r, &f, false)) {
        fields_clear(&f);
        return;
    }
    if (ids_uuid7(id) < 0 || ids_uuid7(session) < 0) {
        fields_clear(&f);
        req_problem(r, 500, "internal_error", "no randomness");
        return;
    }
    store_chat_insert(r->srv->pg, id, r->auth.user_id,
                      f.title ? f.title : "",
                      f.model, f.mode, f.prompt ? f.prompt : "", session,
                      r->srv->cfg->default_model, on_chat_row, r);
    fields_clear(&f); /* pg_query copied the parameters */
}

/* ---- list ---- */

static void on_chats_listed(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_list_rows(r, reply))
        return;
    int limit = ((struct chat_op *)r->state)->limit;
    int n = PQntuples(reply->res);
    int shown = n > limit ? limit : n;
    struct buf body;
    buf_init(&body);
    struct json_w w;
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_key(&w, "items");
    json_w_arr_begin(&w);
    for (int i = 0; i < shown; i++)
        write_chat(r, &w, reply->res, i);
    json_w_arr_end(&w);
    json_w_next_cursor(&w, n > limit ? pg_val(reply->res, shown - 1,
                                              CHAT_CURSOR)
                                     : NULL);
    json_w_obj_end(&w);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

void api_chats_list(struct req *r)
{
    const char *archived = req_query(r, "archived");
    if (archived && strcmp(archived, "true") != 0 &&
        strcmp(archived, "false") != 0) {
        req_problem(r, 400, "bad_query", "archived must be true or false");
        return;
    }
    int limit;
    const char *cursor;
    if (!req_page(r, &limit, &cursor))
        return;
    struct store_chat_key key;
    if (cursor && !store_chat_cursor_parse(cursor, &key)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return;
    }
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    op_new(r, 200)->limit = limit;
    store_chat_list(r->srv->pg, r->auth.user_id,
                    archived && strcmp(archived, "true") == 0 ? "t" : "f",
                    cursor ? &key : NULL, lim, on_chats_listed, r);
}

/* ---- get ---- */

void api_chats_get(struct req *r)
{
    const char *id = req_path_uuid(r, "id", "chat");
    if (!id)
        return;
    op_new(r, 200);
    store_chat_get(r->srv->pg, id, r->auth.user_id, on_chat_row, r);
}

/* ---- update ---- */

static void on_chat_updated(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    const PGresult *res = reply->res;
    /* The runtime relaunches the CLI only when the prompt really changed:
     * resending the same text keeps the warm CLI. */
    if (PQntuples(res) == 1 && r->srv->chats &&
        strcmp(pg_val(res, 0, CHAT_NCOLS), "t") == 0)
        chats_settings_changed(r->srv->chats, pg_val(res, 0, CHAT_ID));
    reply_chat(r, res);
}

void api_chats_update(struct req *r)
{
    struct chat_fields f = {0};
    const char *id = req_path_uuid(r, "id", "chat");
    if (!id)
        return;
    op_new(r, 200);
    if (!read_fields(r, &f, true)) {
        fields_clear(&f);
        return;
    }
    if (!f.title && !f.model && !f.mode && !f.prompt && !f.has_pinned &&
        !f.has_archived) {
        /* Nothing to change: answer the chat as it is, updated_at kept. */
        store_chat_get(r->srv->pg, id, r->auth.user_id, on_chat_row, r);
        return;
    }
    store_chat_update(r->srv->pg, id, r->auth.user_id, f.title,
                      f.has_pinned ? (f.pinned ? "t" : "f") : NULL,
                      f.has_archived ? (f.archived ? "t" : "f") : NULL,
                      f.model, f.mode, f.prompt, on_chat_updated, r);
    fields_clear(&f);
}

/* ---- delete ---- */

/* Removes the attachment blobs a deleted chat alone used (sha256s, comma
 * separated, or NULL). */
static void unlink_blobs(const char *data_dir, const char *shas)
{
    for (const char *p = shas; p && *p;) {
        size_t len = strcspn(p, ",");
        char sha[65];
        if (len == 64) {
            memcpy(sha, p, 64);
            sha[64] = '\0';
            attach_blob_unlink(data_dir, sha);
        }
        p += len + (p[len] == ',');
    }
}

static void on_chat_deleted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    if (PQntuples(reply->res) != 1) {
        not_found(r);
        return;
    }
    unlink_blobs(r->srv->cfg->data_dir, pg_val(reply->res, 0, 1));
    /* The row is gone for every reader now; the runtime cancels the run,
     * ends the streams and destroys the sandbox after. */
    if (r->srv->chats)
        chats_delete(r->srv->chats, pg_val(reply->res, 0, 0));
    req_reply_empty(r, 204);
}

void api_chats_delete(struct req *r)
{
    const char *id = req_path_uuid(r, "id", "chat");
    if (!id)
        return;
    store_chat_delete(r->srv->pg, id, r->auth.user_id, on_chat_deleted, r);
}
