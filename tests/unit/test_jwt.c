#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "corral/base64.h"
#include "corral/crypto.h"
#include "corral/jwt.h"

#define NOW 1700000000
#define SUB "0190f3c2-7b1e-7c3a-9f00-0123456789ab"

static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";

static int verify(const struct buf *tok, struct jwt_claims *c)
{
    return jwt_verify(key, sizeof(key), tok->data, tok->len, NOW, c);
}

static int verify_str(const char *tok)
{
    struct jwt_claims c;
    return jwt_verify(key, sizeof(key), tok, strlen(tok), NOW, &c);
}

/* Builds header.payload.signature by hand from raw JSON texts, correctly
 * signed with k, so every check past the signature can be reached. */
static void forge(struct buf *out, const uint8_t *k, const char *header,
                  const char *payload)
{
    buf_reset(out);
    base64url_encode(out, header, strlen(header));
    buf_putc(out, '.');
    base64url_encode(out, payload, strlen(payload));
    uint8_t mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(k, sizeof(key), out->data, out->len, mac);
    buf_putc(out, '.');
    base64url_encode(out, mac, sizeof(mac));
}

static int forged(const char *header, const char *payload)
{
    struct buf t;
    buf_init(&t);
    forge(&t, key, header, payload);
    struct jwt_claims c;
    int rc = verify(&t, &c);
    buf_deinit(&t);
    return rc;
}

#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define CLAIMS "{\"sub\":\"" SUB "\",\"iat\":1700000000,\"exp\":1700000900}"

static void test_round_trip(void **state)
{
    (void)state;
    struct buf t;
    buf_init(&t);
    jwt_sign(key, sizeof(key), SUB, NOW, NOW + 900, &t);
    /* The header is fixed: base64url of HS256 above. */
    assert_int_equal(
        strncmp(t.data, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37), 0);
    struct jwt_claims c;
    memset(&c, 0xff, sizeof(c));
    assert_int_equal(verify(&t, &c), JWT_OK);
    assert_string_equal(c.sub, SUB);
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.exp, NOW + 900);
    assert_int_equal(jwt_verify(key, sizeof(key), t.data, t.len, NOW, NULL),
                     JWT_OK);

    /* Identical to a hand-built token from the same JSON. */
    struct buf h;
    buf_init(&h);
    forge(&h, key, HS256, CLAIMS);
    assert_string_equal(t.data, h.data);
    buf_deinit(&h);

    /* jwt_sign appends. */
    buf_reset(&t);
    buf_puts(&t, "Bearer ");
    jwt_sign(key, sizeof(key), SUB, NOW, NOW + 900, &t);
    assert_int_equal(
        jwt_verify(key, sizeof(key), t.data + 7, t.len - 7, NOW, &c), JWT_OK);
    buf_deinit(&t);
}

static void test_times(void **state)
{
    (void)state;
    struct buf t;
    buf_init(&t);
    struct jwt_claims c;
    jwt_sign(key, sizeof(key), SUB, NOW - 900, NOW, &t);
    assert_int_equal(verify(&t, &c), JWT_E_EXPIRED);
    buf_reset(&t);
    jwt_sign(key, sizeof(key), SUB, NOW - 900, NOW + 1, &t);
    assert_int_equal(verify(&t, &c), JWT_OK);

    /* iat in the future: up to the skew is tolerated. */
    buf_reset(&t);
    jwt_sign(key, sizeof(key), SUB, NOW + JWT_SKEW_SECONDS, NOW + 900, &t);
    assert_int_equal(verify(&t, &c), JWT_OK);
    buf_reset(&t);
    jwt_sign(key, sizeof(key), SUB, NOW + JWT_SKEW_SECONDS + 1, NOW + 900, &t);
    assert_int_equal(verify(&t, &c), JWT_E_NOT_YET);

    /* Extreme values do not overflow. */
    buf_reset(&t);
    jwt_sign(key, sizeof(key), SUB, INT64_MAX, INT64_MAX, &t);
    assert_int_equal(verify(&t, &c), JWT_E_NOT_YET);
    buf_reset(&t);
    jwt_sign(key, sizeof(key), SUB, INT64_MIN, INT64_MIN, &t);
    assert_int_equal(verify(&t, &c), JWT_E_EXPIRED);
    assert_int_equal(jwt_verify(key, sizeof(key), t.data, t.len, INT64_MIN, &c),
                     JWT_E_EXPIRED);
    buf_deinit(&t);
}

