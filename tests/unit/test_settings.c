/* settings.h: sealing and opening users' environment variables, and the
 * pure checks of PUT /settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "corral/base64.h"
#include "corral/buf.h"
#include "corral/settings.h"

static const uint8_t key1[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const uint8_t key2[32] = {9, 9, 9};
static const char *const user_a = "0190a3b4-0000-7000-8000-00000000000a";
static const char *const user_b = "0190a3b4-0000-7000-8000-00000000000b";

/* env_enc text {name: sealed} for one variable sealed under key/user. */
static void seal_one(struct buf *json, const uint8_t key[32],
                     const char *user, const char *name, const char *value)
{
    struct buf v;
    buf_init(&v);
    assert_int_equal(settings_env_seal(key, user, name, value,
                                       strlen(value), &v), 0);
    buf_printf(json, "\"%s\": \"%s\"", name, buf_cstr(&v));
    buf_deinit(&v);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct buf j;
    buf_init(&j);
    buf_puts(&j, "{");
    seal_one(&j, key1, user_a, "API_TOKEN", "s3cr3t=x y");
    buf_puts(&j, ", ");
    seal_one(&j, key1, user_a, "EMPTY", "");
    buf_puts(&j, "}");
    /* Not the plaintext. */
    assert_null(strstr(buf_cstr(&j), "s3cr3t"));
    char **env = settings_env_open(key1, user_a, buf_cstr(&j));
    assert_non_null(env);
    assert_string_equal(env[0], "API_TOKEN=s3cr3t=x y");
    assert_string_equal(env[1], "EMPTY=");
    assert_null(env[2]);
    settings_env_free(env);
    buf_deinit(&j);
}

static void test_empty(void **state)
{
    (void)state;
    char **env = settings_env_open(key1, user_a, "{}");
    assert_non_null(env);
    assert_null(env[0]);
    settings_env_free(env);
    assert_null(settings_env_open(key1, user_a, "[]"));
    assert_null(settings_env_open(key1, user_a, "not json"));
    settings_env_free(NULL);
}

/* Two seals of one value differ (fresh nonce each time). */
static void test_fresh_nonce(void **state)
{
    (void)state;
    struct buf a, b;
    buf_init(&a);
    buf_init(&b);
    assert_int_equal(settings_env_seal(key1, user_a, "X", "v", 1, &a), 0);
    assert_int_equal(settings_env_seal(key1, user_a, "X", "v", 1, &b), 0);
    assert_string_not_equal(buf_cstr(&a), buf_cstr(&b));
    buf_deinit(&a);
    buf_deinit(&b);
}

static void test_wrong_context(void **state)
{
    (void)state;
    struct buf j;
    buf_init(&j);
    buf_puts(&j, "{");
    seal_one(&j, key1, user_a, "TOKEN", "value");
    buf_puts(&j, "}");
    /* Another key, another user. */
    assert_null(settings_env_open(key2, user_a, buf_cstr(&j)));
    assert_null(settings_env_open(key1, user_b, buf_cstr(&j)));
    /* Another name: the ciphertext moved to a different key of the map. */
    char *moved = strdup(buf_cstr(&j));
    char *p = strstr(moved, "TOKEN");
    memcpy(p, "TOKEM", 5);
    assert_null(settings_env_open(key1, user_a, moved));
    free(moved);
    buf_deinit(&j);
}

static void test_tampered(void **state)
{
    (void)state;
    struct buf v, raw, again, j;
    buf_init(&v);
    buf_init(&raw);
    buf_init(&again);
    buf_init(&j);
    assert_int_equal(settings_env_seal(key1, user_a, "T", "value", 5, &v), 0);
    assert_int_equal(base64_decode(&raw, v.data, v.len), 0);
    raw.data[14] ^= 1; /* a ciphertext byte */
    base64_encode(&again, raw.data, raw.len);
    buf_printf(&j, "{\"T\": \"%s\"}", buf_cstr(&again));
    assert_null(settings_env_open(key1, user_a, buf_cstr(&j)));
    /* Not base64, truncated, not a string. */
    assert_null(settings_env_open(key1, user_a, "{\"T\": \"@@@\"}"));
    assert_null(settings_env_open(key1, user_a, "{\"T\": \"AAAA\"}"));
    assert_null(settings_env_open(key1, user_a, "{\"T\": 1}"));
    /* One good entry does not rescue a bad one. */
    buf_reset(&j);
    buf_puts(&j, "{");
    seal_one(&j, key1, user_a, "GOOD", "g");
    buf_printf(&j, ", \"BAD\": \"%s\"}", buf_cstr(&again));
    assert_null(settings_env_open(key1, user_a, buf_cstr(&j)));
    buf_deinit(&v);
    buf_deinit(&raw);
    buf_deinit(&again);
    buf_deinit(&j);
}

