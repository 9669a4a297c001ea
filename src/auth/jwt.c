/* jwt: HS256 access tokens.
 *
 * Verification never lets the token choose anything: the algorithm is
 * pinned to HS256, the header may hold only "alg" and "typ" (so no "crit",
 * "kid" or "jku" can ask for behaviour we do not have), and the MAC is
 * computed over the first two parts exactly as received. Work is bounded
 * before it starts: tokens over JWT_MAX_LEN are refused unread, and both
 * JSON parts are parsed under tight limits. */
#include "corral/jwt.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "corral/base64.h"
#include "corral/crypto.h"
#include "corral/json.h"

#define JWT_MAX_LEN 4096

/* A header or claims set is one small flat object. */
static const struct json_limits jwt_json_limits = {
    .max_bytes = JWT_MAX_LEN,
    .max_depth = 4,
    .max_tokens = 64,
};

static void append_part(struct buf *tok, struct buf *json)
{
    base64url_encode(tok, json->data, json->len);
    buf_reset(json);
}

void jwt_sign(const uint8_t *key, size_t keylen, const char *sub, int64_t iat,
              int64_t exp, struct buf *out)
{
    struct buf json, tok;
    struct json_w w;
    buf_init(&json);
    buf_init(&tok);

    json_w_init(&w, &json);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "alg", "HS256");
    json_w_kstr(&w, "typ", "JWT");
    json_w_obj_end(&w);
    append_part(&tok, &json);
    buf_putc(&tok, '.');

    json_w_init(&w, &json);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "sub", sub);
    json_w_kint(&w, "iat", iat);
    json_w_kint(&w, "exp", exp);
    json_w_obj_end(&w);
    append_part(&tok, &json);

    uint8_t mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, keylen, tok.data, tok.len, mac);
    buf_putc(&tok, '.');
    base64url_encode(&tok, mac, sizeof(mac));
    buf_append(out, tok.data, tok.len);

    buf_deinit(&json);
    buf_deinit(&tok);
}

/* Parses the decoded JSON of a part; it must be an object. */
static int parse_obj(const char *s, size_t n, struct json_doc **doc)
{
    if (json_parse(s, n, &jwt_json_limits, doc, NULL) < 0)
        return JWT_E_FORMAT;
    if (json_type(*doc, 0) == JSON_OBJECT)
        return JWT_OK;
    json_doc_free(*doc);
    return JWT_E_FORMAT;
}

/* True when tok is a string exactly equal to s. Compared via a copy so an
 * escaped NUL ("HS256\u0000") cannot pass as a shorter string. */
static bool str_is(const struct json_doc *doc, int tok, const char *s)
{
    size_t n;
    char *v = json_str_dup(doc, tok, &n);
    bool eq = v && n == strlen(s) && memcmp(v, s, n) == 0;
    free(v);
    return eq;
}

/* The header must be {"alg":"HS256"} plus optionally "typ":"JWT", each key
 * once, in any order. */
static int check_header(const struct json_doc *doc)
{
    int nalg = 0, ntyp = 0;
    for (int i = 0; i < json_len(doc, 0); i++) {
        int key;
        int val = json_member(doc, 0, i, &key);
        if (str_is(doc, key, "alg")) {
            if (++nalg > 1 || !str_is(doc, val, "HS256"))
                return JWT_E_ALG;
        } else if (str_is(doc, key, "typ")) {
            if (++ntyp > 1 || !str_is(doc, val, "JWT"))
                return JWT_E_FORMAT;
        } else {
            return JWT_E_FORMAT;
        }
    }
    return nalg == 1 ? JWT_OK : JWT_E_ALG;
}

static int check_claims(const struct json_doc *doc, struct jwt_claims *c)
{
    size_t n;
    char *sub = json_str_dup(doc, json_get(doc, 0, "sub"), &n);
    /* strlen guards against NUL bytes from \u0000 escapes. */
    bool ok = sub && n >= 1 && n <= JWT_SUB_MAX && strlen(sub) == n &&
              json_get_int64(doc, json_get(doc, 0, "iat"), &c->iat) == 0 &&
              json_get_int64(doc, json_get(doc, 0, "exp"), &c->exp) == 0;
    if (ok)
        memcpy(c->sub, sub, n + 1);
    free(sub);
    return ok ? JWT_OK : JWT_E_CLAIMS;
}

