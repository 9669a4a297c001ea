#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/base64.h"
#include "corral/crypto.h"

/* Compares a digest with its lowercase hex spelling. */
static void assert_hex(const uint8_t *got, size_t n, const char *want)
{
    struct buf b;
    buf_init(&b);
    hex_encode(&b, got, n);
    assert_string_equal(b.data, want);
    buf_deinit(&b);
}

static void sha256_str(const char *s, const char *want)
{
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256(s, strlen(s), d);
    assert_hex(d, sizeof(d), want);
}

/* FIPS 180-2 appendix B. */
static void test_sha256(void **state)
{
    (void)state;
    sha256_str("abc", "ba7816bf8f01cfea414140de5dae2223"
                      "b00361a396177a9cb410ff61f20015ad");
    sha256_str("", "e3b0c44298fc1c149afbf4c8996fb924"
                   "27ae41e4649b934ca495991b7852b855");
    sha256_str("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
               "248d6a61d20638b8e5c026930c3e6039"
               "a33ce45964ff2167f6ecedd419db06c1");
}

static void hmac_case(const uint8_t *key, size_t klen, const void *data,
                      size_t n, const char *want)
{
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, klen, data, n, d);
    assert_hex(d, sizeof(d), want);
}

/* RFC 4231 §4.2-4.5, 4.7, 4.8 (case 5 is a truncated MAC). */
static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t key[131], data[50];

    memset(key, 0x0b, 20);
    hmac_case(key, 20, "Hi There", 8,
              "b0344c61d8db38535ca8afceaf0bf12b"
              "881dc200c9833da726e9376c2e32cff7");

    const char *q = "what do ya want for nothing?";
    hmac_case((const uint8_t *)"Jefe", 4, q, strlen(q),
              "5bdcc146bf60754e6a042426089575c7"
              "5a003f089d2739839dec58b964ec3843");

    memset(key, 0xaa, 20);
    memset(data, 0xdd, 50);
    hmac_case(key, 20, data, 50,
              "773ea91e36800e46854db8ebd09181a7"
              "2959098b3ef8c122d9635514ced565fe");

    for (int i = 0; i < 25; i++)
        key[i] = (uint8_t)(i + 1);
    memset(data, 0xcd, 50);
    hmac_case(key, 25, data, 50,
              "82558a389a443c0ea4cc819899f2083a"
              "85f0faa3e578f8077a2e3ff46729665b");

    memset(key, 0xaa, 131);
    const char *t6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac_case(key, 131, t6, strlen(t6),
              "60e431591ee0b67f0d8a26aacbf5b77f"
              "8e0bc6213728c5140546040f0ee37f54");

    const char *t7 = "This is a test using a larger than block-size key and "
                     "a larger than block-size data. The key needs to be "
                     "hashed before being used by the HMAC algorithm.";
    hmac_case(key, 131, t7, strlen(t7),
              "9b09ffa71b942fcb27635fbcd5b0e944"
              "bfdc63644f0713938a7f51535c3a35e2");
}

static void test_ct_equal(void **state)
{
    (void)state;
    uint8_t a[33], b[33];
    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_true(crypto_ct_equal(a, b, sizeof(a)));
    assert_true(crypto_ct_equal(a, b, 0));
    /* A difference at either end, and in one bit only, is seen. */
    b[0] ^= 1;
    assert_false(crypto_ct_equal(a, b, sizeof(a)));
    b[0] ^= 1;
    b[32] ^= 0x80;
    assert_false(crypto_ct_equal(a, b, sizeof(a)));
    assert_true(crypto_ct_equal(a, b, 32));
}

static void test_zero(void **state)
{
    (void)state;
    uint8_t a[17], z[17] = {0};
    memset(a, 0xff, sizeof(a));
    crypto_zero(a, sizeof(a));
    assert_memory_equal(a, z, sizeof(a));
    crypto_zero(NULL, 0);
}

