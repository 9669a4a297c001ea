/* Models and the administrators' endpoints (API.md "Settings, usage,
 * models", "Admin"): GET /models, PUT /admin/models/{model}, GET
 * /admin/users and PATCH /admin/users/{id}. The ROUTE_ADMIN routes reach
 * here only for admins (403 otherwise, in the middleware). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "corral/api.h"
#include "corral/auth_cache.h"
#include "corral/bus.h"
#include "corral/ids.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/settings.h"
#include "corral/sse.h"
#include "corral/store_settings.h"

#define NAME_MAX_CHARS 200
#define PRICE_MAX 999999.0    /* numeric(12, 6) */
#define CAP_MAX 99999999.0    /* numeric(12, 4) */

static bool fail422(struct req *r, const char *detail)
{
    req_problem(r, 422, "validation_failed", "%s", detail);
    return false;
}

/* A number member in [0, max], or null when nullable: *out is the JSON
 * number's own text (PostgreSQL's numeric reads it exactly) or NULL.
 * Answers 422 naming field otherwise. */
static bool read_amount(struct req *r, int obj, const char *key,
                        const char *field, double max, bool nullable,
                        char **out)
{
    int tok = json_get(r->json, obj, key);
    double v;
    if (nullable && json_type(r->json, tok) == JSON_NULL)
        return true;
    if (json_get_double(r->json, tok, &v) < 0 || !(v >= 0 && v <= max)) {
        req_problem(r, 422, "validation_failed", "%s must be %sa number "
                    "from 0 to %.0f", field, nullable ? "null or " : "", max);
        return false;
    }
    size_t n;
    const char *raw = json_raw(r->json, tok, &n);
    *out = xstrndup(raw, n);
    return true;
}

/* Writes a number column (float8 text) or null. */
static void write_num(struct json_w *w, const char *key, const char *v)
{
    json_w_key(w, key);
    if (v)
        json_w_raw(w, v, strlen(v));
    else
        json_w_null(w);
}

/* ---- models ---- */

static void write_model(struct json_w *w, const PGresult *res, int row)
{
    json_w_obj_begin(w);
    json_w_kstr(w, "id", pg_val(res, row, MODEL_ID));
    json_w_kstr(w, "display_name", pg_val(res, row, MODEL_NAME));
    json_w_kbool(w, "enabled",
                 strcmp(pg_val(res, row, MODEL_ENABLED), "t") == 0);
    json_w_key(w, "price_per_mtok");
    json_w_obj_begin(w);
    write_num(w, "input", pg_val(res, row, MODEL_P_IN));
    write_num(w, "output", pg_val(res, row, MODEL_P_OUT));
    write_num(w, "cache_write", pg_val(res, row, MODEL_P_CW));
    write_num(w, "cache_read", pg_val(res, row, MODEL_P_CR));
    json_w_obj_end(w);
    json_w_obj_end(w);
}

/* Answers a list page: rows beyond limit only say a next page exists;
 * the cursor is column cursor_col of the last row shown. */
static void reply_page(struct req *r, const struct pg_reply *reply,
                       int cursor_col,
                       void (*write)(struct json_w *, const PGresult *, int))
{
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    int limit = *(int *)r->state;
    req_reply_page(r, reply->res, PQntuples(reply->res), limit, 0,
                   cursor_col, write);
}

static void on_models_listed(void *arg, const struct pg_reply *reply)
{
    reply_page(arg, reply, MODEL_ID, write_model);
}

/* Reads ?limit and ?cursor into r->state (the limit) and *cursor. */
static bool read_page(struct req *r, const char **cursor, char limit_s[16])
{
    int limit;
    if (!req_page(r, &limit, cursor))
        return false;
    int *state = xmalloc(sizeof(*state));
    *state = limit;
    r->state = state;
    snprintf(limit_s, 16, "%d", limit);
    return true;
}

/* Admins see every model, others the enabled ones (what they may use). */
void api_models_list(struct req *r)
{
    const char *cursor;
    char limit[16];
    if (!read_page(r, &cursor, limit))
        return;
    if (cursor && !settings_model_id_valid(cursor)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return;
    }
    store_models_list(r->srv->pg, r->auth.admin ? "t" : "f", cursor, limit,
                      on_models_listed, r);
}

