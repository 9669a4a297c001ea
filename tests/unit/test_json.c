/* Unit tests for the JSON reader (src/core/json.c).
 *
 * The invalid-document table follows the style of JSONTestSuite's n_* cases;
 * the mutation test compares json_parse() with an independent
 * recursive-descent validator written here, so that a false accept and a
 * false reject are both caught. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/buf.h"
#include "corral/json.h"
#include "corral/mem.h"

#define LIT(s) s, sizeof(s) - 1

/* Limits that never trigger for the small documents used here, so that
 * only the grammar decides. */
static const struct json_limits wide = {
    .max_bytes = 64u << 20,
    .max_depth = 100000,
    .max_tokens = 4000000,
};

static struct json_doc *parse_n(const char *s, size_t n)
{
    struct json_doc *doc = NULL;
    const char *msg = "unset";
    int rc = json_parse(s, n, &wide, &doc, &msg);
    if (rc != 0)
        fail_msg("rejected (%d, %s): %.*s", rc, msg, (int)n, s);
    assert_null(msg);
    assert_non_null(doc);
    return doc;
}

static struct json_doc *parse(const char *s)
{
    return parse_n(s, strlen(s));
}

/* Asserts that s is rejected with err and a message that is not the
 * internal "jsmn disagrees" one (pass 1 must catch everything). */
static void reject_n(const char *s, size_t n, const struct json_limits *lim,
                     int err)
{
    struct json_doc *doc = (struct json_doc *)1;
    const char *msg = NULL;
    int rc = json_parse(s, n, lim, &doc, &msg);
    if (rc != err)
        fail_msg("got %d (%s), want %d for: %.*s", rc, msg ? msg : "-", err,
                 (int)n, s);
    assert_null(doc);
    assert_non_null(msg);
    assert_null(strstr(msg, "disagrees"));
}

/* ---- valid documents ---- */

