/* upload: a request body streamed to a temp file as it arrives (routes
 * flagged ROUTE_STREAM_BODY or ROUTE_STREAM_RAW), never held whole in
 * memory. The sha256 and the first bytes (for sniffing) are taken on the
 * way. A multipart/form-data body (STREAM_BODY only) is parsed
 * incrementally and only the content of its part named `file` goes to the
 * file; any other body is the file itself.
 *
 * Life: http.c creates it when the head of such a request is complete
 * (upload_new), feeds each body chunk (upload_feed), finishes it when the
 * body is complete (upload_finish) and hands it to the req (r->upload),
 * which frees it with the request. The temp file is removed on free
 * unless a handler moved it away (upload_release_path). */
#ifndef CORRAL_UPLOAD_H
#define CORRAL_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/multipart.h"

#define UPLOAD_HEAD_MAX 512
#define UPLOAD_FILENAME_MAX 255

struct upload {
    int fd;                        /* the temp file; -1 once finished */
    char path[512];                /* the temp file; "" once released */
    uint64_t size;                 /* bytes of file content */
    uint64_t body_bytes;           /* bytes of body (multipart framing) */
    uint64_t limit;                /* of size; over it: 413 */
    void *sha;                     /* mbedtls sha256 context */
    char sha256[65];               /* hex, after upload_finish */
    unsigned char head[UPLOAD_HEAD_MAX];
    size_t head_len;
    bool multipart;
    struct multipart mp;
    int file_part;                 /* 0 not seen, 1 inside, 2 done */
    char filename[UPLOAD_FILENAME_MAX + 1]; /* sanitised; "" if none */
    /* An error met while streaming, answered once the body is complete
     * (the connection stays usable): status 0 when none. */
    int status;
    const char *code;
    char detail[160];
};

/* Opens a temp file under <data_dir>/tmp for a body whose head carried
 * content_type (may be NULL); allow_multipart for attachment routes.
 * NULL when no temp file can be made (logged). Owner: the caller
 * (upload_free). */
struct upload *upload_new(const char *data_dir, const char *content_type,
                          bool allow_multipart, uint64_t limit);
/* Consumes len body bytes. -1 only when the file grew over the limit
 * (the caller answers 413 at once); other errors are recorded. */
int upload_feed(struct upload *u, const char *data, size_t len);
/* At the end of the body: closes the file, fixes sha256, checks the
 * multipart framing and that a `file` part came. */
void upload_finish(struct upload *u);
/* The temp file was moved away: free no longer removes it. */
void upload_release_path(struct upload *u);
void upload_free(struct upload *u);

/* The content type of a file from its first bytes (n of them; complete:
 * they are the whole file): png, jpeg, gif, webp, pdf, zip, gzip,
 * text/plain; charset=utf-8 for UTF-8 text without control bytes, else
 * application/octet-stream. */
const char *upload_sniff(const unsigned char *head, size_t n, bool complete);
/* Makes a client's file name safe in place: the last '/'- or
 * '\\'-separated part, NUL and control bytes dropped, leading dots
 * dropped, invalid UTF-8 replaced by '_', cut to 255 bytes on a
 * character boundary. May leave "". */
void upload_sanitize_name(char *name);

#endif
