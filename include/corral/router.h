/* router: matches a method and path against a static route table.
 * Patterns are literal segments and `{name}` parameters, each parameter
 * matching one non-empty segment. Pure functions over the table: no
 * allocation, unit-tested without a server. */
#ifndef CORRAL_ROUTER_H
#define CORRAL_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#define ROUTER_MAX_PARAMS 4
#define ROUTER_MAX_SEGMENTS 16
#define ROUTER_PARAM_MAX 128 /* longest accepted parameter value */

enum http_method {
    HTTP_GET = 0,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_PATCH,
    HTTP_DELETE,
    HTTP_OPTIONS,
    HTTP_OTHER,
};

struct req;
typedef void (*route_handler)(struct req *r);

/* Route flags. */
enum {
    ROUTE_AUTH = 1 << 0,       /* a valid access token or API key */
    ROUTE_ADMIN = 1 << 1,      /* ... of an admin (implies ROUTE_AUTH) */
    ROUTE_JSON_BODY = 1 << 2,  /* the body must be application/json */
    ROUTE_QUERY_TOKEN = 1 << 3, /* ?access_token= accepted (stream, ws) */
    ROUTE_NO_API = 1 << 4,     /* not part of the OpenAPI document */
    ROUTE_JSON_OPTIONAL = 1 << 5, /* like JSON_BODY, but may be empty */
    /* The body is streamed to a temp file as it arrives (r->upload,
     * include/corral/upload.h), not collected in r->body: STREAM_BODY
     * takes multipart/form-data or a raw body up to attachment_max_bytes,
     * STREAM_RAW a raw body up to workspace_put_max_bytes. */
    ROUTE_STREAM_BODY = 1 << 6,
    ROUTE_STREAM_RAW = 1 << 7,
};

struct route {
    enum http_method method;
    const char *pattern; /* "/api/v1/chats/{id}" */
    route_handler handler;
    unsigned flags;
    const char *name;    /* stable label for metrics and logs */
};

struct route_params {
    int n;
    struct {
        const char *name; /* points into the pattern */
        size_t name_len;
        char value[ROUTER_PARAM_MAX + 1];
    } p[ROUTER_MAX_PARAMS];
};

enum router_result {
    ROUTER_FOUND = 0,
    ROUTER_NOT_FOUND,       /* no pattern matches the path */
    ROUTER_METHOD_MISMATCH, /* a pattern matches, but not for this method */
};

/* Finds the route for method and path (no query string; percent-decoding
 * is the caller's business). On ROUTER_FOUND sets *out and fills params.
 * HEAD matches GET routes. */
enum router_result router_match(const struct route *table, size_t n,
                                enum http_method method, const char *path,
                                const struct route **out,
                                struct route_params *params);
/* Value of parameter name, or NULL. */
const char *router_param(const struct route_params *params, const char *name);
const char *http_method_name(enum http_method m);
enum http_method http_method_parse(const char *s);
/* Writes the Allow header value for path (methods of all matching
 * patterns, comma-separated) into out. */
void router_allow(const struct route *table, size_t n, const char *path,
                  char *out, size_t outlen);

#endif
