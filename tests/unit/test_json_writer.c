/* Unit tests for the JSON writer (src/core/json_writer.c): exact output for
 * escapes, replacement of invalid UTF-8, comma placement and clamping, and
 * round trips through the reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/buf.h"
#include "corral/json.h"
#include "corral/mem.h"

#define LIT(s) s, sizeof(s) - 1

static const struct json_limits wide = {
    .max_bytes = 64u << 20,
    .max_depth = 1000,
    .max_tokens = 4000000,
};

static struct json_doc *parse_buf(const struct buf *b)
{
    struct json_doc *doc = NULL;
    const char *msg = NULL;
    if (json_parse(b->data, b->len, &wide, &doc, &msg) != 0)
        fail_msg("writer output rejected (%s): %.*s", msg, (int)b->len,
                 b->data);
    return doc;
}

static void expect_escaped(const char *in, size_t n, const char *want,
                           size_t want_n)
{
    struct buf b;
    buf_init(&b);
    json_escape_str(&b, in, n);
    if (b.len != want_n || memcmp(b.data, want, want_n) != 0)
        fail_msg("escaped %.*s, want %.*s", (int)b.len, b.data, (int)want_n,
                 want);
    buf_deinit(&b);
}

static void test_escape_basics(void **state)
{
    (void)state;
    expect_escaped(LIT(""), LIT("\"\""));
    expect_escaped(LIT("plain text"), LIT("\"plain text\""));
    expect_escaped(LIT("a\"b\\c"), LIT("\"a\\\"b\\\\c\""));
    expect_escaped(LIT("/ stays"), LIT("\"/ stays\""));
    expect_escaped(LIT("\x7f"), LIT("\"\x7f\""));
    expect_escaped(LIT("\b\f\n\r\t"), LIT("\"\\b\\f\\n\\r\\t\""));
    expect_escaped(LIT("\0"), LIT("\"\\u0000\""));
    expect_escaped(LIT("a\0b"), LIT("\"a\\u0000b\""));
    expect_escaped(LIT("</script>"), LIT("\"</script>\""));
    expect_escaped(LIT("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"),
                   LIT("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
    expect_escaped(LIT("\xe2\x80\xa8\xe2\x80\xa9"), LIT("\"\\u2028\\u2029\""));
    expect_escaped(LIT("a\xe2\x80\xa8"
                       "b\xe2\x80\xaa"),
                   LIT("\"a\\u2028b\xe2\x80\xaa\""));
}

/* Every control character has exactly one expected form. */
static void test_escape_controls(void **state)
{
    (void)state;
    for (int c = 0; c < 0x20; c++) {
        char in = (char)c, want[16];
        const char *shortform = NULL;
        switch (c) {
        case '\b': shortform = "\"\\b\""; break;
        case '\f': shortform = "\"\\f\""; break;
        case '\n': shortform = "\"\\n\""; break;
        case '\r': shortform = "\"\\r\""; break;
        case '\t': shortform = "\"\\t\""; break;
        default: break;
        }
        if (shortform)
            snprintf(want, sizeof(want), "%s", shortform);
        else
            snprintf(want, sizeof(want), "\"\\u%04x\"", c);
        expect_escaped(&in, 1, want, strlen(want));
    }
}

/* Maximal subparts (Unicode ch. 3, U+FFFD substitution): one U+FFFD per
 * lead byte with the continuation bytes it could still take. */
