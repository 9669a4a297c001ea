/* json: the RFC 8259 reader (the writer is json_writer.c).
 *
 * jsmn only tokenizes, and it accepts much that RFC 8259 does not, so
 * json_parse() runs in three steps:
 *   1. A walker (an iterative RFC 8259 parser that allocates nothing but its
 *      nesting stack) checks the grammar, every string's escapes and UTF-8,
 *      and the depth and token limits. It counts the tokens exactly.
 *   2. jsmn tokenizes into an array of exactly that many tokens.
 *   3. The walker runs again and checks that each jsmn token is the value or
 *      key it found: type, bounds, parent and size (string contents, already
 *      validated, are only skipped). Meanwhile it fills a child index, so
 *      that lookups never scan subtrees: json_at and json_member are O(1),
 *      json_get is linear in the object's member count.
 * Only then is the document handed out, so every accessor may rely on the
 * tokens and on the text being valid. A document costs the text plus 28
 * bytes per token; throughput is roughly 100 MB/s (about 8 ms for a
 * 1 MiB document), so large limits belong off the loop. */
#include "corral/base64.h"
#include "corral/json.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "corral/mem.h"

/* Must match src/core/jsmn_impl.c, which compiles jsmn: the flags change the
 * layout of jsmntok_t. */
#define JSMN_HEADER
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>

const struct json_limits json_default_limits = {
    .max_bytes = 1024 * 1024,
    .max_depth = 32,
    .max_tokens = 65536,
};

struct json_doc {
    char *text;     /* the source, then ' ' and NUL (see doc_tokenize) */
    jsmntok_t *tok; /* ntok tokens in document order; the root is 0 */
    int ntok;
    int *first; /* per container token: index of its first child in kids */
    int *kids;  /* children per container, contiguous: array elements,
                 * or object keys (a key's value is always key + 1) */
};

/* Where the walker is: what may come next in the innermost container. */
enum walk_state {
    WS_ROOT,      /* the root value */
    WS_DONE,      /* nothing: the root value is complete */
    WS_ARR_FIRST, /* after '[': a value or ']' */
    WS_ARR_VALUE, /* after ',': a value */
    WS_ARR_NEXT,  /* after a value: ',' or ']' */
    WS_OBJ_FIRST, /* after '{': a key or '}' */
    WS_OBJ_KEY,   /* after ',': a key */
    WS_OBJ_COLON, /* after a key: ':' */
    WS_OBJ_VALUE, /* after ':': a value */
    WS_OBJ_NEXT,  /* after a value: ',' or '}' */
};

struct walk_frame {
    enum walk_state st;
    int tok; /* the container's token; -1 in the root frame */
    int key; /* the object's latest key token */
    int n;   /* elements or keys seen so far */
};

struct walk {
    const unsigned char *s;
    size_t len, pos;
    int max_depth, max_tokens;
    int ntok;               /* values and keys seen */
    struct walk_frame *stk; /* stk[0] is the root frame */
    int sp, cap;            /* sp is the current nesting depth */
    const char *msg;        /* static error description */
    /* Pass 2 only (jt != NULL): the tokens to check and the index to fill. */
    const jsmntok_t *jt;
    int njt;
    int *first, *kids;
    int nkids;
};

static int walk_fail(struct walk *w, int err, const char *msg)
{
    w->msg = msg;
    return err;
}

/* Pass 2 found a jsmn token that does not match the grammar. Pass 1 has
 * accepted the text by then, so this means jsmn and the walker disagree
 * about valid JSON; the document is rejected rather than trusted. */
static int walk_mismatch(struct walk *w)
{
    return walk_fail(w, JSON_E_SYNTAX, "tokenizer disagrees with the grammar");
}

