#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/ids.h"

static void test_layout(void **state)
{
    (void)state;
    const uint8_t rnd[10] = {0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0xff};
    char id[UUID_STR_LEN + 1];
    /* RFC 9562 appendix A.6 uses 0x017F22E279B0 ms. */
    ids_uuid7_from(0x017F22E279B0ULL, rnd, id);
    assert_string_equal(id, "017f22e2-79b0-7fff-bfff-ffffffffffff");
    assert_true(ids_is_uuid(id));
}

static void test_sorted_and_unique(void **state)
{
    (void)state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    const uint8_t zero[10] = {0};
    ids_uuid7_from(1000, zero, a);
    ids_uuid7_from(1001, zero, b);
    assert_true(strcmp(a, b) < 0);
    assert_int_equal(ids_uuid7(a), 0);
    assert_int_equal(ids_uuid7(b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '7');
}

static void test_is_uuid(void **state)
{
    (void)state;
    assert_true(ids_is_uuid("00000000-0000-0000-0000-000000000000"));
    assert_true(ids_is_uuid("ABCDEF01-2345-6789-abcd-ef0123456789"));
    assert_false(ids_is_uuid(""));
    assert_false(ids_is_uuid("00000000-0000-0000-0000-00000000000"));
    assert_false(ids_is_uuid("00000000-0000-0000-0000-0000000000000"));
    assert_false(ids_is_uuid("00000000x0000-0000-0000-000000000000"));
    assert_false(ids_is_uuid("g0000000-0000-0000-0000-000000000000"));
    assert_false(ids_is_uuid("00000000-0000-0000-0000-00000000000'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_sorted_and_unique),
        cmocka_unit_test(test_is_uuid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
