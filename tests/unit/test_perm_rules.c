#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "corral/perm_rules.h"

static void test_no_content_matches_any_use(void **state)
{
    assert_true(perm_rule_matches("Bash", NULL, "{\"command\":\"rm -rf x\"}"));
    assert_true(perm_rule_matches("Anything", "", "{}"));
}

static void test_bash(void **state)
{
    const char *in = "{\"command\":\"npm test -- --watch\"}";
    assert_true(perm_rule_matches("Bash", "npm test:*", in));
    assert_false(perm_rule_matches("Bash", "npm run:*", in));
    assert_false(perm_rule_matches("Bash", "npm test", in));
    assert_true(perm_rule_matches("Bash", "npm test -- --watch", in));
    assert_true(perm_rule_matches("Bash", "npm * --watch", in));
    assert_false(perm_rule_matches("Bash", "npm test:*", "{\"cmd\":\"npm test\"}"));
}

static void test_paths(void **state)
{
    const char *in = "{\"file_path\":\"/workspace/src/a/b.c\"}";
    assert_true(perm_rule_matches("Edit", "src/**", in));
    assert_true(perm_rule_matches("Edit", "./src/*", in));
    assert_true(perm_rule_matches("Read", "/workspace/src/a/b.c", in));
    assert_true(perm_rule_matches("Write", "*.c", in));
    assert_false(perm_rule_matches("Write", "docs/**", in));
    assert_false(perm_rule_matches("Edit", "/etc/*", in));
    assert_true(perm_rule_matches("NotebookEdit", "*.ipynb",
                                  "{\"notebook_path\":\"/workspace/n.ipynb\"}"));
}

static void test_web(void **state)
{
    const char *in = "{\"url\":\"https://user@docs.example.com:8443/x?y\"}";
    assert_true(perm_rule_matches("WebFetch", "domain:example.com", in));
    assert_true(perm_rule_matches("WebFetch", "domain:docs.example.com", in));
    assert_false(perm_rule_matches("WebFetch", "domain:ample.com", in));
    assert_false(perm_rule_matches("WebFetch", "domain:other.org", in));
}

static void test_unknown_tool_needs_empty_content(void **state)
{
    assert_false(perm_rule_matches("mcp__x__y", "anything", "{\"a\":1}"));
    assert_false(perm_rule_matches("Bash", "ls", "not json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_content_matches_any_use),
        cmocka_unit_test(test_bash),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_web),
        cmocka_unit_test(test_unknown_tool_needs_empty_content),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
