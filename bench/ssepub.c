/* ssepub: publishes bench events {t_ns, pad[, seq]} at a fixed rate per
 * channel over a fixed number of keep-alive HTTP/1.1 connections, one
 * request in flight on each (the "load" part of the bench; CLI and final
 * JSON line fixed by the bench's interfaces, see bench/README.md). t_ns is
 * taken when the request is written, so a backlog in the publisher shows
 * as a lower achieved rate, not as latency. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchutil.h"
#include "sse_parse.h"

#define TICK_US 1000
#define HEAD_MAX 16384
#define DRAIN_NS 5000000000ull   /* wait this long for answers at the end */

struct conn {
    struct bufferevent *bev;
    bool busy, in_body, chunked, close_after;
    size_t body_left;
    struct chunk_decoder chunk;
};

static struct {
    struct event_base *base;
    struct url_tmpl url;
    char **chans, **paths;
    int nchans, nconns;
    struct conn *conns;
    struct headers hdr;
    double rate, duration;
    char *pad;
    bool seq;
    int64_t *seqs;
    uint64_t issued, published, errors;
    uint64_t t_begin, t_stop;
    bool stopping;
    struct event *tick, *sigint, *sigterm;
} P;

static void conn_close(struct conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->busy)
        P.errors++;
    c->busy = c->in_body = false;
}

static void answered(struct conn *c, bool ok)
{
    if (ok)
        P.published++;
    else
        P.errors++;
    c->busy = c->in_body = false;
    if (c->close_after) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
}

static size_t header_value_len(const char *head, size_t hlen,
                               const char *name, const char **value)
{
    size_t nlen = strlen(name);
    for (const char *l = memchr(head, '\n', hlen); l && l < head + hlen;
         l = memchr(l + 1, '\n', (size_t)(head + hlen - l - 1))) {
        if (strncasecmp(l + 1, name, nlen) == 0) {
            const char *v = l + 1 + nlen;
            v += strspn(v, " \t");
            *value = v;
            return strcspn(v, "\r\n");
        }
    }
    return 0;
}

/* The answer's head: status, then how its body ends. */
static bool read_head(struct conn *c, struct evbuffer *in, bool *ok)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > HEAD_MAX)
            conn_close(c);
        return false;
    }
    size_t hlen = (size_t)end.pos + 4;
    const char *head = (const char *)evbuffer_pullup(in, (ev_ssize_t)hlen);
    const char *v;
    *ok = hlen > 12 && strncmp(head, "HTTP/1.", 7) == 0 && head[9] == '2';
    c->chunked = header_value_len(head, hlen, "transfer-encoding:", &v) &&
                 strncasecmp(v, "chunked", 7) == 0;
    c->body_left = header_value_len(head, hlen, "content-length:", &v)
                       ? strtoul(v, NULL, 10) : 0;
    c->close_after = (header_value_len(head, hlen, "connection:", &v) &&
                      strncasecmp(v, "close", 5) == 0) ||
                     strncmp(head, "HTTP/1.0", 8) == 0;
    chunk_init(&c->chunk);
    evbuffer_drain(in, hlen);
    c->in_body = true;
    return true;
}

/* Consumes body bytes; true once the body ended. */
static bool read_body(struct conn *c, struct evbuffer *in)
{
    if (!c->chunked) {
        size_t n = evbuffer_get_length(in);
        if (n > c->body_left)
            n = c->body_left;
        evbuffer_drain(in, n);
        c->body_left -= n;
        return c->body_left == 0;
    }
    char tmp[4096];
    while (evbuffer_get_length(in) && c->chunk.state != CH_DONE &&
           c->chunk.state != CH_ERROR) {
        /* byte by byte through the framing would be slow; answers are
         * small, so a copy is fine */
        size_t n = evbuffer_copyout(in, tmp, sizeof(tmp)) > 0
                       ? (size_t)evbuffer_copyout(in, tmp, sizeof(tmp)) : 0;
        size_t used = n;
        struct chunk_decoder d = c->chunk;
        for (size_t i = 1; i <= n; i++) {  /* stop right at the end */
            d = c->chunk;
            chunk_decode(&d, tmp, i);
            if (d.state == CH_DONE || d.state == CH_ERROR) {
                used = i;
                break;
            }
        }
        chunk_decode(&c->chunk, tmp, used);
        evbuffer_drain(in, used);
    }
    return c->chunk.state == CH_DONE || c->chunk.state == CH_ERROR;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    bool ok = true;
    while (c->bev && evbuffer_get_length(in)) {
        if (!c->busy) {        /* bytes nobody asked for */
            conn_close(c);
            return;
        }
        if (!c->in_body && !read_head(c, in, &ok))
            return;
        if (!read_body(c, in))
            return;
        answered(c, ok && c->chunk.state != CH_ERROR);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (!(what & BEV_EVENT_CONNECTED))
        conn_close(c);
}

static bool conn_open(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    c->bev = bufferevent_socket_new(P.base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&P.url.addr,
                                   sizeof(P.url.addr)) != 0) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        return false;
    }
    return true;
}