static void test_tampering(void **state)
{
    (void)state;
    struct buf t, other;
    buf_init(&t);
    buf_init(&other);
    struct jwt_claims c;
    jwt_sign(key, sizeof(key), SUB, NOW, NOW + 900, &t);

    /* Another user's payload under this signature. */
    jwt_sign(key, sizeof(key), "someone-else", NOW, NOW + 900, &other);
    const char *p1 = strchr(t.data, '.'), *s1 = strrchr(t.data, '.');
    const char *p2 = strchr(other.data, '.'), *s2 = strrchr(other.data, '.');
    struct buf mix;
    buf_init(&mix);
    buf_append(&mix, t.data, (size_t)(p1 - t.data));
    buf_append(&mix, p2, (size_t)(s2 - p2));
    buf_puts(&mix, s1);
    assert_int_equal(verify(&mix, &c), JWT_E_SIGNATURE);

    /* One changed character in the payload or the signature. */
    size_t pay = (size_t)(p1 - t.data) + 5, sig = (size_t)(s1 - t.data) + 1;
    t.data[pay] ^= 1; /* stays in the alphabet: the low bit of a letter */
    assert_int_equal(verify(&t, &c), JWT_E_SIGNATURE);
    t.data[pay] ^= 1;
    t.data[sig] = t.data[sig] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(&t, &c), JWT_E_SIGNATURE);

    /* A valid token under another key. */
    buf_reset(&t);
    uint8_t key2[32];
    memcpy(key2, key, 32);
    key2[0] ^= 1;
    jwt_sign(key2, sizeof(key2), SUB, NOW, NOW + 900, &t);
    assert_int_equal(verify(&t, &c), JWT_E_SIGNATURE);

    /* An empty or truncated signature. */
    buf_reset(&t);
    jwt_sign(key, sizeof(key), SUB, NOW, NOW + 900, &t);
    t.len -= 3; /* 40 characters: whole quanta, a 30-byte MAC */
    assert_int_equal(verify(&t, &c), JWT_E_SIGNATURE);
    t.len = (size_t)(strrchr(t.data, '.') - t.data) + 1;
    assert_int_equal(verify(&t, &c), JWT_E_SIGNATURE);
    buf_deinit(&t);
    buf_deinit(&other);
    buf_deinit(&mix);
}

/* The unsigned "none" token of the classic downgrade attack. */
static void test_alg_none(void **state)
{
    (void)state;
    struct buf t;
    buf_init(&t);
    const char *h = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    base64url_encode(&t, h, strlen(h));
    buf_putc(&t, '.');
    base64url_encode(&t, CLAIMS, strlen(CLAIMS));
    buf_putc(&t, '.');
    assert_int_equal(verify(&t, NULL), JWT_E_ALG);
    buf_deinit(&t);
    /* Even a correct HMAC does not make "none" acceptable. */
    assert_int_equal(forged("{\"alg\":\"none\"}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":\"None\"}", CLAIMS), JWT_E_ALG);
}

static void test_alg_other(void **state)
{
    (void)state;
    assert_int_equal(forged("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", CLAIMS),
                     JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", CLAIMS),
                     JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":\"hs256\"}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":\"HS256 \"}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":\"HS256\\u0000\"}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"typ\":\"JWT\"}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{}", CLAIMS), JWT_E_ALG);
    /* alg of the wrong type. */
    assert_int_equal(forged("{\"alg\":256}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":null}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":true}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":[\"HS256\"]}", CLAIMS), JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":{\"alg\":\"HS256\"}}", CLAIMS),
                     JWT_E_ALG);
    /* A second alg, whichever comes last. */
    assert_int_equal(forged("{\"alg\":\"HS256\",\"alg\":\"none\"}", CLAIMS),
                     JWT_E_ALG);
    assert_int_equal(forged("{\"alg\":\"none\",\"alg\":\"HS256\"}", CLAIMS),
                     JWT_E_ALG);
}