static const struct {
    const char *s;
    size_t n;
    enum json_type root;
} valid_docs[] = {
    {LIT("0"), JSON_NUMBER},
    {LIT("-0"), JSON_NUMBER},
    {LIT("7"), JSON_NUMBER},
    {LIT("-1"), JSON_NUMBER},
    {LIT("1234567890"), JSON_NUMBER},
    {LIT("0.5"), JSON_NUMBER},
    {LIT("-0.0"), JSON_NUMBER},
    {LIT("1.25e10"), JSON_NUMBER},
    {LIT("1E10"), JSON_NUMBER},
    {LIT("1e+10"), JSON_NUMBER},
    {LIT("1e-10"), JSON_NUMBER},
    {LIT("1E-0"), JSON_NUMBER},
    {LIT("0e0"), JSON_NUMBER},
    {LIT("0E+00"), JSON_NUMBER},
    {LIT("-0.000e-000"), JSON_NUMBER},
    {LIT("1e400"), JSON_NUMBER},
    {LIT("-123456789012345678901234567890"), JSON_NUMBER},
    {LIT("true"), JSON_TRUE},
    {LIT("false"), JSON_FALSE},
    {LIT("null"), JSON_NULL},
    {LIT("\"\""), JSON_STRING},
    {LIT("\"a\""), JSON_STRING},
    {LIT(" \t\r\n\"a\" \t\r\n"), JSON_STRING},
    {LIT("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), JSON_STRING},
    {LIT("\"\\u0000\\u001f\\u0020\\u007F\\u0080\\u07ff\\u0800\\uFFFF\""),
     JSON_STRING},
    {LIT("\"\\uD800\\uDC00\\uDBFF\\uDFFF\\ud834\\udd1e\""), JSON_STRING},
    {LIT("\"\\uE000\\uFFFE\\uFEFF\""), JSON_STRING},
    {LIT("\"\x7f\""), JSON_STRING},
    {LIT("\"\xc2\x80\xdf\xbf\""), JSON_STRING},
    {LIT("\"\xe0\xa0\x80\xe1\x80\x80\xec\xbf\xbf\xed\x80\x80\xed\x9f\xbf\""),
     JSON_STRING},
    {LIT("\"\xee\x80\x80\xef\xbf\xbf\xef\xbb\xbf\""), JSON_STRING},
    {LIT("\"\xe2\x80\xa8\xe2\x80\xa9\""), JSON_STRING},
    {LIT("\"\xf0\x90\x80\x80\xf1\x80\x80\x80"
         "\xf3\xbf\xbf\xbf\xf4\x8f\xbf\xbf\""),
     JSON_STRING},
    {LIT("\"/*not a comment*/ // nor this\""), JSON_STRING},
    {LIT("\"[{,:}]\""), JSON_STRING},
    {LIT("[]"), JSON_ARRAY},
    {LIT("{}"), JSON_OBJECT},
    {LIT(" [ ] "), JSON_ARRAY},
    {LIT("{ }"), JSON_OBJECT},
    {LIT("[[]]"), JSON_ARRAY},
    {LIT("[{}]"), JSON_ARRAY},
    {LIT("[[[[[[[[[[]]]]]]]]]]"), JSON_ARRAY},
    {LIT("[1,2,3]"), JSON_ARRAY},
    {LIT("[ 1 , 2 , 3 ]"), JSON_ARRAY},
    {LIT("[\n1\n,\n2\n]"), JSON_ARRAY},
    {LIT("[true,false,null]"), JSON_ARRAY},
    {LIT("[\"a\",\"b\"]"), JSON_ARRAY},
    {LIT("[-1,0.5,1e2,\"\",[],{}]"), JSON_ARRAY},
    {LIT("{\"a\":1}"), JSON_OBJECT},
    {LIT("{ \"a\" : 1 , \"b\" : [ ] }"), JSON_OBJECT},
    {LIT("{\"\":0}"), JSON_OBJECT},
    {LIT("{\"a\":{},\"b\":[],\"c\":\"\",\"d\":null}"), JSON_OBJECT},
    {LIT("{\"a\":{\"b\":{\"c\":[1,{\"d\":2}]}}}"), JSON_OBJECT},
    {LIT("{\"a\":1,\"a\":2}"), JSON_OBJECT},
    {LIT("{\"\\u0000\":1,\"\\n\":2}"), JSON_OBJECT},
    {LIT("{\"\xc3\xa9\":\"\xf0\x9f\x98\x80\"}"), JSON_OBJECT},
    {LIT("[\"x\",{\"a\":\"b\"},\"y\"]"), JSON_ARRAY},
    {LIT("{\"a\":[1,2],\"b\":{\"c\":true},\"d\":\"e\"}"), JSON_OBJECT},
    {LIT("[1e1,1E1,1e+1,1E-1,-1.0e-1]"), JSON_ARRAY},
};

static void test_valid_docs(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(valid_docs); i++) {
        struct json_doc *doc = parse_n(valid_docs[i].s, valid_docs[i].n);
        assert_int_equal(json_type(doc, 0), valid_docs[i].root);
        json_doc_free(doc);
    }
}

/* ---- invalid documents ---- */

#define S JSON_E_SYNTAX
#define U JSON_E_UTF8

static const struct {
    const char *s;
    size_t n;
    int err;
} invalid_docs[] = {
    /* empty or only whitespace */
    {LIT(""), S},
    {LIT(" "), S},
    {LIT(" \t\r\n"), S},
    /* structure */
    {LIT("["), S},
    {LIT("]"), S},
    {LIT("{"), S},
    {LIT("}"), S},
    {LIT("[1"), S},
    {LIT("[1,"), S},
    {LIT("{\"a\""), S},
    {LIT("{\"a\":"), S},
    {LIT("{\"a\":1"), S},
    {LIT("[1,]"), S},
    {LIT("[,1]"), S},
    {LIT("[,]"), S},
    {LIT("[1,,2]"), S},
    {LIT("[1 2]"), S},
    {LIT("[1:2]"), S},
    {LIT("[\"a\" \"b\"]"), S},
    {LIT("[\"a\":1]"), S},
    {LIT("[\"a\"\"b\"]"), S},
    {LIT("[1true]"), S},
    {LIT("[[] []]"), S},
    {LIT("[{}{}]"), S},
    {LIT("{\"a\" 1}"), S},
    {LIT("{\"a\":1,}"), S},
    {LIT("{,}"), S},
    {LIT("{\"a\":1 \"b\":2}"), S},
    {LIT("{\"a\"::1}"), S},
    {LIT("{\"a\",1}"), S},
    {LIT("{\"a\":1,\"b\"}"), S},
    {LIT("{1:1}"), S},
    {LIT("{a:1}"), S},
    {LIT("{'a':1}"), S},
    {LIT("{\"a\":}"), S},
    {LIT("{:1}"), S},
    {LIT("{\"a\":1,,\"b\":2}"), S},
    {LIT("{null:1}"), S},
    {LIT("{true:1}"), S},
    {LIT("{\"a\"}"), S},
    {LIT("{[]:1}"), S},
    {LIT("{{}:1}"), S},
    {LIT("{\"a\":1:2}"), S},
    {LIT("{\"a\":1,\"b\":2,}"), S},
    {LIT("{\"a\"=1}"), S},
    {LIT("[}"), S},
    {LIT("{]"), S},
    {LIT("[1}"), S},
    {LIT("{\"a\":1]"), S},
    {LIT("[[]"), S},
    {LIT("[]]"), S},
    {LIT("{}}"), S},
    {LIT("[{]}"), S},
    {LIT("[\"a\",{\"b\":1]}"), S},
    /* trailing data, several roots */
    {LIT("[1] x"), S},
    {LIT("1 2"), S},
    {LIT("[] []"), S},
    {LIT("{}{}"), S},
    {LIT("[1]]"), S},
    {LIT("\"a\"\"b\""), S},
    {LIT("true false"), S},
    {LIT("nulll"), S},
    {LIT("[1],"), S},
    {LIT("{\"a\":1}:"), S},
    {LIT("1,"), S},
    {LIT("[1]//c"), S},
    {LIT("/*c*/[1]"), S},
    {LIT("[1]#"), S},
    {LIT("[1]\x1a"), S},
    /* NUL bytes */
    {LIT("\0"), S},
    {LIT("[1]\0"), S},
    {LIT("[\0]"), S},
    {LIT("[1,\0 2]"), S},
    {LIT("\0[1]"), S},
    {LIT("[\"a\0b\"]"), S},
    {LIT("{\"a\0\":1}"), S},
    /* byte order mark and non-JSON whitespace */
    {LIT("\xef\xbb\xbf[]"), S},
    {LIT("\xef\xbb\xbf"), S},
    {LIT("[\v1]"), S},
    {LIT("[\f1]"), S},
    {LIT("[\xc2\xa0 1]"), S},
    {LIT("[1]\xc2\xa0"), S},
    {LIT("\xe2\x80\xa8[]"), S},
    /* literals */
    {LIT("[tru]"), S},
    {LIT("[nul]"), S},
    {LIT("[fals]"), S},
    {LIT("[t]"), S},
    {LIT("[True]"), S},
    {LIT("[NULL]"), S},
    {LIT("[FALSE]"), S},
    {LIT("[truee]"), S},
    {LIT("[nan]"), S},
    {LIT("[NaN]"), S},
    {LIT("[Infinity]"), S},
    {LIT("[-Infinity]"), S},
    {LIT("[undefined]"), S},
    {LIT("tru"), S},
    {LIT("nul"), S},
    {LIT("fal"), S},
    {LIT("[a]"), S},
    {LIT("[\xe2\x88\x9e]"), S},
    /* numbers */
    {LIT("[01]"), S},
    {LIT("[-01]"), S},
    {LIT("[00]"), S},
    {LIT("[007]"), S},
    {LIT("[1.]"), S},
    {LIT("[.1]"), S},
    {LIT("[-]"), S},
    {LIT("[+1]"), S},
    {LIT("[1e]"), S},
    {LIT("[1e+]"), S},
    {LIT("[1E-]"), S},
    {LIT("[1.e1]"), S},
    {LIT("[-.1]"), S},
    {LIT("[1.0.0]"), S},
    {LIT("[0x10]"), S},
    {LIT("[0X1]"), S},
    {LIT("[1_000]"), S},
    {LIT("[- 1]"), S},
    {LIT("[1 .5]"), S},
    {LIT("[1e1.5]"), S},
    {LIT("[--1]"), S},
    {LIT("[1-]"), S},
    {LIT("[0e]"), S},
    {LIT("[.]"), S},
    {LIT("[e1]"), S},
    {LIT("[E1]"), S},
    {LIT("[1ee2]"), S},
    {LIT("[1e2e3]"), S},
    {LIT("[1.5e]"), S},
    {LIT("[0.e1]"), S},
    {LIT("[1e--1]"), S},
    {LIT("[1e+-1]"), S},
    {LIT("[.e1]"), S},
    {LIT("[-e1]"), S},
    {LIT("-"), S},
    {LIT("01"), S},
    {LIT("1."), S},
    {LIT("+1"), S},
    {LIT(".5"), S},
    {LIT("1e"), S},
    {LIT("-0."), S},
    {LIT("[1,2,3"), S},
    {LIT("[\xef\xbc\x91]"), S},
    {LIT("[\xd9\xa1]"), S},
    {LIT("[1\x80]"), S},
    {LIT("[1\xc3\xa9]"), S},
    {LIT("[2.e3]"), S},
    {LIT("[0.1.2]"), S},
    {LIT("[Inf]"), S},
    {LIT("[1,2,3,]"), S},
    /* strings: raw control characters */
    {LIT("[\"\x01\"]"), S},
    {LIT("[\"\x1f\"]"), S},
    {LIT("[\"\t\"]"), S},
    {LIT("[\"\n\"]"), S},
    {LIT("[\"\r\"]"), S},
    {LIT("\"\x08\""), S},
    /* strings: escapes */
    {LIT("[\"\\x41\"]"), S},
    {LIT("[\"\\a\"]"), S},
    {LIT("[\"\\'\"]"), S},
    {LIT("[\"\\U0041\"]"), S},
    {LIT("[\"\\u00\"]"), S},
    {LIT("[\"\\u00G0\"]"), S},
    {LIT("[\"\\u\"]"), S},
    {LIT("[\"\\u12\"]"), S},
    {LIT("[\"\\u123\"]"), S},
    {LIT("[\"\\u-123\"]"), S},
    {LIT("[\"\\u 123\"]"), S},
    {LIT("[\"\\\"]"), S},
    {LIT("[\"\\ \"]"), S},
    {LIT("[\"\\0\"]"), S},
    {LIT("[\"\\\xc3\xa9\"]"), S},
    {LIT("[\"\\\x01\"]"), S},
    {LIT("[\"\\"), S},
    {LIT("\"\\u00"), S},
    {LIT("\"\\uD834\\uDD"), S},
    {LIT("[\"\\uD800\\u12\"]"), S},
    {LIT("[\"\\uD800\\uDC0\"]"), S},
    {LIT("[\"\\uD800\\uZZZZ\"]"), S},
    /* strings: unterminated, wrong quotes */
    {LIT("[\"abc]"), S},
    {LIT("\""), S},
    {LIT("\"abc"), S},
    {LIT("['a']"), S},
    {LIT("[\"a\\\"]"), S},
    {LIT("{\"a:1}"), S},
    /* strings: \u surrogates */
    {LIT("[\"\\uD800\"]"), U},
    {LIT("[\"\\uDBFF\"]"), U},
    {LIT("[\"\\uDC00\"]"), U},
    {LIT("[\"\\uDFFF\"]"), U},
    {LIT("[\"\\uDC00\\uD800\"]"), U},
    {LIT("[\"\\uD800\\uD800\"]"), U},
    {LIT("[\"\\uDBFF\\uDBFF\"]"), U},
    {LIT("[\"\\uD800a\"]"), U},
    {LIT("[\"\\uD800\\n\"]"), U},
    {LIT("[\"\\uD800\\u0041\"]"), U},
    {LIT("[\"\\uD800\\uE000\"]"), U},
    {LIT("[\"\\uD800\\\\uDC00\"]"), U},
    {LIT("[\"\\uD800\"\"\\uDC00\"]"), U},
    {LIT("[\"a\\uDFFFb\"]"), U},
    {LIT("{\"\\uDFAA\":0}"), U},
    {LIT("\"\\ud800"), U},
    /* strings: invalid UTF-8 */
    {LIT("\"\xc0\xaf\""), U},
    {LIT("[\"\xc0\x80\"]"), U},
    {LIT("[\"\xc1\xbf\"]"), U},
    {LIT("[\"\xe0\x80\xaf\"]"), U},
    {LIT("[\"\xe0\x9f\xbf\"]"), U},
    {LIT("[\"\xf0\x80\x80\xaf\"]"), U},
    {LIT("[\"\xf0\x8f\xbf\xbf\"]"), U},
    {LIT("\"\xed\xa0\x80\""), U},
    {LIT("[\"\xed\xbf\xbf\"]"), U},
    {LIT("[\"\xed\xa0\x80\xed\xb0\x80\"]"), U},
    {LIT("\"\xf4\x90\x80\x80\""), U},
    {LIT("[\"\xf5\x80\x80\x80\"]"), U},
    {LIT("[\"\xf7\xbf\xbf\xbf\"]"), U},
    {LIT("[\"\xf8\x88\x80\x80\x80\"]"), U},
    {LIT("[\"\xfc\x84\x80\x80\x80\x80\"]"), U},
    {LIT("[\"\xfe\"]"), U},
    {LIT("[\"\xff\"]"), U},
    {LIT("[\"\x80\"]"), U},
    {LIT("[\"\xbf\"]"), U},
    {LIT("[\"\x80\x80\"]"), U},
    {LIT("[\"\xc3\"]"), U},
    {LIT("[\"\xe2\x82\"]"), U},
    {LIT("[\"\xf0\x9f\x98\"]"), U},
    {LIT("[\"\xc3"
         "A\"]"),
     U},
    {LIT("[\"\xe2\x82"
         "A\"]"),
     U},
    {LIT("[\"\xe2"
         "A\xac\"]"),
     U},
    {LIT("[\"\xe9\"]"), U},
    {LIT("[\"caf\xe9\"]"), U},
    {LIT("\"\xc3"), U},
    {LIT("{\"\xff\":1}"), U},
    {LIT("[\"\xc3\xa9\x80\"]"), U},
    {LIT("[\"\xc3\xc3\xa9\"]"), U},
    {LIT("[\"\xe2\x82\xac\xac\"]"), U},
    {LIT("[\"\xf0\x9f\x98\x80\x80\"]"), U},
    {LIT("[\"\xc3\\n\"]"), U},
    {LIT("[\"\xf0\x9f\x98\\\"]"), U},
};

#undef S
#undef U

static void test_invalid_docs(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(invalid_docs); i++)
        reject_n(invalid_docs[i].s, invalid_docs[i].n, &wide,
                 invalid_docs[i].err);
}