static void test_reserved(void **state)
{
    (void)state;
    static const char *const reserved[] = {
        "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_X",
        "LD_PRELOAD", "ld_library_path", "HOME", "PATH", "path", "LANG",
        "TERM", "NODE_OPTIONS", "CORRAL_SECRET_KEY", "USER", "SHELL",
        "TMPDIR", "LC_ALL", "HTTPS_PROXY", "BASH_ENV", "CLAUDECODE",
    };
    static const char *const free_names[] = {
        "GITHUB_TOKEN", "MY_VAR", "_X", "ANTHROPIC", "PATHS", "HOMER",
        "NODEJS", "CLAUDE",
    };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(*reserved); i++)
        assert_true(settings_env_name_reserved(reserved[i]));
    for (size_t i = 0; i < sizeof(free_names) / sizeof(*free_names); i++)
        assert_false(settings_env_name_reserved(free_names[i]));
}

static void test_name_syntax(void **state)
{
    (void)state;
    assert_true(settings_env_name_valid("A"));
    assert_true(settings_env_name_valid("_a1"));
    assert_false(settings_env_name_valid(""));
    assert_false(settings_env_name_valid("1A"));
    assert_false(settings_env_name_valid("A-B"));
    assert_false(settings_env_name_valid("A=B"));
    assert_false(settings_env_name_valid("A B"));
    char longname[SETTINGS_ENV_NAME_MAX + 2];
    memset(longname, 'A', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_false(settings_env_name_valid(longname));
    longname[SETTINGS_ENV_NAME_MAX] = '\0';
    assert_true(settings_env_name_valid(longname));
}

static bool rule(const char *s)
{
    return settings_tool_rule_valid(s, strlen(s));
}

static void test_tool_rules(void **state)
{
    (void)state;
    assert_true(rule("Bash"));
    assert_true(rule("Bash(npm test:*)"));
    assert_true(rule("mcp__srv__tool"));
    assert_true(rule("Bash(echo (a))"));
    assert_false(rule(""));
    assert_false(rule("Bash()"));
    assert_false(rule("Bash(x"));
    assert_false(rule("(x)"));
    assert_false(rule("Ba sh"));
    assert_false(rule("Bash(a\nb)"));
    assert_false(rule("1Bash"));
    assert_false(rule("Bash(x)y"));
}

static void test_mcp_command(void **state)
{
    (void)state;
    assert_null(settings_mcp_command_check("env"));
    assert_null(settings_mcp_command_check("/usr/bin/env"));
    assert_null(settings_mcp_command_check("/bin/env"));
    assert_non_null(settings_mcp_command_check("no-such-command-xyz"));
    assert_non_null(settings_mcp_command_check("/usr/bin/no-such-xyz"));
    assert_non_null(settings_mcp_command_check("/tmp/x"));
    assert_non_null(settings_mcp_command_check("/usr/../tmp/x"));
    assert_non_null(settings_mcp_command_check("bin/env"));
    assert_non_null(settings_mcp_command_check("/usr/bin")); /* a dir */
    assert_non_null(settings_mcp_command_check(""));
}

static void test_model_ids(void **state)
{
    (void)state;
    assert_true(settings_model_id_valid("claude-sonnet-4-5"));
    assert_true(settings_model_id_valid("a.b_c:1"));
    assert_false(settings_model_id_valid("Claude"));
    assert_false(settings_model_id_valid("-x"));
    assert_false(settings_model_id_valid(""));
    assert_false(settings_model_id_valid("a/b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_fresh_nonce),
        cmocka_unit_test(test_wrong_context),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_reserved),
        cmocka_unit_test(test_name_syntax),
        cmocka_unit_test(test_tool_rules),
        cmocka_unit_test(test_mcp_command),
        cmocka_unit_test(test_model_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
