/* Accounts and sessions (API.md "Auth"): register, login, refresh with
 * rotation and reuse detection, logout, password change, me, API keys.
 * Password hashing goes through the sliced hasher; everything else is one
 * or two queries. Handlers keep their progress in a struct auth_flow in
 * r->state. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/api.h"
#include "corral/auth_cache.h"
#include "corral/base64.h"
#include "corral/crypto.h"
#include "corral/ids.h"
#include "corral/jwt.h"
#include "corral/log.h"
#include "corral/metrics.h"
#include "corral/mem.h"
#include "corral/password.h"
#include "corral/ratelimit.h"
#include "corral/server.h"
#include "corral/store.h"

#define EMAIL_MAX 254
#define PASSWORD_MAX_BYTES 1024
#define NAME_MAX_CHARS 100
#define TOKEN_BYTES 32

struct auth_flow {
    char email[EMAIL_MAX + 1];
    char password[PASSWORD_MAX_BYTES + 1];
    char new_password[PASSWORD_MAX_BYTES + 1];
    char display_name[NAME_MAX_CHARS * 4 + 1];
    char user_id[UUID_STR_LEN + 1];
    char hash[200];            /* the new password hash (register) */
    char refresh[64];          /* the refresh token being issued */
    char refresh_hash[65];
    struct buf user_json;      /* the user object of the answer */
    int status;                /* the answer's status (201 or 200) */
    bool bootstrap;            /* claiming the first-admin slot */
    bool disabled;             /* login: the account is disabled */
};

static struct auth_flow *flow_new(struct req *r)
{
    struct auth_flow *f = xcalloc(1, sizeof(*f));
    buf_init(&f->user_json);
    r->state = f;
    return f;
}

/* Releases what the flow holds besides itself (free_req frees the rest). */
static void flow_clear(struct auth_flow *f)
{
    buf_deinit(&f->user_json);
    crypto_zero(f->password, sizeof(f->password));
    crypto_zero(f->new_password, sizeof(f->new_password));
}

static void reply_problem_clear(struct req *r, int status, const char *code,
                                const char *detail)
{
    flow_clear(r->state);
    req_problem(r, status, code, "%s", detail);
}

static bool store_failed(struct req *r, const struct pg_reply *reply)
{
    if (reply->status == PG_OK)
        return false;
    flow_clear(r->state);
    req_store_error(r, reply->status, reply->errmsg);
    return true;
}

static void write_user(struct json_w *w, const PGresult *res, int row)
{
    json_w_obj_begin(w);
    json_w_kstr(w, "id", pg_val(res, row, USER_ID));
    json_w_kstr(w, "email", pg_val(res, row, USER_EMAIL));
    json_w_kstr(w, "display_name", pg_val(res, row, USER_NAME));
    json_w_kstr(w, "role", pg_val(res, row, USER_ROLE));
    json_w_kstr(w, "created_at", pg_val(res, row, USER_CREATED));
    json_w_obj_end(w);
}

/* ---- input checks ---- */

static bool email_valid(const char *e)
{
    const char *at = strchr(e, '@');
    size_t n = strlen(e);
    if (!at || at == e || strchr(at + 1, '@') || at - e > 64 || n > EMAIL_MAX)
        return false;
    const char *dot = strrchr(at + 1, '.');
    if (!dot || dot == at + 1 || dot[1] == '\0')
        return false;
    for (const char *p = e; *p; p++)
        if ((unsigned char)*p <= ' ' || strchr("\"(),:;<>[\\]", *p))
            return false;
    return true;
}

static bool read_email(struct req *r, struct auth_flow *f)
{
    char *email = NULL;
    if (!req_json_str(r, "email", true, 1, EMAIL_MAX, &email))
        return false;
    for (char *p = email; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    bool ok = email_valid(email);
    if (ok)
        snprintf(f->email, sizeof(f->email), "%s", email);
    free(email);
    if (!ok)
        req_problem(r, 422, "invalid_email", "email is not a valid address");
    return ok;
}

/* Reads a password field; strict checks only for new passwords. */
static bool read_password(struct req *r, const char *field, bool is_new,
                          char *out, size_t outlen)
{
    char *pw = NULL;
    size_t min = is_new ? (size_t)r->srv->cfg->min_password_length : 1;
    if (!req_json_str(r, field, true, 0, PASSWORD_MAX_BYTES, &pw))
        return false;
    size_t n = strlen(pw);
    bool ok = n <= PASSWORD_MAX_BYTES && n < outlen;
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)pw[i] & 0xc0) != 0x80;
    if (ok && chars < min) {
        req_problem(r, 422, "weak_password", "%s must have at least %zu "
                    "characters", field, min);
        ok = false;
    } else if (!ok) {
        req_problem(r, 422, "validation_failed", "%s is too long", field);
    } else {
        memcpy(out, pw, n + 1);
    }
    crypto_zero(pw, n);
    free(pw);
    return ok;
}

