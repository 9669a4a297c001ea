/* quota_parse_du: du -s -b output to bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/quota.h"

static bool parse(const char *s, int64_t *used)
{
    return quota_parse_du(s, strlen(s), used);
}

static void test_sums_lines(void **state)
{
    int64_t used = -1;
    assert_true(parse("4096\t/a/workspace\n2101248\t/a/home\n", &used));
    assert_int_equal(used, 4096 + 2101248);
    assert_true(parse("0\t/x\n", &used));
    assert_int_equal(used, 0);
}

static void test_refuses_malformed(void **state)
{
    int64_t used = 7;
    assert_false(parse("", &used));
    assert_false(parse("12 /a\n", &used));        /* no tab */
    assert_false(parse("\t/a\n", &used));         /* no number */
    assert_false(parse("12\t/a", &used));         /* cut short */
    assert_false(parse("-1\t/a\n", &used));
    assert_false(parse("99999999999999999999\t/a\n", &used)); /* overflow */
    assert_int_equal(used, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_lines),
        cmocka_unit_test(test_refuses_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
