/* Helpers of the bench clients (see benchutil.h). */
#include "benchutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

bool url_parse(const char *url, struct url_tmpl *out)
{
    const char *p = url;
    memset(out, 0, sizeof(*out));
    if (strncmp(p, "http://", 7) != 0) {
        fprintf(stderr, "url must start with http://: %s\n", url);
        return false;
    }
    p += 7;
    const char *slash = strchr(p, '/');
    size_t hlen = slash ? (size_t)(slash - p) : strlen(p);
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        fprintf(stderr, "bad host in url: %s\n", url);
        return false;
    }
    memcpy(out->host, p, hlen);
    char ip[80];
    memcpy(ip, p, hlen);
    ip[hlen] = '\0';
    long port = 80;
    char *colon = strchr(ip, ':');
    if (colon) {
        *colon = '\0';
        if (!parse_long(colon + 1, &port) || port < 1 || port > 65535) {
            fprintf(stderr, "bad port in url: %s\n", url);
            return false;
        }
    }
    out->addr.sin_family = AF_INET;
    out->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &out->addr.sin_addr) != 1) {
        fprintf(stderr, "url host must be a numeric IPv4 address: %s\n",
                url);
        return false;
    }
    out->path = strdup(slash ? slash : "/");
    return out->path != NULL;
}

char *url_path(const struct url_tmpl *u, const char *chan)
{
    size_t clen = strlen(chan), cap = strlen(u->path) + 1;
    for (const char *s = u->path; (s = strstr(s, "{chan}")); s += 6)
        cap += clen;
    char *out = malloc(cap), *o = out;
    if (!out)
        abort();
    for (const char *s = u->path; *s;) {
        if (strncmp(s, "{chan}", 6) == 0) {
            memcpy(o, chan, clen);
            o += clen;
            s += 6;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

char **channels_read(const char *file, int *n)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "%s: %s\n", file, strerror(errno));
        return NULL;
    }
    char **list = NULL, line[512];
    int count = 0, cap = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n \t")] = '\0';
        if (!line[0])
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            list = realloc(list, sizeof(*list) * (size_t)cap);
            if (!list)
                abort();
        }
        list[count++] = strdup(line);
    }
    fclose(f);
    if (count == 0) {
        fprintf(stderr, "%s: no channels\n", file);
        free(list);
        return NULL;
    }
    *n = count;
    return list;
}

bool headers_add(struct headers *h, const char *line)
{
    const char *colon = strchr(line, ':');
    if (!colon || colon == line || strpbrk(line, "\r\n")) {
        fprintf(stderr, "--header wants 'Name: value': %s\n", line);
        return false;
    }
    size_t n = strlen(line);
    h->text = realloc(h->text, h->len + n + 3);
    if (!h->text)
        abort();
    memcpy(h->text + h->len, line, n);
    memcpy(h->text + h->len + n, "\r\n", 3);
    h->len += n + 2;
    return true;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t now_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

uint64_t mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return s[0] && !*end && errno == 0;
}

bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    *out = strtol(s, &end, 10);
    return s[0] && !*end && errno == 0;
}

double bench_num_arg(const char *name, const char *v, double min)
{
    double d;
    if (!parse_double(v, &d) || d < min) {
        fprintf(stderr, "--%s: a number >= %g, not %s\n", name, min, v);
        exit(2);
    }
    return d;
}
