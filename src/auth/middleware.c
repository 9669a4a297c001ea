/* Authentication of API requests: a Bearer access token (JWT, verified
 * here) or API key (crl_..., looked up by hash). Either way the user's
 * status and role come from the user row, or from the auth cache for
 * auth_cache_ttl_ms after it was read (auth_cache.h: revocations through
 * the API clear it, so a disabled user is refused at once). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "corral/api.h"
#include "corral/auth_cache.h"
#include "corral/base64.h"
#include "corral/crypto.h"
#include "corral/ids.h"
#include "corral/jwt.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/store.h"

struct auth_pending {
    void (*next)(struct req *r);
    char cache_key[72];        /* "u:<id>" or "k:<hash>" */
    uint64_t cache_gen;        /* the cache's generation at lookup */
};

static void unauthorized(struct req *r, const char *code, const char *detail)
{
    req_add_header(r, "WWW-Authenticate", "Bearer");
    req_problem(r, 401, code, "%s", detail);
}

static void finish_entry(struct req *r, const struct auth_entry *e,
                         void (*next)(struct req *r))
{
    if (e->disabled) {
        unauthorized(r, "user_disabled", "this account is disabled");
        return;
    }
    snprintf(r->auth.user_id, sizeof(r->auth.user_id), "%s", e->user_id);
    r->auth.admin = e->admin;
    r->auth.ok = true;
    if ((r->route->flags & ROUTE_ADMIN) && !r->auth.admin) {
        req_problem(r, 403, "admin_only", "administrators only");
        return;
    }
    next(r);
}

/* Called with one row (id, role, disabled) or none. */
static void finish(struct req *r, const PGresult *res, int role_col,
                   int disabled_col)
{
    struct auth_pending *p = r->state;
    void (*next)(struct req *) = p->next;
    struct auth_entry e = {0};
    bool found = PQntuples(res) == 1;
    if (found) {
        snprintf(e.user_id, sizeof(e.user_id), "%s", pg_val(res, 0, 0));
        e.admin = strcmp(pg_val(res, 0, role_col), "admin") == 0;
        e.disabled = strcmp(pg_val(res, 0, disabled_col), "t") == 0;
        auth_cache_put(r->srv->auth_cache, p->cache_key, p->cache_gen,
                       server_mono_us() / 1000, &e);
    }
    free(r->state);
    r->state = NULL;
    if (!found)
        unauthorized(r, "invalid_token", "the credentials are not valid");
    else
        finish_entry(r, &e, next);
}

static void on_key_row(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    r->auth.via_api_key = true;
    finish(r, reply->res, 1, 2);
}

static void on_user_row(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    finish(r, reply->res, USER_ROLE, USER_DISABLED);
}

static const char *bearer_token(struct req *r)
{
    const char *h = req_header(r, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        return *h ? h : NULL;
    }
    if (r->route->flags & ROUTE_QUERY_TOKEN)
        return req_query(r, "access_token");
    return NULL;
}

void auth_token_hash(const char *token, char out[65])
{
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256(token, strlen(token), d);
    struct buf hex;
    buf_init(&hex);
    hex_encode(&hex, d, sizeof(d));
    memcpy(out, hex.data, 65);
    buf_deinit(&hex);
}

/* Answers from the cache when the pending lookup's key is there. */
static bool cached(struct req *r)
{
    struct auth_pending *p = r->state;
    struct auth_entry e;
    p->cache_gen = auth_cache_generation(r->srv->auth_cache);
    if (!auth_cache_get(r->srv->auth_cache, p->cache_key,
                        server_mono_us() / 1000, &e))
        return false;
    void (*next)(struct req *) = p->next;
    free(r->state);
    r->state = NULL;
    finish_entry(r, &e, next);
    return true;
}

static void authenticate_jwt(struct req *r, const char *token)
{
    struct jwt_claims claims;
    int rc = jwt_verify(r->srv->jwt_key, SERVER_KEY_LEN, token,
                        strlen(token), server_now(), &claims);
    if (rc == JWT_E_EXPIRED) {
        unauthorized(r, "token_expired", "the access token has expired");
        return;
    }
    if (rc == JWT_OK && !ids_is_uuid(claims.sub))
        rc = JWT_E_CLAIMS;
    if (rc != JWT_OK) {
        unauthorized(r, "invalid_token", jwt_strerror(rc));
        return;
    }
    struct auth_pending *p = r->state;
    snprintf(p->cache_key, sizeof(p->cache_key), "u:%s", claims.sub);
    if (!cached(r))
        store_user_by_id(r->srv->pg, claims.sub, on_user_row, r);
}

void auth_authenticate(struct req *r, void (*next)(struct req *r))
{
    const char *token = bearer_token(r);
    if (!token) {
        unauthorized(r, "unauthorized", "a Bearer token or API key is "
                                        "required");
        return;
    }
    struct auth_pending *p = xcalloc(1, sizeof(*p));
    p->next = next;
    r->state = p;
    if (strncmp(token, "crl_", 4) == 0) {
        char hash[65];
        auth_token_hash(token, hash);
        snprintf(p->cache_key, sizeof(p->cache_key), "k:%s", hash);
        r->auth.via_api_key = true;
        if (!cached(r))
            store_api_key_use(r->srv->pg, hash, on_key_row, r);
        return;
    }
    authenticate_jwt(r, token);
}