/* Every single byte as a whole document and as the content of a string. */
static void test_every_byte(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        char one = (char)b, str[3] = {'"', (char)b, '"'};
        struct json_doc *doc = NULL;
        bool digit = b >= '0' && b <= '9';
        bool plain = b >= 0x20 && b < 0x80 && b != '"' && b != '\\';

        assert_int_equal(json_parse(&one, 1, &wide, &doc, NULL) == 0, digit);
        json_doc_free(doc);
        doc = NULL;
        assert_int_equal(json_parse(str, 3, &wide, &doc, NULL) == 0, plain);
        if (plain) {
            size_t n;
            char *s = json_str_dup(doc, 0, &n);
            assert_int_equal(n, 1);
            assert_int_equal((unsigned char)s[0], b);
            free(s);
        }
        json_doc_free(doc);
    }
}

/* Every byte after a backslash. */
static void test_every_escape(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        char s[4] = {'"', '\\', (char)b, '"'};
        struct json_doc *doc = NULL;
        bool ok = b && strchr("\"\\/bfnrt", b) != NULL;
        int rc = json_parse(s, 4, &wide, &doc, NULL);
        assert_int_equal(rc, ok ? 0 : JSON_E_SYNTAX);
        json_doc_free(doc);
    }
}

/* Independent UTF-8 check: decode generically, then reject overlongs,
 * surrogates and values above U+10FFFF by value. */
static bool ref_utf8_seq(const unsigned char *s, size_t n, size_t *len)
{
    static const unsigned long min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t k = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    unsigned long cp;

    if (k == 0 || s[0] >= 0xF8 || n < k)
        return false;
    cp = s[0] & (0x7Fu >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return false;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    *len = k;
    return cp >= min[k] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

static bool ref_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0, k;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if (!ref_utf8_seq(s + i, n - i, &k))
            return false;
        i += k;
    }
    return true;
}

static void check_utf8_string(const unsigned char *bytes, size_t n)
{
    char s[16];
    struct json_doc *doc = NULL;
    bool ok = ref_utf8(bytes, n);

    s[0] = '"';
    memcpy(s + 1, bytes, n);
    s[n + 1] = '"';
    int rc = json_parse(s, n + 2, &wide, &doc, NULL);
    if (rc != (ok ? 0 : JSON_E_UTF8))
        fail_msg("%02x %02x %02x %02x (n=%zu): rc %d", bytes[0],
                 n > 1 ? bytes[1] : 0, n > 2 ? bytes[2] : 0,
                 n > 3 ? bytes[3] : 0, n, rc);
    assert_int_equal(json_utf8_valid((const char *)bytes, n), ok);
    if (ok) {
        size_t len;
        char *d = json_str_dup(doc, 0, &len);
        assert_int_equal(len, n);
        assert_memory_equal(d, bytes, n);
        free(d);
    }
    json_doc_free(doc);
}