static void on_model_put(void *arg, const struct pg_reply *reply)
{
    req_reply_row(arg, reply, "model", write_model);
}

/* price_per_mtok: exactly the four prices. */
static bool read_prices(struct req *r, char *prices[4])
{
    static const char *const keys[] = {"input", "output", "cache_write",
                                       "cache_read"};
    static const char *const fields[] = {
        "price_per_mtok.input", "price_per_mtok.output",
        "price_per_mtok.cache_write", "price_per_mtok.cache_read"};
    int tok = json_get(r->json, 0, "price_per_mtok");
    if (json_type(r->json, tok) != JSON_OBJECT || json_len(r->json, tok) != 4)
        return fail422(r, "price_per_mtok must be an object {input, output, "
                       "cache_write, cache_read}");
    for (int i = 0; i < 4; i++)
        if (!read_amount(r, tok, keys[i], fields[i], PRICE_MAX, false,
                         &prices[i]))
            return false;
    return true;
}

static bool read_model_body(struct req *r, char **name, bool *enabled,
                            bool *has_enabled, char *prices[4])
{
    static const char *const known[] = {"display_name", "enabled",
                                        "price_per_mtok"};
    return req_json_known_members(r, known, ARRAY_SIZE(known)) &&
           req_json_str(r, "display_name", false, 1, NAME_MAX_CHARS, name) &&
           req_json_bool(r, "enabled", false, enabled, has_enabled) &&
           read_prices(r, prices);
}

void api_admin_model_put(struct req *r)
{
    const char *id = req_param(r, "model");
    char *name = NULL, *prices[4] = {0};
    bool enabled = false, has_enabled = false;
    if (!id || !settings_model_id_valid(id))
        fail422(r, "the model id must match [a-z0-9][a-z0-9._:-]* (at most "
                "100 characters)");
    else if (read_model_body(r, &name, &enabled, &has_enabled, prices))
        store_model_upsert(r->srv->pg, id, name,
                           has_enabled ? (enabled ? "t" : "f") : NULL,
                           (const char *const *)prices, on_model_put, r);
    free(name);
    for (int i = 0; i < 4; i++)
        free(prices[i]);
}

/* ---- users ---- */

static void write_admin_user(struct json_w *w, const PGresult *res, int row)
{
    json_w_obj_begin(w);
    json_w_kstr(w, "id", pg_val(res, row, AU_ID));
    json_w_kstr(w, "email", pg_val(res, row, AU_EMAIL));
    json_w_kstr(w, "display_name", pg_val(res, row, AU_NAME));
    json_w_kstr(w, "role", pg_val(res, row, AU_ROLE));
    json_w_kbool(w, "disabled",
                 strcmp(pg_val(res, row, AU_DISABLED), "t") == 0);
    write_num(w, "monthly_budget_cap_usd", pg_val(res, row, AU_CAP));
    json_w_kstr(w, "created_at", pg_val(res, row, AU_CREATED));
    json_w_obj_end(w);
}

static void on_users_listed(void *arg, const struct pg_reply *reply)
{
    reply_page(arg, reply, AU_ID, write_admin_user);
}

void api_admin_users_list(struct req *r)
{
    const char *cursor;
    char limit[16];
    if (!read_page(r, &cursor, limit))
        return;
    if (cursor && !ids_is_uuid(cursor)) {
        req_problem(r, 400, "bad_query", "cursor is not valid");
        return;
    }
    store_admin_users_list(r->srv->pg, cursor, limit, on_users_listed, r);
}

/* The change applies from the next request: the auth cache forgets what
 * it knew; a disabled user's open streams end here, at once. */
static void on_user_patched(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (!req_store_row(r, reply, "user"))
        return;
    auth_cache_clear(r->srv->auth_cache);
    if (strcmp(pg_val(reply->res, 0, AU_DISABLED), "t") == 0 && r->srv->bus)
        sse_end_user(bus_sse_hub(r->srv->bus),
                     pg_val(reply->res, 0, AU_ID), "user_disabled",
                     "this account is disabled");
    req_reply_row(r, reply, "user", write_admin_user);
}

struct user_patch {
    bool disabled, has_disabled, set_cap;
    char *role, *cap;
};