static void test_escape_invalid_utf8(void **state)
{
#define R "\xef\xbf\xbd"
    static const struct {
        const char *in;
        size_t n;
        const char *want;
        size_t want_n;
    } cases[] = {
        {LIT("\x80"), LIT("\"" R "\"")},
        {LIT("\xbf\x80"), LIT("\"" R R "\"")},
        {LIT("\xc0\xaf"), LIT("\"" R R "\"")},
        {LIT("\xc1\xbf"), LIT("\"" R R "\"")},
        {LIT("\xc3"), LIT("\"" R "\"")},
        {LIT("\xc3"
             "A"),
         LIT("\"" R "A\"")},
        {LIT("\xe0\x80\x80"), LIT("\"" R R R "\"")},
        {LIT("\xe0\xa0"), LIT("\"" R "\"")},
        {LIT("\xe2\x82"), LIT("\"" R "\"")},
        {LIT("\xe2\x82"
             "x"),
         LIT("\"" R "x\"")},
        {LIT("\xed\xa0\x80"), LIT("\"" R R R "\"")},
        {LIT("\xed\x9f\xbf"), LIT("\"\xed\x9f\xbf\"")},
        {LIT("\xf0\x80\x80\x80"), LIT("\"" R R R R "\"")},
        {LIT("\xf0\x9f\x98"), LIT("\"" R "\"")},
        {LIT("\xf0\x9f\x98"
             "\""),
         LIT("\"" R "\\\"\"")},
        {LIT("\xf4\x90\x80\x80"), LIT("\"" R R R R "\"")},
        {LIT("\xf4\x8f\xbf\xbf"), LIT("\"\xf4\x8f\xbf\xbf\"")},
        {LIT("\xf5\x80"), LIT("\"" R R "\"")},
        {LIT("\xf8\x88\x80\x80\x80"), LIT("\"" R R R R R "\"")},
        {LIT("\xfe\xff"), LIT("\"" R R "\"")},
        {LIT("caf\xe9!"), LIT("\"caf" R "!\"")},
        {LIT("\xe2\x80\xa8\xe2\x80"), LIT("\"\\u2028" R "\"")},
        {LIT("\xc3\n"), LIT("\"" R "\\n\"")},
        /* The example from Unicode ch. 3, Table 3-8 and its neighbours. */
        {LIT("\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64"),
         LIT("\"a" R R R "b" R "c" R R "d\"")},
    };
#undef R
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_escaped(cases[i].in, cases[i].n, cases[i].want, cases[i].want_n);
}

static void test_utf8_valid(void **state)
{
    static const struct {
        const char *s;
        size_t n;
        bool ok;
    } cases[] = {
        {LIT(""), true},
        {LIT("ascii \x01\x7f"), true},
        {LIT("\0"), true},
        {LIT("\xc2\x80\xdf\xbf"), true},
        {LIT("\xe0\xa0\x80\xef\xbf\xbf"), true},
        {LIT("\xed\x9f\xbf\xee\x80\x80"), true},
        {LIT("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"), true},
        {LIT("\x80"), false},
        {LIT("\xc0\x80"), false},
        {LIT("\xc1\xbf"), false},
        {LIT("\xc2"), false},
        {LIT("\xe0\x9f\xbf"), false},
        {LIT("\xed\xa0\x80"), false},
        {LIT("\xed\xbf\xbf"), false},
        {LIT("\xf0\x8f\xbf\xbf"), false},
        {LIT("\xf4\x90\x80\x80"), false},
        {LIT("\xf5\x80\x80\x80"), false},
        {LIT("\xff"), false},
        {LIT("ok\xe2\x82"), false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(json_utf8_valid(cases[i].s, cases[i].n), cases[i].ok);
}

/* Writes s (n bytes) as a string, parses it back and returns the decoded
 * value. */
static char *round_trip(const char *s, size_t n, size_t *out_n)
{
    struct buf b;
    struct json_w w;
    struct json_doc *doc;
    char *back;

    buf_init(&b);
    json_w_init(&w, &b);
    json_w_strn(&w, s, n);
    doc = parse_buf(&b);
    back = json_str_dup(doc, 0, out_n);
    json_doc_free(doc);
    buf_deinit(&b);
    return back;
}

static void test_round_trip_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char in = (char)c;
        size_t n;
        char *back = round_trip(&in, 1, &n);
        if (c < 0x80) {
            assert_int_equal(n, 1);
            assert_int_equal((unsigned char)back[0], c);
        } else {
            assert_int_equal(n, 3);
            assert_memory_equal(back, "\xef\xbf\xbd", 3);
        }
        free(back);
    }
}