/* All two-byte sequences starting with a non-ASCII byte; three- and
 * four-byte ones with every lead and second byte and boundary values for
 * the rest. */
static void test_utf8_sequences(void **state)
{
    static const unsigned char tail[] = {0x7F, 0x80, 0x81, 0xBF, 0xC0, 0xFF};
    unsigned char b[4];
    (void)state;

    for (int x = 0x80; x < 256; x++) {
        for (int y = 0x20; y < 256; y++) {
            if (y == '"' || y == '\\')
                continue;
            b[0] = (unsigned char)x, b[1] = (unsigned char)y;
            check_utf8_string(b, 2);
            for (size_t t = 0; x >= 0xE0 && t < ARRAY_SIZE(tail); t++) {
                b[2] = tail[t];
                check_utf8_string(b, 3);
                b[3] = 0x80;
                check_utf8_string(b, 4);
                b[3] = 0xBF;
                check_utf8_string(b, 4);
            }
        }
    }
}

static void test_surrogate_escapes(void **state)
{
    static const unsigned v[] = {0xD7FF, 0xD800, 0xDABC, 0xDBFF,
                                 0xDC00, 0xDE00, 0xDFFF, 0xE000};
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
        for (size_t j = 0; j < ARRAY_SIZE(v); j++) {
            char s[32];
            struct json_doc *doc = NULL;
            bool hi1 = v[i] >= 0xD800 && v[i] <= 0xDBFF;
            bool lo1 = v[i] >= 0xDC00 && v[i] <= 0xDFFF;
            bool hi2 = v[j] >= 0xD800 && v[j] <= 0xDBFF;
            bool lo2 = v[j] >= 0xDC00 && v[j] <= 0xDFFF;
            bool ok = hi1 ? lo2 : !lo1 && !hi2 && !lo2;
            int n = snprintf(s, sizeof(s), "\"\\u%04X\\u%04x\"", v[i], v[j]);
            int rc = json_parse(s, (size_t)n, &wide, &doc, NULL);
            assert_int_equal(rc, ok ? 0 : JSON_E_UTF8);
            json_doc_free(doc);
        }
    }
}

/* ---- limits ---- */

static char *nested(int depth, bool obj)
{
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < depth; i++)
        buf_puts(&b, obj ? "{\"k\":" : "[");
    buf_puts(&b, "0");
    for (int i = 0; i < depth; i++)
        buf_putc(&b, obj ? '}' : ']');
    return buf_steal(&b, NULL);
}

static void test_limit_depth(void **state)
{
    struct json_limits lim = json_default_limits;
    struct json_doc *doc = NULL;
    (void)state;

    for (int obj = 0; obj < 2; obj++) {
        char *at = nested(32, obj), *over = nested(33, obj);
        assert_int_equal(json_parse(at, strlen(at), NULL, &doc, NULL), 0);
        int want = 3 * (obj + 1);
        assert_int_equal(json_path(doc, 0, obj ? "k.k.k" : "0.0.0"), want);
        json_doc_free(doc);
        reject_n(over, strlen(over), NULL, JSON_E_DEPTH);
        free(at);
        free(over);
    }
    /* The limit applies before the end is seen: no closing brackets. */
    char *open = xmalloc(100000);
    memset(open, '[', 100000);
    reject_n(open, 100000, NULL, JSON_E_DEPTH);
    free(open);
    lim.max_depth = 0;
    assert_int_equal(json_parse("1", 1, &lim, &doc, NULL), 0);
    json_doc_free(doc);
    reject_n("[]", 2, &lim, JSON_E_DEPTH);
    reject_n("{}", 2, &lim, JSON_E_DEPTH);
    lim.max_depth = 1;
    assert_int_equal(json_parse("[1,2]", 5, &lim, &doc, NULL), 0);
    json_doc_free(doc);
    reject_n("[[]]", 4, &lim, JSON_E_DEPTH);
    reject_n("{\"a\":[]}", 8, &lim, JSON_E_DEPTH);
    lim.max_depth = -5; /* treated as 0 */
    reject_n("[]", 2, &lim, JSON_E_DEPTH);
}

static char *zeros(int n)
{
    struct buf b;
    buf_init(&b);
    buf_putc(&b, '[');
    for (int i = 0; i < n; i++)
        buf_puts(&b, i ? ",0" : "0");
    buf_putc(&b, ']');
    return buf_steal(&b, NULL);
}

static void test_limit_tokens(void **state)
{
    struct json_limits lim = json_default_limits;
    struct json_doc *doc = NULL;
    (void)state;

    lim.max_tokens = 4; /* [1,2,3] is four tokens */
    assert_int_equal(json_parse("[1,2,3]", 7, &lim, &doc, NULL), 0);
    json_doc_free(doc);
    reject_n("[1,2,3,4]", 9, &lim, JSON_E_TOKENS);
    lim.max_tokens = 3; /* a key counts as a token */
    assert_int_equal(json_parse("{\"a\":1}", 7, &lim, &doc, NULL), 0);
    json_doc_free(doc);
    reject_n("{\"a\":1,\"b\":2}", 13, &lim, JSON_E_TOKENS);
    lim.max_tokens = 0;
    reject_n("1", 1, &lim, JSON_E_TOKENS);
    /* The default: 65536 tokens. */
    char *at = zeros(65535), *over = zeros(65536);
    assert_int_equal(json_parse(at, strlen(at), NULL, &doc, NULL), 0);
    assert_int_equal(json_len(doc, 0), 65535);
    assert_int_equal(json_at(doc, 0, 65534), 65535);
    json_doc_free(doc);
    reject_n(over, strlen(over), NULL, JSON_E_TOKENS);
    free(at);
    free(over);
}

static void test_limit_size(void **state)
{
    struct json_limits lim = json_default_limits;
    size_t n = json_default_limits.max_bytes;
    struct json_doc *doc = NULL;
    char *big = xmalloc(n + 1);
    (void)state;

    memset(big, 'a', n + 1);
    big[0] = '"';
    big[n - 1] = '"';
    assert_int_equal(json_parse(big, n, NULL, &doc, NULL), 0);
    size_t len;
    char *s = json_str_dup(doc, 0, &len);
    assert_int_equal(len, n - 2);
    free(s);
    json_doc_free(doc);
    big[n - 1] = 'a';
    big[n] = '"';
    reject_n(big, n + 1, NULL, JSON_E_SIZE);
    free(big);
    lim.max_bytes = 7;
    assert_int_equal(json_parse("[1,2,3]", 7, &lim, &doc, NULL), 0);
    json_doc_free(doc);
    lim.max_bytes = 6;
    reject_n("[1,2,3]", 7, &lim, JSON_E_SIZE);
    lim.max_bytes = 0;
    reject_n("", 0, &lim, JSON_E_SYNTAX); /* empty is not too large */
}

static void test_default_limits(void **state)
{
    (void)state;
    assert_int_equal(json_default_limits.max_bytes, 1024 * 1024);
    assert_int_equal(json_default_limits.max_depth, 32);
    assert_int_equal(json_default_limits.max_tokens, 65536);
}

/* ---- accessors ---- */

