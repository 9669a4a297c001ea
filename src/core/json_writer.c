/* json_writer: the only way corral emits JSON (STYLE.md §3 "Data").
 *
 * Whatever bytes a caller passes, the output is valid JSON text: strings are
 * escaped and invalid UTF-8 is replaced, commas and colons are inserted by the
 * writer, and nesting deeper than JSON_W_MAX_DEPTH is clamped (see
 * w_open()). The call sequence itself (keys only inside objects, balanced
 * begin/end) is the caller's responsibility. */
#include "corral/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Decodes one UTF-8 sequence at s (n > 0 bytes available). Returns its length
 * (1..4) and stores the code point, or returns 0 and stores in *bad the length
 * of the maximal invalid subpart (Unicode ch. 3, "U+FFFD Substitution of
 * Maximal Subparts"): the lead byte plus the continuation bytes that could
 * still have begun a well-formed sequence. The ranges follow Unicode Table
 * 3-7, which excludes overlongs, UTF-16 surrogates and values > U+10FFFF. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp,
                          size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    uint32_t v;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1, v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2, v = c & 0x0Fu;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3, v = c & 0x07u;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *bad = 1; /* continuation byte, C0/C1 or F5..FF */
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        if (k >= n || s[k] < lo || s[k] > hi) {
            *bad = k;
            return 0;
        }
        v = (v << 6) | (s[k] & 0x3Fu);
        lo = 0x80, hi = 0xBF;
    }
    *cp = v;
    return need + 1;
}

bool json_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, bad;
    uint32_t cp;

    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_decode(p + i, n - i, &cp, &bad);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Appends the escape for a byte that must not appear raw in a string. */
static void escape_byte(struct buf *out, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};

    switch (c) {
    case '"': buf_append(out, "\\\"", 2); return;
    case '\\': buf_append(out, "\\\\", 2); return;
    case '\b': buf_append(out, "\\b", 2); return;
    case '\f': buf_append(out, "\\f", 2); return;
    case '\n': buf_append(out, "\\n", 2); return;
    case '\r': buf_append(out, "\\r", 2); return;
    case '\t': buf_append(out, "\\t", 2); return;
    default: buf_append(out, e, sizeof(e)); return;
    }
}

/* Runs of bytes that need no escaping are appended in one call; everything
 * else is escaped or replaced. U+2028/U+2029 are valid JSON but end lines in
 * JavaScript before ES2019, so they are escaped too. */
void json_escape_str(struct buf *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0, k, bad = 1;
    uint32_t cp = 0;

    if (!p)
        n = 0; /* nothing to read; avoids arithmetic on a null pointer */
    buf_reserve(out, n + 2);
    buf_putc(out, '"');
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        k = c < 0x80 ? 1 : utf8_decode(p + i, n - i, &cp, &bad);
        if (c >= 0x80 && k != 0 && cp != 0x2028 && cp != 0x2029) {
            i += k;
            continue;
        }
        buf_append(out, p + run, i - run);
        if (c < 0x80)
            escape_byte(out, c);
        else if (k != 0)
            buf_append(out, cp == 0x2028 ? "\\u2028" : "\\u2029", 6);
        else
            buf_append(out, "\xEF\xBF\xBD", 3); /* U+FFFD */
        i += k != 0 ? k : bad;
        run = i;
    }
    if (i > run)
        buf_append(out, p + run, i - run);
    buf_putc(out, '"');
}

void json_w_init(struct json_w *w, struct buf *out)
{
    w->out = out;
    w->depth = 0;
    w->after_key = false;
    memset(w->has_items, 0, sizeof(w->has_items));
}

/* Levels past JSON_W_MAX_DEPTH have no has_items slot. */
static bool w_elided(const struct json_w *w)
{
    return w->depth > JSON_W_MAX_DEPTH;
}

/* Writes the separator a new value (or key) needs and reports whether the
 * value should be written at all. */
static bool w_sep(struct json_w *w)
{
    if (w_elided(w))
        return false;
    if (w->after_key) {
        w->after_key = false;
        return true;
    }
    if (w->depth > 0) {
        if (w->has_items[w->depth - 1])
            buf_putc(w->out, ',');
        w->has_items[w->depth - 1] = true;
    }
    return true;
}

