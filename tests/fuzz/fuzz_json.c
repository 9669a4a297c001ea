/* libFuzzer target for the JSON reader and writer. Not part of the meson
 * build; from the repository root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *       -Iinclude tests/fuzz/fuzz_json.c src/core/json.c \
 *       src/core/json_writer.c src/core/jsmn_impl.c src/core/buf.c \
 *       src/core/mem.c -o fuzz_json
 *   mkdir -p corpus && ./fuzz_json -max_len=4096 corpus
 *
 * Properties checked (a violation aborts, which libFuzzer reports):
 * - json_parse never crashes, under default and under tight limits;
 * - an accepted document has only valid UTF-8 strings, and writing it out
 *   again gives text that is accepted and reproduces itself;
 * - escaping the raw input as a string always gives an accepted document
 *   whose value is valid UTF-8 (and equals the input when that was valid). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "corral/buf.h"
#include "corral/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* For re-parsing writer output, which may be longer than its input (a raw
 * U+2028 grows from 3 to 6 bytes, a control character to 6). */
static const struct json_limits wide = {
    .max_bytes = 16u << 20, .max_depth = 64, .max_tokens = 1 << 20};

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            abort();                                                           \
    } while (0)

static void rewrite(const struct json_doc *doc, int tok, struct json_w *w)
{
    int key, v;
    size_t n;
    char *s;
    const char *raw;

    switch (json_type(doc, tok)) {
    case JSON_OBJECT:
        json_w_obj_begin(w);
        for (int i = 0; (v = json_member(doc, tok, i, &key)) >= 0; i++) {
            s = json_str_dup(doc, key, &n);
            CHECK(s && json_utf8_valid(s, n));
            json_w_key(w, s);
            free(s);
            rewrite(doc, v, w);
        }
        json_w_obj_end(w);
        break;
    case JSON_ARRAY:
        json_w_arr_begin(w);
        for (int i = 0; (v = json_at(doc, tok, i)) >= 0; i++)
            rewrite(doc, v, w);
        json_w_arr_end(w);
        break;
    case JSON_STRING:
        s = json_str_dup(doc, tok, &n);
        CHECK(s && json_utf8_valid(s, n));
        json_w_strn(w, s, n);
        free(s);
        break;
    case JSON_NUMBER:
        raw = json_raw(doc, tok, &n);
        json_w_raw(w, raw, n);
        break;
    case JSON_TRUE:
    case JSON_FALSE: json_w_bool(w, json_type(doc, tok) == JSON_TRUE); break;
    case JSON_NULL: json_w_null(w); break;
    case JSON_NONE: abort();
    }
}

static void serialise(const struct json_doc *doc, struct buf *out)
{
    struct json_w w;
    json_w_init(&w, out);
    rewrite(doc, 0, &w);
}

static void check_round_trip(const struct json_doc *doc)
{
    struct buf a, b;
    struct json_doc *again = NULL;

    buf_init(&a);
    buf_init(&b);
    serialise(doc, &a);
    CHECK(json_parse(a.data, a.len, &wide, &again, NULL) == 0);
    serialise(again, &b);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    json_doc_free(again);
    buf_deinit(&a);
    buf_deinit(&b);
}

static void check_escape(const char *s, size_t n)
{
    struct buf b;
    struct json_doc *doc = NULL;
    size_t len;
    char *back;

    buf_init(&b);
    json_escape_str(&b, s, n);
    CHECK(json_parse(b.data, b.len, &wide, &doc, NULL) == 0);
    back = json_str_dup(doc, 0, &len);
    CHECK(back && json_utf8_valid(back, len));
    if (json_utf8_valid(s, n))
        CHECK(len == n && memcmp(back, s, n) == 0);
    free(back);
    json_doc_free(doc);
    buf_deinit(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct json_limits tight = {
        .max_bytes = 2048, .max_depth = 4, .max_tokens = 16};
    const char *s = (const char *)data;
    struct json_doc *doc = NULL;

    if (json_parse(s, size, NULL, &doc, NULL) == 0) {
        check_round_trip(doc);
        json_doc_free(doc);
    }
    doc = NULL;
    if (json_parse(s, size, &tight, &doc, NULL) == 0)
        json_doc_free(doc);
    if (size <= 1024 * 1024)
        check_escape(s, size);
    return 0;
}