static void test_types_and_lookup(void **state)
{
    struct json_doc *doc =
        parse("{\"s\":\"x\",\"n\":1.5,\"t\":true,\"f\":false,\"z\":null,"
              "\"a\":[10,[20,21],{\"k\":\"v\"}],\"o\":{},\"e\":[]}");
    int key;
    (void)state;

    assert_int_equal(json_type(doc, 0), JSON_OBJECT);
    assert_int_equal(json_len(doc, 0), 8);
    assert_int_equal(json_type(doc, json_get(doc, 0, "s")), JSON_STRING);
    assert_int_equal(json_type(doc, json_get(doc, 0, "n")), JSON_NUMBER);
    assert_int_equal(json_type(doc, json_get(doc, 0, "t")), JSON_TRUE);
    assert_int_equal(json_type(doc, json_get(doc, 0, "f")), JSON_FALSE);
    assert_int_equal(json_type(doc, json_get(doc, 0, "z")), JSON_NULL);
    assert_int_equal(json_type(doc, json_get(doc, 0, "o")), JSON_OBJECT);
    assert_int_equal(json_len(doc, json_get(doc, 0, "o")), 0);
    assert_int_equal(json_len(doc, json_get(doc, 0, "e")), 0);
    assert_int_equal(json_len(doc, json_get(doc, 0, "s")), 0);
    assert_int_equal(json_get(doc, 0, "missing"), -1);
    assert_int_equal(json_get(doc, 0, ""), -1);
    assert_int_equal(json_get(doc, 0, "S"), -1);
    assert_int_equal(json_get(doc, 0, NULL), -1);

    int a = json_get(doc, 0, "a");
    assert_int_equal(json_len(doc, a), 3);
    assert_int_equal(json_at(doc, a, 0), a + 1);
    assert_int_equal(json_len(doc, json_at(doc, a, 1)), 2);
    assert_true(json_str_eq(doc, json_get(doc, json_at(doc, a, 2), "k"), "v"));
    assert_int_equal(json_at(doc, a, 3), -1);
    assert_int_equal(json_at(doc, a, -1), -1);
    assert_int_equal(json_at(doc, a, INT_MAX), -1);

    /* members in order, keys are tokens too */
    int v = json_member(doc, 0, 0, &key);
    assert_true(json_str_eq(doc, key, "s"));
    assert_true(json_str_eq(doc, v, "x"));
    v = json_member(doc, 0, 7, &key);
    assert_true(json_str_eq(doc, key, "e"));
    assert_int_equal(json_type(doc, v), JSON_ARRAY);
    assert_int_equal(json_member(doc, 0, 8, &key), -1);
    assert_int_equal(key, -1);
    assert_int_equal(json_member(doc, 0, -1, NULL), -1);
    assert_int_equal(json_member(doc, a, 0, NULL), -1);

    /* wrong container types and bad token indexes */
    assert_int_equal(json_get(doc, a, "k"), -1);
    assert_int_equal(json_at(doc, 0, 0), -1);
    assert_int_equal(json_get(doc, json_get(doc, 0, "s"), "x"), -1);
    assert_int_equal(json_type(doc, -1), JSON_NONE);
    assert_int_equal(json_type(doc, 1000), JSON_NONE);
    assert_int_equal(json_type(NULL, 0), JSON_NONE);
    assert_int_equal(json_len(doc, -1), 0);
    assert_int_equal(json_get(doc, -1, "s"), -1);
    assert_int_equal(json_at(doc, -1, 0), -1);
    json_doc_free(doc);
    json_doc_free(NULL);
}

static void test_duplicate_keys(void **state)
{
    struct json_doc *doc =
        parse("{\"a\":1,\"b\":2,\"a\":3,\"\\u0061\":4,\"b\":5}");
    int64_t v;
    (void)state;

    assert_int_equal(json_len(doc, 0), 5);
    assert_int_equal(json_get_int64(doc, json_get(doc, 0, "a"), &v), 0);
    assert_int_equal(v, 4);
    assert_int_equal(json_get_int64(doc, json_get(doc, 0, "b"), &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(json_get_int64(doc, json_member(doc, 0, 0, NULL), &v), 0);
    assert_int_equal(v, 1);
    json_doc_free(doc);
}

static void test_escaped_keys(void **state)
{
    struct json_doc *doc =
        parse("{\"\\u00e9t\\u00E9\":1,\"a\\\"b\":2,\"\\/\":3,\"nul\\u0000x\":4,"
              "\"\\ud83d\\ude00\":5,\"tab\\t\":6}");
    int key;
    (void)state;

    assert_int_equal(json_get(doc, 0, "\xc3\xa9t\xc3\xa9"), 2);
    assert_int_equal(json_get(doc, 0, "a\"b"), 4);
    assert_int_equal(json_get(doc, 0, "/"), 6);
    assert_int_equal(json_get(doc, 0, "\xf0\x9f\x98\x80"), 10);
    assert_int_equal(json_get(doc, 0, "tab\t"), 12);
    /* A C string cannot hold the NUL; neither prefix may match. */
    assert_int_equal(json_get(doc, 0, "nul"), -1);
    assert_int_equal(json_get(doc, 0, "nulx"), -1);
    json_member(doc, 0, 3, &key);
    size_t n;
    char *k = json_str_dup(doc, key, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(k, "nul\0x", 6);
    free(k);
    /* Prefixes and extensions of an escaped key do not match. */
    assert_int_equal(json_get(doc, 0, "\xc3\xa9t"), -1);
    assert_int_equal(json_get(doc, 0, "\xc3\xa9t\xc3\xa9!"), -1);
    assert_false(json_str_eq(doc, key, NULL));
    assert_false(json_str_eq(doc, 0, ""));
    json_doc_free(doc);
}

static void test_str_dup(void **state)
{
    static const struct {
        const char *json;
        const char *want;
        size_t n;
    } cases[] = {
        {"\"\"", LIT("")},
        {"\"plain\"", LIT("plain")},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", LIT("\"\\/\b\f\n\r\t")},
        {"\"\\u0041\\u00e9\\u00E9\\u20ac\"",
         LIT("A\xc3\xa9\xc3\xa9\xe2\x82\xac")},
        {"\"\\u0000\"", LIT("\0")},
        {"\"a\\u0000b\"", LIT("a\0b")},
        {"\"\\u007f\\u0080\\u07ff\\u0800\\uffff\"",
         LIT("\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf")},
        {"\"\\uD834\\uDD1E\"", LIT("\xf0\x9d\x84\x9e")},
        {"\"\\ud800\\udc00\"", LIT("\xf0\x90\x80\x80")},
        {"\"\\uDBFF\\uDFFF\"", LIT("\xf4\x8f\xbf\xbf")},
        {"\"x\\uD83D\\uDE00y\\n\"", LIT("x\xf0\x9f\x98\x80y\n")},
        {"\"\xe2\x80\xa8\xf0\x9f\x98\x80\"",
         LIT("\xe2\x80\xa8\xf0\x9f\x98\x80")},
        {"\"\\\\u0041\"", LIT("\\u0041")},
    };
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct json_doc *doc = parse(cases[i].json);
        size_t n = 99;
        char *s = json_str_dup(doc, 0, &n);
        assert_int_equal(n, cases[i].n);
        assert_memory_equal(s, cases[i].want, n + 1); /* NUL-terminated */
        free(s);
        s = json_str_dup(doc, 0, NULL);
        assert_non_null(s);
        free(s);
        if (memchr(cases[i].want, '\0', cases[i].n) == NULL)
            assert_true(json_str_eq(doc, 0, cases[i].want));
        json_doc_free(doc);
    }
    struct json_doc *doc = parse("[1,true,null,{},[]]");
    for (int t = 0; t < 6; t++) {
        size_t n = 7;
        assert_null(json_str_dup(doc, t, &n));
        assert_int_equal(n, 7);
        assert_false(json_str_eq(doc, t, "1"));
    }
    json_doc_free(doc);
}

