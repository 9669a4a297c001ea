#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "corral/base64.h"
#include "corral/crypto.h"

struct vector {
    const char *pw;
    size_t pwlen;
    const char *salt;
    size_t saltlen;
    uint32_t iter;
    size_t dklen;
    const char *hex;
};

#define S(lit) lit, sizeof(lit) - 1

static const struct vector vectors[] = {
    /* RFC 7914 §11. */
    {S("passwd"), S("salt"), 1, 64,
     "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
     "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"},
    {S("Password"), S("NaCl"), 80000, 64,
     "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
     "a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"},
    /* The RFC 6070 inputs with SHA-256. */
    {S("password"), S("salt"), 1, 32,
     "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"},
    {S("password"), S("salt"), 2, 32,
     "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"},
    {S("password"), S("salt"), 4096, 32,
     "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"},
    {S("passwordPASSWORDpassword"), S("saltSALTsaltSALTsaltSALTsaltSALTsalt"),
     4096, 40,
     "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1"
     "c635518c7dac47e9"},
    {S("pass\0word"), S("sa\0lt"), 4096, 16,
     "89b69d0516f829893c696226650a8687"},
    /* A password longer than the SHA-256 block (hashed into the HMAC key)
     * and a dkLen of four blocks, the last one partial (Python hashlib). */
    {S("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
     S("salt"), 1000, 100,
     "afc5c595f05f2cd6c1ddd7bc2628ea4c5df74508996952bb4864d4047eae2500"
     "7bed50f9395c9d225e47ee0cbecd6e2bb491c2ca497a9d686fb2f7958a9ff528"
     "cb626162a06c1cf3e276c78111fd1338f34cfadf50a091ebd8640a008cf39820"
     "c221b71d"},
};

static void assert_hex(const uint8_t *got, size_t n, const char *want)
{
    struct buf b;
    buf_init(&b);
    hex_encode(&b, got, n);
    assert_string_equal(b.data, want);
    buf_deinit(&b);
}

static void test_one_shot(void **state)
{
    (void)state;
    uint8_t dk[128];
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vector *v = &vectors[i];
        assert_int_equal(crypto_pbkdf2_sha256(v->pw, v->pwlen, v->salt,
                                              v->saltlen, v->iter, dk,
                                              v->dklen),
                         0);
        assert_hex(dk, v->dklen, v->hex);
    }
    assert_int_equal(crypto_pbkdf2_sha256("p", 1, "s", 1, 0, dk, 32), -1);
    assert_int_equal(crypto_pbkdf2_sha256("p", 1, "s", 1, 1, dk, 0), -1);
}

/* Runs v in slices of at most slice iterations (0: all at once) and checks
 * that each step does no more than asked and remaining counts down. */
static void run_sliced(const struct vector *v, uint32_t slice)
{
    struct pbkdf2 *p =
        pbkdf2_new(v->pw, v->pwlen, v->salt, v->saltlen, v->iter, v->dklen);
    assert_non_null(p);
    uint64_t blocks = (v->dklen + 31) / 32;
    uint64_t left = pbkdf2_remaining(p);
    assert_int_equal(left, blocks * v->iter);
    size_t n = 0;
    assert_null(pbkdf2_result(p, &n));
    uint32_t max = slice ? slice : UINT32_MAX;
    bool done = false;
    while (!done) {
        done = pbkdf2_step(p, max);
        uint64_t now = pbkdf2_remaining(p);
        uint64_t want = left > max ? left - max : 0;
        assert_int_equal(now, want);
        assert_int_equal(done, now == 0);
        assert_int_equal(pbkdf2_result(p, NULL) != NULL, done);
        left = now;
    }
    /* Stepping a finished computation is a no-op. */
    assert_true(pbkdf2_step(p, 5));
    const uint8_t *dk = pbkdf2_result(p, &n);
    assert_non_null(dk);
    assert_int_equal(n, v->dklen);
    assert_hex(dk, n, v->hex);
    pbkdf2_free(p);
}