static size_t encode(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Every BMP scalar value, then every 7th supplementary one, each wrapped in
 * ASCII so that boundaries are exercised too. */
static void test_round_trip_code_points(void **state)
{
    (void)state;
    for (unsigned long cp = 0; cp <= 0x10FFFF; cp += cp < 0x10000 ? 1 : 7) {
        char in[8];
        size_t n = 0, back_n;
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        in[n++] = 'x';
        n += encode(cp, in + n);
        in[n++] = 'y';
        assert_true(json_utf8_valid(in, n));
        char *back = round_trip(in, n, &back_n);
        assert_int_equal(back_n, n);
        assert_memory_equal(back, in, n);
        free(back);
    }
    /* UTF-8-encoded surrogates are replaced, three U+FFFD each. */
    for (unsigned long cp = 0xD800; cp <= 0xDFFF; cp += 0x3F) {
        char in[3];
        size_t back_n;
        encode(cp, in);
        char *back = round_trip(in, 3, &back_n);
        assert_int_equal(back_n, 9);
        free(back);
    }
}

static const char *finish(struct buf *b)
{
    return buf_cstr(b);
}

static void test_structure(void **state)
{
    struct buf b;
    struct json_w w;
    (void)state;

    buf_init(&b);
    json_w_init(&w, &b);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "s", "v");
    json_w_kint(&w, "i", -3);
    json_w_kbool(&w, "t", true);
    json_w_kbool(&w, "f", false);
    json_w_knull(&w, "n");
    json_w_key(&w, "null_str");
    json_w_str(&w, NULL);
    json_w_key(&w, "a");
    json_w_arr_begin(&w);
    json_w_int(&w, 1);
    json_w_arr_begin(&w);
    json_w_arr_end(&w);
    json_w_obj_begin(&w);
    json_w_obj_end(&w);
    json_w_uint(&w, UINT64_MAX);
    json_w_int(&w, INT64_MIN);
    json_w_raw(&w, "{\"r\":[1,2]}", 11);
    json_w_strn(&w, "ab\0c", 4);
    json_w_strn(&w, NULL, 3);
    json_w_arr_end(&w);
    json_w_key(&w, "o");
    json_w_obj_begin(&w);
    json_w_key(&w, "k\"ey\n");
    json_w_double(&w, 0.5);
    json_w_obj_end(&w);
    json_w_obj_end(&w);
    assert_string_equal(
        finish(&b), "{\"s\":\"v\",\"i\":-3,\"t\":true,\"f\":false,\"n\":null,"
                    "\"null_str\":null,\"a\":[1,[],{},18446744073709551615,"
                    "-9223372036854775808,{\"r\":[1,2]},\"ab\\u0000c\",null],"
                    "\"o\":{\"k\\\"ey\\n\":0.5}}");
    assert_int_equal(w.depth, 0);
    json_doc_free(parse_buf(&b));
    buf_deinit(&b);
}

static void test_top_level_scalars(void **state)
{
    struct buf b;
    struct json_w w;
    (void)state;

    buf_init(&b);
    json_w_init(&w, &b);
    json_w_str(&w, "x");
    assert_string_equal(finish(&b), "\"x\"");
    buf_reset(&b);
    json_w_init(&w, &b);
    json_w_int(&w, 0);
    assert_string_equal(finish(&b), "0");
    buf_reset(&b);
    json_w_init(&w, &b);
    json_w_arr_begin(&w);
    json_w_arr_end(&w);
    assert_string_equal(finish(&b), "[]");
    buf_deinit(&b);
}

/* Commas at every level of a structure built in a loop. */
static void test_commas_nested(void **state)
{
    struct buf b;
    struct json_w w;
    (void)state;

    buf_init(&b);
    json_w_init(&w, &b);
    json_w_arr_begin(&w);
    for (int i = 0; i < 3; i++) {
        json_w_obj_begin(&w);
        for (int j = 0; j < i; j++) {
            char k[8];
            snprintf(k, sizeof(k), "k%d", j);
            json_w_key(&w, k);
            json_w_arr_begin(&w);
            for (int m = 0; m < j + 1; m++)
                json_w_int(&w, m);
            json_w_arr_end(&w);
        }
        json_w_obj_end(&w);
    }
    json_w_arr_end(&w);
    assert_string_equal(finish(&b),
                        "[{},{\"k0\":[0]},{\"k0\":[0],\"k1\":[0,1]}]");
    json_doc_free(parse_buf(&b));
    buf_deinit(&b);
}