static void test_header_shape(void **state)
{
    (void)state;
    /* Any member order and whitespace; typ is optional. */
    assert_int_equal(forged("{\"typ\":\"JWT\",\"alg\":\"HS256\"}", CLAIMS),
                     JWT_OK);
    assert_int_equal(forged(" { \"alg\" : \"HS256\" } ", CLAIMS), JWT_OK);
    assert_int_equal(forged("{\"alg\":\"HS\\u0032\\u00356\"}", CLAIMS), JWT_OK);
    /* typ other than JWT, members we do not implement, non-objects. */
    assert_int_equal(forged("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", CLAIMS),
                     JWT_E_FORMAT);
    assert_int_equal(forged("{\"alg\":\"HS256\",\"typ\":1}", CLAIMS),
                     JWT_E_FORMAT);
    assert_int_equal(forged("{\"alg\":\"HS256\",\"kid\":\"k1\"}", CLAIMS),
                     JWT_E_FORMAT);
    assert_int_equal(forged("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", CLAIMS),
                     JWT_E_FORMAT);
    assert_int_equal(forged("[\"HS256\"]", CLAIMS), JWT_E_FORMAT);
    assert_int_equal(forged("\"HS256\"", CLAIMS), JWT_E_FORMAT);
    assert_int_equal(forged("{\"alg\":\"HS256\"", CLAIMS), JWT_E_FORMAT);
    assert_int_equal(forged("{\"alg\":\"HS256\"}x", CLAIMS), JWT_E_FORMAT);
    assert_int_equal(forged("", CLAIMS), JWT_E_FORMAT);
}

static void test_claims(void **state)
{
    (void)state;
#define PAY(s) "{" s "}"
    assert_int_equal(forged(HS256, PAY("\"iat\":1,\"exp\":1800000000")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"exp\":1800000000")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":1")),
                     JWT_E_CLAIMS);
    /* Types: exp must be an integral JSON number. */
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":1,"
                                       "\"exp\":1800000000.5")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":1,"
                                       "\"exp\":\"1800000000\"")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":1,"
                                       "\"exp\":1.8e9")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":1,"
                                       "\"exp\":99999999999999999999")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":null,"
                                       "\"exp\":1800000000")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":7,\"iat\":1,"
                                       "\"exp\":1800000000")),
                     JWT_E_CLAIMS);
    /* sub: 1..64 bytes, no NUL. */
    assert_int_equal(forged(HS256, PAY("\"sub\":\"\",\"iat\":1,"
                                       "\"exp\":1800000000")),
                     JWT_E_CLAIMS);
    assert_int_equal(forged(HS256, PAY("\"sub\":\"a\\u0000b\",\"iat\":1,"
                                       "\"exp\":1800000000")),
                     JWT_E_CLAIMS);
    char pay[256];
    char sub[JWT_SUB_MAX + 2];
    memset(sub, 'x', sizeof(sub) - 1);
    sub[JWT_SUB_MAX + 1] = '\0';
    snprintf(pay, sizeof(pay), "{\"sub\":\"%s\",\"iat\":1,\"exp\":%d}", sub,
             NOW + 1);
    assert_int_equal(forged(HS256, pay), JWT_E_CLAIMS);
    sub[JWT_SUB_MAX] = '\0';
    snprintf(pay, sizeof(pay), "{\"sub\":\"%s\",\"iat\":1,\"exp\":%d}", sub,
             NOW + 1);
    assert_int_equal(forged(HS256, pay), JWT_OK);
    /* Unknown claims are ignored; a non-object payload is malformed. */
    assert_int_equal(forged(HS256, PAY("\"sub\":\"u\",\"iat\":1,\"x\":[1],"
                                       "\"exp\":1800000000")),
                     JWT_OK);
    assert_int_equal(forged(HS256, "[1]"), JWT_E_FORMAT);
    assert_int_equal(forged(HS256, "{\"sub\":"), JWT_E_FORMAT);
