/* jwt: HS256 access tokens (RFC 7519) signed with HMAC-SHA256.
 * Verification pins the algorithm: the header must be exactly a JSON object
 * with "alg":"HS256" (and "typ":"JWT" if typ is present); "none" and every
 * other alg are refused. sub, iat and exp are required; exp must be in the
 * future and iat not in the future (a small clock skew is allowed). */
#ifndef CORRAL_JWT_H
#define CORRAL_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

#define JWT_SUB_MAX 64
#define JWT_SKEW_SECONDS 30

enum jwt_err {
    JWT_OK = 0,
    JWT_E_FORMAT = -1,    /* not three base64url parts, bad JSON */
    JWT_E_ALG = -2,       /* header alg is not HS256 */
    JWT_E_SIGNATURE = -3, /* signature mismatch */
    JWT_E_CLAIMS = -4,    /* sub/iat/exp missing or of the wrong type */
    JWT_E_EXPIRED = -5,   /* exp <= now */
    JWT_E_NOT_YET = -6,   /* iat > now + skew */
};

struct jwt_claims {
    char sub[JWT_SUB_MAX + 1]; /* the user id */
    int64_t iat;
    int64_t exp;
};

/* Appends a signed token for sub, issued at iat, expiring at exp. */
void jwt_sign(const uint8_t *key, size_t keylen, const char *sub, int64_t iat,
              int64_t exp, struct buf *out);
/* Verifies token (len bytes) at time now. 0 and *claims filled, or a
 * negative enum jwt_err. */
int jwt_verify(const uint8_t *key, size_t keylen, const char *token,
               size_t len, int64_t now, struct jwt_claims *claims);
const char *jwt_strerror(int err);

#endif