struct rate_step {
    struct req *r;
    void (*next)(struct req *r);
};

static void on_rate(void *arg, bool allowed, int retry_after_s)
{
    struct rate_step *s = arg;
    struct req *r = s->r;
    void (*next)(struct req *) = s->next;
    free(s);
    if (!allowed) {
        flow_clear(r->state);
        req_rate_limited(r, retry_after_s, "rate_limited");
        return;
    }
    next(r);
}

/* Goes on with next(r) when the limit of scope/key allows the request. */
static void rate_then(struct req *r, struct ratelimit *rl, const char *scope,
                      const char *key, int per_min,
                      void (*next)(struct req *r))
{
    struct rate_step *s = xmalloc(sizeof(*s));
    s->r = r;
    s->next = next;
    ratelimit_check(r->srv, rl, scope, key, per_min, on_rate, s);
}

static void ip_rate_then(struct req *r, void (*next)(struct req *r))
{
    rate_then(r, r->srv->rl_ip, "ip", r->client_ip,
              r->srv->cfg->rate_auth_ip_per_min, next);
}

static void queue_full(struct req *r)
{
    flow_clear(r->state);
    metrics_count(r->srv->metrics, "hash_queue_full", 1);
    req_rate_limited(r, hasher_retry_after(r->srv->hasher),
                     "hash_queue_full");
}

static void hasher_gone(struct req *r)
{
    flow_clear(r->state);
    req_add_header(r, "Retry-After", "1");
    req_problem(r, 503, "shutting_down", "the server is shutting down");
}

/* ---- sessions: access token + refresh token ---- */

static bool new_secret(const char *prefix, char *out, size_t outlen)
{
    uint8_t raw[TOKEN_BYTES];
    if (crypto_random(raw, sizeof(raw)) < 0)
        return false;
    struct buf b;
    buf_init(&b);
    buf_puts(&b, prefix);
    base64url_encode(&b, raw, sizeof(raw));
    snprintf(out, outlen, "%s", b.data);
    buf_deinit(&b);
    crypto_zero(raw, sizeof(raw));
    return true;
}

static void reply_session(struct req *r)
{
    struct auth_flow *f = r->state;
    const struct config *cfg = r->srv->cfg;
    int64_t now = server_now();
    struct buf access, body;
    buf_init(&access);
    buf_init(&body);
    jwt_sign(r->srv->jwt_key, SERVER_KEY_LEN, f->user_id, now,
             now + cfg->access_token_ttl, &access);
    struct json_w w;
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_key(&w, "user");
    json_w_raw(&w, f->user_json.data, f->user_json.len);
    json_w_kstr(&w, "access_token", access.data);
    json_w_kstr(&w, "refresh_token", f->refresh);
    json_w_kstr(&w, "token_type", "Bearer");
    json_w_kint(&w, "expires_in", cfg->access_token_ttl);
    json_w_obj_end(&w);
    int status = f->status;
    flow_clear(f);
    req_reply_json(r, status, &body);
    buf_deinit(&access);
    buf_deinit(&body);
}

static void on_refresh_inserted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    reply_session(r);
}

/* Remembers the user of row 0 of res for the answer. */
static void keep_user(struct auth_flow *f, const PGresult *res)
{
    struct json_w w;
    buf_reset(&f->user_json);
    json_w_init(&w, &f->user_json);
    write_user(&w, res, 0);
    snprintf(f->user_id, sizeof(f->user_id), "%s", pg_val(res, 0, USER_ID));
}

/* Starts a new session (a new refresh-token family) for the kept user. */
static void begin_session(struct req *r)
{
    struct auth_flow *f = r->state;
    char id[UUID_STR_LEN + 1], family[UUID_STR_LEN + 1], ttl[16];
    if (ids_uuid7(id) < 0 || ids_uuid7(family) < 0 ||
        !new_secret("", f->refresh, sizeof(f->refresh))) {
        reply_problem_clear(r, 500, "internal_error", "no randomness");
        return;
    }
    auth_token_hash(f->refresh, f->refresh_hash);
    snprintf(ttl, sizeof(ttl), "%d", r->srv->cfg->refresh_token_ttl);
    store_refresh_insert(r->srv->pg, id, f->user_id, family, f->refresh_hash,
                         ttl, on_refresh_inserted, r);
}

