#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "corral/config.h"

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/corral-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void clear_env(void)
{
    unsetenv("CORRAL_LISTEN");
    unsetenv("CORRAL_DATABASE_URL");
    unsetenv("CORRAL_PG_POOL_SIZE");
    unsetenv("CORRAL_MODEL_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("CORRAL_TRUST_PROXY");
}

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    clear_env();
    config_defaults(&c);
    assert_int_equal(config_load(&c, NULL, err, sizeof(err)), 0);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_null(c.redis_url);
    assert_string_equal(c.data_dir, "var");
    assert_string_equal(c.sandbox, "local");
    assert_int_equal(c.pbkdf2_iterations, 600000);
    assert_int_equal(c.pg_pool_size, 4);
    assert_int_equal(c.access_token_ttl, 900);
    assert_true(c.pbkdf2_cpu_share > 0.24 && c.pbkdf2_cpu_share < 0.26);
    assert_false(c.trust_proxy);
    config_deinit(&c);
}

static void test_file_and_env(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    clear_env();
    const char *path = write_tmp(
        "# comment\n\n  listen = 0.0.0.0:9000  \n"
        "database_url = \"postgresql://u:p#x@127.0.0.1/db\"\n"
        "pg_pool_size = 8 # trailing comment\n"
        "trust_proxy = yes\nredis_url = redis://127.0.0.1:6379\n"
        "redis_url =\n");
    setenv("CORRAL_PG_POOL_SIZE", "16", 1);
    setenv("ANTHROPIC_API_KEY", "sk-test", 1);
    config_defaults(&c);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 9000);
    assert_string_equal(c.database_url, "postgresql://u:p#x@127.0.0.1/db");
    assert_int_equal(c.pg_pool_size, 16); /* the environment wins */
    assert_true(c.trust_proxy);
    assert_null(c.redis_url);             /* an empty value unsets */
    assert_string_equal(c.model_api_key, "sk-test");
    setenv("CORRAL_MODEL_API_KEY", "sk-own", 1);
    assert_int_equal(config_load(&c, NULL, err, sizeof(err)), 0);
    assert_string_equal(c.model_api_key, "sk-own");
    config_deinit(&c);
    unlink(path);
    clear_env();
}

static void expect_error(const char *file_text, const char *env_name,
                         const char *env_value, const char *needle)
{
    struct config c;
    char err[256] = "";
    clear_env();
    const char *path = file_text ? write_tmp(file_text) : NULL;
    if (env_name)
        setenv(env_name, env_value, 1);
    config_defaults(&c);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
    config_deinit(&c);
    if (path)
        unlink(path);
    if (env_name)
        unsetenv(env_name);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("no_such_key = 1\n", NULL, NULL, "no_such_key");
    expect_error("pg_pool_size = 0\n", NULL, NULL, "pg_pool_size");
    expect_error("pg_pool_size = 1.5\n", NULL, NULL, "pg_pool_size");
    expect_error("pg_pool_size = 4x\n", NULL, NULL, "pg_pool_size");
    expect_error("listen = nohostport\n", NULL, NULL, "listen");
    expect_error("listen = 127.0.0.1:70000\n", NULL, NULL, "listen");
    expect_error("trust_proxy = maybe\n", NULL, NULL, "trust_proxy");
    expect_error("just words\n", NULL, NULL, ":1:");
    expect_error("sandbox = docker\n", NULL, NULL, "sandbox");
    expect_error("log_level = loud\n", NULL, NULL, "log_level");
    expect_error("jwt_secret = short\n", NULL, NULL, "jwt_secret");
    expect_error(NULL, "CORRAL_PG_POOL_SIZE", "-1", "CORRAL_PG_POOL_SIZE");
    expect_error(NULL, "CORRAL_LISTEN", ":80", "CORRAL_LISTEN");
}

static void test_ipv6_listen(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    clear_env();
    config_defaults(&c);
    assert_int_equal(config_set(&c, "listen", "[::1]:8443", err, sizeof(err)),
                     0);
    assert_string_equal(c.listen_host, "::1");
    assert_int_equal(c.listen_port, 8443);
    config_deinit(&c);
}

static void test_print_hides_secrets(void **state)
{
    (void)state;
    struct config c;
    char err[256], out[8192] = "";
    clear_env();
    config_defaults(&c);
    assert_int_equal(config_set(&c, "database_url", "postgresql://s3cret@h/d",
                                err, sizeof(err)), 0);
    FILE *fp = fmemopen(out, sizeof(out) - 1, "w");
    config_print(&c, fp);
    fclose(fp);
    assert_null(strstr(out, "s3cret"));
    assert_non_null(strstr(out, "database_url = (set)"));
    assert_non_null(strstr(out, "listen = 127.0.0.1:8080"));
    config_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_and_env),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_ipv6_listen),
        cmocka_unit_test(test_print_hides_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