static void test_random(void **state)
{
    (void)state;
    uint8_t a[64], b[64], z[64] = {0};
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    assert_int_equal(crypto_random(a, sizeof(a)), 0);
    assert_int_equal(crypto_random(b, sizeof(b)), 0);
    /* 2^-512 chances of a false failure. */
    assert_memory_not_equal(a, z, sizeof(a));
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(crypto_random(a, 0), 0);

    /* Above 256 bytes getrandom may return short reads. */
    static uint8_t big[70000];
    assert_int_equal(crypto_random(big, sizeof(big)), 0);
    size_t nz = 0;
    for (size_t i = 0; i < sizeof(big); i++)
        nz += big[i] != 0;
    assert_true(nz > sizeof(big) / 2);
}

static const uint8_t key1[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

static void test_gcm_round_trip(void **state)
{
    (void)state;
    const char *msg = "a secret at rest";
    size_t n = strlen(msg);
    struct buf ct, pt;
    buf_init(&ct);
    buf_init(&pt);
    assert_int_equal(crypto_aes_gcm_seal(key1, msg, n, &ct), 0);
    assert_int_equal(ct.len, 12 + n + 16);
    assert_int_equal(crypto_aes_gcm_open(key1, ct.data, ct.len, &pt), 0);
    assert_int_equal(pt.len, n);
    assert_memory_equal(pt.data, msg, n);

    /* Random nonces: the same plaintext never seals the same way twice. */
    struct buf ct2;
    buf_init(&ct2);
    assert_int_equal(crypto_aes_gcm_seal(key1, msg, n, &ct2), 0);
    assert_memory_not_equal(ct.data, ct2.data, ct.len);

    /* Empty plaintext, and appending after existing content. */
    buf_reset(&ct);
    buf_reset(&pt);
    buf_puts(&pt, "xy");
    assert_int_equal(crypto_aes_gcm_seal(key1, NULL, 0, &ct), 0);
    assert_int_equal(ct.len, 28);
    assert_int_equal(crypto_aes_gcm_open(key1, ct.data, ct.len, &pt), 0);
    assert_string_equal(pt.data, "xy");
    buf_deinit(&ct);
    buf_deinit(&ct2);
    buf_deinit(&pt);
}

static void test_gcm_tamper(void **state)
{
    (void)state;
    const char *msg = "sixteen byte msg plus more";
    size_t n = strlen(msg);
    struct buf ct, pt;
    buf_init(&ct);
    buf_init(&pt);
    buf_puts(&pt, "keep");
    assert_int_equal(crypto_aes_gcm_seal(key1, msg, n, &ct), 0);
    /* One flipped bit in the nonce, in the ciphertext, or in the tag. */
    size_t where[] = {0, 11, 12, 12 + n - 1, 12 + n, ct.len - 1};
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        ct.data[where[i]] ^= 0x01;
        assert_int_equal(crypto_aes_gcm_open(key1, ct.data, ct.len, &pt), -1);
        assert_string_equal(pt.data, "keep");
        ct.data[where[i]] ^= 0x01;
    }
    /* Truncated or extended input. */
    assert_int_equal(crypto_aes_gcm_open(key1, ct.data, ct.len - 1, &pt), -1);
    buf_putc(&ct, 0);
    assert_int_equal(crypto_aes_gcm_open(key1, ct.data, ct.len, &pt), -1);
    ct.len--;

    uint8_t key2[32];
    memcpy(key2, key1, 32);
    key2[31] ^= 0x80;
    assert_int_equal(crypto_aes_gcm_open(key2, ct.data, ct.len, &pt), -1);
    assert_int_equal(crypto_aes_gcm_open(key1, ct.data, ct.len, &pt), 0);
    assert_int_equal(pt.len, 4 + n);
    buf_deinit(&ct);
    buf_deinit(&pt);
}

static void test_gcm_short(void **state)
{
    (void)state;
    uint8_t junk[28] = {0};
    struct buf pt;
    buf_init(&pt);
    for (size_t n = 0; n < 28; n++)
        assert_int_equal(crypto_aes_gcm_open(key1, junk, n, &pt), -1);
    /* 28 bytes is the shortest valid shape; all-zero is still forged. */
    assert_int_equal(crypto_aes_gcm_open(key1, junk, 28, &pt), -1);
    assert_int_equal(pt.len, 0);
    buf_deinit(&pt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_zero),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_gcm_round_trip),
        cmocka_unit_test(test_gcm_tamper),
        cmocka_unit_test(test_gcm_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