/* ---- register ---- */

static void insert_user(struct req *r);

static void on_user_inserted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (reply->status == PG_E_QUERY && strcmp(reply->sqlstate, "23505") == 0) {
        if (f->bootstrap && strstr(reply->errmsg, "users_bootstrap_admin")) {
            f->bootstrap = false; /* another user won the race: retry */
            insert_user(r);
            return;
        }
        reply_problem_clear(r, 409, "email_taken",
                            "an account with this email exists");
        return;
    }
    if (store_failed(r, reply))
        return;
    log_info("registered user %s (%s)", pg_val(reply->res, 0, USER_ID),
             pg_val(reply->res, 0, USER_ROLE));
    keep_user(f, reply->res);
    begin_session(r);
}

static void insert_user(struct req *r)
{
    struct auth_flow *f = r->state;
    char id[UUID_STR_LEN + 1];
    if (ids_uuid7(id) < 0) {
        reply_problem_clear(r, 500, "internal_error", "no randomness");
        return;
    }
    store_user_insert(r->srv->pg, id, f->email, f->display_name, f->hash,
                      f->bootstrap ? "t" : "f", on_user_inserted, r);
}

static void on_count(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    ((struct auth_flow *)r->state)->bootstrap =
        strcmp(pg_val(reply->res, 0, 0), "0") == 0;
    insert_user(r);
}

static void on_register_hashed(void *arg, bool ok, bool match,
                               const char *encoded)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (!ok) {
        hasher_gone(r);
        return;
    }
    snprintf(f->hash, sizeof(f->hash), "%s", encoded);
    store_user_count(r->srv->pg, on_count, r);
}

static void on_register_lookup(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (store_failed(r, reply))
        return;
    if (PQntuples(reply->res) > 0) {
        reply_problem_clear(r, 409, "email_taken",
                            "an account with this email exists");
        return;
    }
    if (hasher_hash(r->srv->hasher, f->password, strlen(f->password),
                    (uint32_t)r->srv->cfg->pbkdf2_iterations,
                    on_register_hashed, r) < 0)
        queue_full(r);
}

static void register_lookup(struct req *r)
{
    struct auth_flow *f = r->state;
    store_user_by_email(r->srv->pg, f->email, on_register_lookup, r);
}

void api_auth_register(struct req *r)
{
    struct auth_flow *f = flow_new(r);
    char *name = NULL;
    f->status = 201;
    if (!read_email(r, f) ||
        !read_password(r, "password", true, f->password,
                       sizeof(f->password)) ||
        !req_json_str(r, "display_name", false, 0, NAME_MAX_CHARS, &name)) {
        flow_clear(f);
        return;
    }
    snprintf(f->display_name, sizeof(f->display_name), "%s",
             name ? name : "");
    free(name);
    ip_rate_then(r, register_lookup);
}

/* ---- login ---- */

static void on_login_verified(void *arg, bool ok, bool match,
                              const char *encoded)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (!ok) {
        hasher_gone(r);
        return;
    }
    if (!match || !f->user_id[0]) {
        metrics_count(r->srv->metrics, "auth_login_failures", 1);
        reply_problem_clear(r, 401, "invalid_credentials",
                            "wrong email or password");
        return;
    }
    if (f->disabled) {
        reply_problem_clear(r, 401, "user_disabled",
                            "this account is disabled");
        return;
    }
    begin_session(r);
}

/* An unknown email is verified against a dummy hash, so both cases cost
 * the same and answer the same. */
static void on_login_lookup(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (store_failed(r, reply))
        return;
    const char *stored = r->srv->dummy_hash;
    if (PQntuples(reply->res) == 1) {
        keep_user(f, reply->res);
        f->disabled = strcmp(pg_val(reply->res, 0, USER_DISABLED), "t") == 0;
        stored = pg_val(reply->res, 0, USER_HASH);
    }
    if (hasher_verify(r->srv->hasher, f->password, strlen(f->password),
                      stored, on_login_verified, r) < 0)
        queue_full(r);
}

static void login_lookup(struct req *r)
{
    struct auth_flow *f = r->state;
    store_user_by_email(r->srv->pg, f->email, on_login_lookup, r);
}