static void send_event(struct conn *c, int chan)
{
    char body_head[96];
    int n = snprintf(body_head, sizeof(body_head), "{\"t_ns\":%" PRIu64,
                     now_ns());
    char seq[40] = "";
    if (P.seq)
        snprintf(seq, sizeof(seq), ",\"seq\":%" PRId64, ++P.seqs[chan]);
    size_t padlen = strlen(P.pad);
    size_t blen = (size_t)n + 8 + padlen + 1 + strlen(seq) + 1;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "POST %s HTTP/1.1\r\nHost: %s\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: %zu\r\n",
                        P.paths[chan], P.url.host, blen);
    if (P.hdr.len)
        evbuffer_add(out, P.hdr.text, P.hdr.len);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, body_head, (size_t)n);
    evbuffer_add(out, ",\"pad\":\"", 8);
    evbuffer_add(out, P.pad, padlen);
    evbuffer_add(out, "\"", 1);
    evbuffer_add(out, seq, strlen(seq));
    evbuffer_add(out, "}", 1);
    c->busy = true;
    c->in_body = false;
}

static struct conn *free_conn(void)
{
    for (int i = 0; i < P.nconns; i++) {
        struct conn *c = &P.conns[i];
        if (!c->bev && !conn_open(c))
            continue;
        if (!c->busy)
            return c;
    }
    return NULL;
}

static bool all_idle(void)
{
    for (int i = 0; i < P.nconns; i++)
        if (P.conns[i].busy)
            return false;
    return true;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = mono_ns();
    if (!P.stopping && now - P.t_begin >= (uint64_t)(P.duration * 1e9)) {
        P.stopping = true;
        P.t_stop = now;
    }
    if (P.stopping) {
        if (all_idle() || now - P.t_stop > DRAIN_NS)
            event_base_loopexit(P.base, NULL);
        return;
    }
    double elapsed = (double)(now - P.t_begin) / 1e9;
    uint64_t due = (uint64_t)(elapsed * P.rate * P.nchans) + 1;
    struct conn *c;
    while (P.issued < due && (c = free_conn())) {
        send_event(c, (int)(P.issued % (uint64_t)P.nchans));
        P.issued++;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    if (!P.stopping) {
        P.stopping = true;
        P.t_stop = mono_ns();
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: ssepub --url TEMPLATE --channels FILE --rate R\n"
            "  [--pad BYTES] [--duration S] [--header 'Name: value']...\n"
            "  [--conns N] [--seq]\n");
    exit(2);
}

static void parse_args(int argc, char **argv, const char **url,
                       const char **chfile)
{
    static const struct option opts[] = {
        {"url", 1, 0, 'u'},  {"channels", 1, 0, 'c'}, {"rate", 1, 0, 'r'},
        {"pad", 1, 0, 'p'},  {"duration", 1, 0, 'd'}, {"header", 1, 0, 'H'},
        {"conns", 1, 0, 'n'}, {"seq", 0, 0, 'q'},     {0, 0, 0, 0}};
    int c;
    long pad = 0;
    P.duration = 10;
    P.nconns = 4;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': *url = optarg; break;
        case 'c': *chfile = optarg; break;
        case 'r': P.rate = bench_num_arg("rate", optarg, 0); break;
        case 'p': pad = (long)bench_num_arg("pad", optarg, 0); break;
        case 'd': P.duration = bench_num_arg("duration", optarg, 0); break;
        case 'H': if (!headers_add(&P.hdr, optarg)) exit(2); break;
        case 'n': P.nconns = (int)bench_num_arg("conns", optarg, 1); break;
        case 'q': P.seq = true; break;
        default: usage();
        }
    }
    if (!*url || !*chfile || P.rate <= 0 || optind != argc ||
        pad > 16 * 1024 * 1024)
        usage();
    P.pad = malloc((size_t)pad + 1);
    if (!P.pad)
        abort();
    memset(P.pad, 'x', (size_t)pad);
    P.pad[pad] = '\0';
}

int main(int argc, char **argv)
{
    const char *url = NULL, *chfile = NULL;
    parse_args(argc, argv, &url, &chfile);
    if (!url_parse(url, &P.url) ||
        !(P.chans = channels_read(chfile, &P.nchans)))
        return 2;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    P.paths = calloc((size_t)P.nchans, sizeof(*P.paths));
    P.seqs = calloc((size_t)P.nchans, sizeof(*P.seqs));
    P.conns = calloc((size_t)P.nconns, sizeof(*P.conns));
    if (!P.paths || !P.seqs || !P.conns)
        abort();
    for (int i = 0; i < P.nchans; i++)
        P.paths[i] = url_path(&P.url, P.chans[i]);
    P.base = event_base_new();
    P.t_begin = mono_ns();
    P.tick = event_new(P.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, TICK_US};
    event_add(P.tick, &tv);
    P.sigint = evsignal_new(P.base, SIGINT, on_signal, NULL);
    P.sigterm = evsignal_new(P.base, SIGTERM, on_signal, NULL);
    event_add(P.sigint, NULL);
    event_add(P.sigterm, NULL);
    event_base_dispatch(P.base);
    for (int i = 0; i < P.nconns; i++)
        conn_close(&P.conns[i]);
    double secs = (double)(P.t_stop ? P.t_stop - P.t_begin
                                    : mono_ns() - P.t_begin) / 1e9;
    printf("{\"published\": %" PRIu64 ", \"errors\": %" PRIu64
           ", \"rate\": %.2f, \"duration_s\": %.3f}\n",
           P.published, P.errors,
           secs > 0 ? (double)P.published / P.nchans / secs : 0.0, secs);
    fflush(stdout);
    event_free(P.tick);
    event_free(P.sigint);
    event_free(P.sigterm);
    event_base_free(P.base);
    for (int i = 0; i < P.nchans; i++) {
        free(P.paths[i]);
        free(P.chans[i]);
    }
    free(P.paths);
    free(P.chans);
    free(P.seqs);
    free(P.conns);
    free(P.pad);
    free(P.hdr.text);
    free(P.url.path);
    return 0;
}