static bool read_user_patch(struct req *r, const char *id,
                            struct user_patch *p)
{
    static const char *const known[] = {"disabled", "role",
                                        "monthly_budget_cap_usd"};
    if (!req_json_known_members(r, known, ARRAY_SIZE(known)) ||
        !req_json_bool(r, "disabled", false, &p->disabled, &p->has_disabled) ||
        !req_json_str(r, "role", false, 1, 5, &p->role))
        return false;
    if (p->role && strcmp(p->role, "user") != 0 &&
        strcmp(p->role, "admin") != 0)
        return fail422(r, "role must be user or admin");
    p->set_cap = json_get(r->json, 0, "monthly_budget_cap_usd") >= 0;
    if (p->set_cap && !read_amount(r, 0, "monthly_budget_cap_usd",
                                   "monthly_budget_cap_usd", CAP_MAX, true,
                                   &p->cap))
        return false;
    /* An admin cannot lock themselves out: someone must remain able to
     * undo it. */
    if (strcasecmp(id, r->auth.user_id) == 0 &&
        ((p->has_disabled && p->disabled) ||
         (p->role && strcmp(p->role, "user") == 0))) {
        req_problem(r, 409, "self_lockout", "an administrator cannot "
                    "disable or demote their own account");
        return false;
    }
    return true;
}

void api_admin_user_patch(struct req *r)
{
    const char *id = req_param(r, "id");
    struct user_patch p = {0};
    if (!id || !ids_is_uuid(id))
        req_problem(r, 404, "not_found", "no such user");
    else if (read_user_patch(r, id, &p))
        store_admin_user_patch(r->srv->pg, id,
                               p.has_disabled ? (p.disabled ? "t" : "f")
                                              : NULL,
                               p.role, p.set_cap, p.cap, on_user_patched, r);
    free(p.role);
    free(p.cap);
}

/* ---- bench publishing ---- */

#define BENCH_PAD_MAX (64 * 1024)

static void on_bench_published(void *arg, int64_t seq, const char *err)
{
    struct req *r = arg;
    if (seq < 0) {
        if (strcmp(err, "chat_not_found") == 0)
            req_problem(r, 404, "not_found", "no such chat");
        else if (strcmp(err, "shutting_down") == 0 ||
                 strncmp(err, "db_", 3) == 0)
            req_problem(r, 503, err, "the event could not be stored");
        else
            req_problem(r, 500, "internal", "the event was refused (%s)",
                        err);
        return;
    }
    struct buf out;
    struct json_w w;
    buf_init(&out);
    json_w_init(&w, &out);
    json_w_obj_begin(&w);
    json_w_kint(&w, "id", seq);
    json_w_obj_end(&w);
    req_reply_json(r, 202, &out);
    buf_deinit(&out);
}

/* {t_ns, pad}: t_ns an integer (the publisher's clock), pad a bounded
 * string; the event's data is written back from them, nothing else. */
static bool read_bench_body(struct req *r, int64_t *t_ns, char **pad)
{
    static const char *const known[] = {"t_ns", "pad"};
    if (!req_json_known_members(r, known, ARRAY_SIZE(known)))
        return false;
    int tok = json_get(r->json, 0, "t_ns");
    if (json_get_int64(r->json, tok, t_ns) < 0)
        return fail422(r, "t_ns must be an integer");
    *pad = NULL;
    return req_json_str(r, "pad", false, 0, BENCH_PAD_MAX, pad);
}

/* Publishes through the bus like a run does, so a load generator
 * measures the real fan-out path; only when the operator enabled it. */
void api_admin_bench_publish(struct req *r)
{
    if (!r->srv->cfg->bench_publish) {
        req_problem(r, 404, "not_found", "no such endpoint");
        return;
    }
    const char *id = req_path_uuid(r, "id", "chat");
    int64_t t_ns;
    char *pad;
    if (!id || !read_bench_body(r, &t_ns, &pad))
        return;
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kint(&w, "t_ns", t_ns);
    json_w_kstr(&w, "pad", pad ? pad : "");
    json_w_obj_end(&w);
    bus_publish(r->srv->bus, id, NULL, "bench", data.data, data.len, true,
                on_bench_published, r);
    buf_deinit(&data);
    free(pad);
}
