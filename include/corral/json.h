/* json: a bounded RFC 8259 reader on top of jsmn, and an escaping writer.
 *
 * Reader: json_parse() tokenizes with jsmn, then checks the RFC 8259 grammar
 * over the tokens (jsmn alone accepts `tru`, `01`, raw control characters,
 * ...) and validates UTF-8 (no overlongs, no surrogates, nothing above
 * U+10FFFF, \u escapes paired correctly) before any value can be used.
 * Limits on bytes, nesting depth and token count are enforced. Tokens are
 * addressed by index; the root is index 0. A document owns a copy of the
 * source text, so the caller's buffer may go away after parsing.
 *
 * Writer: appends to a struct buf and inserts commas itself. Strings are
 * escaped ('"', '\\', bytes < 0x20, and U+2028/U+2029 for safety in
 * JavaScript) and invalid UTF-8 in input strings is replaced by U+FFFD, so
 * the output is always valid JSON whatever bytes the caller passes. */
#ifndef CORRAL_JSON_H
#define CORRAL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

enum json_type {
    JSON_NONE = 0, /* an invalid token index, e.g. a missing key */
    JSON_OBJECT,
    JSON_ARRAY,
    JSON_STRING,
    JSON_NUMBER,
    JSON_TRUE,
    JSON_FALSE,
    JSON_NULL,
};

enum json_err {
    JSON_OK = 0,
    JSON_E_SIZE = -1,   /* text longer than max_bytes */
    JSON_E_DEPTH = -2,  /* nesting deeper than max_depth */
    JSON_E_TOKENS = -3, /* more than max_tokens values/keys */
    JSON_E_SYNTAX = -4, /* not RFC 8259 JSON (incl. trailing data, empty) */
    JSON_E_UTF8 = -5,   /* invalid UTF-8 or a bad \u escape */
};

struct json_limits {
    size_t max_bytes;
    int max_depth;  /* a scalar root has depth 0, `[]` depth 1 */
    int max_tokens; /* jsmn tokens: each value and each key counts one */
};

/* 1 MiB, depth 32, 65536 tokens. */
extern const struct json_limits json_default_limits;

struct json_doc;

/* Parses len bytes at src. On success *out is a new document owned by the
 * caller (json_doc_free). On failure returns a negative enum json_err and,
 * if errmsg is not NULL, sets it to a static description. */
int json_parse(const char *src, size_t len, const struct json_limits *lim,
               struct json_doc **out, const char **errmsg);
void json_doc_free(struct json_doc *doc);

/* Type of token tok; JSON_NONE when tok < 0 or out of range. */
enum json_type json_type(const struct json_doc *doc, int tok);
/* Number of members (object) or elements (array); 0 for scalars. */
int json_len(const struct json_doc *doc, int tok);
/* Value token of member key in object obj, or -1. Keys compare after
 * unescaping. With duplicate keys the last one wins. */
int json_get(const struct json_doc *doc, int obj, const char *key);
/* Element idx of array arr, or -1. */
int json_at(const struct json_doc *doc, int arr, int idx);
/* i-th member of object obj: returns its value token and sets *key_tok to
 * the key's token; -1 when out of range. */
int json_member(const struct json_doc *doc, int obj, int i, int *key_tok);
/* Follows a dotted path from tok: "a.b.2.c" (numeric parts index arrays).
 * Returns the token or -1. */
int json_path(const struct json_doc *doc, int tok, const char *path);

/* Unescaped copy of a string token (keys included), NUL-terminated, heap
 * allocated (caller frees). NULL when tok is not a string. *len (optional)
 * gets the length, which may include NUL bytes from \u0000. */
char *json_str_dup(const struct json_doc *doc, int tok, size_t *len);
/* True when tok is a string whose unescaped value equals s. */
bool json_str_eq(const struct json_doc *doc, int tok, const char *s);
/* Scalar getters: 0 on success, -1 on wrong type or out of range.
 * json_get_int64 accepts only integral numbers without fraction/exponent
 * that fit int64_t. */
int json_get_bool(const struct json_doc *doc, int tok, bool *out);
int json_get_int64(const struct json_doc *doc, int tok, int64_t *out);
int json_get_double(const struct json_doc *doc, int tok, double *out);
/* The token's raw text in the document (for copying a subtree verbatim). */
const char *json_raw(const struct json_doc *doc, int tok, size_t *len);

/* ---- writer ---- */

#define JSON_W_MAX_DEPTH 64

struct json_w {
    struct buf *out;                  /* borrowed */
    int depth;                        /* open containers */
    bool has_items[JSON_W_MAX_DEPTH]; /* per level: a comma is needed */
    bool after_key;                   /* next value follows a key */
};

void json_w_init(struct json_w *w, struct buf *out);
void json_w_obj_begin(struct json_w *w);
void json_w_obj_end(struct json_w *w);
void json_w_arr_begin(struct json_w *w);
void json_w_arr_end(struct json_w *w);
void json_w_key(struct json_w *w, const char *key);
void json_w_str(struct json_w *w, const char *s); /* NULL writes null */
void json_w_strn(struct json_w *w, const char *s, size_t n);
void json_w_int(struct json_w *w, int64_t v);
void json_w_uint(struct json_w *w, uint64_t v);
void json_w_double(struct json_w *w, double v); /* NaN/Inf write null */
void json_w_bool(struct json_w *w, bool v);
void json_w_null(struct json_w *w);
/* Appends text that the caller guarantees is one valid JSON value. */
void json_w_raw(struct json_w *w, const char *json, size_t n);
/* Shorthands for a key followed by a value. */
void json_w_kstr(struct json_w *w, const char *key, const char *s);
void json_w_kint(struct json_w *w, const char *key, int64_t v);
void json_w_kbool(struct json_w *w, const char *key, bool v);
void json_w_knull(struct json_w *w, const char *key);

/* Appends s (n bytes) as a quoted, escaped JSON string to out. */
void json_escape_str(struct buf *out, const char *s, size_t n);
/* True when s[0..n) is valid UTF-8 (RFC 3629). */
bool json_utf8_valid(const char *s, size_t n);

#endif
