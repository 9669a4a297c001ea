#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "corral/wspath.h"

static const char *check(const char *rel, char *out)
{
    return wspath_check(rel, strlen(rel), out);
}

static void test_syntax(void **state)
{
    (void)state;
    char out[WSPATH_MAX + 1];
    assert_null(check("a/b.txt", out));
    assert_string_equal(out, "a/b.txt");
    assert_null(check("dir/", out));
    assert_string_equal(out, "dir");
    assert_null(check("", out));
    assert_string_equal(out, "");
    assert_null(check(".", out));
    assert_string_equal(out, "");
    assert_null(check("..x/x..", out)); /* names that merely hold dots */
    const char *bad[] = {"../x", "a/../../x", "/etc/passwd", "a//b", "./a",
                         "a/./b", "..", "a/..", "/", "a//"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_non_null(check(bad[i], out));
    assert_non_null(wspath_check("a\0b", 3, out));
    char longname[300];
    memset(longname, 'n', 299);
    longname[299] = '\0';
    assert_non_null(check(longname, out));
}

struct tree {
    char root[256], outside[256];
    int rootfd;
};

static int make_tree(void **state)
{
    struct tree *t = calloc(1, sizeof(*t));
    char tmpl[] = "/tmp/wspath-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    snprintf(t->outside, sizeof(t->outside), "%s/outside", tmpl);
    snprintf(t->root, sizeof(t->root), "%s/ws", tmpl);
    assert_int_equal(mkdir(t->outside, 0700), 0);
    assert_int_equal(mkdir(t->root, 0700), 0);
    char p[512];
    snprintf(p, sizeof(p), "%s/secret", t->outside);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    t->rootfd = open(t->root, O_PATH | O_DIRECTORY);
    assert_true(t->rootfd >= 0);
    assert_int_equal(mkdirat(t->rootfd, "sub", 0700), 0);
    close(openat(t->rootfd, "sub/file", O_CREAT | O_WRONLY, 0600));
    assert_int_equal(symlinkat("/etc", t->rootfd, "etc"), 0);
    assert_int_equal(symlinkat(t->outside, t->rootfd, "outdir"), 0);
    assert_int_equal(symlinkat("../outside/secret", t->rootfd, "rel_out"), 0);
    assert_int_equal(symlinkat("sub/file", t->rootfd, "inlink"), 0);
    assert_int_equal(symlinkat("../sub", t->rootfd, "sub/up"), 0);
    *state = t;
    return 0;
}

static int free_tree(void **state)
{
    struct tree *t = *state;
    char cmd[600];
    close(t->rootfd);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", t->root, t->outside);
    (void)system(cmd);
    free(t);
    return 0;
}

static void test_resolve(void **state)
{
    struct tree *t = *state;
    int fd = wspath_open(t->rootfd, "sub/file", O_RDONLY);
    assert_true(fd >= 0);
    close(fd);
    fd = wspath_open(t->rootfd, "inlink", O_RDONLY); /* inside: followed */
    assert_true(fd >= 0);
    close(fd);
    fd = wspath_open(t->rootfd, "sub/up/file", O_RDONLY);
    assert_true(fd >= 0);
    close(fd);
    fd = wspath_open(t->rootfd, "", O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(wspath_open(t->rootfd, "etc/passwd", O_RDONLY), -EXDEV);
    assert_int_equal(wspath_open(t->rootfd, "etc", O_RDONLY), -EXDEV);
    assert_int_equal(wspath_open(t->rootfd, "outdir/secret", O_RDONLY),
                     -EXDEV);
    assert_int_equal(wspath_open(t->rootfd, "rel_out", O_RDONLY), -EXDEV);
    assert_int_equal(wspath_open(t->rootfd, "nope", O_RDONLY), -ENOENT);
}

static void test_parent(void **state)
{
    struct tree *t = *state;
    char name[WSPATH_NAME_MAX + 1];
    int fd = wspath_open_parent(t->rootfd, "sub/file", name);
    assert_true(fd >= 0);
    assert_string_equal(name, "file");
    close(fd);
    fd = wspath_open_parent(t->rootfd, "etc", name); /* the link itself */
    assert_true(fd >= 0);
    assert_string_equal(name, "etc");
    close(fd);
    assert_int_equal(wspath_open_parent(t->rootfd, "outdir/x", name),
                     -EXDEV);
    assert_int_equal(wspath_open_parent(t->rootfd, "etc/x", name), -EXDEV);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test_setup_teardown(test_resolve, make_tree, free_tree),
        cmocka_unit_test_setup_teardown(test_parent, make_tree, free_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
