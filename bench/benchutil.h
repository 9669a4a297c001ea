/* Shared by ssebench and ssepub: URL templates, channel files, clocks,
 * extra headers, descriptor limits. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct url_tmpl {
    struct sockaddr_in addr;   /* numeric IPv4 host (loopback) */
    char host[80];             /* the Host header: host[:port] */
    char *path;                /* with "{chan}" where a channel goes */
};

/* http://A.B.C.D[:port]/path...; false (message on stderr) otherwise. */
bool url_parse(const char *url, struct url_tmpl *out);
/* The path with every "{chan}" replaced by chan (malloc'd). */
char *url_path(const struct url_tmpl *u, const char *chan);

/* The channel names of file, one a line (blank lines skipped). */
char **channels_read(const char *file, int *n);

/* "Name: value" lines joined as "Name: value\r\n"... (grown). */
struct headers {
    char *text;
    size_t len;
};
bool headers_add(struct headers *h, const char *line);

uint64_t now_ns(void);        /* CLOCK_REALTIME */
uint64_t mono_ns(void);       /* CLOCK_MONOTONIC */
/* Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit. */
long raise_nofile(void);

/* Whole-string number parsers; false on junk. */
bool parse_double(const char *s, double *out);
/* The number of option --name, at least min; exits 2 with a message
 * otherwise. */
double bench_num_arg(const char *name, const char *v, double min);
bool parse_long(const char *s, long *out);

#endif
