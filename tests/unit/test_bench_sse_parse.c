/* The bench clients' SSE parser and chunked decoder (bench/sse_parse.c):
 * every way a stream can be cut between reads gives the same events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sse_parse.h"

struct got {
    char log[4096];
    int events, comments;
};

static void on_event(void *arg, const struct sse_event *ev)
{
    struct got *g = arg;
    size_t n = strlen(g->log);
    snprintf(g->log + n, sizeof(g->log) - n, "[%s|%s|%s]",
             ev->id ? ev->id : "-", ev->type, ev->data);
    assert_int_equal(strlen(ev->data), ev->data_len);
    g->events++;
}

static void on_comment(void *arg, const char *text, size_t len)
{
    ((struct got *)arg)->comments++;
}

static const struct sse_cbs cbs = {on_event, on_comment};

/* Feeds s cut at every pair of points (three pieces); each result must
 * equal want. */
static void check_all_splits(const char *s, const char *want, int comments)
{
    size_t n = strlen(s);
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            struct sse_parser p;
            struct got g = {0};
            sse_parser_init(&p);
            sse_parser_feed(&p, s, a, &cbs, &g);
            sse_parser_feed(&p, s + a, b - a, &cbs, &g);
            sse_parser_feed(&p, s + b, n - b, &cbs, &g);
            sse_parser_reset(&p);
            assert_string_equal(g.log, want);
            assert_int_equal(g.comments, comments);
        }
}

static void test_corral_frames(void **state)
{
    check_all_splits(": ping\n\nevent: ready\ndata: {\"last_event_id\":0}\n\n"
                     "id: 1\nevent: bench\ndata: {\"t_ns\":5}\n\n",
                     "[-|ready|{\"last_event_id\":0}][1|bench|{\"t_ns\":5}]",
                     1);
}

static void test_crlf_and_cr(void **state)
{
    check_all_splits("id: 7\r\nevent: a\r\ndata: x\r\n\r\n"
                     "id:8\rdata:y\r\r",
                     "[7|a|x][8|message|y]", 0);
}

static void test_multiline_data(void **state)
{
    check_all_splits("data: one\ndata:  two\ndata\n\n",
                     "[-|message|one\n two\n]", 0);
}

static void test_no_data_no_event(void **state)
{
    /* an event without data dispatches nothing; its id does not leak
     * into the next event; unknown fields are ignored */
    check_all_splits("id: 3\nevent: x\n\nretry: 10\nfoo: bar\ndata: z\n\n",
                     "[-|message|z]", 0);
}

static void test_long_line(void **state)
{
    char s[20000], want[20000];
    memset(s, 0, sizeof(s));
    strcpy(s, "data: ");
    memset(s + 6, 'x', 9000);
    strcat(s, "\n\n");
    struct sse_parser p;
    struct got g = {0};
    sse_parser_init(&p);
    for (size_t i = 0; i < strlen(s); i += 7)
        sse_parser_feed(&p, s + i, strlen(s) - i < 7 ? strlen(s) - i : 7,
                        &cbs, &g);
    sse_parser_reset(&p);
    assert_int_equal(g.events, 1);
    snprintf(want, sizeof(want), "[-|message|%.*s", 100, s + 6);
    assert_memory_equal(g.log, want, strlen(want));
}

static void test_chunked(void **state)
{
    const char *body = "4\r\nid: \r\n6;ext=1\r\n1\ndata\r\n"
                       "3\r\n: x\r\n0\r\nTrailer: y\r\n\r\n";
    size_t n = strlen(body);
    for (size_t cut = 0; cut <= n; cut++) {
        char buf[128], out[128] = "";
        struct chunk_decoder d;
        chunk_init(&d);
        memcpy(buf, body, n);
        size_t a = chunk_decode(&d, buf, cut);
        memcpy(out, buf, a);
        size_t b = chunk_decode(&d, buf + cut, n - cut);
        memcpy(out + a, buf + cut, b);
        out[a + b] = '\0';
        assert_string_equal(out, "id: 1\ndata: x");
        assert_int_equal(d.state, CH_DONE);
    }
}

static void test_chunked_malformed(void **state)
{
    char buf[] = "zz\r\n";
    struct chunk_decoder d;
    chunk_init(&d);
    chunk_decode(&d, buf, strlen(buf));
    assert_int_equal(d.state, CH_ERROR);
    char buf2[] = "2\r\nabX\r\n";
    chunk_init(&d);
    assert_int_equal(chunk_decode(&d, buf2, strlen(buf2)), 2);
    assert_int_equal(d.state, CH_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corral_frames),
        cmocka_unit_test(test_crlf_and_cr),
        cmocka_unit_test(test_multiline_data),
        cmocka_unit_test(test_no_data_no_event),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