static void test_int64(void **state)
{
    static const struct {
        const char *json;
        int rc;
        int64_t v;
    } cases[] = {
        {"0", 0, 0},
        {"-0", 0, 0},
        {"42", 0, 42},
        {"-42", 0, -42},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", -1, 0},
        {"-9223372036854775809", -1, 0},
        {"9223372036854775810", -1, 0},
        {"10000000000000000000", -1, 0},
        {"-10000000000000000000", -1, 0},
        {"99999999999999999999999999999", -1, 0},
        {"1.0", -1, 0},
        {"1e2", -1, 0},
        {"1E2", -1, 0},
        {"-0.0", -1, 0},
        {"\"1\"", -1, 0},
        {"true", -1, 0},
        {"null", -1, 0},
        {"[1]", -1, 0},
    };
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct json_doc *doc = parse(cases[i].json);
        int64_t v = 12345;
        assert_int_equal(json_get_int64(doc, 0, &v), cases[i].rc);
        assert_true(v == (cases[i].rc == 0 ? cases[i].v : 12345));
        json_doc_free(doc);
    }
}

static void test_double(void **state)
{
    static const struct {
        const char *json;
        int rc;
        double v;
    } cases[] = {
        {"0", 0, 0.0},
        {"1.5", 0, 1.5},
        {"-2.25e3", 0, -2250.0},
        {"0.1", 0, 0.1},
        {"1E-2", 0, 0.01},
        {"9007199254740993", 0, 9007199254740992.0},
        {"1.7976931348623157e308", 0, 1.7976931348623157e308},
        {"4.9406564584124654e-324", 0, 4.9406564584124654e-324},
        {"1e-400", 0, 0.0},
        {"1e400", -1, 0},
        {"-1e400", -1, 0},
        {"\"1\"", -1, 0},
        {"false", -1, 0},
        {"{}", -1, 0},
    };
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct json_doc *doc = parse(cases[i].json);
        double v = 7.0;
        assert_int_equal(json_get_double(doc, 0, &v), cases[i].rc);
        assert_true(v == (cases[i].rc == 0 ? cases[i].v : 7.0));
        json_doc_free(doc);
    }
    struct json_doc *doc = parse("-0.0");
    double v;
    assert_int_equal(json_get_double(doc, 0, &v), 0);
    assert_true(v == 0.0 && signbit(v));
    json_doc_free(doc);
}

static void test_bool(void **state)
{
    struct json_doc *doc = parse("[true,false,null,0,\"true\"]");
    bool b = false;
    (void)state;

    assert_int_equal(json_get_bool(doc, 1, &b), 0);
    assert_true(b);
    assert_int_equal(json_get_bool(doc, 2, &b), 0);
    assert_false(b);
    for (int t = 3; t <= 5; t++)
        assert_int_equal(json_get_bool(doc, t, &b), -1);
    assert_int_equal(json_get_bool(doc, 0, &b), -1);
    assert_int_equal(json_get_bool(doc, 99, &b), -1);
    json_doc_free(doc);
}

static void test_path(void **state)
{
    struct json_doc *doc = parse(
        "{\"a\":{\"b\":[0,1,{\"c\":\"deep\"}],\"2\":\"two\",\"\":{\"x\":1}},"
        "\"list\":[[5,6],[7,[8,9]]],\"s\":\"str\"}");
    (void)state;

    assert_true(json_str_eq(doc, json_path(doc, 0, "a.b.2.c"), "deep"));
    assert_true(json_str_eq(doc, json_path(doc, 0, "a.2"), "two"));
    assert_int_equal(json_type(doc, json_path(doc, 0, "a..x")), JSON_NUMBER);
    assert_int_equal(json_path(doc, 0, ""), 0);
    assert_int_equal(json_path(doc, 0, "a"), json_get(doc, 0, "a"));
    int64_t v;
    int eight = json_path(doc, 0, "list.1.1.0");
    assert_int_equal(json_get_int64(doc, eight, &v), 0);
    assert_int_equal(v, 8);
    /* relative to another token */
    int list = json_get(doc, 0, "list");
    assert_int_equal(json_path(doc, list, "0.1"),
                     json_at(doc, json_at(doc, list, 0), 1));
    /* misses */
    static const char *const miss[] = {
        "x",        "a.x",    "a.b.3",          "a.b.-1",    "a.b.01",
        "a.b.+1",   "a.b.1x", "a.b.",           "a.b.2.c.d", "s.0",
        "list.0.2", "list.a", "a.b.9999999999", ".a",        "list.",
        "list..0",  "a.b. 1",
    };
    for (size_t i = 0; i < ARRAY_SIZE(miss); i++)
        if (json_path(doc, 0, miss[i]) != -1)
            fail_msg("path %s found", miss[i]);
    assert_int_equal(json_path(doc, 0, NULL), -1);
    assert_int_equal(json_path(doc, -1, "a"), -1);
    assert_int_equal(json_path(doc, 500, ""), -1);
    json_doc_free(doc);
}

static void test_raw(void **state)
{
    const char *src = " {\"a\" : [1, \"x\\ny\", {\"b\":null}] , \"n\":-1.5e3} ";
    struct json_doc *doc = parse(src);
    size_t n;
    const char *r;
    (void)state;

    r = json_raw(doc, 0, &n);
    assert_int_equal(n, strlen(src) - 2);
    assert_memory_equal(r, src + 1, n);
    r = json_raw(doc, json_get(doc, 0, "a"), &n);
    assert_int_equal(n, strlen("[1, \"x\\ny\", {\"b\":null}]"));
    assert_memory_equal(r, "[1, \"x\\ny\", {\"b\":null}]", n);
    r = json_raw(doc, json_path(doc, 0, "a.1"), &n);
    assert_int_equal(n, 6);
    assert_memory_equal(r, "\"x\\ny\"", 6); /* quotes included */
    r = json_raw(doc, json_get(doc, 0, "n"), &n);
    assert_memory_equal(r, "-1.5e3", n);
    /* A raw subtree is a document of its own. */
    r = json_raw(doc, json_path(doc, 0, "a.2"), &n);
    struct json_doc *sub = parse_n(r, n);
    assert_int_equal(json_type(sub, json_get(sub, 0, "b")), JSON_NULL);
    json_doc_free(sub);
    assert_null(json_raw(doc, -1, &n));
    assert_int_equal(n, 0);
    assert_null(json_raw(doc, 99, NULL));
    json_doc_free(doc);
}

/* The document owns a copy: the source may be freed right after parsing. */
static void test_owns_source(void **state)
{
    char *src = xstrdup("{\"key\":\"value\",\"n\":12}");
    struct json_doc *doc = parse(src);
    int64_t v;
    (void)state;

    memset(src, 'X', strlen(src));
    free(src);
    assert_true(json_str_eq(doc, json_get(doc, 0, "key"), "value"));
    assert_int_equal(json_get_int64(doc, json_get(doc, 0, "n"), &v), 0);
    assert_int_equal(v, 12);
    json_doc_free(doc);
}