/* Misuse that still yields valid JSON: a key without a value, two keys in a
 * row, and an end without a begin. */
static void test_misuse_stays_valid(void **state)
{
    struct buf b;
    struct json_w w;
    (void)state;

    buf_init(&b);
    json_w_init(&w, &b);
    json_w_obj_begin(&w);
    json_w_key(&w, "a");
    json_w_key(&w, "b");
    json_w_int(&w, 1);
    json_w_key(&w, "c");
    json_w_obj_end(&w);
    json_w_obj_end(&w);
    json_w_arr_end(&w);
    assert_string_equal(finish(&b), "{\"a\":null,\"b\":1,\"c\":null}");
    assert_int_equal(w.depth, 0);
    json_doc_free(parse_buf(&b));
    buf_deinit(&b);
}

/* Beyond JSON_W_MAX_DEPTH the writer clamps: the container that would be
 * too deep becomes null and its content is dropped. */
static void test_depth_clamp(void **state)
{
    struct buf b, want;
    struct json_w w;
    (void)state;

    buf_init(&b);
    buf_init(&want);
    json_w_init(&w, &b);
    for (int i = 0; i < 100; i++) {
        if (i % 2) {
            json_w_obj_begin(&w);
            json_w_key(&w, "k");
        } else {
            json_w_arr_begin(&w);
            json_w_int(&w, i);
        }
    }
    json_w_str(&w, "deepest");
    for (int i = 99; i >= 0; i--) {
        if (i % 2) {
            json_w_kint(&w, "after", i);
            json_w_obj_end(&w);
        } else {
            json_w_int(&w, -i);
            json_w_arr_end(&w);
        }
    }
    assert_int_equal(w.depth, 0);
    for (int i = 0; i < JSON_W_MAX_DEPTH; i++)
        buf_printf(&want, i % 2 ? "{\"k\":" : "[%d,", i);
    buf_puts(&want, "null");
    for (int i = JSON_W_MAX_DEPTH - 1; i >= 0; i--)
        buf_printf(&want, i % 2 ? ",\"after\":%d}" : ",%d]", i % 2 ? i : -i);
    assert_string_equal(finish(&b), finish(&want));
    json_doc_free(parse_buf(&b));

    /* Writing continues normally after the clamped subtree. */
    buf_reset(&b);
    json_w_init(&w, &b);
    for (int i = 0; i < JSON_W_MAX_DEPTH + 5; i++)
        json_w_arr_begin(&w);
    for (int i = 0; i < 5; i++)
        json_w_arr_end(&w);
    json_w_int(&w, 7);
    for (int i = 0; i < JSON_W_MAX_DEPTH; i++)
        json_w_arr_end(&w);
    assert_int_equal(w.depth, 0);
    struct json_doc *doc = parse_buf(&b);
    int inner = 0;
    for (int i = 0; i < JSON_W_MAX_DEPTH - 1; i++)
        inner = json_at(doc, inner, 0);
    assert_int_equal(json_len(doc, inner), 2);
    assert_int_equal(json_type(doc, json_at(doc, inner, 0)), JSON_NULL);
    assert_int_equal(json_type(doc, json_at(doc, inner, 1)), JSON_NUMBER);
    json_doc_free(doc);
    buf_deinit(&b);
    buf_deinit(&want);
}

static void write_double(double v, struct buf *b)
{
    struct json_w w;
    buf_reset(b);
    json_w_init(&w, b);
    json_w_double(&w, v);
}

static void check_doubles(void)
{
    static const double values[] = {
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        0.5,
        1.0 / 3,
        123456789.0,
        1e21,
        1e-7,
        1.7976931348623157e308,
        -1.7976931348623157e308,
        2.2250738585072014e-308,
        4.9406564584124654e-324,
        9007199254740993.0,
        3.141592653589793,
    };
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        double back;
        write_double(values[i], &b);
        assert_null(strchr(b.data, ','));
        struct json_doc *doc = parse_buf(&b);
        assert_int_equal(json_get_double(doc, 0, &back), 0);
        assert_memory_equal(&back, &values[i], sizeof(double)); /* exact */
        json_doc_free(doc);
    }
    write_double(0.1, &b);
    assert_string_equal(b.data, "0.10000000000000001");
    write_double(1.0, &b);
    assert_string_equal(b.data, "1");
    write_double(-0.0, &b);
    assert_string_equal(b.data, "-0");
    write_double(1e300, &b);
    assert_string_equal(b.data, "1.0000000000000001e+300");
    write_double(NAN, &b);
    assert_string_equal(b.data, "null");
    write_double(INFINITY, &b);
    assert_string_equal(b.data, "null");
    write_double(-INFINITY, &b);
    assert_string_equal(b.data, "null");
    buf_deinit(&b);
}

