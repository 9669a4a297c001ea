/* crypto: hashing, HMAC, randomness, constant-time compare, AES-256-GCM and
 * PBKDF2-HMAC-SHA256, all on mbedTLS (2.28). PBKDF2 exists in two forms: a
 * one-shot function for tests and the command line, and a sliced state
 * machine the server advances a bounded number of iterations per loop turn
 * so a password hash never stalls other connections (DESIGN.md §7). */
#ifndef CORRAL_CRYPTO_H
#define CORRAL_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

#define CRYPTO_SHA256_LEN 32

/* Fills out with n bytes from the kernel CSPRNG (getrandom). 0 or -1. */
int crypto_random(void *out, size_t n) __attribute__((warn_unused_result));
void crypto_sha256(const void *data, size_t n, uint8_t out[CRYPTO_SHA256_LEN]);
void crypto_hmac_sha256(const void *key, size_t klen, const void *data,
                        size_t n, uint8_t out[CRYPTO_SHA256_LEN]);
/* Compares n bytes in time independent of their contents. */
bool crypto_ct_equal(const void *a, const void *b, size_t n);
/* Zeroes memory in a way the compiler cannot remove. */
void crypto_zero(void *p, size_t n);

/* One-shot PBKDF2-HMAC-SHA256. 0 or -1. */
int crypto_pbkdf2_sha256(const void *pw, size_t pwlen, const void *salt,
                         size_t saltlen, uint32_t iterations, uint8_t *out,
                         size_t outlen);

/* Sliced PBKDF2-HMAC-SHA256. Owner: the caller (pbkdf2_free). The password
 * is copied and zeroized on free. */
struct pbkdf2;
struct pbkdf2 *pbkdf2_new(const void *pw, size_t pwlen, const void *salt,
                          size_t saltlen, uint32_t iterations, size_t outlen);
/* Runs at most max_iter iterations; returns true when the key is complete. */
bool pbkdf2_step(struct pbkdf2 *p, uint32_t max_iter);
/* Iterations left (for scheduling). */
uint64_t pbkdf2_remaining(const struct pbkdf2 *p);
/* The derived key once pbkdf2_step returned true, else NULL. */
const uint8_t *pbkdf2_result(const struct pbkdf2 *p, size_t *outlen);
void pbkdf2_free(struct pbkdf2 *p);

/* AES-256-GCM with a random 12-byte nonce. seal appends
 * nonce || ciphertext || 16-byte tag to out; open appends the plaintext.
 * 0, or -1 on failure (open: wrong key, tampered or short input). */
int crypto_aes_gcm_seal(const uint8_t key[32], const void *pt, size_t n,
                        struct buf *out) __attribute__((warn_unused_result));
int crypto_aes_gcm_open(const uint8_t key[32], const void *ct, size_t n,
                        struct buf *out) __attribute__((warn_unused_result));
/* The same with associated data (authenticated, not encrypted): a value
 * sealed for one context (ad) does not open in another. */
int crypto_aes_gcm_seal_ad(const uint8_t key[32], const void *ad,
                           size_t adlen, const void *pt, size_t n,
                           struct buf *out)
    __attribute__((warn_unused_result));
int crypto_aes_gcm_open_ad(const uint8_t key[32], const void *ad,
                           size_t adlen, const void *ct, size_t n,
                           struct buf *out)
    __attribute__((warn_unused_result));

#endif