static void test_errmsg_optional(void **state)
{
    struct json_doc *doc = (struct json_doc *)1;
    const char *msg = "unset";
    (void)state;

    assert_int_equal(json_parse("[1,]", 4, NULL, &doc, NULL), JSON_E_SYNTAX);
    assert_null(doc);
    assert_int_equal(json_parse("[1]", 3, NULL, &doc, &msg), 0);
    assert_null(msg);
    json_doc_free(doc);
    assert_int_equal(json_parse(NULL, 0, NULL, &doc, &msg), JSON_E_SYNTAX);
    assert_string_equal(msg, "empty document");
}

/* Index-based iteration over large containers must stay linear: a
 * quadratic lookup would take minutes here. */
static void test_lookup_is_linear(void **state)
{
    enum { N = 200000 };
    struct buf b;
    struct json_doc *doc;
    int64_t sum = 0, v;
    (void)state;

    buf_init(&b);
    buf_puts(&b, "{\"arr\":[");
    for (int i = 0; i < N; i++)
        buf_printf(&b, "%s[%d]", i ? "," : "", i);
    buf_puts(&b, "],\"obj\":{");
    for (int i = 0; i < N; i++)
        buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
    buf_puts(&b, "}}");
    doc = parse_n(b.data, b.len);
    int arr = json_get(doc, 0, "arr"), obj = json_get(doc, 0, "obj");
    for (int i = 0; i < N; i++) {
        int elem = json_at(doc, json_at(doc, arr, i), 0);
        assert_int_equal(json_get_int64(doc, elem, &v), 0);
        sum += v;
        int member = json_member(doc, obj, i, NULL);
        assert_int_equal(json_get_int64(doc, member, &v), 0);
        sum -= v;
    }
    assert_int_equal(sum, 0);
    assert_int_equal(json_get_int64(doc, json_get(doc, obj, "k199999"), &v), 0);
    assert_int_equal(v, N - 1);
    assert_int_equal(json_get_int64(doc, json_get(doc, obj, "k0"), &v), 0);
    assert_int_equal(v, 0);
    json_doc_free(doc);
    buf_deinit(&b);
}

/* ---- mutation test against a reference validator ---- */

struct ref {
    const unsigned char *s;
    size_t n, i;
};

static void ref_ws(struct ref *r)
{
    while (r->i < r->n && strchr(" \t\n\r", r->s[r->i]) && r->s[r->i])
        r->i++;
}

static bool ref_lit(struct ref *r, const char *w)
{
    size_t n = strlen(w);
    if (r->n - r->i < n || memcmp(r->s + r->i, w, n) != 0)
        return false;
    r->i += n;
    return true;
}

static bool ref_digits(struct ref *r)
{
    size_t start = r->i;
    while (r->i < r->n && isdigit(r->s[r->i]))
        r->i++;
    return r->i > start;
}

static bool ref_number(struct ref *r)
{
    ref_lit(r, "-");
    if (ref_lit(r, "0")) {
        /* nothing */
    } else if (r->i < r->n && r->s[r->i] >= '1' && r->s[r->i] <= '9') {
        ref_digits(r);
    } else {
        return false;
    }
    if (ref_lit(r, ".") && !ref_digits(r))
        return false;
    if (ref_lit(r, "e") || ref_lit(r, "E")) {
        if (!ref_lit(r, "+"))
            ref_lit(r, "-");
        if (!ref_digits(r))
            return false;
    }
    return true;
}

static long ref_hex4(struct ref *r)
{
    char h[5] = {0};
    char *end;
    if (r->n - r->i < 4)
        return -1;
    memcpy(h, r->s + r->i, 4);
    for (int k = 0; k < 4; k++)
        if (!isxdigit((unsigned char)h[k]))
            return -1;
    r->i += 4;
    return strtol(h, &end, 16);
}

static bool ref_escape(struct ref *r)
{
    long u, lo;
    if (r->i >= r->n)
        return false;
    unsigned char e = r->s[r->i++];
    if (e != 'u')
        return e && strchr("\"\\/bfnrt", e);
    if ((u = ref_hex4(r)) < 0 || (u >= 0xDC00 && u <= 0xDFFF))
        return false;
    if (u < 0xD800 || u > 0xDBFF)
        return true;
    if (!ref_lit(r, "\\u") || (lo = ref_hex4(r)) < 0)
        return false;
    return lo >= 0xDC00 && lo <= 0xDFFF;
}

static bool ref_string(struct ref *r)
{
    size_t k;
    if (!ref_lit(r, "\""))
        return false;
    while (r->i < r->n) {
        unsigned char c = r->s[r->i];
        if (c == '"') {
            r->i++;
            return true;
        }
        if (c < 0x20)
            return false;
        r->i++;
        if (c == '\\' && !ref_escape(r))
            return false;
        if (c >= 0x80) {
            if (!ref_utf8_seq(r->s + r->i - 1, r->n - r->i + 1, &k))
                return false;
            r->i += k - 1;
        }
    }
    return false;
}

static bool ref_value(struct ref *r);

static bool ref_seq(struct ref *r, char close, bool obj)
{
    ref_ws(r);
    if (ref_lit(r, (char[]){close, 0}))
        return true;
    for (;;) {
        ref_ws(r);
        if (obj) {
            if (!ref_string(r))
                return false;
            ref_ws(r);
            if (!ref_lit(r, ":"))
                return false;
        }
        if (!ref_value(r))
            return false;
        ref_ws(r);
        if (ref_lit(r, (char[]){close, 0}))
            return true;
        if (!ref_lit(r, ","))
            return false;
    }
}

static bool ref_value(struct ref *r)
{
    ref_ws(r);
    if (r->i >= r->n)
        return false;
    switch (r->s[r->i]) {
    case '{': r->i++; return ref_seq(r, '}', true);
    case '[': r->i++; return ref_seq(r, ']', false);
    case '"': return ref_string(r);
    case 't': return ref_lit(r, "true");
    case 'f': return ref_lit(r, "false");
    case 'n': return ref_lit(r, "null");
    default: return ref_number(r);
    }
}

static bool ref_valid(const char *s, size_t n)
{
    struct ref r = {(const unsigned char *)s, n, 0};
    if (!ref_value(&r))
        return false;
    ref_ws(&r);
    return r.i == n;
}

