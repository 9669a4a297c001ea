#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/mem.h"
#include "corral/router.h"

static void h1(struct req *r) { (void)r; }
static void h2(struct req *r) { (void)r; }

static const struct route table[] = {
    {HTTP_GET, "/healthz", h1, 0, "healthz"},
    {HTTP_GET, "/api/v1/chats", h1, 0, "chats_list"},
    {HTTP_POST, "/api/v1/chats", h2, 0, "chats_create"},
    {HTTP_GET, "/api/v1/chats/{id}", h1, 0, "chat_get"},
    {HTTP_DELETE, "/api/v1/chats/{id}", h2, 0, "chat_delete"},
    {HTTP_GET, "/api/v1/chats/{id}/messages/{mid}", h1, 0, "msg_get"},
    {HTTP_GET, "/api/v1/chats/{id}/files/content", h1, 0, "file_get"},
};
#define N ARRAY_SIZE(table)

static const struct route *match(enum http_method m, const char *path,
                                 enum router_result *rr,
                                 struct route_params *p)
{
    const struct route *out = NULL;
    *rr = router_match(table, N, m, path, &out, p);
    return out;
}

static void test_literal(void **state)
{
    (void)state;
    enum router_result rr;
    struct route_params p;
    const struct route *r = match(HTTP_GET, "/healthz", &rr, &p);
    assert_int_equal(rr, ROUTER_FOUND);
    assert_string_equal(r->name, "healthz");
    assert_int_equal(p.n, 0);
    match(HTTP_GET, "/healthz/", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
    match(HTTP_GET, "/health", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
    match(HTTP_GET, "/healthzz", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
    match(HTTP_GET, "", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
    match(HTTP_GET, "/", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
}

static void test_methods(void **state)
{
    (void)state;
    enum router_result rr;
    struct route_params p;
    assert_string_equal(match(HTTP_POST, "/api/v1/chats", &rr, &p)->name,
                        "chats_create");
    assert_string_equal(match(HTTP_GET, "/api/v1/chats", &rr, &p)->name,
                        "chats_list");
    assert_string_equal(match(HTTP_HEAD, "/api/v1/chats", &rr, &p)->name,
                        "chats_list");
    assert_null(match(HTTP_PUT, "/api/v1/chats", &rr, &p));
    assert_int_equal(rr, ROUTER_METHOD_MISMATCH);
    char allow[64];
    router_allow(table, N, "/api/v1/chats/abc", allow, sizeof(allow));
    assert_string_equal(allow, "GET, DELETE");
}

static void test_params(void **state)
{
    (void)state;
    enum router_result rr;
    struct route_params p;
    const struct route *r =
        match(HTTP_GET, "/api/v1/chats/c1/messages/m-2", &rr, &p);
    assert_non_null(r);
    assert_string_equal(r->name, "msg_get");
    assert_int_equal(p.n, 2);
    assert_string_equal(router_param(&p, "id"), "c1");
    assert_string_equal(router_param(&p, "mid"), "m-2");
    assert_null(router_param(&p, "i"));
    assert_null(router_param(&p, "other"));
    /* A literal segment after a parameter still has to match. */
    r = match(HTTP_GET, "/api/v1/chats/x/files/content", &rr, &p);
    assert_string_equal(r->name, "file_get");
    match(HTTP_GET, "/api/v1/chats/x/files/contents", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
    /* Empty parameter segments never match. */
    match(HTTP_GET, "/api/v1/chats//messages/m", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
    match(HTTP_GET, "/api/v1/chats/", &rr, &p);
    assert_int_equal(rr, ROUTER_NOT_FOUND);
}

static void test_param_too_long(void **state)
{
    (void)state;
    char path[512];
    enum router_result rr;
    struct route_params p;
    memset(path, 0, sizeof(path));
    strcpy(path, "/api/v1/chats/");
    memset(path + strlen(path), 'a', ROUTER_PARAM_MAX);
    assert_non_null(match(HTTP_GET, path, &rr, &p));
    assert_int_equal(strlen(router_param(&p, "id")), ROUTER_PARAM_MAX);
    strcat(path, "a");
    assert_null(match(HTTP_GET, path, &rr, &p));
    assert_int_equal(rr, ROUTER_NOT_FOUND);
}

static void test_method_names(void **state)
{
    (void)state;
    for (int m = HTTP_GET; m < HTTP_OTHER; m++)
        assert_int_equal(http_method_parse(http_method_name(m)), m);
    assert_int_equal(http_method_parse("get"), HTTP_OTHER);
    assert_int_equal(http_method_parse("TRACE"), HTTP_OTHER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_param_too_long),
        cmocka_unit_test(test_method_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
