/* Attachments (API.md "Files"): upload (multipart `file` or a raw body
 * with ?filename=, streamed to a temp file by http.c), list, download,
 * delete. Bytes are stored content-addressed (attach_blob_path); the row
 * is written first and the blob placed after, so a row never lacks its
 * bytes for longer than this callback. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corral/api.h"
#include "corral/files.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/store.h"
#include "corral/store_attach.h"
#include "corral/upload.h"

void attach_blob_path(const char *data_dir, const char *sha, char *out,
                      size_t n)
{
    snprintf(out, n, "%s/attachments/%.2s/%s", data_dir, sha, sha);
}

static bool chat_param(struct req *r)
{
    if (ids_is_uuid(req_param(r, "id")))
        return true;
    req_problem(r, 404, "not_found", "no such chat");
    return false;
}

/* ---- upload ---- */

void attach_blob_unlink(const char *data_dir, const char *sha)
{
    char path[600];
    attach_blob_path(data_dir, sha, path, sizeof(path));
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("attachments: unlink %s: %s", path, strerror(errno));
}

/* Moves the temp file to its blob path unless equal bytes are there. */
static int place_blob(struct req *r, const char *sha)
{
    const char *data = r->srv->cfg->data_dir;
    char path[600], dir[600];
    snprintf(dir, sizeof(dir), "%s/attachments", data);
    mkdir(dir, 0700);
    snprintf(dir, sizeof(dir), "%s/attachments/%.2s", data, sha);
    mkdir(dir, 0700);
    attach_blob_path(data, sha, path, sizeof(path));
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size == r->upload->size)
        return 0; /* stored once: the temp file goes with the req */
    if (rename(r->upload->path, path) < 0) {
        log_error("attachments: rename to %s: %s", path, strerror(errno));
        return -1;
    }
    upload_release_path(r->upload);
    return 0;
}

static void on_attach_inserted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "chat"))
        return;
    if (place_blob(r, r->upload->sha256) < 0) {
        const char *p[] = {pg_val(reply->res, 0, 0)};
        pg_query(r->srv->pg, "DELETE FROM attachments WHERE id ="
                 " ($1::json->>'id')::uuid", 1, p, NULL, NULL);
        req_problem(r, 500, "internal_error", "the upload was not stored");
        return;
    }
    struct buf body;
    buf_init(&body);
    buf_puts(&body, pg_val(reply->res, 0, 0));
    req_reply_json(r, 201, &body);
    buf_deinit(&body);
}

/* The stored name: the multipart part's filename, else ?filename=. */
static bool upload_name(struct req *r, char *out)
{
    struct upload *u = r->upload;
    const char *q = req_query(r, "filename");
    if (u->multipart && u->filename[0])
        q = u->filename;
    if (!q) {
        req_problem(r, 422, "validation_failed", "filename: required (the "
                    "multipart part's filename, or ?filename= with a raw "
                    "body)");
        return false;
    }
    char name[1024];
    snprintf(name, sizeof(name), "%s", q);
    upload_sanitize_name(name);
    if (!name[0]) {
        req_problem(r, 422, "validation_failed",
                    "filename: empty once sanitised");
        return false;
    }
    memcpy(out, name, strlen(name) + 1);
    return true;
}

void api_attachments_upload(struct req *r)
{
    struct upload *u = r->upload;
    char name[UPLOAD_FILENAME_MAX + 1], id[UUID_STR_LEN + 1], size[24];
    if (!chat_param(r))
        return;
    if (!u) {
        req_problem(r, 500, "internal_error", "no room for the upload");
        return;
    }
    if (u->status) {
        req_problem(r, u->status, u->code, "%s", u->detail);
        return;
    }
    if (!upload_name(r, name))
        return;
    /* No quota check: attachments live in the blob store, and the turn
     * that copies them into the workspace measures it first. */
    if (ids_uuid7(id) < 0) {
        req_problem(r, 500, "internal_error", "no randomness");
        return;
    }
    snprintf(size, sizeof(size), "%llu", (unsigned long long)u->size);
    const char *type = upload_sniff(u->head, u->head_len,
                                    u->size <= u->head_len);
    const char *p[] = {id, req_param(r, "id"), r->auth.user_id, name, type,
                       size, u->sha256};
    store_attach_insert(r->srv->pg, p, on_attach_inserted, r);
}

/* ---- list ---- */

static void on_attach_listed(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "chat"))
        return;
    int limit = *(int *)r->state;
    const PGresult *res = reply->res;
    int n = pg_val(res, 0, 0) ? PQntuples(res) : 0; /* else a placeholder */
    req_reply_page(r, res, n, limit, 0, 1, NULL);
}

void api_attachments_list(struct req *r)
{
    int limit;
    const char *cursor;
    struct store_message_key key;
    if (!chat_param(r) || !req_page(r, &limit, &cursor))
        return;
    if (cursor && !store_message_cursor_parse(cursor, &key)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return;
    }
    int *st = xmalloc(sizeof(int));
    *st = limit;
    r->state = st;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    store_attach_list(r->srv->pg, req_param(r, "id"), r->auth.user_id,
                      cursor ? key.ts : NULL, cursor ? key.id : NULL, lim,
                      on_attach_listed, r);
}

/* ---- download ---- */

static void on_attach_row(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "attachment"))
        return;
    char path[600];
    attach_blob_path(r->srv->cfg->data_dir, pg_val(reply->res, 0, 3), path,
                     sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        log_error("attachments: %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        req_problem(r, 500, "internal_error", "the attachment's bytes are "
                    "missing");
        return;
    }
    stream_out_disposition(r, pg_val(reply->res, 0, 0));
    req_add_header(r, "X-Content-Type-Options", "nosniff");
    stream_out_file(r, fd, (uint64_t)st.st_size, pg_val(reply->res, 0, 1));
}

void api_attachments_get(struct req *r)
{
    if (!chat_param(r))
        return;
    if (!ids_is_uuid(req_param(r, "aid"))) {
        req_problem(r, 404, "not_found", "no such attachment");
        return;
    }
    store_attach_get(r->srv->pg, req_param(r, "aid"), req_param(r, "id"),
                     r->auth.user_id, on_attach_row, r);
}

/* ---- delete ---- */

static void on_attach_deleted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "attachment"))
        return;
    const PGresult *res = reply->res;
    if (strcmp(pg_val(res, 0, 0), "t") == 0) {
        req_problem(r, 409, "attachment_in_use", "a queued or running "
                    "message uses this attachment");
        return;
    }
    const char *sha = pg_val(res, 0, 1);
    if (sha && strcmp(pg_val(res, 0, 2), "0") == 0) {
        attach_blob_unlink(r->srv->cfg->data_dir, sha);
    }
    req_reply_empty(r, 204);
}

void api_attachments_delete(struct req *r)
{
    if (!chat_param(r))
        return;
    if (!ids_is_uuid(req_param(r, "aid"))) {
        req_problem(r, 404, "not_found", "no such attachment");
        return;
    }
    store_attach_delete(r->srv->pg, req_param(r, "aid"), req_param(r, "id"),
                        r->auth.user_id, on_attach_deleted, r);
}
