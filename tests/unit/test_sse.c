/* Unit tests for sse_frame (src/http/sse.c): the SSE framing of API.md
 * "Stream (SSE)". Pure: no loop, no sockets. Each frame is also parsed
 * back the way an EventSource does (WHATWG HTML §9.2.6) to check that a
 * client sees exactly the data that went in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "corral/buf.h"
#include "corral/sse.h"

static char *frame(int64_t id, const char *type, const char *data,
                   size_t len, struct buf *b)
{
    buf_init(b);
    sse_frame(b, id, type, data, len);
    return b->data;
}

/* A minimal EventSource parser for one frame: id, event and the joined
 * data. Returns the number of frames (blank-line dispatches) seen. */
struct parsed {
    char id[32], event[32], data[256];
    int dispatches;
};

static void parse_line(struct parsed *p, const char *l, size_t n,
                       size_t *dlen)
{
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (flen == 0)
        return; /* comment */
    if (flen == 2 && memcmp(l, "id", 2) == 0)
        snprintf(p->id, sizeof(p->id), "%.*s", (int)vlen, v);
    else if (flen == 5 && memcmp(l, "event", 5) == 0)
        snprintf(p->event, sizeof(p->event), "%.*s", (int)vlen, v);
    else if (flen == 4 && memcmp(l, "data", 4) == 0) {
        memcpy(p->data + *dlen, v, vlen);
        *dlen += vlen;
        p->data[(*dlen)++] = '\n';
    }
}

static void parse(const char *s, size_t len, struct parsed *p)
{
    size_t dlen = 0, i = 0;
    memset(p, 0, sizeof(*p));
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != '\n' && s[j] != '\r')
            j++;
        assert_true(j < len); /* every line is terminated */
        if (j == i) {
            p->dispatches++;
            if (dlen)
                dlen--; /* the last LF is removed */
            p->data[dlen] = '\0';
        } else {
            parse_line(p, s + i, j - i, &dlen);
        }
        i = j + 1;
    }
}

static void test_durable_frame(void **state)
{
    (void)state;
    struct buf b;
    const char *d = "{\"message_id\":\"m\",\"index\":0,\"text\":\"hi\"}";
    frame(42, "assistant_text", d, strlen(d), &b);
    assert_string_equal(b.data,
                        "id: 42\nevent: assistant_text\n"
                        "data: {\"message_id\":\"m\",\"index\":0,"
                        "\"text\":\"hi\"}\n\n");
    buf_deinit(&b);
}

static void test_ephemeral_has_no_id(void **state)
{
    (void)state;
    struct buf b;
    frame(0, "assistant_text_delta", "{\"text\":\"x\"}", 12, &b);
    assert_string_equal(b.data, "event: assistant_text_delta\n"
                                "data: {\"text\":\"x\"}\n\n");
    assert_null(strstr(b.data, "id:"));
    buf_deinit(&b);
    frame(0, "ready", "{\"last_event_id\":7}", 19, &b);
    assert_string_equal(b.data,
                        "event: ready\ndata: {\"last_event_id\":7}\n\n");
    buf_deinit(&b);
}

static void test_newlines_split(void **state)
{
    (void)state;
    struct buf b;
    frame(3, "x", "a\nb", 3, &b);
    assert_string_equal(b.data, "id: 3\nevent: x\ndata: a\ndata: b\n\n");
    buf_deinit(&b);
    /* CR LF and a lone CR are line breaks too (one each). */
    frame(3, "x", "a\r\nb\rc", 6, &b);
    assert_string_equal(b.data,
                        "id: 3\nevent: x\ndata: a\ndata: b\ndata: c\n\n");
    buf_deinit(&b);
    /* A trailing break, consecutive breaks, empty data. */
    frame(0, "x", "a\n\n", 3, &b);
    assert_string_equal(b.data, "event: x\ndata: a\ndata: \ndata: \n\n");
    buf_deinit(&b);
    frame(0, "x", "", 0, &b);
    assert_string_equal(b.data, "event: x\ndata: \n\n");
    buf_deinit(&b);
}

/* Whatever the data, an EventSource reads back one event with the data
 * (line breaks normalised to LF) and the id. */
static void test_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"{\"a\":1}", "{\"a\":1}"},
        {"line1\nline2", "line1\nline2"},
        {"x\r\ny", "x\ny"},
        {"\n", "\n"},
        {" leading space", " leading space"},
        {"data: inside", "data: inside"},
        {"\r\r", "\n\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf b;
        struct parsed p;
        frame((int64_t)i + 1, "t", cases[i].in, strlen(cases[i].in), &b);
        parse(b.data, b.len, &p);
        assert_int_equal(p.dispatches, 1);
        assert_string_equal(p.event, "t");
        assert_string_equal(p.data, cases[i].out);
        char id[8];
        snprintf(id, sizeof(id), "%d", (int)i + 1);
        assert_string_equal(p.id, id);
        buf_deinit(&b);
    }
}

static void test_appends(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    sse_frame(&b, 1, "a", "{}", 2);
    sse_frame(&b, 0, "b", "{}", 2);
    assert_string_equal(b.data, "id: 1\nevent: a\ndata: {}\n\n"
                                "event: b\ndata: {}\n\n");
    buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durable_frame),
        cmocka_unit_test(test_ephemeral_has_no_id),
        cmocka_unit_test(test_newlines_split),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_appends),
    };
    return cmocka_run_group_tests_name("sse", tests, NULL, NULL);
}
