#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "corral/multipart.h"

struct seen {
    int parts, ends;
    char name[4][128], filename[4][1024], type[4][128];
    char data[4][512];
    size_t dlen[4];
};

static int on_part(void *arg, const struct multipart_part *p)
{
    struct seen *s = arg;
    assert_true(s->parts < 4);
    snprintf(s->name[s->parts], 128, "%s", p->name);
    snprintf(s->filename[s->parts], 1024, "%s", p->filename);
    snprintf(s->type[s->parts], 128, "%s", p->content_type);
    s->parts++;
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    struct seen *s = arg;
    int i = s->parts - 1;
    assert_true(i >= 0 && s->dlen[i] + n < sizeof(s->data[i]));
    memcpy(s->data[i] + s->dlen[i], d, n);
    s->dlen[i] += n;
    return 0;
}

static int on_end(void *arg)
{
    ((struct seen *)arg)->ends++;
    return 0;
}

static const struct multipart_cbs cbs = {on_part, on_data, on_end};

static const char body[] =
    "preamble\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"note\"\r\n"
    "\r\n"
    "hello\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".txt\"\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "line1\r\nline2\r\n--Xy not it\r\r\n--XyQ\r\n"
    "--XyZ--\r\n"
    "epilogue";

static int parse_split(const char *text, size_t n, size_t cut, size_t step,
                       struct seen *s)
{
    struct multipart m;
    assert_true(multipart_init(&m, "XyZ", &cbs, s));
    if (multipart_feed(&m, text, cut) < 0)
        return -1;
    for (size_t i = cut; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        if (multipart_feed(&m, text + i, k) < 0)
            return -1;
    }
    return multipart_finish(&m);
}

static void check_body(const struct seen *s)
{
    assert_int_equal(s->parts, 2);
    assert_int_equal(s->ends, 2);
    assert_string_equal(s->name[0], "note");
    assert_int_equal(s->dlen[0], 5);
    assert_memory_equal(s->data[0], "hello", 5);
    assert_string_equal(s->name[1], "file");
    assert_string_equal(s->filename[1], "a \"b\".txt");
    assert_string_equal(s->type[1], "text/plain");
    const char *want = "line1\r\nline2\r\n--Xy not it\r\r\n--XyQ";
    assert_int_equal(s->dlen[1], strlen(want));
    assert_memory_equal(s->data[1], want, strlen(want));
}

/* Every split point, and byte-by-byte feeding, give the same parts. */
static void test_split_anywhere(void **state)
{
    (void)state;
    size_t n = strlen(body);
    for (size_t cut = 0; cut <= n; cut++) {
        struct seen s = {0};
        assert_int_equal(parse_split(body, n, cut, n, &s), 0);
        check_body(&s);
    }
    for (size_t step = 1; step < 8; step++) {
        struct seen s = {0};
        assert_int_equal(parse_split(body, n, 0, step, &s), 0);
        check_body(&s);
    }
}

static void test_starts_with_delimiter(void **state)
{
    (void)state;
    const char *t = "--XyZ\r\nContent-Disposition: form-data; name=file; "
                    "filename=x.bin\r\n\r\n\r\n\r\n--XyZ--";
    struct seen s = {0};
    assert_int_equal(parse_split(t, strlen(t), strlen(t), 1, &s), 0);
    assert_int_equal(s.parts, 1);
    assert_string_equal(s.filename[0], "x.bin");
    assert_int_equal(s.dlen[0], 2); /* one CRLF of data */
}

static void test_missing_final_boundary(void **state)
{
    (void)state;
    const char *t = "--XyZ\r\nContent-Disposition: form-data; name=file\r\n"
                    "\r\ndata\r\n--XyZ\r\n";
    struct seen s = {0};
    assert_int_equal(parse_split(t, strlen(t), strlen(t), 1, &s), -1);
    struct multipart m;
    assert_true(multipart_init(&m, "XyZ", &cbs, &s));
    assert_int_equal(multipart_feed(&m, "no delimiter at all", 19), 0);
    assert_int_equal(multipart_finish(&m), -1);
    assert_non_null(m.error);
}

static void test_bad_lines(void **state)
{
    (void)state;
    const char *bare_lf = "--XyZ\r\nContent-Disposition: form-data\n\r\n";
    const char *no_colon = "--XyZ\r\nbogus\r\n\r\n";
    const char *bad_after = "--XyZ!!\r\n";
    const char *not_form = "--XyZ\r\nContent-Disposition: inline\r\n\r\n";
    const char *cases[] = {bare_lf, no_colon, bad_after, not_form};
    for (size_t i = 0; i < 4; i++) {
        struct seen s = {0};
        struct multipart m;
        assert_true(multipart_init(&m, "XyZ", &cbs, &s));
        assert_int_equal(multipart_feed(&m, cases[i], strlen(cases[i])), -1);
        assert_int_equal(multipart_feed(&m, "x", 1), -1);
    }
}

static void test_boundary_param(void **state)
{
    (void)state;
    char b[MULTIPART_BOUNDARY_MAX + 1];
    assert_true(multipart_boundary("multipart/form-data; boundary=abc", b,
                                   sizeof(b)));
    assert_string_equal(b, "abc");
    assert_true(multipart_boundary(
        "Multipart/Form-Data; charset=x; boundary=\"a b:c\"", b, sizeof(b)));
    assert_string_equal(b, "a b:c");
    assert_false(multipart_boundary("multipart/form-data", b, sizeof(b)));
    assert_false(multipart_boundary("text/plain; boundary=a", b, sizeof(b)));
    assert_false(multipart_boundary("multipart/form-data; boundary=\"\"", b,
                                    sizeof(b)));
    char longb[100];
    memset(longb, 'a', 71);
    longb[71] = '\0';
    char ct[200];
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%s", longb);
    assert_false(multipart_boundary(ct, b, sizeof(b)));
    struct multipart m;
    assert_false(multipart_init(&m, "a\rb", &cbs, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_anywhere),
        cmocka_unit_test(test_starts_with_delimiter),
        cmocka_unit_test(test_missing_final_boundary),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_boundary_param),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
