#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "corral/ratelimit.h"

static void test_burst_then_limited(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(5, 100);
    int retry = 0;
    for (int i = 0; i < 5; i++)
        assert_int_equal(ratelimit_take(rl, "1.2.3.4", 1000, &retry), 0);
    assert_int_equal(ratelimit_take(rl, "1.2.3.4", 1000, &retry), -1);
    /* One token per 12 s at 5/min. */
    assert_int_equal(retry, 12);
    /* Other keys are independent. */
    assert_int_equal(ratelimit_take(rl, "5.6.7.8", 1000, &retry), 0);
    ratelimit_free(rl);
}

static void test_refill(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(60, 100);
    int retry = 0;
    for (int i = 0; i < 60; i++)
        assert_int_equal(ratelimit_take(rl, "k", 0, &retry), 0);
    assert_int_equal(ratelimit_take(rl, "k", 0, &retry), -1);
    assert_int_equal(retry, 1);
    assert_int_equal(ratelimit_take(rl, "k", 999, &retry), -1);
    assert_int_equal(ratelimit_take(rl, "k", 1000, &retry), 0);
    assert_int_equal(ratelimit_take(rl, "k", 1000, &retry), -1);
    /* Never more than the burst, however long the pause. */
    for (int i = 0; i < 60; i++)
        assert_int_equal(ratelimit_take(rl, "k", 10000000, &retry), 0);
    assert_int_equal(ratelimit_take(rl, "k", 10000000, &retry), -1);
    /* A clock that goes backwards refills nothing. */
    assert_int_equal(ratelimit_take(rl, "k", 5, &retry), -1);
    ratelimit_free(rl);
}

static void test_eviction_bounds_memory(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(2, 64);
    int retry;
    char key[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
        assert_int_equal(ratelimit_take(rl, key, (uint64_t)i, &retry), 0);
        assert_true(ratelimit_keys(rl) <= 64);
    }
    /* A limited key that is still limited survives eviction of idle ones:
     * exhaust "hot", then add many idle keys much later. */
    ratelimit_take(rl, "hot", 20000, &retry);
    ratelimit_take(rl, "hot", 20000, &retry);
    assert_int_equal(ratelimit_take(rl, "hot", 20000, &retry), -1);
    for (int i = 0; i < 63; i++) {
        snprintf(key, sizeof(key), "later-%d", i);
        ratelimit_take(rl, key, 20001, &retry);
    }
    assert_int_equal(ratelimit_take(rl, "hot", 20002, &retry), -1);
    assert_true(ratelimit_keys(rl) <= 64);
    ratelimit_free(rl);
}

static void test_long_keys(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(1, 8);
    char key[300];
    int retry;
    memset(key, 'x', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    assert_int_equal(ratelimit_take(rl, key, 0, &retry), 0);
    assert_int_equal(ratelimit_take(rl, key, 0, &retry), -1);
    assert_int_equal(retry, 60);
    ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_limited),
        cmocka_unit_test(test_refill),
        cmocka_unit_test(test_eviction_bounds_memory),
        cmocka_unit_test(test_long_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
