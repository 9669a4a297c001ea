/* Segment-wise matching over a small static table. The table is scanned
 * linearly: it has a few dozen rows and each comparison stops at the first
 * differing segment, which is cheaper than building a trie at start-up. */
#include "corral/router.h"

#include <stdio.h>
#include <string.h>

static const char *const method_names[] = {
    [HTTP_GET] = "GET",       [HTTP_HEAD] = "HEAD",
    [HTTP_POST] = "POST",     [HTTP_PUT] = "PUT",
    [HTTP_PATCH] = "PATCH",   [HTTP_DELETE] = "DELETE",
    [HTTP_OPTIONS] = "OPTIONS", [HTTP_OTHER] = "OTHER",
};

const char *http_method_name(enum http_method m)
{
    return (unsigned)m <= HTTP_OTHER ? method_names[m] : "OTHER";
}

enum http_method http_method_parse(const char *s)
{
    for (int m = HTTP_GET; m < HTTP_OTHER; m++)
        if (strcmp(s, method_names[m]) == 0)
            return (enum http_method)m;
    return HTTP_OTHER;
}

/* Length of the segment starting at s (up to '/' or end). */
static size_t seg_len(const char *s)
{
    return strcspn(s, "/");
}

/* Matches path against pattern, filling params when not NULL. */
static bool match_pattern(const char *pattern, const char *path,
                          struct route_params *params)
{
    if (params)
        params->n = 0;
    while (*pattern == '/' && *path == '/') {
        pattern++;
        path++;
        size_t pl = seg_len(pattern), sl = seg_len(path);
        if (pl > 2 && pattern[0] == '{' && pattern[pl - 1] == '}') {
            if (sl == 0 || sl > ROUTER_PARAM_MAX)
                return false;
            if (params) {
                if (params->n == ROUTER_MAX_PARAMS)
                    return false;
                int i = params->n++;
                params->p[i].name = pattern + 1;
                params->p[i].name_len = pl - 2;
                memcpy(params->p[i].value, path, sl);
                params->p[i].value[sl] = '\0';
            }
        } else if (pl != sl || memcmp(pattern, path, pl) != 0) {
            return false;
        }
        pattern += pl;
        path += sl;
    }
    return *pattern == '\0' && *path == '\0';
}

static bool method_matches(enum http_method route, enum http_method req)
{
    return route == req || (req == HTTP_HEAD && route == HTTP_GET);
}

enum router_result router_match(const struct route *table, size_t n,
                                enum http_method method, const char *path,
                                const struct route **out,
                                struct route_params *params)
{
    bool path_seen = false;
    for (size_t i = 0; i < n; i++) {
        if (!match_pattern(table[i].pattern, path, NULL))
            continue;
        path_seen = true;
        if (method_matches(table[i].method, method)) {
            match_pattern(table[i].pattern, path, params);
            *out = &table[i];
            return ROUTER_FOUND;
        }
    }
    return path_seen ? ROUTER_METHOD_MISMATCH : ROUTER_NOT_FOUND;
}

const char *router_param(const struct route_params *params, const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; i < params->n; i++)
        if (params->p[i].name_len == len &&
            memcmp(params->p[i].name, name, len) == 0)
            return params->p[i].value;
    return NULL;
}

void router_allow(const struct route *table, size_t n, const char *path,
                  char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && used < outlen; i++) {
        if (!match_pattern(table[i].pattern, path, NULL))
            continue;
        const char *m = http_method_name(table[i].method);
        if (strstr(out, m)) /* GET may repeat across patterns */
            continue;
        int w = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "",
                         m);
        if (w < 0 || (size_t)w >= outlen - used)
            break;
        used += (size_t)w;
    }
}