/* Clamping instead of aborting: a container opened at depth
 * JSON_W_MAX_DEPTH is written as `null` and everything inside it is dropped
 * until its matching end, so the output stays valid JSON and has_items is
 * never indexed out of range. depth keeps counting so begin/end stay
 * balanced. */
static void w_open(struct json_w *w, char c)
{
    if (w_sep(w)) {
        if (w->depth == JSON_W_MAX_DEPTH) {
            buf_append(w->out, "null", 4);
        } else {
            buf_putc(w->out, c);
            w->has_items[w->depth] = false;
        }
    }
    w->depth++;
}

static void w_close(struct json_w *w, char c)
{
    if (w->depth == 0)
        return; /* unbalanced end: ignore rather than underflow */
    /* At depth JSON_W_MAX_DEPTH + 1 this closes the container written as
     * null; deeper ones were never written. */
    if (!w_elided(w)) {
        if (w->after_key) /* a key without a value */
            buf_append(w->out, "null", 4);
        w->after_key = false;
        buf_putc(w->out, c);
    }
    w->depth--;
}

void json_w_obj_begin(struct json_w *w)
{
    w_open(w, '{');
}

void json_w_obj_end(struct json_w *w)
{
    w_close(w, '}');
}

void json_w_arr_begin(struct json_w *w)
{
    w_open(w, '[');
}

void json_w_arr_end(struct json_w *w)
{
    w_close(w, ']');
}

void json_w_key(struct json_w *w, const char *key)
{
    if (w->after_key && !w_elided(w))
        json_w_null(w); /* two keys in a row: give the first a value */
    if (!w_sep(w))
        return;
    json_escape_str(w->out, key, strlen(key));
    buf_putc(w->out, ':');
    w->after_key = true;
}

void json_w_strn(struct json_w *w, const char *s, size_t n)
{
    if (!s) {
        json_w_null(w);
        return;
    }
    if (w_sep(w))
        json_escape_str(w->out, s, n);
}

void json_w_str(struct json_w *w, const char *s)
{
    json_w_strn(w, s, s ? strlen(s) : 0);
}

void json_w_int(struct json_w *w, int64_t v)
{
    if (w_sep(w))
        buf_printf(w->out, "%" PRId64, v);
}

void json_w_uint(struct json_w *w, uint64_t v)
{
    if (w_sep(w))
        buf_printf(w->out, "%" PRIu64, v);
}

/* printf's %g uses the locale's decimal point, which may be ',' or even a
 * multibyte string. The output of %.17g is otherwise only a sign, digits,
 * 'e' and an exponent sign, so any other run of bytes is the decimal point
 * and becomes '.'. */
void json_w_double(struct json_w *w, double v)
{
    char tmp[64], num[64];
    size_t j = 0;

    if (!isfinite(v)) {
        json_w_null(w);
        return;
    }
    if (!w_sep(w))
        return;
    int n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    for (int i = 0; i < n && i < (int)sizeof(tmp) - 1; i++) {
        char c = tmp[i];
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e')
            num[j++] = c;
        else if (j == 0 || num[j - 1] != '.')
            num[j++] = '.';
    }
    buf_append(w->out, num, j);
}

void json_w_bool(struct json_w *w, bool v)
{
    if (w_sep(w))
        buf_append(w->out, v ? "true" : "false", v ? 4 : 5);
}

void json_w_null(struct json_w *w)
{
    if (w_sep(w))
        buf_append(w->out, "null", 4);
}

void json_w_raw(struct json_w *w, const char *json, size_t n)
{
    if (w_sep(w))
        buf_append(w->out, json, n);
}

void json_w_kstr(struct json_w *w, const char *key, const char *s)
{
    json_w_key(w, key);
    json_w_str(w, s);
}

void json_w_kint(struct json_w *w, const char *key, int64_t v)
{
    json_w_key(w, key);
    json_w_int(w, v);
}

void json_w_kbool(struct json_w *w, const char *key, bool v)
{
    json_w_key(w, key);
    json_w_bool(w, v);
}

void json_w_knull(struct json_w *w, const char *key)
{
    json_w_key(w, key);
    json_w_null(w);
}
