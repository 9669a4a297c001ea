#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/framer.h"

struct seen {
    char lines[16][256];
    int n;
    int overlong;
};

static void on_line(void *arg, const char *line, size_t len)
{
    struct seen *s = arg;
    assert_true(s->n < 16 && len < 256);
    memcpy(s->lines[s->n], line, len);
    s->lines[s->n++][len] = '\0';
}

static void on_overlong(void *arg, size_t seen)
{
    ((struct seen *)arg)->overlong++;
}

static const struct framer_cbs cbs = {on_line, on_overlong};

static void test_split_anywhere(void **state)
{
    (void)state;
    const char *text = "{\"a\":1}\n{\"b\":\"\xc3\xa9\"}\r\n\n{\"c\":3}\n";
    size_t n = strlen(text);
    /* Every split point, byte by byte included, gives the same lines. */
    for (size_t cut = 0; cut <= n; cut++) {
        struct framer f;
        struct seen s = {0};
        framer_init(&f, 100);
        framer_feed(&f, text, cut, &cbs, &s);
        for (size_t i = cut; i < n; i++)
            framer_feed(&f, text + i, 1, &cbs, &s);
        assert_int_equal(s.n, 4);
        assert_string_equal(s.lines[0], "{\"a\":1}");
        assert_string_equal(s.lines[1], "{\"b\":\"\xc3\xa9\"}");
        assert_string_equal(s.lines[2], "");
        assert_string_equal(s.lines[3], "{\"c\":3}");
        framer_deinit(&f);
    }
}

static void test_partial_kept(void **state)
{
    (void)state;
    struct framer f;
    struct seen s = {0};
    framer_init(&f, 100);
    framer_feed(&f, "abc", 3, &cbs, &s);
    assert_int_equal(s.n, 0);
    framer_feed(&f, "def\nxy", 6, &cbs, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.lines[0], "abcdef");
    framer_deinit(&f);
}

static void test_overlong_dropped(void **state)
{
    (void)state;
    struct framer f;
    struct seen s = {0};
    char big[64];
    memset(big, 'x', sizeof(big));
    framer_init(&f, 10);
    framer_feed(&f, "ok\n", 3, &cbs, &s);
    framer_feed(&f, big, 40, &cbs, &s);   /* over the cap, no newline */
    framer_feed(&f, big, 40, &cbs, &s);   /* still the same line */
    framer_feed(&f, "tail\nnext\n", 10, &cbs, &s);
    assert_int_equal(s.overlong, 1);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.lines[0], "ok");
    assert_string_equal(s.lines[1], "next");
    /* Exactly at the cap is fine; one over is not. */
    framer_feed(&f, "0123456789\n01234567890\n", 23, &cbs, &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.lines[2], "0123456789");
    assert_int_equal(s.overlong, 2);
    framer_deinit(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_anywhere),
        cmocka_unit_test(test_partial_kept),
        cmocka_unit_test(test_overlong_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
