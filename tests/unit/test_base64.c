#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/base64.h"

/* RFC 4648 §10. */
static const char *const rfc_in[] = {"",     "f",     "fo",    "foo",
                                     "foob", "fooba", "foobar"};
static const char *const rfc_std[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
static const char *const rfc_url[] = {"",       "Zg",      "Zm8",     "Zm9v",
                                      "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};

typedef int (*decode_fn)(struct buf *, const char *, size_t);

static void round_trip(const char *in, const char *enc, bool url)
{
    struct buf b;
    buf_init(&b);
    if (url)
        base64url_encode(&b, in, strlen(in));
    else
        base64_encode(&b, in, strlen(in));
    assert_string_equal(buf_cstr(&b), enc);
    buf_reset(&b);
    decode_fn dec = url ? base64url_decode : base64_decode;
    assert_int_equal(dec(&b, enc, strlen(enc)), 0);
    assert_int_equal(b.len, strlen(in));
    assert_string_equal(buf_cstr(&b), in);
    buf_deinit(&b);
}

static void test_rfc4648(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc_in) / sizeof(rfc_in[0]); i++) {
        round_trip(rfc_in[i], rfc_std[i], false);
        round_trip(rfc_in[i], rfc_url[i], true);
    }
}

/* The two alphabets differ in values 62 and 63. */
static void test_alphabets(void **state)
{
    (void)state;
    const uint8_t bytes[] = {0xfb, 0xff, 0xbf};
    struct buf b;
    buf_init(&b);
    base64_encode(&b, bytes, 3);
    assert_string_equal(b.data, "+/+/");
    buf_reset(&b);
    base64url_encode(&b, bytes, 3);
    assert_string_equal(b.data, "-_-_");
    buf_reset(&b);
    assert_int_equal(base64url_decode(&b, "-_-_", 4), 0);
    assert_memory_equal(b.data, bytes, 3);
    buf_reset(&b);
    assert_int_equal(base64_decode(&b, "+/+/", 4), 0);
    assert_memory_equal(b.data, bytes, 3);

    /* Every byte value survives both. */
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    struct buf e;
    buf_init(&e);
    base64url_encode(&e, all, sizeof(all));
    buf_reset(&b);
    assert_int_equal(base64url_decode(&b, e.data, e.len), 0);
    assert_memory_equal(b.data, all, sizeof(all));
    buf_reset(&e);
    base64_encode(&e, all, sizeof(all));
    buf_reset(&b);
    assert_int_equal(base64_decode(&b, e.data, e.len), 0);
    assert_memory_equal(b.data, all, sizeof(all));
    buf_deinit(&e);
    buf_deinit(&b);
}

/* Rejects s and leaves a buffer holding "keep" as it was. */
static void rejects(decode_fn dec, const char *s, size_t n)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "keep");
    assert_int_equal(dec(&b, s, n), -1);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    buf_deinit(&b);
}

#define REJ(dec, lit) rejects(dec, lit, sizeof(lit) - 1)

static void test_std_rejects(void **state)
{
    (void)state;
    REJ(base64_decode, "Zg");       /* padding missing */
    REJ(base64_decode, "Zg=");      /* padding short */
    REJ(base64_decode, "Zm8");      /* padding missing */
    REJ(base64_decode, "Z===");     /* three pads */
    REJ(base64_decode, "====");     /* only pads */
    REJ(base64_decode, "Zg==Zg=="); /* padding in the middle */
    REJ(base64_decode, "Zg=a");     /* data after a pad */
    REJ(base64_decode, "Zm9v====");
    REJ(base64_decode, "Zh==");   /* non-zero leftover bits */
    REJ(base64_decode, "Zm9=");   /* non-zero leftover bits */
    REJ(base64_decode, "Zm9v\n"); /* whitespace */
    REJ(base64_decode, " Zm9v");
    REJ(base64_decode, "Zm 9v");
    REJ(base64_decode, "Zm\r\n9v");
    REJ(base64_decode, "-_-_"); /* url alphabet */
    REJ(base64_decode, "Zm\0v");
    REJ(base64_decode, "Zm9\x80");
    REJ(base64_decode, "Zm9.");
}

static void test_url_rejects(void **state)
{
    (void)state;
    REJ(base64url_decode, "Zg=="); /* padding */
    REJ(base64url_decode, "Zm8=");
    REJ(base64url_decode, "Zm9vY"); /* 4n+1 characters */
    REJ(base64url_decode, "Z");
    REJ(base64url_decode, "Zh");   /* non-zero leftover bits */
    REJ(base64url_decode, "Zm9");  /* non-zero leftover bits */
    REJ(base64url_decode, "+/+/"); /* standard alphabet */
    REJ(base64url_decode, "Zm9v ");
    REJ(base64url_decode, "Zm9v\t");
    REJ(base64url_decode, "Zm.v");
    REJ(base64url_decode, "Zm\0v");
}

static void test_hex(void **state)
{
    (void)state;
    const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "x=");
    hex_encode(&b, bytes, sizeof(bytes));
    assert_string_equal(b.data, "x=00017f80abff");
    buf_deinit(&b);

    uint8_t out[6];
    assert_int_equal(hex_decode(out, 6, "00017f80abff", 12), 0);
    assert_memory_equal(out, bytes, 6);
    assert_int_equal(hex_decode(out, 6, "00017F80ABFF", 12), 0);
    assert_memory_equal(out, bytes, 6);
    assert_int_equal(hex_decode(out, 0, "", 0), 0);

    const uint8_t zero[6] = {0};
    assert_int_equal(hex_decode(out, 6, "00017f80abf", 11), -1);
    assert_int_equal(hex_decode(out, 6, "00017f80abff0", 13), -1);
    assert_int_equal(hex_decode(out, 6, "00017f80abfg", 12), -1);
    assert_memory_equal(out, zero, 6); /* nothing half-decoded is left */
    assert_int_equal(hex_decode(out, 6, " 0017f80abff", 12), -1);
    assert_int_equal(hex_decode(out, 6, "0x017f80abff", 12), -1);
    assert_int_equal(hex_decode(out, 1, "-1", 2), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648),     cmocka_unit_test(test_alphabets),
        cmocka_unit_test(test_std_rejects), cmocka_unit_test(test_url_rejects),
        cmocka_unit_test(test_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
