#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "corral/auth_cache.h"

static const struct auth_entry alice = {"u-alice", true, false};

static void test_hit_until_the_ttl(void **state)
{
    struct auth_cache *c = auth_cache_new(100);
    struct auth_entry e;
    assert_false(auth_cache_get(c, "u:a", 0, &e));
    auth_cache_put(c, "u:a", auth_cache_generation(c), 1000, &alice);
    assert_true(auth_cache_get(c, "u:a", 1099, &e));
    assert_string_equal(e.user_id, "u-alice");
    assert_true(e.admin);
    assert_false(auth_cache_get(c, "u:a", 1100, &e)); /* expired */
    assert_false(auth_cache_get(c, "u:a", 1101, &e)); /* and gone */
    auth_cache_free(c);
}

static void test_clear_forgets_and_refuses_stale_answers(void **state)
{
    struct auth_cache *c = auth_cache_new(1000);
    struct auth_entry e;
    uint64_t before = auth_cache_generation(c);
    auth_cache_put(c, "k:x", before, 0, &alice);
    auth_cache_clear(c);
    assert_false(auth_cache_get(c, "k:x", 1, &e));
    /* a lookup that began before the clear must not store */
    auth_cache_put(c, "k:x", before, 2, &alice);
    assert_false(auth_cache_get(c, "k:x", 3, &e));
    auth_cache_put(c, "k:x", auth_cache_generation(c), 4, &alice);
    assert_true(auth_cache_get(c, "k:x", 5, &e));
    auth_cache_free(c);
}

static void test_off_and_overlong_keys(void **state)
{
    struct auth_cache *c = auth_cache_new(0);
    struct auth_entry e;
    auth_cache_put(c, "u:a", auth_cache_generation(c), 0, &alice);
    assert_false(auth_cache_get(c, "u:a", 0, &e));
    auth_cache_free(c);
    c = auth_cache_new(1000);
    char key[200];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    auth_cache_put(c, key, auth_cache_generation(c), 0, &alice);
    assert_false(auth_cache_get(c, key, 0, &e));
    auth_cache_free(c);
}

static void test_full_cache_starts_over(void **state)
{
    struct auth_cache *c = auth_cache_new(1000);
    struct auth_entry e;
    char key[32];
    for (int i = 0; i <= AUTH_CACHE_MAX; i++) {
        snprintf(key, sizeof(key), "u:%d", i);
        auth_cache_put(c, key, auth_cache_generation(c), 0, &alice);
    }
    snprintf(key, sizeof(key), "u:%d", AUTH_CACHE_MAX);
    assert_true(auth_cache_get(c, key, 1, &e));
    assert_false(auth_cache_get(c, "u:0", 1, &e));
    auth_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_until_the_ttl),
        cmocka_unit_test(test_clear_forgets_and_refuses_stale_answers),
        cmocka_unit_test(test_off_and_overlong_keys),
        cmocka_unit_test(test_full_cache_starts_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