static int check_times(const struct jwt_claims *c, int64_t now)
{
    if (c->exp <= now)
        return JWT_E_EXPIRED;
    /* iat - now in unsigned arithmetic: exact for any iat > now, where the
     * signed difference could overflow. */
    if (c->iat > now && (uint64_t)c->iat - (uint64_t)now > JWT_SKEW_SECONDS)
        return JWT_E_NOT_YET;
    return JWT_OK;
}

/* Checks the MAC over the signing input s[0..n) against the signature. */
static int check_signature(const uint8_t *key, size_t keylen, const char *s,
                           size_t n, const char *sig, size_t siglen)
{
    struct buf raw;
    buf_init(&raw);
    if (base64url_decode(&raw, sig, siglen) < 0) {
        buf_deinit(&raw);
        return JWT_E_FORMAT;
    }
    uint8_t mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, keylen, s, n, mac);
    bool ok =
        raw.len == sizeof(mac) && crypto_ct_equal(raw.data, mac, sizeof(mac));
    crypto_zero(mac, sizeof(mac));
    buf_deinit(&raw);
    return ok ? JWT_OK : JWT_E_SIGNATURE;
}

/* Splits the token, decodes both JSON parts, checks the header and then
 * the MAC. On success the decoded payload is left in pay. */
static int verify_parts(const uint8_t *key, size_t keylen, const char *token,
                        size_t len, struct buf *pay)
{
    const char *end = token + len;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return JWT_E_FORMAT;
    /* Both JSON parts must decode before anything else is looked at, so a
     * malformed token is reported as such whatever else is wrong. */
    struct buf hdr;
    buf_init(&hdr);
    int rc = JWT_E_FORMAT;
    if (base64url_decode(&hdr, token, (size_t)(d1 - token)) == 0 &&
        base64url_decode(pay, d1 + 1, (size_t)(d2 - d1 - 1)) == 0) {
        struct json_doc *doc;
        rc = parse_obj(buf_cstr(&hdr), hdr.len, &doc);
        if (rc == JWT_OK) {
            rc = check_header(doc);
            json_doc_free(doc);
        }
    }
    buf_deinit(&hdr);
    if (rc == JWT_OK)
        rc = check_signature(key, keylen, token, (size_t)(d2 - token), d2 + 1,
                             (size_t)(end - d2 - 1));
    return rc;
}

int jwt_verify(const uint8_t *key, size_t keylen, const char *token, size_t len,
               int64_t now, struct jwt_claims *claims)
{
    if (!token || len == 0 || len > JWT_MAX_LEN)
        return JWT_E_FORMAT;
    struct buf pay;
    buf_init(&pay);
    int rc = verify_parts(key, keylen, token, len, &pay);
    struct json_doc *doc;
    if (rc == JWT_OK)
        rc = parse_obj(buf_cstr(&pay), pay.len, &doc);
    buf_deinit(&pay);
    if (rc < 0)
        return rc;
    struct jwt_claims c;
    rc = check_claims(doc, &c);
    json_doc_free(doc);
    if (rc == JWT_OK)
        rc = check_times(&c, now);
    if (rc == JWT_OK && claims)
        *claims = c;
    return rc;
}

const char *jwt_strerror(int err)
{
    switch ((enum jwt_err)err) {
    case JWT_OK: return "ok";
    case JWT_E_FORMAT: return "malformed token";
    case JWT_E_ALG: return "unsupported token algorithm";
    case JWT_E_SIGNATURE: return "bad token signature";
    case JWT_E_CLAIMS: return "missing or invalid token claims";
    case JWT_E_EXPIRED: return "token expired";
    case JWT_E_NOT_YET: return "token not yet valid";
    }
    return "unknown token error";
}
