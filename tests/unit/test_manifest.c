#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "corral/manifest.h"

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_file_round_trip(void **state)
{
    (void)state;
    struct mf_entry e = {.kind = 'f', .root = 'w', .mode = 0644,
                         .size = 12, .mtime_ns = 1700000000123456789,
                         .ino = 42, .path = "dir/a file%\t\n.txt"};
    memcpy(e.sha, SHA, sizeof(e.sha));
    char *line = mf_format(&e);
    assert_null(strchr(line, '\t'));
    assert_null(strchr(line, '\n'));
    assert_string_equal(line, "f w 644 12 1700000000123456789 42 " SHA
                              " dir/a%20file%25%09%0A.txt");
    struct mf_entry out;
    assert_true(mf_parse(line, &out));
    assert_int_equal(out.kind, 'f');
    assert_int_equal(out.root, 'w');
    assert_int_equal(out.mode, 0644);
    assert_int_equal(out.size, 12);
    assert_int_equal(out.mtime_ns, 1700000000123456789);
    assert_int_equal(out.ino, 42);
    assert_string_equal(out.sha, SHA);
    assert_string_equal(out.path, e.path);
    assert_null(out.target);
    mf_entry_free(&out);
    free(line);
}

static void test_symlink_and_dir(void **state)
{
    (void)state;
    struct mf_entry l = {.kind = 'l', .root = 'h', .mode = 0777,
                         .path = "link", .target = "../outside dir"};
    char *line = mf_format(&l);
    struct mf_entry out;
    assert_true(mf_parse(line, &out));
    assert_string_equal(out.target, "../outside dir");
    assert_string_equal(out.sha, "");
    mf_entry_free(&out);
    free(line);
    struct mf_entry d = {.kind = 'd', .root = 'w', .mode = 0700,
                         .mtime_ns = -5, .path = "empty"};
    line = mf_format(&d);
    assert_string_equal(line, "d w 700 0 -5 0 - empty");
    assert_true(mf_parse(line, &out));
    assert_int_equal(out.kind, 'd');
    assert_int_equal(out.mtime_ns, -5);
    mf_entry_free(&out);
    free(line);
}

static void test_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "f w 644 1 0 0 " SHA,                    /* no path */
        "f w 644 1 0 0 - a",                     /* file without sha */
        "f w 644 1 0 0 " SHA "X a",              /* sha too long */
        "d w 700 0 0 0 " SHA " a",               /* dir with sha */
        "l w 777 0 0 0 - a",                     /* link without target */
        "x w 644 1 0 0 - a",                     /* kind */
        "f q 644 1 0 0 " SHA " a",               /* root */
        "f w 99 1 0 0 " SHA " a",                /* mode not octal */
        "f w 644 -1 0 0 " SHA " a",              /* size */
        "f w 644 1 0 0 " SHA " ../a",            /* traversal */
        "f w 644 1 0 0 " SHA " a/../b",
        "f w 644 1 0 0 " SHA " %2Fetc",          /* absolute */
        "f w 644 1 0 0 " SHA " a%00b",           /* NUL */
        "f w 644 1 0 0 " SHA " a%2",             /* short escape */
        "f w 644 1 0 0 " SHA " a%zz",
        "f w 644 1 0 0 " SHA " a//b",
        "f w 644 1 0 0 " SHA " a extra",         /* too many fields */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mf_entry out;
        if (mf_parse(bad[i], &out))
            fail_msg("accepted: %s", bad[i]);
        assert_null(out.path);
    }
}

static void test_path_ok(void **state)
{
    (void)state;
    assert_true(mf_path_ok("a"));
    assert_true(mf_path_ok("a/b/.hidden"));
    assert_true(mf_path_ok("..a/b.."));
    assert_false(mf_path_ok(""));
    assert_false(mf_path_ok("/a"));
    assert_false(mf_path_ok("a/"));
    assert_false(mf_path_ok("./a"));
    assert_false(mf_path_ok("a/.."));
}

static void test_order(void **state)
{
    (void)state;
    struct mf_entry v[] = {
        {.root = 'w', .path = "b"}, {.root = 'h', .path = "z"},
        {.root = 'w', .path = "a/c"}, {.root = 'w', .path = "a"},
    };
    qsort(v, 4, sizeof(v[0]), mf_cmp);
    assert_int_equal(v[0].root, 'h');
    assert_string_equal(v[1].path, "a");
    assert_string_equal(v[2].path, "a/c");
    assert_string_equal(v[3].path, "b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_symlink_and_dir),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_path_ok),
        cmocka_unit_test(test_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
