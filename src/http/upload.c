/* Streamed request bodies (include/corral/upload.h). Writes go to a
 * local temp file in the size of evhtp's read chunks (at most a socket
 * read), so each costs one short write(2). */
#include <errno.h>
#include <fcntl.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/upload.h"

static void set_error(struct upload *u, int status, const char *code,
                      const char *detail)
{
    if (u->status)
        return; /* the first error is the one answered */
    u->status = status;
    u->code = code;
    snprintf(u->detail, sizeof(u->detail), "%s", detail);
}

/* File content: hashed, its head kept, written out. -1 over the limit. */
static int put_content(struct upload *u, const char *d, size_t n)
{
    u->size += n;
    if (u->size > u->limit)
        return -1;
    if (u->head_len < UPLOAD_HEAD_MAX) {
        size_t k = UPLOAD_HEAD_MAX - u->head_len;
        if (k > n)
            k = n;
        memcpy(u->head + u->head_len, d, k);
        u->head_len += k;
    }
    mbedtls_sha256_update_ret(u->sha, (const unsigned char *)d, n);
    while (n > 0 && u->fd >= 0 && !u->status) {
        ssize_t w = write(u->fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            log_error("upload: write %s: %s", u->path, strerror(errno));
            set_error(u, errno == ENOSPC ? 507 : 500,
                      errno == ENOSPC ? "quota_exceeded" : "internal_error",
                      "the upload could not be stored");
            break;
        }
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- multipart: only the part named `file` is kept ---- */

static int mp_on_part(void *arg, const struct multipart_part *p)
{
    struct upload *u = arg;
    if (strcmp(p->name, "file") == 0 && u->file_part == 0) {
        u->file_part = 1;
        char full[sizeof(p->filename)];
        snprintf(full, sizeof(full), "%s", p->filename);
        upload_sanitize_name(full); /* at most UPLOAD_FILENAME_MAX bytes */
        memcpy(u->filename, full, strlen(full) + 1);
    }
    return 0;
}

static int mp_on_data(void *arg, const char *d, size_t n)
{
    struct upload *u = arg;
    if (u->file_part != 1)
        return 0;
    return put_content(u, d, n) < 0 ? 1 : 0;
}

static int mp_on_end(void *arg)
{
    struct upload *u = arg;
    if (u->file_part == 1)
        u->file_part = 2;
    return 0;
}

static const struct multipart_cbs mp_cbs = {mp_on_part, mp_on_data,
                                             mp_on_end};

static bool is_multipart(const char *ct)
{
    return ct && strncasecmp(ct, "multipart/", 10) == 0;
}

struct upload *upload_new(const char *data_dir, const char *content_type,
                          bool allow_multipart, uint64_t limit)
{
    struct upload *u = xcalloc(1, sizeof(*u));
    u->limit = limit;
    u->fd = -1;
    u->sha = xmalloc(sizeof(mbedtls_sha256_context));
    mbedtls_sha256_init(u->sha);
    mbedtls_sha256_starts_ret(u->sha, 0);
    if (allow_multipart && is_multipart(content_type)) {
        char b[MULTIPART_BOUNDARY_MAX + 1];
        u->multipart = true;
        if (!multipart_boundary(content_type, b, sizeof(b)) ||
            !multipart_init(&u->mp, b, &mp_cbs, u))
            set_error(u, 400, "bad_multipart",
                      "Content-Type: multipart/form-data needs a valid "
                      "boundary");
    }
    char dir[400];
    snprintf(dir, sizeof(dir), "%s/tmp", data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        log_warn("upload: mkdir %s: %s", dir, strerror(errno));
    snprintf(u->path, sizeof(u->path), "%s/upload-XXXXXX", dir);
    u->fd = mkostemp(u->path, O_CLOEXEC);
    if (u->fd < 0) {
        log_error("upload: temp file in %s: %s", dir, strerror(errno));
        u->path[0] = '\0';
        upload_free(u);
        return NULL;
    }
    return u;
}

int upload_feed(struct upload *u, const char *data, size_t len)
{
    u->body_bytes += len;
    if (!u->multipart)
        return put_content(u, data, len);
    /* Framing and other parts count too, with room for part headers. */
    if (u->body_bytes > u->limit + 65536)
        return -1;
    if (u->status)
        return 0; /* drained until the end, answered then */
    if (multipart_feed(&u->mp, data, len) < 0) {
        if (u->size > u->limit)
            return -1;
        set_error(u, 400, "bad_multipart", u->mp.error);
    }
    return 0;
}

void upload_finish(struct upload *u)
{
    unsigned char sum[32];
    mbedtls_sha256_finish_ret(u->sha, sum);
    for (int i = 0; i < 32; i++)
        snprintf(u->sha256 + 2 * i, 3, "%02x", sum[i]);
    if (u->fd >= 0 && close(u->fd) < 0)
        set_error(u, 500, "internal_error", "the upload could not be stored");
    u->fd = -1;
    if (!u->multipart)
        return;
    if (multipart_finish(&u->mp) < 0)
        set_error(u, 400, "bad_multipart", u->mp.error);
    else if (u->file_part != 2)
        set_error(u, 422, "validation_failed",
                  "file: the multipart body has no part named file");
}

void upload_release_path(struct upload *u)
{
    u->path[0] = '\0';
}

void upload_free(struct upload *u)
{
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (u->path[0])
        unlink(u->path);
    mbedtls_sha256_free(u->sha);
    free(u->sha);
    free(u);
}

/* ---- sniffing and names ---- */

static bool starts(const unsigned char *h, size_t n, const char *magic,
                   size_t m)
{
    return n >= m && memcmp(h, magic, m) == 0;
}

/* UTF-8 text: valid (a sequence cut by the head's end is fine) and free
 * of control bytes other than tab, LF, FF, CR and ESC. */
static bool is_text(const unsigned char *h, size_t n, bool complete)
{
    for (size_t i = 0; i < n; i++)
        if (h[i] < 0x20 && !strchr("\t\n\f\r\x1b", h[i]))
            return false;
    if (json_utf8_valid((const char *)h, n))
        return true;
    if (complete)
        return false;
    for (size_t cut = 1; cut <= 3 && cut < n; cut++)
        if (json_utf8_valid((const char *)h, n - cut))
            return true;
    return false;
}

const char *upload_sniff(const unsigned char *h, size_t n, bool complete)
{
    if (starts(h, n, "\x89PNG\r\n\x1a\n", 8))
        return "image/png";
    if (starts(h, n, "\xff\xd8\xff", 3))
        return "image/jpeg";
    if (starts(h, n, "GIF87a", 6) || starts(h, n, "GIF89a", 6))
        return "image/gif";
    if (n >= 12 && starts(h, n, "RIFF", 4) && memcmp(h + 8, "WEBP", 4) == 0)
        return "image/webp";
    if (starts(h, n, "%PDF-", 5))
        return "application/pdf";
    if (starts(h, n, "PK\x03\x04", 4) || starts(h, n, "PK\x05\x06", 4))
        return "application/zip";
    if (starts(h, n, "\x1f\x8b", 2))
        return "application/gzip";
    if (n > 0 && is_text(h, n, complete))
        return "text/plain; charset=utf-8";
    return "application/octet-stream";
}

static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    size_t want = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2
                : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (want == 0 || want > n || !json_utf8_valid((const char *)s, want))
        return 0;
    return want;
}

void upload_sanitize_name(char *name)
{
    const char *base = name;
    for (const char *p = name; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    while (*base == '.' || *base == ' ')
        base++;
    size_t n = strlen(base), o = 0;
    unsigned char *out = (unsigned char *)name;
    const unsigned char *in = (const unsigned char *)base;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(in + i, n - i);
        if (k == 0 || (k == 1 && (in[i] < 0x20 || in[i] == 0x7f))) {
            if (k == 0 && o < UPLOAD_FILENAME_MAX)
                out[o++] = '_'; /* invalid UTF-8 */
            i += k ? k : 1;
            continue;
        }
        if (o + k > UPLOAD_FILENAME_MAX)
            break;
        memmove(out + o, in + i, k);
        o += k;
        i += k;
    }
    out[o] = '\0';
}