/* The four hex digits at p (which must be readable), or -1. */
static long hex4(const unsigned char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_digit(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* Checks the \u escape at s[i] (a backslash followed by 'u') and any low
 * surrogate escape that must follow it; advances *i past both. */
static int scan_uescape(struct walk *w, size_t *i)
{
    const unsigned char *s = w->s;
    long hi, lo;

    if (w->len - *i < 6 || (hi = hex4(s + *i + 2)) < 0)
        return walk_fail(w, JSON_E_SYNTAX, "bad \\u escape");
    *i += 6;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return walk_fail(w, JSON_E_UTF8, "unpaired low surrogate escape");
    if (hi < 0xD800 || hi > 0xDBFF)
        return 0;
    if (w->len - *i < 2 || s[*i] != '\\' || s[*i + 1] != 'u')
        return walk_fail(w, JSON_E_UTF8, "unpaired high surrogate escape");
    if (w->len - *i < 6 || (lo = hex4(s + *i + 2)) < 0)
        return walk_fail(w, JSON_E_SYNTAX, "bad \\u escape");
    if (lo < 0xDC00 || lo > 0xDFFF)
        return walk_fail(w, JSON_E_UTF8, "unpaired high surrogate escape");
    *i += 6;
    return 0;
}

static int scan_escape(struct walk *w, size_t *i)
{
    if (*i + 1 >= w->len)
        return walk_fail(w, JSON_E_SYNTAX, "unterminated string");
    switch (w->s[*i + 1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't': *i += 2; return 0;
    case 'u': return scan_uescape(w, i);
    default: return walk_fail(w, JSON_E_SYNTAX, "bad escape in string");
    }
}

/* Validates the string whose opening quote is at w->pos and stores the
 * position of its closing quote in *close. Bytes >= 0x80 are checked a run
 * at a time: in valid UTF-8 a maximal run of such bytes is a sequence of
 * whole multibyte characters, since those contain no ASCII bytes. */
static int scan_string(struct walk *w, size_t *close)
{
    const unsigned char *s = w->s;
    size_t i = w->pos + 1, j;
    int rc;

    if (w->jt) { /* pass 2: pass 1 has validated the content */
        while (i < w->len && s[i] != '"')
            i += s[i] == '\\' ? 2 : 1;
    }
    while (i < w->len) {
        unsigned char c = s[i];
        if (c == '"') {
            *close = i;
            return 0;
        } else if (c == '\\') {
            if ((rc = scan_escape(w, &i)) != 0)
                return rc;
        } else if (c < 0x20) {
            return walk_fail(w, JSON_E_SYNTAX, "control character in string");
        } else if (c >= 0x80) {
            for (j = i; j < w->len && s[j] >= 0x80; j++)
                ;
            if (!json_utf8_valid((const char *)s + i, j - i))
                return walk_fail(w, JSON_E_UTF8, "invalid UTF-8 in string");
            i = j;
        } else {
            i++;
        }
    }
    return walk_fail(w, JSON_E_SYNTAX, "unterminated string");
}

static size_t scan_digits(const unsigned char *s, size_t i, size_t len)
{
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 * Returns the end of the number at s[i], or i when there is none. */
static size_t scan_number(const unsigned char *s, size_t i, size_t len)
{
    size_t start = i, j;

    if (i < len && s[i] == '-')
        i++;
    if (i >= len || s[i] < '0' || s[i] > '9')
        return start;
    i = s[i] == '0' ? i + 1 : scan_digits(s, i, len);
    if (i < len && s[i] == '.') {
        if ((j = scan_digits(s, i + 1, len)) == i + 1)
            return start;
        i = j;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if ((j = scan_digits(s, i, len)) == i)
            return start;
        i = j;
    }
    return i;
}

/* A literal or number at s[i]: returns its end, or i when there is none. */
static size_t scan_primitive(const unsigned char *s, size_t i, size_t len)
{
    const char *lit;
    size_t n;

    switch (s[i]) {
    case 't': lit = "true"; break;
    case 'f': lit = "false"; break;
    case 'n': lit = "null"; break;
    default: return scan_number(s, i, len);
    }
    n = strlen(lit);
    return len - i >= n && memcmp(s + i, lit, n) == 0 ? i + n : i;
}

/* Counts a value or key and, in pass 2, checks that jsmn's next token is
 * exactly it. close is the end offset jsmn records (-1 for containers, whose
 * end and size are checked when they close); size is 1 for keys (jsmn hangs
 * the value on the key) and 0 for scalar values. */
static int walk_token(struct walk *w, jsmntype_t type, size_t start, long close,
                      int parent, int size)
{
    const jsmntok_t *t;

    if (w->ntok >= w->max_tokens)
        return walk_fail(w, JSON_E_TOKENS, "too many tokens");
    if (!w->jt) {
        w->ntok++;
        return 0;
    }
    if (w->ntok >= w->njt)
        return walk_mismatch(w);
    t = &w->jt[w->ntok++];
    if (t->type != type || t->start != (long)start || t->parent != parent)
        return walk_mismatch(w);
    if (close >= 0 && (t->end != close || t->size != size))
        return walk_mismatch(w);
    return 0;
}

/* Records token tok as the next child of the container in frame f. */
static int walk_child(struct walk *w, struct walk_frame *f, int tok)
{
    if (w->jt && f->tok >= 0) {
        if (f->n >= w->jt[f->tok].size)
            return walk_mismatch(w);
        w->kids[w->first[f->tok] + f->n] = tok;
    }
    f->n++;
    return 0;
}

/* A value just completed in the container of frame f. */
static void walk_value_done(struct walk_frame *f)
{
    switch (f->st) {
    case WS_ROOT: f->st = WS_DONE; break;
    case WS_ARR_FIRST:
    case WS_ARR_VALUE: f->st = WS_ARR_NEXT; break;
    case WS_OBJ_VALUE: f->st = WS_OBJ_NEXT; break;
    case WS_DONE:
    case WS_ARR_NEXT:
    case WS_OBJ_FIRST:
    case WS_OBJ_KEY:
    case WS_OBJ_COLON:
    case WS_OBJ_NEXT: break; /* no value can complete in these states */
    }
}

/* Pass 2: reserves the kids slots of container tok, as many as jsmn says it
 * has; walk_close() checks later that this count was right. */
static int walk_reserve(struct walk *w, int tok)
{
    int size = w->jt[tok].size;

    if (size < 0 || size > w->njt - w->nkids)
        return walk_mismatch(w);
    w->first[tok] = w->nkids;
    w->nkids += size;
    return 0;
}

static int walk_open(struct walk *w, int parent)
{
    struct walk_frame *f = &w->stk[w->sp];
    bool obj = w->s[w->pos] == '{';
    int tok = w->ntok, rc;

    rc = walk_token(w, obj ? JSMN_OBJECT : JSMN_ARRAY, w->pos, -1, parent, 0);
    if (rc != 0)
        return rc;
    if (w->sp >= w->max_depth)
        return walk_fail(w, JSON_E_DEPTH, "nesting too deep");
    if (f->st != WS_OBJ_VALUE && (rc = walk_child(w, f, tok)) != 0)
        return rc;
    if (w->jt && (rc = walk_reserve(w, tok)) != 0)
        return rc;
    if (w->sp + 1 >= w->cap) {
        w->cap *= 2;
        w->stk = xrealloc(w->stk, (size_t)w->cap * sizeof(*w->stk));
    }
    w->stk[++w->sp] = (struct walk_frame){
        .st = obj ? WS_OBJ_FIRST : WS_ARR_FIRST, .tok = tok, .key = -1};
    w->pos++;
    return 0;
}

static int walk_close(struct walk *w)
{
    const struct walk_frame *f = &w->stk[w->sp];

    if (w->jt) {
        const jsmntok_t *t = &w->jt[f->tok];
        if (t->end != (long)w->pos + 1 || t->size != f->n)
            return walk_mismatch(w);
    }
    w->pos++;
    w->sp--;
    walk_value_done(&w->stk[w->sp]);
    return 0;
}

static int walk_value(struct walk *w)
{
    struct walk_frame *f = &w->stk[w->sp];
    int parent = f->st == WS_OBJ_VALUE ? f->key : f->tok;
    int tok = w->ntok, rc;
    size_t end;

    if (w->s[w->pos] == '{' || w->s[w->pos] == '[')
        return walk_open(w, parent);
    if (w->s[w->pos] == '"') {
        if ((rc = scan_string(w, &end)) != 0)
            return rc;
        rc = walk_token(w, JSMN_STRING, w->pos + 1, (long)end, parent, 0);
        end++;
    } else {
        end = scan_primitive(w->s, w->pos, w->len);
        if (end == w->pos)
            return walk_fail(w, JSON_E_SYNTAX, "expected a value");
        rc = walk_token(w, JSMN_PRIMITIVE, w->pos, (long)end, parent, 0);
    }
    if (rc != 0)
        return rc;
    if (f->st != WS_OBJ_VALUE && (rc = walk_child(w, f, tok)) != 0)
        return rc;
    w->pos = end;
    walk_value_done(f);
    return 0;
}

static int walk_key(struct walk *w)
{
    struct walk_frame *f = &w->stk[w->sp];
    int tok = w->ntok, rc;
    size_t end;

    if (w->s[w->pos] != '"')
        return walk_fail(w, JSON_E_SYNTAX, "expected a string key");
    if ((rc = scan_string(w, &end)) != 0)
        return rc;
    rc = walk_token(w, JSMN_STRING, w->pos + 1, (long)end, f->tok, 1);
    if (rc != 0 || (rc = walk_child(w, f, tok)) != 0)
        return rc;
    f->key = tok;
    f->st = WS_OBJ_COLON;
    w->pos = end + 1;
    return 0;
}

/* Consumes the separator c, which the grammar requires here. */
static int walk_punct(struct walk *w, char c, enum walk_state next,
                      const char *msg)
{
    if (w->s[w->pos] != (unsigned char)c)
        return walk_fail(w, JSON_E_SYNTAX, msg);
    w->pos++;
    w->stk[w->sp].st = next;
    return 0;
}

/* One grammar step at a non-whitespace byte. */
static int walk_step(struct walk *w)
{
    const char *more = "expected ',' or a closing bracket";
    unsigned char c = w->s[w->pos];

    switch (w->stk[w->sp].st) {
    case WS_ROOT:
    case WS_ARR_VALUE:
    case WS_OBJ_VALUE: return walk_value(w);
    case WS_ARR_FIRST: return c == ']' ? walk_close(w) : walk_value(w);
    case WS_OBJ_FIRST: return c == '}' ? walk_close(w) : walk_key(w);
    case WS_OBJ_KEY: return walk_key(w);
    case WS_OBJ_COLON:
        return walk_punct(w, ':', WS_OBJ_VALUE, "expected ':' after a key");
    case WS_ARR_NEXT:
        if (c == ']')
            return walk_close(w);
        return walk_punct(w, ',', WS_ARR_VALUE, more);
    case WS_OBJ_NEXT:
        if (c == '}')
            return walk_close(w);
        return walk_punct(w, ',', WS_OBJ_KEY, more);
    case WS_DONE: break;
    }
    return walk_fail(w, JSON_E_SYNTAX, "trailing data after the value");
}

static void walk_skip_ws(struct walk *w)
{
    while (w->pos < w->len) {
        unsigned char c = w->s[w->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        w->pos++;
    }
}

/* Runs one pass over the whole text; jt selects pass 1 (NULL) or pass 2. */
static int walk_run(struct walk *w, const jsmntok_t *jt, int njt)
{
    int rc;

    w->jt = jt;
    w->njt = njt;
    w->nkids = 0;
    w->pos = 0;
    w->ntok = 0;
    w->sp = 0;
    w->stk[0] = (struct walk_frame){.st = WS_ROOT, .tok = -1, .key = -1};
    for (;;) {
        walk_skip_ws(w);
        if (w->stk[0].st == WS_DONE)
            break;
        if (w->pos >= w->len && w->ntok == 0)
            return walk_fail(w, JSON_E_SYNTAX, "empty document");
        if (w->pos >= w->len)
            return walk_fail(w, JSON_E_SYNTAX, "unexpected end of input");
        if ((rc = walk_step(w)) != 0)
            return rc;
    }
    if (w->pos != w->len)
        return walk_fail(w, JSON_E_SYNTAX, "trailing data after the value");
    if (jt && w->ntok != njt)
        return walk_mismatch(w);
    return 0;
}

void json_doc_free(struct json_doc *doc)
{
    if (!doc)
        return;
    free(doc->text);
    free(doc->tok);
    free(doc->first); /* kids shares this block */
    free(doc);
}

/* Steps 2 and 3 of json_parse(), for text that passed step 1 with ntok
 * tokens. In strict mode jsmn requires a delimiter after a primitive, so a
 * scalar root such as `1` would be incomplete at the end of the input: the
 * copy gets a trailing space, which jsmn is given but the walker is not. */
static int doc_tokenize(struct walk *w, const char *src, size_t len,
                        struct json_doc **out)
{
    struct json_doc *doc = xcalloc(1, sizeof(*doc));
    int ntok = w->ntok, rc;
    jsmn_parser p;

    doc->text = xmalloc(len + 2);
    if (len > 0)
        memcpy(doc->text, src, len);
    doc->text[len] = ' ';
    doc->text[len + 1] = '\0';
    doc->ntok = ntok;
    doc->tok = xcalloc((size_t)ntok, sizeof(*doc->tok));
    doc->first = xcalloc(2 * (size_t)ntok, sizeof(int));
    doc->kids = doc->first + ntok;
    jsmn_init(&p);
    if (jsmn_parse(&p, doc->text, len + 1, doc->tok, (unsigned)ntok) != ntok) {
        rc = walk_mismatch(w);
    } else {
        w->s = (const unsigned char *)doc->text;
        w->first = doc->first;
        w->kids = doc->kids;
        rc = walk_run(w, doc->tok, ntok);
    }
    if (rc != 0) {
        json_doc_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

int json_parse(const char *src, size_t len, const struct json_limits *lim,
               struct json_doc **out, const char **errmsg)
{
    struct walk w = {0};
    int rc;

    *out = NULL;
    if (!lim)
        lim = &json_default_limits;
    if (len > lim->max_bytes || len > INT_MAX - 2) {
        if (errmsg)
            *errmsg = "document too large";
        return JSON_E_SIZE;
    }
    w.s = (const unsigned char *)src;
    w.len = len;
    w.max_depth = lim->max_depth > 0 ? lim->max_depth : 0;
    w.max_tokens = lim->max_tokens > 0 ? lim->max_tokens : 0;
    w.cap = 16;
    w.stk = xmalloc((size_t)w.cap * sizeof(*w.stk));
    rc = walk_run(&w, NULL, 0);
    if (rc == 0)
        rc = doc_tokenize(&w, src, len, out);
    free(w.stk);
    if (errmsg)
        *errmsg = rc == 0 ? NULL : w.msg;
    return rc;
}

/* ---- accessors: the document is valid, so they trust the tokens ---- */

static const jsmntok_t *doc_tok(const struct json_doc *doc, int tok)
{
    return doc && tok >= 0 && tok < doc->ntok ? &doc->tok[tok] : NULL;
}

enum json_type json_type(const struct json_doc *doc, int tok)
{
    const jsmntok_t *t = doc_tok(doc, tok);

    if (!t)
        return JSON_NONE;
    switch (t->type) {
    case JSMN_OBJECT: return JSON_OBJECT;
    case JSMN_ARRAY: return JSON_ARRAY;
    case JSMN_STRING: return JSON_STRING;
    case JSMN_PRIMITIVE: break;
    case JSMN_UNDEFINED: return JSON_NONE;
    }
    switch (doc->text[t->start]) {
    case 't': return JSON_TRUE;
    case 'f': return JSON_FALSE;
    case 'n': return JSON_NULL;
    default: return JSON_NUMBER;
    }
}

static bool is_container(const struct json_doc *doc, int tok)
{
    enum json_type t = json_type(doc, tok);
    return t == JSON_OBJECT || t == JSON_ARRAY;
}

int json_len(const struct json_doc *doc, int tok)
{
    return is_container(doc, tok) ? doc->tok[tok].size : 0;
}

/* The pos-th child of a container (element, or key of a member), or -1. */
static int doc_child(const struct json_doc *doc, int tok, enum json_type type,
                     int pos)
{
    if (json_type(doc, tok) != type || pos < 0 || pos >= doc->tok[tok].size)
        return -1;
    return doc->kids[doc->first[tok] + pos];
}

int json_at(const struct json_doc *doc, int arr, int idx)
{
    return doc_child(doc, arr, JSON_ARRAY, idx);
}

int json_member(const struct json_doc *doc, int obj, int i, int *key_tok)
{
    int key = doc_child(doc, obj, JSON_OBJECT, i);

    if (key_tok)
        *key_tok = key;
    return key < 0 ? -1 : key + 1;
}

/* Encodes cp (a scalar value, never a surrogate) as UTF-8. */
static size_t utf8_encode(unsigned long cp, char *out)
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

/* Decodes the unit at *pp in a validated string (a raw byte or one escape,
 * a surrogate pair being one) into out and advances *pp. Returns the number
 * of bytes written, 1..4, never more than the bytes consumed. */
static size_t unescape_unit(const char **pp, char *out)
{
    const unsigned char *p = (const unsigned char *)*pp;
    unsigned long cp;

    if (p[0] != '\\') {
        out[0] = (char)p[0];
        *pp += 1;
        return 1;
    }
    *pp += 2;
    switch (p[1]) {
    case 'b': out[0] = '\b'; return 1;
    case 'f': out[0] = '\f'; return 1;
    case 'n': out[0] = '\n'; return 1;
    case 'r': out[0] = '\r'; return 1;
    case 't': out[0] = '\t'; return 1;
    case 'u': break;
    default: out[0] = (char)p[1]; return 1; /* '"', '\\' or '/' */
    }
    cp = (unsigned long)hex4(p + 2);
    *pp += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned long lo = (unsigned long)hex4(p + 8);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        *pp += 6;
    }
    return utf8_encode(cp, out);
}

char *json_str_dup(const struct json_doc *doc, int tok, size_t *len)
{
    const char *p, *end;
    char *dst;
    size_t n = 0;

    if (json_type(doc, tok) != JSON_STRING)
        return NULL;
    p = doc->text + doc->tok[tok].start;
    end = doc->text + doc->tok[tok].end;
    /* Unescaping never grows the text, so the raw length is enough. */
    dst = xmalloc((size_t)(end - p) + 1);
    while (p < end)
        n += unescape_unit(&p, dst + n);
    dst[n] = '\0';
    if (len)
        *len = n;
    return dst;
}

/* Compares the unescaped string tok with s[0..n) without allocating. */
static bool str_eq_n(const struct json_doc *doc, int tok, const char *s,
                     size_t n)
{
    const char *p, *end;
    char u[4];
    size_t i = 0, k;

    if (json_type(doc, tok) != JSON_STRING)
        return false;
    p = doc->text + doc->tok[tok].start;
    end = doc->text + doc->tok[tok].end;
    if (!memchr(p, '\\', (size_t)(end - p)))
        return (size_t)(end - p) == n && memcmp(p, s, n) == 0;
    while (p < end) {
        k = unescape_unit(&p, u);
        if (k > n - i || memcmp(u, s + i, k) != 0)
            return false;
        i += k;
    }
    return i == n;
}

bool json_str_eq(const struct json_doc *doc, int tok, const char *s)
{
    return s && str_eq_n(doc, tok, s, strlen(s));
}

/* Scans the keys from the last one, so that the last duplicate wins. */
static int get_n(const struct json_doc *doc, int obj, const char *key, size_t n)
{
    if (json_type(doc, obj) != JSON_OBJECT)
        return -1;
    for (int i = doc->tok[obj].size - 1; i >= 0; i--) {
        int k = doc->kids[doc->first[obj] + i];
        if (str_eq_n(doc, k, key, n))
            return k + 1;
    }
    return -1;
}

int json_get(const struct json_doc *doc, int obj, const char *key)
{
    return key ? get_n(doc, obj, key, strlen(key)) : -1;
}

/* An array index in a path: 1 to 9 digits, no sign, no leading zero. */
static int path_index(const char *s, size_t n)
{
    int v = 0;

    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* An empty path names tok itself. Each part is a key for objects (so "2"
 * and "" are keys there) and an index for arrays; keys containing '.' cannot
 * be reached. */
int json_path(const struct json_doc *doc, int tok, const char *path)
{
    if (!path || json_type(doc, tok) == JSON_NONE)
        return -1;
    if (*path == '\0')
        return tok;
    for (;;) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (json_type(doc, tok) == JSON_ARRAY)
            tok = json_at(doc, tok, path_index(path, n));
        else
            tok = get_n(doc, tok, path, n);
        if (tok < 0 || !dot)
            return tok;
        path = dot + 1;
    }
}

int json_get_bool(const struct json_doc *doc, int tok, bool *out)
{
    enum json_type t = json_type(doc, tok);

    if (t != JSON_TRUE && t != JSON_FALSE)
        return -1;
    *out = t == JSON_TRUE;
    return 0;
}

/* Accumulates negatively so that INT64_MIN needs no special case. */
int json_get_int64(const struct json_doc *doc, int tok, int64_t *out)
{
    const char *p, *end;
    int64_t v = 0;
    bool neg;

    if (json_type(doc, tok) != JSON_NUMBER)
        return -1;
    p = doc->text + doc->tok[tok].start;
    end = doc->text + doc->tok[tok].end;
    if ((neg = *p == '-'))
        p++;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1; /* fraction or exponent */
        int d = *p - '0';
        if (v < INT64_MIN / 10 ||
            (v == INT64_MIN / 10 && d > -(INT64_MIN % 10)))
            return -1;
        v = v * 10 - d;
    }
    if (!neg && v == INT64_MIN)
        return -1;
    *out = neg ? v : -v;
    return 0;
}

/* strtod follows LC_NUMERIC, so it runs in an explicit C locale (glibc
 * returns its static C locale object here; nothing is allocated). The number
 * was validated, so strtod must consume exactly the token; overflow to
 * infinity is out of range, underflow rounds towards zero and is accepted. */
int json_get_double(const struct json_doc *doc, int tok, double *out)
{
    const char *p, *end;
    char *stop;
    locale_t c;
    double v;

    if (json_type(doc, tok) != JSON_NUMBER)
        return -1;
    p = doc->text + doc->tok[tok].start;
    end = doc->text + doc->tok[tok].end;
    if ((c = newlocale(LC_ALL_MASK, "C", (locale_t)0)) == (locale_t)0)
        return -1;
    v = strtod_l(p, &stop, c);
    freelocale(c);
    if (stop != end || isinf(v))
        return -1;
    *out = v;
    return 0;
}

/* Strings include their quotes, so that the text is a JSON value. */
const char *json_raw(const struct json_doc *doc, int tok, size_t *len)
{
    const jsmntok_t *t = doc_tok(doc, tok);
    int q;

    if (!t) {
        if (len)
            *len = 0;
        return NULL;
    }
    q = t->type == JSMN_STRING;
    if (len)
        *len = (size_t)(t->end - t->start + 2 * q);
    return doc->text + t->start - q;
}