#undef PAY
}

static void test_structure(void **state)
{
    (void)state;
    struct buf t;
    buf_init(&t);
    jwt_sign(key, sizeof(key), SUB, NOW, NOW + 900, &t);
    const char *s1 = strrchr(t.data, '.');
    /* Two parts, four parts, empty. */
    struct buf b;
    buf_init(&b);
    buf_append(&b, t.data, (size_t)(s1 - t.data));
    assert_int_equal(verify(&b, NULL), JWT_E_FORMAT);
    buf_reset(&b);
    buf_append(&b, t.data, t.len);
    buf_puts(&b, ".");
    assert_int_equal(verify(&b, NULL), JWT_E_FORMAT);
    buf_puts(&b, "AAAA");
    assert_int_equal(verify(&b, NULL), JWT_E_FORMAT);
    assert_int_equal(verify_str(""), JWT_E_FORMAT);
    assert_int_equal(verify_str(".."), JWT_E_FORMAT);
    assert_int_equal(verify_str("..."), JWT_E_FORMAT);
    assert_int_equal(jwt_verify(key, sizeof(key), NULL, 0, NOW, NULL),
                     JWT_E_FORMAT);

    /* Characters outside base64url, in each part. */
    size_t where[] = {3, (size_t)(strchr(t.data, '.') - t.data) + 3,
                      (size_t)(s1 - t.data) + 3};
    const char bad[] = {'+', '/', '=', ' ', '\0'};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < sizeof(bad); j++) {
            buf_reset(&b);
            buf_append(&b, t.data, t.len);
            b.data[where[i]] = bad[j];
            assert_int_equal(verify(&b, NULL), JWT_E_FORMAT);
        }
    /* Padding on the signature. */
    buf_reset(&b);
    buf_append(&b, t.data, t.len);
    buf_puts(&b, "=");
    assert_int_equal(verify(&b, NULL), JWT_E_FORMAT);
    buf_deinit(&b);
    buf_deinit(&t);
}

/* A correctly signed token just over 4 KiB is refused; one under it is
 * accepted. */
static void test_overlong(void **state)
{
    (void)state;
    char pay[3200];
    struct buf t;
    buf_init(&t);
    size_t pad = 2900;
    int n = snprintf(pay, sizeof(pay),
                     "{\"sub\":\"u\",\"iat\":1,\"exp\":%d,"
                     "\"pad\":\"",
                     NOW + 1);
    memset(pay + n, 'p', pad);
    strcpy(pay + n + pad, "\"}");
    forge(&t, key, HS256, pay);
    assert_true(t.len < 4096);
    assert_int_equal(verify(&t, NULL), JWT_OK);

    pad = 3100;
    memset(pay + n, 'p', pad);
    strcpy(pay + n + pad, "\"}");
    forge(&t, key, HS256, pay);
    assert_true(t.len > 4096);
    assert_int_equal(verify(&t, NULL), JWT_E_FORMAT);
    buf_deinit(&t);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = JWT_OK; e >= JWT_E_NOT_YET; e--) {
        assert_non_null(jwt_strerror(e));
        assert_true(strlen(jwt_strerror(e)) > 0);
    }
    assert_string_equal(jwt_strerror(JWT_E_EXPIRED), "token expired");
    assert_non_null(jwt_strerror(-100));
    assert_non_null(jwt_strerror(7));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_times),
        cmocka_unit_test(test_tampering),  cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_other),  cmocka_unit_test(test_header_shape),
        cmocka_unit_test(test_claims),     cmocka_unit_test(test_structure),
        cmocka_unit_test(test_overlong),   cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
