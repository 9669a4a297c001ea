/* crypto: thin wrappers over mbedTLS 2.28 plus a sliced PBKDF2.
 *
 * The sliced PBKDF2 is written by hand rather than on mbedtls_pkcs5_*
 * because the server must stop after a bounded number of iterations and
 * resume on a later loop turn (DESIGN.md §7). It is also about twice as fast
 * per iteration as mbedtls_md_hmac_reset/update/finish: HMAC(K, m) is
 * H((K0^opad) || H((K0^ipad) || m)), and the two 64-byte pad blocks depend
 * only on the password, so their compressed SHA-256 states are computed once
 * and cloned per iteration. Each iteration then costs two compressions
 * instead of four. The one-shot form uses mbedtls_pkcs5_pbkdf2_hmac, so the
 * tests can check one implementation against the other. */
#include "corral/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <mbedtls/gcm.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>

#include "corral/mem.h"

#define SHA256_BLOCK 64
#define GCM_NONCE_LEN 12
#define GCM_TAG_LEN 16

/* mbedTLS only fails here on invalid arguments or out-of-memory, neither of
 * which the callers can handle; the same policy as xmalloc. */
static void mbed_check(int rc, const char *what)
{
    if (rc == 0)
        return;
    fprintf(stderr, "corrald: %s failed (mbedTLS -0x%04x)\n", what,
            (unsigned)-rc);
    abort();
}

static const mbedtls_md_info_t *sha256_info(void)
{
    return mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
}

