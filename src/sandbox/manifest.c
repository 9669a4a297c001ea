/* The manifest line format (include/corral/manifest.h). */
#include "corral/manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool needs_escape(unsigned char c)
{
    return c <= ' ' || c == '%' || c == 0x7f;
}

/* Appends s percent-encoded to out (sized by the caller: 3 per byte). */
static char *encode_to(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (needs_escape(*p)) {
            *out++ = '%';
            *out++ = hex[*p >> 4];
            *out++ = hex[*p & 15];
        } else {
            *out++ = (char)*p;
        }
    }
    *out = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes n bytes of s; NULL when an escape is malformed or yields NUL. */
static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n) {
            free(out);
            return NULL;
        }
        int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
        if (a < 0 || b < 0 || (a == 0 && b == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(a << 4 | b);
        i += 2;
    }
    *o = '\0';
    return out;
}

char *mf_format(const struct mf_entry *e)
{
    size_t n = 128 + 3 * strlen(e->path) +
               (e->target ? 3 * strlen(e->target) : 0);
    char *line = malloc(n);
    if (!line)
        abort();
    int k = snprintf(line, n, "%c %c %o %" PRId64 " %" PRId64 " %" PRIu64
                     " %s ", e->kind, e->root, e->mode & 07777u, e->size,
                     e->mtime_ns, e->ino, e->kind == 'f' ? e->sha : "-");
    char *end = encode_to(line + k, e->path);
    if (e->kind == 'l') {
        *end++ = ' ';
        encode_to(end, e->target ? e->target : "");
    }
    return line;
}

bool mf_path_ok(const char *path)
{
    if (!path[0] || path[0] == '/')
        return false;
    for (const char *p = path; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!slash)
            break;
        p = slash + 1;
        if (!*p)
            return false; /* a trailing slash */
    }
    return true;
}

static bool is_sha(const char *s)
{
    if (strlen(s) != MANIFEST_SHA_LEN)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* Splits line into at most max space-separated fields (in place). */
static int split(char *line, char **f, int max)
{
    int n = 0;
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    return n;
}

static bool parse_num(const char *s, int base, int64_t min, uint64_t *out)
{
    char *end;
    if (!*s || (*s == '-' && min >= 0))
        return false;
    if (*s == '-') {
        long long v = strtoll(s, &end, base);
        *out = (uint64_t)v;
    } else {
        *out = strtoull(s, &end, base);
    }
    return *end == '\0';
}

static bool parse_fields(char **f, int n, struct mf_entry *e)
{
    uint64_t mode, size, mtime, ino;
    if (n < 8 || strlen(f[0]) != 1 || strlen(f[1]) != 1)
        return false;
    e->kind = f[0][0];
    e->root = f[1][0];
    if (!strchr("fdl", e->kind) || !strchr("wh", e->root) ||
        n != (e->kind == 'l' ? 9 : 8))
        return false;
    if (!parse_num(f[2], 8, 0, &mode) || mode > 07777 ||
        !parse_num(f[3], 10, 0, &size) || size > INT64_MAX ||
        !parse_num(f[4], 10, -1, &mtime) || !parse_num(f[5], 10, 0, &ino))
        return false;
    e->mode = (unsigned)mode;
    e->size = (int64_t)size;
    e->mtime_ns = (int64_t)mtime;
    e->ino = ino;
    if (e->kind == 'f' ? !is_sha(f[6]) : strcmp(f[6], "-") != 0)
        return false;
    snprintf(e->sha, sizeof(e->sha), "%s", e->kind == 'f' ? f[6] : "");
    e->path = decode(f[7], strlen(f[7]));
    if (!e->path || !mf_path_ok(e->path))
        return false;
    if (e->kind == 'l') {
        e->target = decode(f[8], strlen(f[8]));
        if (!e->target || !e->target[0])
            return false;
    }
    return true;
}

bool mf_parse(const char *line, struct mf_entry *out)
{
    memset(out, 0, sizeof(*out));
    char *copy = strdup(line);
    if (!copy)
        abort();
    char *f[10];
    int n = split(copy, f, 10);
    bool ok = parse_fields(f, n, out);
    free(copy);
    if (!ok)
        mf_entry_free(out);
    return ok;
}

void mf_entry_free(struct mf_entry *e)
{
    free(e->path);
    free(e->target);
    memset(e, 0, sizeof(*e));
}

int mf_cmp(const void *a, const void *b)
{
    const struct mf_entry *x = a, *y = b;
    if (x->root != y->root)
        return x->root < y->root ? -1 : 1;
    return strcmp(x->path, y->path);
}