static void test_sliced_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        run_sliced(&vectors[i], 0);
}

static void test_slice_sizes(void **state)
{
    (void)state;
    const uint32_t slices[] = {1, 7, 1000, 0};
    for (size_t s = 0; s < sizeof(slices) / sizeof(slices[0]); s++) {
        run_sliced(&vectors[0], slices[s]); /* c = 1, two blocks */
        run_sliced(&vectors[3], slices[s]); /* c = 2 */
        run_sliced(&vectors[5], slices[s]); /* 40 bytes: two blocks */
        run_sliced(&vectors[6], slices[s]); /* NUL bytes */
        run_sliced(&vectors[7], slices[s]); /* four blocks */
    }
}

/* Slice boundaries at every position relative to a block edge, checked
 * against the one-shot mbedTLS implementation. */
static void test_against_one_shot(void **state)
{
    (void)state;
    uint8_t want[97];
    const char *salt = "NaCl-and-pepper";
    for (uint32_t iter = 1; iter <= 9; iter++) {
        assert_int_equal(crypto_pbkdf2_sha256("pw", 2, salt, strlen(salt), iter,
                                              want, sizeof(want)),
                         0);
        for (uint32_t slice = 1; slice <= iter + 1; slice++) {
            struct pbkdf2 *p =
                pbkdf2_new("pw", 2, salt, strlen(salt), iter, sizeof(want));
            while (!pbkdf2_step(p, slice))
                ;
            size_t n;
            const uint8_t *dk = pbkdf2_result(p, &n);
            assert_int_equal(n, sizeof(want));
            assert_memory_equal(dk, want, sizeof(want));
            pbkdf2_free(p);
        }
    }
}

static void test_edges(void **state)
{
    (void)state;
    /* An empty password and salt are valid inputs. */
    uint8_t want[32];
    assert_int_equal(crypto_pbkdf2_sha256("", 0, "", 0, 3, want, 32), 0);
    struct pbkdf2 *p = pbkdf2_new("", 0, "", 0, 3, 32);
    assert_false(pbkdf2_step(p, 0));
    assert_int_equal(pbkdf2_remaining(p), 3);
    assert_true(pbkdf2_step(p, 3));
    size_t n;
    assert_memory_equal(pbkdf2_result(p, &n), want, 32);
    pbkdf2_free(p);

    /* A zero-length key is complete at once. */
    p = pbkdf2_new("pw", 2, "s", 1, 10, 0);
    assert_int_equal(pbkdf2_remaining(p), 0);
    assert_true(pbkdf2_step(p, 1));
    assert_non_null(pbkdf2_result(p, &n));
    assert_int_equal(n, 0);
    pbkdf2_free(p);
    pbkdf2_free(NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Not an assertion: prints the cost of one DESIGN.md §7 hash so the slice
 * size can be judged (the numbers vary with the machine and the build). */
static void test_timing(void **state)
{
    (void)state;
    const uint32_t iter = 600000, slice = 1000;
    double t0 = now_s();
    struct pbkdf2 *p =
        pbkdf2_new("correct horse", 13, "0123456789abcdef", 16, iter, 32);
    while (!pbkdf2_step(p, slice))
        ;
    double sliced = now_s() - t0;
    pbkdf2_free(p);

    uint8_t dk[32];
    t0 = now_s();
    assert_int_equal(crypto_pbkdf2_sha256("correct horse", 13,
                                          "0123456789abcdef", 16, iter, dk, 32),
                     0);
    double oneshot = now_s() - t0;
    print_message("pbkdf2 %u iterations: sliced (%u/step) %.3f s = %.0f "
                  "iter/ms; mbedtls one-shot %.3f s = %.0f iter/ms\n",
                  iter, slice, sliced, iter / sliced / 1000, oneshot,
                  iter / oneshot / 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_shot),
        cmocka_unit_test(test_sliced_vectors),
        cmocka_unit_test(test_slice_sizes),
        cmocka_unit_test(test_against_one_shot),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