static void test_doubles(void **state)
{
    (void)state;
    check_doubles();
}

/* With a locale whose decimal point is ',' (when one is installed) the
 * writer and reader must still use '.'. */
static void test_doubles_locale(void **state)
{
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8",
                                        "fr_FR.UTF-8", "fr_FR.utf8", "de_DE"};
    const char *set = NULL;
    (void)state;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !set; i++)
        set = setlocale(LC_NUMERIC, names[i]);
    if (!set)
        skip();
    check_doubles();
    setlocale(LC_NUMERIC, "C");
}

/* Each writer call in an array gets exactly one comma before it. */
static void test_all_value_kinds_in_array(void **state)
{
    struct buf b;
    struct json_w w;
    (void)state;

    buf_init(&b);
    json_w_init(&w, &b);
    json_w_arr_begin(&w);
    json_w_str(&w, "s");
    json_w_strn(&w, "sn", 2);
    json_w_int(&w, -1);
    json_w_uint(&w, 2);
    json_w_double(&w, 2.5);
    json_w_double(&w, NAN);
    json_w_bool(&w, true);
    json_w_null(&w);
    json_w_raw(&w, "[]", 2);
    json_w_str(&w, NULL);
    json_w_arr_end(&w);
    assert_string_equal(finish(&b),
                        "[\"s\",\"sn\",-1,2,2.5,null,true,null,[],null]");
    struct json_doc *doc = parse_buf(&b);
    assert_int_equal(json_len(doc, 0), 10);
    json_doc_free(doc);
    buf_deinit(&b);
}

/* Arbitrary bytes as keys and values always give a document the reader
 * accepts, whose strings are valid UTF-8. */
static void test_random_bytes(void **state)
{
    uint64_t s = 0x5EED;
    struct buf b;
    (void)state;

    buf_init(&b);
    for (int iter = 0; iter < 2000; iter++) {
        char bytes[24], key[24];
        struct json_w w;
        size_t n = 0;
        for (size_t i = 0; i < sizeof(bytes); i++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            bytes[i] = (char)(s >> 56);
            key[i] = (char)((s >> 48) | 1); /* no NUL: a C string */
        }
        key[sizeof(key) - 1] = '\0';
        n = (size_t)(s >> 40) % sizeof(bytes);
        buf_reset(&b);
        json_w_init(&w, &b);
        json_w_obj_begin(&w);
        json_w_key(&w, key);
        json_w_strn(&w, bytes, n);
        json_w_obj_end(&w);
        struct json_doc *doc = parse_buf(&b);
        size_t vn, kn;
        int k;
        char *v = json_str_dup(doc, json_member(doc, 0, 0, &k), &vn);
        char *kk = json_str_dup(doc, k, &kn);
        assert_true(json_utf8_valid(v, vn));
        assert_true(json_utf8_valid(kk, kn));
        if (json_utf8_valid(bytes, n)) {
            assert_int_equal(vn, n);
            assert_memory_equal(v, bytes, n);
        }
        free(v);
        free(kk);
        json_doc_free(doc);
    }
    buf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_basics),
        cmocka_unit_test(test_escape_controls),
        cmocka_unit_test(test_escape_invalid_utf8),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_round_trip_bytes),
        cmocka_unit_test(test_round_trip_code_points),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_top_level_scalars),
        cmocka_unit_test(test_commas_nested),
        cmocka_unit_test(test_misuse_stays_valid),
        cmocka_unit_test(test_depth_clamp),
        cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_doubles_locale),
        cmocka_unit_test(test_all_value_kinds_in_array),
        cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
