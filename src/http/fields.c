/* Typed access to JSON body members with 422 answers that name the field,
 * and list paging parameters shared by every list endpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/base64.h"
#include "corral/ids.h"
#include "corral/mem.h"
#include "corral/pg.h"
#include "http_int.h"

/* Counts code points of valid UTF-8 (the reader validated it). */
static size_t utf8_chars(const char *s, size_t n)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)s[i] & 0xc0) != 0x80;
    return chars;
}

bool req_json_str(struct req *r, const char *field, bool required,
                  size_t min_len, size_t max_len, char **out)
{
    int tok = json_get(r->json, 0, field);
    if (tok < 0 || json_type(r->json, tok) == JSON_NULL) {
        if (!required)
            return true;
        req_problem(r, 422, "validation_failed", "%s is required", field);
        return false;
    }
    if (json_type(r->json, tok) != JSON_STRING) {
        req_problem(r, 422, "validation_failed", "%s must be a string",
                    field);
        return false;
    }
    size_t len;
    char *s = json_str_dup(r->json, tok, &len);
    size_t chars = utf8_chars(s, len);
    if (memchr(s, '\0', len) || chars < min_len || chars > max_len) {
        free(s);
        if (min_len == max_len)
            req_problem(r, 422, "validation_failed", "%s must be %zu "
                        "characters", field, min_len);
        else
            req_problem(r, 422, "validation_failed",
                        "%s must be %zu to %zu characters without NUL",
                        field, min_len, max_len);
        return false;
    }
    *out = s;
    return true;
}

bool req_json_bool(struct req *r, const char *field, bool required,
                   bool *out, bool *present)
{
    int tok = json_get(r->json, 0, field);
    if (present)
        *present = tok >= 0;
    if (tok < 0) {
        if (!required)
            return true;
        req_problem(r, 422, "validation_failed", "%s is required", field);
        return false;
    }
    if (json_get_bool(r->json, tok, out) < 0) {
        req_problem(r, 422, "validation_failed", "%s must be a boolean",
                    field);
        return false;
    }
    return true;
}

bool req_page(struct req *r, int *limit, const char **cursor)
{
    const char *l = req_query(r, "limit"), *c = req_query(r, "cursor");
    *limit = 50;
    *cursor = NULL;
    if (l) {
        char *end;
        long v = strtol(l, &end, 10);
        if (!*l || *end || v < 1 || v > 200) {
            req_problem(r, 400, "bad_query", "limit must be 1 to 200");
            return false;
        }
        *limit = (int)v;
    }
    if (c) {
        struct buf dec;
        buf_init(&dec);
        if (!*c || strlen(c) > 256 ||
            base64url_decode(&dec, c, strlen(c)) < 0 ||
            memchr(dec.data, '\0', dec.len)) {
            buf_deinit(&dec);
            req_problem(r, 400, "bad_query", "cursor is not valid");
            return false;
        }
        struct req_alloc *a = xmalloc(sizeof(*a) + dec.len + 1);
        memcpy(a->data, dec.data, dec.len);
        a->data[dec.len] = '\0';
        a->next = r->allocs;
        r->allocs = a;
        *cursor = a->data;
        buf_deinit(&dec);
    }
    return true;
}

void json_w_next_cursor(struct json_w *w, const char *last)
{
    json_w_key(w, "next_cursor");
    if (!last) {
        json_w_null(w);
        return;
    }
    struct buf enc;
    buf_init(&enc);
    base64url_encode(&enc, last, strlen(last));
    json_w_str(w, buf_cstr(&enc));
    buf_deinit(&enc);
}

void req_rate_limited(struct req *r, int retry_after_s, const char *code)
{
    char v[16];
    snprintf(v, sizeof(v), "%d", retry_after_s);
    req_add_header(r, "Retry-After", v);
    req_problem(r, 429, code, "too many requests; retry in %d s",
                retry_after_s);
}

bool req_json_known_members(struct req *r, const char *const *known,
                            size_t n)
{
    for (int i = 0, count = json_len(r->json, 0); i < count; i++) {
        int ktok;
        bool ok = false;
        json_member(r->json, 0, i, &ktok);
        for (size_t k = 0; k < n && !ok; k++)
            ok = json_str_eq(r->json, ktok, known[k]);
        if (ok)
            continue;
        struct buf names;
        buf_init(&names);
        for (size_t k = 0; k < n; k++)
            buf_printf(&names, "%s%s", k ? ", " : "", known[k]);
        char *name = json_str_dup(r->json, ktok, NULL);
        req_problem(r, 422, "validation_failed",
                    "unknown member %.64s (accepted: %s)", name ? name : "?",
                    names.data ? names.data : "none");
        free(name);
        buf_deinit(&names);
        return false;
    }
    return true;
}

const char *req_path_uuid(struct req *r, const char *name, const char *what)
{
    const char *id = req_param(r, name);
    if (!id || !ids_is_uuid(id)) {
        req_problem(r, 404, "not_found", "no such %s", what);
        return NULL;
    }
    return id;
}

bool req_list_rows(struct req *r, const struct pg_reply *reply)
{
    /* A cursor of the right form can still name an impossible time (month
     * 13); PostgreSQL refuses it with a data exception, class 22. The
     * other parameters are ours, so that class means a bad cursor. */
    if (reply->status == PG_E_QUERY &&
        strncmp(reply->sqlstate, "22", 2) == 0) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return false;
    }
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return false;
    }
    return true;
}

void req_reply_page(struct req *r, const PGresult *res, int n, int limit,
                    int json_col, int cursor_col,
                    void (*write)(struct json_w *w, const PGresult *res,
                                  int row))
{
    int shown = n > limit ? limit : n;
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_key(&w, "items");
    json_w_arr_begin(&w);
    for (int i = 0; i < shown; i++) {
        const char *item = write ? NULL : pg_val(res, i, json_col);
        if (write)
            write(&w, res, i);
        else
            json_w_raw(&w, item, strlen(item));
    }
    json_w_arr_end(&w);
    json_w_next_cursor(&w, n > limit ? pg_val(res, shown - 1, cursor_col)
                                     : NULL);
    json_w_obj_end(&w);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

void req_reply_deleted(struct req *r, const struct pg_reply *reply,
                       const char *what)
{
    if (reply->status != PG_OK)
        req_store_error(r, reply->status, reply->errmsg);
    else if (strcmp(PQcmdTuples(reply->res), "0") == 0)
        req_problem(r, 404, "not_found", "no such %s", what);
    else
        req_reply_empty(r, 204);
}

bool req_store_row(struct req *r, const struct pg_reply *reply,
                   const char *what)
{
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return false;
    }
    if (PQntuples(reply->res) < 1) {
        req_problem(r, 404, "not_found", "no such %s", what);
        return false;
    }
    return true;
}

void req_reply_row(struct req *r, const struct pg_reply *reply,
                   const char *what,
                   void (*write)(struct json_w *w,
                                 const struct pg_result *res, int row))
{
    if (!req_store_row(r, reply, what))
        return;
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    write(&w, reply->res, 0);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}