static void login_account_rate(struct req *r)
{
    struct auth_flow *f = r->state;
    rate_then(r, r->srv->rl_account, "acct", f->email,
              r->srv->cfg->rate_auth_account_per_min, login_lookup);
}

void api_auth_login(struct req *r)
{
    struct auth_flow *f = flow_new(r);
    f->status = 200;
    if (!read_email(r, f) ||
        !read_password(r, "password", false, f->password,
                       sizeof(f->password))) {
        flow_clear(f);
        return;
    }
    ip_rate_then(r, login_account_rate);
}

/* ---- refresh ---- */

static void on_family_revoked(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    log_warn("refresh token reuse: session family revoked (request %s)",
             r->id);
    metrics_count(r->srv->metrics, "auth_refresh_reuse", 1);
    reply_problem_clear(r, 401, "refresh_token_reused",
                        "this refresh token was already used; the session "
                        "has been revoked");
}

/* The rotation found no live token: tell reuse from plain invalidity. */
static void on_refresh_classified(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (store_failed(r, reply))
        return;
    const PGresult *res = reply->res;
    if (PQntuples(res) == 1 && strcmp(pg_val(res, 0, 1), "t") == 0 &&
        strcmp(pg_val(res, 0, 2), "f") == 0) {
        store_refresh_revoke_family_of(r->srv->pg, f->password,
                                       on_family_revoked, r);
        return;
    }
    reply_problem_clear(r, 401, "invalid_refresh_token",
                        "the refresh token is not valid");
}

static void on_rotated(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (store_failed(r, reply))
        return;
    if (PQntuples(reply->res) != 1) {
        store_refresh_lookup(r->srv->pg, f->password, on_refresh_classified,
                             r);
        return;
    }
    keep_user(f, reply->res);
    if (strcmp(pg_val(reply->res, 0, USER_DISABLED), "t") == 0) {
        reply_problem_clear(r, 401, "user_disabled",
                            "this account is disabled");
        return;
    }
    reply_session(r);
}

/* Reads {refresh_token} and stores its hash in f->password (the flow's
 * scratch for the presented secret). */
static bool read_refresh_token(struct req *r, struct auth_flow *f)
{
    char *tok = NULL;
    if (!req_json_str(r, "refresh_token", true, 1, 256, &tok))
        return false;
    auth_token_hash(tok, f->password);
    crypto_zero(tok, strlen(tok));
    free(tok);
    return true;
}

static void refresh_rotate(struct req *r)
{
    struct auth_flow *f = r->state;
    char id[UUID_STR_LEN + 1], ttl[16];
    if (ids_uuid7(id) < 0 || !new_secret("", f->refresh, sizeof(f->refresh))) {
        reply_problem_clear(r, 500, "internal_error", "no randomness");
        return;
    }
    auth_token_hash(f->refresh, f->refresh_hash);
    snprintf(ttl, sizeof(ttl), "%d", r->srv->cfg->refresh_token_ttl);
    store_refresh_rotate(r->srv->pg, f->password, id, f->refresh_hash, ttl,
                         on_rotated, r);
}

void api_auth_refresh(struct req *r)
{
    struct auth_flow *f = flow_new(r);
    f->status = 200;
    if (!read_refresh_token(r, f)) {
        flow_clear(f);
        return;
    }
    ip_rate_then(r, refresh_rotate);
}

/* ---- logout ---- */

static void on_logout(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    flow_clear(r->state);
    req_reply_empty(r, 204);
}

void api_auth_logout(struct req *r)
{
    struct auth_flow *f = flow_new(r);
    if (!read_refresh_token(r, f)) {
        flow_clear(f);
        return;
    }
    store_refresh_revoke_family_of(r->srv->pg, f->password, on_logout, r);
}

/* ---- password change ---- */

static void on_password_stored(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (store_failed(r, reply))
        return;
    log_info("user %s changed password; sessions revoked", r->auth.user_id);
    flow_clear(r->state);
    req_reply_empty(r, 204);
}

static void on_new_hashed(void *arg, bool ok, bool match, const char *enc)
{
    struct req *r = arg;
    if (!ok) {
        hasher_gone(r);
        return;
    }
    store_user_set_password(r->srv->pg, r->auth.user_id, enc,
                            on_password_stored, r);
}