/* Re-serialises tok through the writer, checking strings on the way. */
static void rewrite(const struct json_doc *doc, int tok, struct json_w *w)
{
    int key, v;
    size_t n;
    char *s;
    const char *raw;
    int64_t i64;
    double d;

    switch (json_type(doc, tok)) {
    case JSON_OBJECT:
        json_w_obj_begin(w);
        for (int i = 0; (v = json_member(doc, tok, i, &key)) >= 0; i++) {
            s = json_str_dup(doc, key, &n);
            assert_true(json_utf8_valid(s, n));
            json_w_key(w, s); /* a \u0000 truncates the key: still valid */
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
        assert_true(json_utf8_valid(s, n));
        json_w_strn(w, s, n);
        free(s);
        break;
    case JSON_NUMBER:
        (void)json_get_int64(doc, tok, &i64);
        (void)json_get_double(doc, tok, &d);
        raw = json_raw(doc, tok, &n);
        json_w_raw(w, raw, n);
        break;
    case JSON_TRUE:
    case JSON_FALSE: json_w_bool(w, json_type(doc, tok) == JSON_TRUE); break;
    case JSON_NULL: json_w_null(w); break;
    case JSON_NONE: fail_msg("bad token %d", tok);
    }
}

static void serialise(const struct json_doc *doc, struct buf *out)
{
    struct json_w w;
    buf_reset(out);
    json_w_init(&w, out);
    rewrite(doc, 0, &w);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static unsigned rng_below(uint64_t *s, size_t n)
{
    return n ? (unsigned)(rng_next(s) % n) : 0;
}

static void mutate(uint64_t *rng, struct buf *b)
{
    static const char interesting[] =
        "{}[],:\"\\/ \t\n0123456789-+.eEtrufalsn\x00\x01\x1f\x7f\x80\xbf\xc0"
        "\xc2\xdf\xe0\xed\xef\xf0\xf4\xf5\xff";
    size_t pos = rng_below(rng, b->len + 1);
    char c = interesting[rng_below(rng, sizeof(interesting) - 1)];

    switch (rng_below(rng, 8)) {
    case 0: /* flip a bit */
        if (b->len)
            b->data[pos % b->len] ^= (char)(1u << rng_below(rng, 8));
        break;
    case 1: /* overwrite */
        if (b->len)
            b->data[pos % b->len] = c;
        break;
    case 2: /* insert */
        buf_putc(b, 0);
        memmove(b->data + pos + 1, b->data + pos, b->len - pos - 1);
        b->data[pos] = c;
        break;
    case 3: /* delete */
        if (pos < b->len) {
            memmove(b->data + pos, b->data + pos + 1, b->len - pos - 1);
            b->len--;
        }
        break;
    case 4: { /* duplicate a slice at the end */
        size_t n = rng_below(rng, b->len - pos + 1);
        char tmp[4096];
        if (b->len + n < sizeof(tmp)) {
            memcpy(tmp, b->data + pos, n); /* b->data may move */
            buf_append(b, tmp, n);
        }
        break;
    }
    case 5: /* truncate */ b->len = pos; break;
    default: { /* splice in a fragment that is often valid in place */
        static const char *const frag[] = {
            "1",       "-0.5e3",         "\"x\"",    "[]",
            "{}",      "true",           ",0",       "null,",
            "\\u00e9", "\\uD83D\\uDE00", "\xc3\xa9", "\xf0\x9f\x98\x80",
            "\"k\":",  "[1,{\"a\":[]}]", " ",        "\\n",
        };
        const char *f = frag[rng_below(rng, ARRAY_SIZE(frag))];
        size_t n = strlen(f), tail = b->len - pos;
        buf_reserve(b, n);
        memmove(b->data + pos + n, b->data + pos, tail);
        memcpy(b->data + pos, f, n);
        b->len += n;
        break;
    }
    }
}

/* Parses one mutated document, compares with the reference validator and,
 * when accepted, checks that writer output is accepted and stable. */
static bool check_mutant(const struct buf *text, struct buf *out1,
                         struct buf *out2, int iter)
{
    struct json_doc *doc = NULL, *again = NULL;
    const char *msg = NULL;
    int rc = json_parse(text->data, text->len, &wide, &doc, &msg);
    bool ref = ref_valid(text->data, text->len);

    if ((rc == 0) != ref)
        fail_msg("iteration %d: json_parse %d (%s), reference %d: %.*s", iter,
                 rc, msg ? msg : "-", ref, (int)text->len, text->data);
    if (rc != 0) {
        assert_null(strstr(msg, "disagrees"));
        return false;
    }
    serialise(doc, out1);
    if (json_parse(out1->data, out1->len, &wide, &again, &msg) != 0)
        fail_msg("writer output rejected (%s): %s", msg, out1->data);
    serialise(again, out2);
    assert_int_equal(out1->len, out2->len);
    assert_memory_equal(out1->data, out2->data, out1->len);
    json_doc_free(again);
    json_doc_free(doc);
    return true;
}

/* A random walk: each mutant starts from the last accepted document, so the
 * walk stays close to valid JSON and reaches deep into the grammar; it
 * restarts from a seed now and then. */
static void test_mutations(void **state)
{
    static const char *const seeds[] = {
        "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\\u00e9\\n\",\"e\":-1.5e+3}",
        "[true,false,null,0,-0.25,1E9,\"\",[],{}]",
        "\"\\uD83D\\uDE00 \xf0\x9f\x98\x80 \xe2\x82\xac \xc3\xa9 \\\\ \\\"\"",
        "{\"k\\u0000\":{\"\":[[[\"x\"]]]},"
        "\"\xe6\x97\xa5\":\"\\/\\b\\f\\r\\t\"}",
        "[[[[[[[[1]]]]]]],{\"a\":{\"b\":{\"c\":{}}}}]",
        " { \"sp\" : [ 1 , 2 ] , \"x\" : { \"y\" : \"z\" } } ",
        "123456789012345678901234567890",
        "[\"\\u2028\\u2029\xe2\x80\xa8\","
        "\"\xf4\x8f\xbf\xbf\",\"\xef\xbf\xbd\"]",
        "{\"dup\":1,\"dup\":2,\"arr\":[0.1,2e-5,-0,9223372036854775807]}",
    };
    enum { ITERATIONS = 100000 };
    struct buf base, trial, out1, out2;
    uint64_t rng = 0xC0441A115EEDu;
    int accepted = 0;
    (void)state;

    buf_init(&base);
    buf_init(&trial);
    buf_init(&out1);
    buf_init(&out2);
    for (int iter = 0; iter < ITERATIONS; iter++) {
        if (iter % 64 == 0) {
            buf_reset(&base);
            buf_puts(&base, seeds[rng_below(&rng, ARRAY_SIZE(seeds))]);
        }
        buf_reset(&trial);
        buf_append(&trial, base.data, base.len);
        for (unsigned m = rng_below(&rng, 2) + 1; m > 0; m--)
            mutate(&rng, &trial);
        if (check_mutant(&trial, &out1, &out2, iter)) {
            accepted++;
            buf_reset(&base);
            buf_append(&base, trial.data, trial.len);
        }
    }
    print_message("mutation test: %d of %d documents accepted\n", accepted,
                  ITERATIONS);
    /* The test is only meaningful if a fair share survived mutation. */
    assert_true(accepted > ITERATIONS / 10);
    buf_deinit(&base);
    buf_deinit(&trial);
    buf_deinit(&out1);
    buf_deinit(&out2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_docs),
        cmocka_unit_test(test_invalid_docs),
        cmocka_unit_test(test_every_byte),
        cmocka_unit_test(test_every_escape),
        cmocka_unit_test(test_utf8_sequences),
        cmocka_unit_test(test_surrogate_escapes),
        cmocka_unit_test(test_limit_depth),
        cmocka_unit_test(test_limit_tokens),
        cmocka_unit_test(test_limit_size),
        cmocka_unit_test(test_default_limits),
        cmocka_unit_test(test_types_and_lookup),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_escaped_keys),
        cmocka_unit_test(test_str_dup),
        cmocka_unit_test(test_int64),
        cmocka_unit_test(test_double),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_owns_source),
        cmocka_unit_test(test_errmsg_optional),
        cmocka_unit_test(test_lookup_is_linear),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