int crypto_random(void *out, size_t n)
{
    uint8_t *p = out;
    /* getrandom may return fewer bytes than asked (above 256 bytes, or on a
     * signal), so loop until all are filled. */
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

void crypto_sha256(const void *data, size_t n, uint8_t out[CRYPTO_SHA256_LEN])
{
    mbed_check(mbedtls_md(sha256_info(), data, n, out), "sha256");
}

void crypto_hmac_sha256(const void *key, size_t klen, const void *data,
                        size_t n, uint8_t out[CRYPTO_SHA256_LEN])
{
    mbed_check(mbedtls_md_hmac(sha256_info(), key, klen, data, n, out),
               "hmac-sha256");
}

bool crypto_ct_equal(const void *a, const void *b, size_t n)
{
    /* volatile keeps the compiler from turning the loop into an early-exit
     * memcmp. */
    const volatile uint8_t *x = a, *y = b;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= (uint8_t)(x[i] ^ y[i]);
    return acc == 0;
}

void crypto_zero(void *p, size_t n)
{
    if (p && n)
        mbedtls_platform_zeroize(p, n);
}

int crypto_pbkdf2_sha256(const void *pw, size_t pwlen, const void *salt,
                         size_t saltlen, uint32_t iterations, uint8_t *out,
                         size_t outlen)
{
    if (iterations == 0 || outlen == 0 || outlen > UINT32_MAX)
        return -1;
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc = mbedtls_md_setup(&ctx, sha256_info(), 1);
    if (rc == 0)
        rc = mbedtls_pkcs5_pbkdf2_hmac(&ctx, pw, pwlen, salt, saltlen,
                                       iterations, (uint32_t)outlen, out);
    mbedtls_md_free(&ctx); /* zeroizes the keyed HMAC state */
    return rc == 0 ? 0 : -1;
}

/* ---- sliced PBKDF2 ---- */

struct pbkdf2 {
    mbedtls_md_context_t inner; /* SHA-256 after absorbing K0 ^ ipad */
    mbedtls_md_context_t outer; /* SHA-256 after absorbing K0 ^ opad */
    mbedtls_md_context_t work;  /* scratch, cloned from inner/outer */
    uint8_t *salt;              /* owned copy */
    size_t saltlen;
    uint32_t iterations; /* c in RFC 8018 */
    uint32_t nblocks;    /* ceil(outlen / 32) */
    uint32_t block;      /* 1-based block being computed */
    uint32_t iter;       /* iterations done on block; 0 = not started */
    uint64_t remaining;  /* HMAC iterations left over all blocks */
    uint8_t u[CRYPTO_SHA256_LEN]; /* U_iter */
    uint8_t t[CRYPTO_SHA256_LEN]; /* T_block so far */
    uint8_t *out;                 /* owned, outlen bytes */
    size_t outlen;
};

static void md_ctx_setup(mbedtls_md_context_t *ctx)
{
    mbedtls_md_init(ctx);
    mbed_check(mbedtls_md_setup(ctx, sha256_info(), 0), "md_setup");
}

/* Absorbs the HMAC key into the inner and outer pad states (RFC 2104):
 * K0 is the key, or its hash when longer than a block, zero-padded. */
static void pbkdf2_key(struct pbkdf2 *p, const void *pw, size_t pwlen)
{
    uint8_t k0[SHA256_BLOCK] = {0}, pad[SHA256_BLOCK];
    if (pwlen > SHA256_BLOCK)
        crypto_sha256(pw, pwlen, k0);
    else if (pwlen > 0)
        memcpy(k0, pw, pwlen);
    for (size_t i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k0[i] ^ 0x36;
    mbed_check(mbedtls_md_starts(&p->inner), "md_starts");
    mbed_check(mbedtls_md_update(&p->inner, pad, sizeof(pad)), "md_update");
    for (size_t i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k0[i] ^ 0x5c;
    mbed_check(mbedtls_md_starts(&p->outer), "md_starts");
    mbed_check(mbedtls_md_update(&p->outer, pad, sizeof(pad)), "md_update");
    crypto_zero(k0, sizeof(k0));
    crypto_zero(pad, sizeof(pad));
}

struct pbkdf2 *pbkdf2_new(const void *pw, size_t pwlen, const void *salt,
                          size_t saltlen, uint32_t iterations, size_t outlen)
{
    /* RFC 8018 caps dkLen at (2^32 - 1) * hLen. */
    if (outlen > (size_t)UINT32_MAX * CRYPTO_SHA256_LEN)
        return NULL;
    struct pbkdf2 *p = xcalloc(1, sizeof(*p));
    md_ctx_setup(&p->inner);
    md_ctx_setup(&p->outer);
    md_ctx_setup(&p->work);
    /* Only the derived pad states are kept, not the password itself. */
    pbkdf2_key(p, pw, pwlen);
    p->salt = xmalloc(saltlen);
    if (saltlen)
        memcpy(p->salt, salt, saltlen);
    p->saltlen = saltlen;
    /* c = 0 is not valid PBKDF2; like mbedTLS, compute it as c = 1. */
    p->iterations = iterations ? iterations : 1;
    p->outlen = outlen;
    p->out = xcalloc(1, outlen);
    p->nblocks =
        (uint32_t)((outlen + CRYPTO_SHA256_LEN - 1) / CRYPTO_SHA256_LEN);
    p->block = 1;
    p->remaining = (uint64_t)p->nblocks * p->iterations;
    return p;
}

/* One HMAC: out = HMAC(P, a || b), b optional. out may alias a. */
static void pbkdf2_hmac(struct pbkdf2 *p, const uint8_t *a, size_t alen,
                        const uint8_t *b, size_t blen,
                        uint8_t out[CRYPTO_SHA256_LEN])
{
    mbed_check(mbedtls_md_clone(&p->work, &p->inner), "md_clone");
    mbed_check(mbedtls_md_update(&p->work, a, alen), "md_update");
    if (blen)
        mbed_check(mbedtls_md_update(&p->work, b, blen), "md_update");
    mbed_check(mbedtls_md_finish(&p->work, out), "md_finish");
    mbed_check(mbedtls_md_clone(&p->work, &p->outer), "md_clone");
    mbed_check(mbedtls_md_update(&p->work, out, CRYPTO_SHA256_LEN),
               "md_update");
    mbed_check(mbedtls_md_finish(&p->work, out), "md_finish");
}

/* U_1 = HMAC(P, S || INT(block)) starts a block; T = U_1. */
static void pbkdf2_block_start(struct pbkdf2 *p)
{
    uint8_t be[4] = {(uint8_t)(p->block >> 24), (uint8_t)(p->block >> 16),
                     (uint8_t)(p->block >> 8), (uint8_t)p->block};
    pbkdf2_hmac(p, p->salt, p->saltlen, be, sizeof(be), p->u);
    memcpy(p->t, p->u, sizeof(p->t));
    p->iter = 1;
}

/* Stores the finished T_block and moves on to the next block. */
static void pbkdf2_block_end(struct pbkdf2 *p)
{
    size_t off = (size_t)(p->block - 1) * CRYPTO_SHA256_LEN;
    size_t n = p->outlen - off;
    memcpy(p->out + off, p->t, n < CRYPTO_SHA256_LEN ? n : CRYPTO_SHA256_LEN);
    p->block++;
    p->iter = 0;
}

bool pbkdf2_step(struct pbkdf2 *p, uint32_t max_iter)
{
    if (!p)
        return true;
    while (p->remaining > 0 && max_iter > 0) {
        if (p->iter == 0) {
            pbkdf2_block_start(p);
            max_iter--;
            p->remaining--;
        }
        /* U_j = HMAC(P, U_{j-1}); T ^= U_j. */
        while (p->iter < p->iterations && max_iter > 0) {
            pbkdf2_hmac(p, p->u, sizeof(p->u), NULL, 0, p->u);
            for (size_t k = 0; k < sizeof(p->t); k++)
                p->t[k] ^= p->u[k];
            p->iter++;
            max_iter--;
            p->remaining--;
        }
        if (p->iter == p->iterations)
            pbkdf2_block_end(p);
    }
    if (p->remaining > 0)
        return false;
    /* The intermediate values are key material; don't keep them around. */
    crypto_zero(p->u, sizeof(p->u));
    crypto_zero(p->t, sizeof(p->t));
    return true;
}

uint64_t pbkdf2_remaining(const struct pbkdf2 *p)
{
    return p ? p->remaining : 0;
}

const uint8_t *pbkdf2_result(const struct pbkdf2 *p, size_t *outlen)
{
    if (!p || p->remaining > 0)
        return NULL;
    if (outlen)
        *outlen = p->outlen;
    return p->out;
}

void pbkdf2_free(struct pbkdf2 *p)
{
    if (!p)
        return;
    /* mbedtls_md_free zeroizes the SHA-256 states, which are as good as the
     * password for an attacker. */
    mbedtls_md_free(&p->inner);
    mbedtls_md_free(&p->outer);
    mbedtls_md_free(&p->work);
    crypto_zero(p->out, p->outlen);
    free(p->out);
    free(p->salt);
    crypto_zero(p, sizeof(*p));
    free(p);
}

/* ---- AES-256-GCM ---- */

static void gcm_setup(mbedtls_gcm_context *gcm, const uint8_t key[32])
{
    mbedtls_gcm_init(gcm);
    mbed_check(mbedtls_gcm_setkey(gcm, MBEDTLS_CIPHER_ID_AES, key, 256),
               "gcm_setkey");
}

int crypto_aes_gcm_seal(const uint8_t key[32], const void *pt, size_t n,
                        struct buf *out)
{
    return crypto_aes_gcm_seal_ad(key, NULL, 0, pt, n, out);
}

int crypto_aes_gcm_seal_ad(const uint8_t key[32], const void *ad,
                           size_t adlen, const void *pt, size_t n,
                           struct buf *out)
{
    if (n > SIZE_MAX - GCM_NONCE_LEN - GCM_TAG_LEN)
        return -1;
    size_t total = GCM_NONCE_LEN + n + GCM_TAG_LEN;
    buf_reserve(out, total);
    uint8_t *nonce = (uint8_t *)out->data + out->len;
    uint8_t *body = nonce + GCM_NONCE_LEN, *tag = body + n;
    /* A random 96-bit nonce per message: safe for well under 2^32 messages
     * per key, far beyond what one server key will see. */
    if (crypto_random(nonce, GCM_NONCE_LEN) < 0) {
        out->data[out->len] = '\0';
        return -1;
    }
    mbedtls_gcm_context gcm;
    gcm_setup(&gcm, key);
    int rc = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, n, nonce,
                                       GCM_NONCE_LEN, ad, adlen, pt, body,
                                       GCM_TAG_LEN, tag);
    mbedtls_gcm_free(&gcm);
    if (rc != 0) {
        crypto_zero(nonce, total);
        out->data[out->len] = '\0';
        return -1;
    }
    out->len += total;
    out->data[out->len] = '\0';
    return 0;
}

int crypto_aes_gcm_open(const uint8_t key[32], const void *ct, size_t n,
                        struct buf *out)
{
    return crypto_aes_gcm_open_ad(key, NULL, 0, ct, n, out);
}

int crypto_aes_gcm_open_ad(const uint8_t key[32], const void *ad,
                           size_t adlen, const void *ct, size_t n,
                           struct buf *out)
{
    if (n < GCM_NONCE_LEN + GCM_TAG_LEN)
        return -1;
    const uint8_t *nonce = ct;
    const uint8_t *body = nonce + GCM_NONCE_LEN;
    size_t len = n - GCM_NONCE_LEN - GCM_TAG_LEN;
    const uint8_t *tag = body + len;
    buf_reserve(out, len);
    uint8_t *dst = (uint8_t *)out->data + out->len;
    mbedtls_gcm_context gcm;
    gcm_setup(&gcm, key);
    /* On a tag mismatch mbedTLS zeroizes dst itself. */
    int rc = mbedtls_gcm_auth_decrypt(&gcm, len, nonce, GCM_NONCE_LEN, ad,
                                      adlen, tag, GCM_TAG_LEN, body, dst);
    mbedtls_gcm_free(&gcm);
    if (rc != 0) {
        crypto_zero(dst, len);
        out->data[out->len] = '\0';
        return -1;
    }
    out->len += len;
    out->data[out->len] = '\0';
    return 0;
}