static void on_current_verified(void *arg, bool ok, bool match,
                                const char *encoded)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (!ok) {
        hasher_gone(r);
        return;
    }
    if (!match) {
        reply_problem_clear(r, 401, "invalid_credentials",
                            "current_password is wrong");
        return;
    }
    if (hasher_hash(r->srv->hasher, f->new_password, strlen(f->new_password),
                    (uint32_t)r->srv->cfg->pbkdf2_iterations, on_new_hashed,
                    r) < 0)
        queue_full(r);
}

static void on_password_user(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (store_failed(r, reply))
        return;
    const char *stored = PQntuples(reply->res) == 1
                             ? pg_val(reply->res, 0, USER_HASH)
                             : r->srv->dummy_hash;
    if (hasher_verify(r->srv->hasher, f->password, strlen(f->password),
                      stored, on_current_verified, r) < 0)
        queue_full(r);
}

void api_auth_password(struct req *r)
{
    struct auth_flow *f = flow_new(r);
    if (!read_password(r, "current_password", false, f->password,
                       sizeof(f->password)) ||
        !read_password(r, "new_password", true, f->new_password,
                       sizeof(f->new_password))) {
        flow_clear(f);
        return;
    }
    store_user_by_id(r->srv->pg, r->auth.user_id, on_password_user, r);
}

/* ---- me ---- */

static void on_me(void *arg, const struct pg_reply *reply)
{
    req_reply_row(arg, reply, "user", write_user);
}

void api_auth_me(struct req *r)
{
    store_user_by_id(r->srv->pg, r->auth.user_id, on_me, r);
}

/* ---- API keys ---- */

static void write_key(struct json_w *w, const PGresult *res, int row,
                      const char *secret)
{
    json_w_obj_begin(w);
    json_w_kstr(w, "id", pg_val(res, row, 0));
    json_w_kstr(w, "name", pg_val(res, row, 1));
    json_w_kstr(w, "prefix", pg_val(res, row, 2));
    json_w_kstr(w, "created_at", pg_val(res, row, 3));
    if (secret)
        json_w_kstr(w, "key", secret);
    else
        json_w_kstr(w, "last_used_at", pg_val(res, row, 4));
    json_w_obj_end(w);
}

static void on_key_created(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct auth_flow *f = r->state;
    if (store_failed(r, reply))
        return;
    struct buf body;
    buf_init(&body);
    struct json_w w;
    json_w_init(&w, &body);
    write_key(&w, reply->res, 0, f->refresh);
    flow_clear(f);
    crypto_zero(f->refresh, sizeof(f->refresh));
    req_reply_json(r, 201, &body);
    buf_deinit(&body);
}

#define KEY_PREFIX_SHOWN 12 /* "crl_" and 8 characters */

void api_keys_create(struct req *r)
{
    struct auth_flow *f = flow_new(r);
    char *name = NULL, id[UUID_STR_LEN + 1], prefix[KEY_PREFIX_SHOWN + 1];
    if (!req_json_str(r, "name", true, 1, NAME_MAX_CHARS, &name)) {
        flow_clear(f);
        return;
    }
    if (ids_uuid7(id) < 0 || !new_secret("crl_", f->refresh,
                                         sizeof(f->refresh))) {
        free(name);
        reply_problem_clear(r, 500, "internal_error", "no randomness");
        return;
    }
    auth_token_hash(f->refresh, f->refresh_hash);
    memcpy(prefix, f->refresh, KEY_PREFIX_SHOWN);
    prefix[KEY_PREFIX_SHOWN] = '\0';
    store_api_key_insert(r->srv->pg, id, r->auth.user_id, name, prefix,
                         f->refresh_hash, on_key_created, r);
    free(name);
}

static void on_keys_listed(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    int limit = *(int *)r->state;
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
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
        write_key(&w, reply->res, i, NULL);
    json_w_arr_end(&w);
    json_w_next_cursor(&w, n > limit ? pg_val(reply->res, shown - 1, 0)
                                     : NULL);
    json_w_obj_end(&w);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

void api_keys_list(struct req *r)
{
    int limit;
    const char *cursor;
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
    store_api_key_list(r->srv->pg, r->auth.user_id, cursor, lim,
                       on_keys_listed, r);
}

static void on_key_deleted(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    auth_cache_clear(r->srv->auth_cache); /* the key stops working now */
    req_reply_deleted(r, reply, "API key");
}

void api_keys_delete(struct req *r)
{
    const char *id = req_param(r, "id");
    if (!ids_is_uuid(id)) {
        req_problem(r, 404, "not_found", "no such API key");
        return;
    }
    store_api_key_delete(r->srv->pg, id, r->auth.user_id, on_key_deleted, r);
}
