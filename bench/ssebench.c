/* ssebench: an SSE load generator (the "load" part of the bench; its CLI
 * and the final JSON line are fixed by the bench's interfaces, see
 * bench/README.md). One thread, one libevent loop, one bufferevent per
 * subscriber; the SSE parser is incremental (sse_parse.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchutil.h"
#include "sse_parse.h"

#define TICK_US 5000           /* pacing timer (connects, churn) */
#define HEAD_MAX 16384
#define CONNECT_TIMEOUT_S 10
#define EXPECT_GRACE_NS 5000000000ull

/* ---- histogram: log-linear, 16 sub-buckets per power of two (µs) ---- */

#define H_SUB 16
#define H_BUCKETS (H_SUB + 60 * H_SUB)

struct hist {
    uint64_t n[H_BUCKETS];
    uint64_t count, max_us;
};

static int h_index(uint64_t us)
{
    if (us < H_SUB)
        return (int)us;
    int e = 63 - __builtin_clzll(us);                /* >= 4 */
    int sub = (int)((us >> (e - 4)) & (H_SUB - 1));
    int i = H_SUB + (e - 4) * H_SUB + sub;
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}

/* The middle of bucket i, in µs. */
static double h_value(int i)
{
    if (i < H_SUB)
        return i;
    int e = (i - H_SUB) / H_SUB + 4, sub = (i - H_SUB) % H_SUB;
    double lo = (double)((uint64_t)(H_SUB + sub) << (e - 4));
    return lo + (double)(1ull << (e - 4)) / 2;
}

static void h_add(struct hist *h, uint64_t us)
{
    h->n[h_index(us)]++;
    h->count++;
    if (us > h->max_us)
        h->max_us = us;
}

static double h_pct_ms(const struct hist *h, double p)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)h->count + 0.999999), seen = 0;
    if (rank < 1)
        rank = 1;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= rank) {
            double v = h_value(i);
            return (v > (double)h->max_us ? (double)h->max_us : v) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

/* ---- state ---- */

enum sub_state { S_IDLE, S_HEAD, S_STREAM };

struct sub {
    struct bufferevent *bev;
    struct sub *next_q;      /* connect queue */
    int64_t last;            /* last seq seen; -1: no baseline yet */
    uint64_t t_start;        /* monotonic, at connect */
    struct sse_parser parser;
    struct chunk_decoder chunk;
    int chan;
    unsigned state : 2, chunked : 1, slow : 1, queued : 1, settled : 1;
};

enum seq_mode { SEQ_ID, SEQ_DATA };

static struct {
    struct event_base *base;
    struct url_tmpl url;
    char **chans, **paths;
    int nchans, subs_per_chan, nsubs;
    struct sub *subs;
    struct headers hdr;
    struct sockaddr_in *sources;
    int nsources, next_source;
    double connect_rate, duration, churn, slow;
    enum seq_mode seq;
    bool resume;
    int64_t expect;
    const char *t_key;       /* the timestamp's key in the data */
    const char *done_match, *failed_match; /* runs ending (shape 7) */
    int64_t done_target;
    uint64_t done, failed, done_first_ns, done_last_ns;

    struct sub *q_head, *q_tail;
    double tokens, churn_tokens;
    uint64_t last_tick;
    int settled;             /* subscribers whose first attempt ended */
    uint64_t t_begin, t_measure, t_end_due;
    bool measuring, ending;
    uint64_t recv_ns;        /* CLOCK_REALTIME of the current read */

    uint64_t connect_errors, closed_by_server, reconnects, events,
        events_measured, gaps, dups, heartbeats;
    int connected, nslow;
    struct hist lat, conn;
    struct rusage ru0;
    struct event *tick, *sigint, *sigterm;
} B;

static void sub_connect(struct sub *s);

static void queue_sub(struct sub *s)
{
    if (s->queued)
        return;
    s->queued = 1;
    s->next_q = NULL;
    if (B.q_tail)
        B.q_tail->next_q = s;
    else
        B.q_head = s;
    B.q_tail = s;
}

static struct sub *dequeue(void)
{
    struct sub *s = B.q_head;
    if (!s)
        return NULL;
    B.q_head = s->next_q;
    if (!B.q_head)
        B.q_tail = NULL;
    s->queued = 0;
    return s;
}

static void settle(struct sub *s)
{
    if (s->settled)
        return;
    s->settled = 1;
    if (++B.settled == B.nsubs) {
        B.t_measure = mono_ns();
        B.measuring = true;
        B.t_end_due = B.t_measure + (uint64_t)(B.duration * 1e9);
        fprintf(stderr, "ssebench: %d of %d connected in %.2f s; "
                "measuring %.1f s\n", B.connected, B.nsubs,
                (double)(B.t_measure - B.t_begin) / 1e9, B.duration);
    }
}

/* Drops the connection; with reconnect the subscriber is queued again
 * and resumes with Last-Event-ID. */
static void sub_close(struct sub *s, bool reconnect)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->state == S_STREAM)
        B.connected--;
    s->state = S_IDLE;
    sse_parser_reset(&s->parser);
    if (reconnect && !B.ending) {
        B.reconnects++;
        queue_sub(s);
    }
}

/* ---- events ---- */

static bool json_int_after(const char *data, const char *key, int64_t *out)
{
    const char *p = strstr(data, key);
    if (!p)
        return false;
    p += strlen(key);
    while (*p == ' ')
        p++;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p)
        return false;
    *out = v;
    return true;
}

static void check_seq(struct sub *s, int64_t seq)
{
    if (s->last < 0)
        s->last = B.expect > 0 ? 0 : seq - 1;
    if (seq <= s->last) {
        B.dups++;
        return;
    }
    if (seq > s->last + 1)
        B.gaps += (uint64_t)(seq - s->last - 1);
    s->last = seq;
}

/* Shape 7: runs that ended, from the events --done / --failed match. */
static void count_done(const struct sse_event *ev)
{
    if (B.done_match && strstr(ev->data, B.done_match)) {
        B.done++;
        if (!B.done_first_ns)
            B.done_first_ns = B.recv_ns;
        B.done_last_ns = B.recv_ns;
    } else if (B.failed_match && strstr(ev->data, B.failed_match)) {
        B.failed++;
    }
}

static void on_event(void *arg, const struct sse_event *ev)
{
    struct sub *s = arg;
    int64_t v;
    if (strcmp(ev->type, "ready") == 0) {
        /* corral's live start: the baseline of a fresh subscriber */
        if (s->last < 0 && json_int_after(ev->data, "\"last_event_id\":",
                                          &v))
            s->last = v;
        return;
    }
    B.events++;
    if (B.measuring)
        B.events_measured++;
    count_done(ev);
    if (json_int_after(ev->data, B.t_key, &v)) {
        uint64_t t = (uint64_t)v;
        h_add(&B.lat, B.recv_ns > t ? (B.recv_ns - t) / 1000 : 0);
    }
    if (B.seq == SEQ_ID && ev->id) {
        char *end;
        long long seq = strtoll(ev->id, &end, 10);
        if (end != ev->id && !*end)
            check_seq(s, seq);
    } else if (B.seq == SEQ_DATA &&
               json_int_after(ev->data, "\"seq\":", &v)) {
        check_seq(s, v);
    }
}

static void on_comment(void *arg, const char *text, size_t len)
{
    B.heartbeats++;
}

static const struct sse_cbs sse_cbs = {on_event, on_comment};

/* ---- connection ---- */

static void feed_body(struct sub *s, struct evbuffer *in)
{
    int n = evbuffer_peek(in, -1, NULL, NULL, 0);
    struct evbuffer_iovec stackv[16], *v = stackv;
    if (n > 16)
        v = malloc(sizeof(*v) * (size_t)n);
    if (!v)
        abort();
    n = evbuffer_peek(in, -1, NULL, v, n);
    for (int i = 0; i < n && s->state == S_STREAM; i++) {
        char *p = v[i].iov_base;
        size_t len = v[i].iov_len;
        if (s->chunked)
            len = chunk_decode(&s->chunk, p, len);
        sse_parser_feed(&s->parser, p, len, &sse_cbs, s);
    }
    if (v != stackv)
        free(v);
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* The response head: 200 starts the stream; anything else is a connect
 * error. */
static bool read_head(struct sub *s, struct evbuffer *in)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > HEAD_MAX)
            goto fail;
        return false;
    }
    size_t hlen = (size_t)end.pos + 4;
    char *head = (char *)evbuffer_pullup(in, (ev_ssize_t)hlen);
    if (hlen < 12 || strncmp(head, "HTTP/1.", 7) != 0 ||
        strncmp(head + 8, " 200", 4) != 0)
        goto fail;
    s->chunked = 0;
    for (char *line = memchr(head, '\n', hlen); line && line < head + hlen;
         line = memchr(line + 1, '\n', (size_t)(head + hlen - line - 1)))
        if (strncasecmp(line + 1, "transfer-encoding:", 18) == 0 &&
            strncasecmp(line + 19 + strspn(line + 19, " \t"), "chunked",
                        7) == 0)
            s->chunked = 1;
    chunk_init(&s->chunk);
    evbuffer_drain(in, hlen);
    h_add(&B.conn, (mono_ns() - s->t_start) / 1000);
    s->state = S_STREAM;
    B.connected++;
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    settle(s);
    if (s->slow) /* stops reading: the server's buffers fill */
        bufferevent_disable(s->bev, EV_READ);
    return true;
fail:
    B.connect_errors++;
    settle(s);
    sub_close(s, B.resume);
    return false;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct sub *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    B.recv_ns = now_ns();
    if (s->state == S_HEAD && !read_head(s, in))
        return;
    if (s->slow)
        return;
    feed_body(s, in);
    if (s->chunked && (s->chunk.state == CH_DONE ||
                       s->chunk.state == CH_ERROR)) {
        B.closed_by_server++;
        sub_close(s, B.resume);
    }
}

static void on_bev_event(struct bufferevent *bev, short what, void *arg)
{
    struct sub *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (s->state == S_HEAD) {
        B.connect_errors++;
        settle(s);
    } else {
        B.closed_by_server++;
    }
    sub_close(s, B.resume);
}

static int open_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (B.nsources) {
        int one = 1;
        /* the port is picked at connect: each source address then has
         * the whole ephemeral range per destination */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                   sizeof(one));
        struct sockaddr_in *src = &B.sources[B.next_source++ % B.nsources];
        if (bind(fd, (struct sockaddr *)src, sizeof(*src)) != 0) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void sub_connect(struct sub *s)
{
    int fd = open_socket();
    s->t_start = mono_ns();
    if (fd < 0) {
        B.connect_errors++;
        settle(s);
        if (B.resume)
            queue_sub(s);
        return;
    }
    s->bev = bufferevent_socket_new(B.base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(s->bev, on_read, NULL, on_bev_event, s);
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out, "GET %s HTTP/1.1\r\nHost: %s\r\n"
                        "Accept: text/event-stream\r\n"
                        "Cache-Control: no-cache\r\n",
                        B.paths[s->chan], B.url.host);
    if (B.hdr.len)
        evbuffer_add(out, B.hdr.text, B.hdr.len);
    if (s->last >= 0 && (B.resume || s->settled))
        evbuffer_add_printf(out, "Last-Event-ID: %" PRId64 "\r\n", s->last);
    evbuffer_add(out, "\r\n", 2);
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    bufferevent_set_timeouts(s->bev, &tv, NULL);
    s->state = S_HEAD;
    sse_parser_init(&s->parser);
    bufferevent_enable(s->bev, EV_READ);
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&B.url.addr,
                                   sizeof(B.url.addr)) != 0) {
        B.connect_errors++;
        settle(s);
        sub_close(s, false);
        if (B.resume)
            queue_sub(s);
    }
}

/* ---- the run ---- */

static bool expect_met(void)
{
    if (B.expect <= 0)
        return true;
    for (int i = 0; i < B.nsubs; i++)
        if (!B.subs[i].slow && B.subs[i].last < B.expect)
            return false;
    return true;
}

static void churn_some(double dt)
{
    B.churn_tokens += B.churn * dt;
    for (int tries = 0; B.churn_tokens >= 1 && tries < 1000; tries++) {
        struct sub *s = &B.subs[random() % B.nsubs];
        if (s->state != S_STREAM || s->slow)
            continue;
        B.churn_tokens -= 1;
        sub_close(s, false);
        B.reconnects++;
        queue_sub(s);
    }
    if (B.churn_tokens > B.churn)
        B.churn_tokens = B.churn; /* never a burst after a stall */
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = mono_ns();
    double dt = (double)(now - B.last_tick) / 1e9;
    B.last_tick = now;
    B.tokens += B.connect_rate * dt;
    while (B.tokens >= 1 && B.q_head) {
        B.tokens -= 1;
        sub_connect(dequeue());
    }
    if (!B.q_head && B.tokens > B.connect_rate * 0.01 + 1)
        B.tokens = B.connect_rate * 0.01 + 1;
    if (B.measuring && B.churn > 0)
        churn_some(dt);
    if (B.done_target > 0 && B.done + B.failed >= (uint64_t)B.done_target)
        event_base_loopexit(B.base, NULL);
    if (B.measuring && now >= B.t_end_due &&
        (expect_met() || now >= B.t_end_due + EXPECT_GRACE_NS))
        event_base_loopexit(B.base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(B.base, NULL);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void report(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uint64_t now = mono_ns();
    double user = tv_s(ru.ru_utime) - tv_s(B.ru0.ru_utime);
    double sys = tv_s(ru.ru_stime) - tv_s(B.ru0.ru_stime);
    double wall = (double)(now - B.t_begin) / 1e9;
    double window = B.measuring ? (double)(now - B.t_measure) / 1e9 : 0;
    uint64_t missing = 0;
    if (B.expect > 0)
        for (int i = 0; i < B.nsubs; i++) {
            int64_t last = B.subs[i].last < 0 ? 0 : B.subs[i].last;
            if (!B.subs[i].slow && last < B.expect)
                missing += (uint64_t)(B.expect - last);
        }
    printf("{\"subscribers\": %d, \"connected\": %d, \"connect_errors\": "
           "%" PRIu64 ", \"closed_by_server\": %" PRIu64 ", \"reconnects\": "
           "%" PRIu64 ", \"events\": %" PRIu64 ", \"events_per_s\": %.1f, "
           "\"gaps\": %" PRIu64 ", \"dups\": %" PRIu64 ", \"missing\": "
           "%" PRIu64 ", \"lat_ms\": {\"p50\": %.3f, \"p90\": %.3f, "
           "\"p99\": %.3f, \"max\": %.3f}, \"connect_ms\": {\"p50\": %.3f, "
           "\"p99\": %.3f}, \"heartbeats\": %" PRIu64 ", \"cpu\": "
           "{\"user_s\": %.3f, \"sys_s\": %.3f, \"pct\": %.1f}, "
           "\"slow\": %d, \"done\": %" PRIu64 ", \"failed\": %" PRIu64
           ", \"done_first_t_ns\": %" PRIu64 ", \"done_last_t_ns\": %" PRIu64
           "}\n",
           B.nsubs, B.connected, B.connect_errors, B.closed_by_server,
           B.reconnects, B.events,
           window > 0 ? (double)B.events_measured / window : 0.0, B.gaps,
           B.dups, missing, h_pct_ms(&B.lat, 0.5), h_pct_ms(&B.lat, 0.9),
           h_pct_ms(&B.lat, 0.99), (double)B.lat.max_us / 1000.0,
           h_pct_ms(&B.conn, 0.5), h_pct_ms(&B.conn, 0.99), B.heartbeats,
           user, sys, wall > 0 ? (user + sys) / wall * 100 : 0.0, B.nslow,
           B.done, B.failed, B.done_first_ns, B.done_last_ns);
    fflush(stdout);
}

/* ---- command line ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: ssebench --url TEMPLATE --channels FILE --subs N\n"
            "  [--header 'Name: value']... [--sources IP,IP...]\n"
            "  [--connect-rate R] [--duration S] [--seq id|data] [--resume]\n"
            "  [--churn R] [--slow F] [--expect N] [--t-key KEY]\n"
            "  [--done SUBSTR] [--failed SUBSTR] [--done-target N]\n");
    exit(2);
}

static bool parse_sources(const char *list)
{
    char *copy = strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        B.sources = realloc(B.sources,
                            sizeof(*B.sources) * (size_t)(B.nsources + 1));
        struct sockaddr_in *a = &B.sources[B.nsources++];
        memset(a, 0, sizeof(*a));
        a->sin_family = AF_INET;
        if (inet_pton(AF_INET, t, &a->sin_addr) != 1) {
            fprintf(stderr, "--sources: not an IPv4 address: %s\n", t);
            free(copy);
            return false;
        }
    }
    free(copy);
    return B.nsources > 0;
}

static void parse_args(int argc, char **argv, const char **url,
                       const char **chfile)
{
    static const struct option opts[] = {
        {"url", 1, 0, 'u'},     {"channels", 1, 0, 'c'},
        {"subs", 1, 0, 'n'},    {"header", 1, 0, 'H'},
        {"sources", 1, 0, 's'}, {"connect-rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'}, {"seq", 1, 0, 'q'},
        {"resume", 0, 0, 'R'},  {"churn", 1, 0, 'C'},
        {"slow", 1, 0, 'S'},    {"expect", 1, 0, 'e'},
        {"t-key", 1, 0, 'k'},   {"done", 1, 0, 'D'},
        {"failed", 1, 0, 'F'},  {"done-target", 1, 0, 'T'},
        {0, 0, 0, 0}};
    int c;
    B.connect_rate = 2000;
    B.duration = 10;
    B.expect = -1;
    B.t_key = "\"t_ns\":";
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': *url = optarg; break;
        case 'c': *chfile = optarg; break;
        case 'n': B.subs_per_chan = (int)bench_num_arg("subs", optarg, 1); break;
        case 'H': if (!headers_add(&B.hdr, optarg)) exit(2); break;
        case 's': if (!parse_sources(optarg)) exit(2); break;
        case 'r': B.connect_rate = bench_num_arg("connect-rate", optarg, 1); break;
        case 'd': B.duration = bench_num_arg("duration", optarg, 0); break;
        case 'q':
            if (strcmp(optarg, "id") == 0)
                B.seq = SEQ_ID;
            else if (strcmp(optarg, "data") == 0)
                B.seq = SEQ_DATA;
            else
                usage();
            break;
        case 'R': B.resume = true; break;
        case 'C': B.churn = bench_num_arg("churn", optarg, 0); break;
        case 'S': B.slow = bench_num_arg("slow", optarg, 0); break;
        case 'e': B.expect = (int64_t)bench_num_arg("expect", optarg, 0); break;
        case 'k': B.t_key = optarg; break;
        case 'D': B.done_match = optarg; break;
        case 'F': B.failed_match = optarg; break;
        case 'T': B.done_target = (int64_t)bench_num_arg("done-target", optarg, 1); break;
        default: usage();
        }
    }
    if (!*url || !*chfile || B.subs_per_chan < 1 || optind != argc ||
        B.slow > 1)
        usage();
}

static void setup_subs(void)
{
    B.nsubs = B.nchans * B.subs_per_chan;
    B.subs = calloc((size_t)B.nsubs, sizeof(*B.subs));
    B.paths = calloc((size_t)B.nchans, sizeof(*B.paths));
    if (!B.subs || !B.paths)
        abort();
    for (int c = 0; c < B.nchans; c++)
        B.paths[c] = url_path(&B.url, B.chans[c]);
    /* interleaved: the first connections cover every channel */
    for (int i = 0; i < B.nsubs; i++) {
        struct sub *s = &B.subs[i];
        s->chan = i % B.nchans;
        s->last = -1;
        /* an even spread of slow ones: floor((i+1)F) > floor(iF) */
        s->slow = (long)((i + 1) * B.slow) > (long)(i * B.slow);
        B.nslow += s->slow;
        queue_sub(s);
    }
}

static void teardown(void)
{
    B.ending = true;
    for (int i = 0; i < B.nsubs; i++)
        sub_close(&B.subs[i], false);
    event_free(B.tick);
    event_free(B.sigint);
    event_free(B.sigterm);
    event_base_free(B.base);
    for (int c = 0; c < B.nchans; c++) {
        free(B.paths[c]);
        free(B.chans[c]);
    }
    free(B.paths);
    free(B.chans);
    free(B.subs);
    free(B.sources);
    free(B.hdr.text);
    free(B.url.path);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *chfile = NULL;
    parse_args(argc, argv, &url, &chfile);
    if (!url_parse(url, &B.url) ||
        !(B.chans = channels_read(chfile, &B.nchans)))
        return 2;
    long nofile = raise_nofile();
    if (nofile > 0 && (long)B.nchans * B.subs_per_chan > nofile - 32)
        fprintf(stderr, "ssebench: warning: %d subscribers, open file "
                "limit %ld\n", B.nchans * B.subs_per_chan, nofile);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)getpid());
    getrusage(RUSAGE_SELF, &B.ru0);
    B.base = event_base_new();
    setup_subs();
    B.t_begin = B.last_tick = mono_ns();
    B.tick = event_new(B.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, TICK_US};
    event_add(B.tick, &tv);
    B.sigint = evsignal_new(B.base, SIGINT, on_signal, NULL);
    B.sigterm = evsignal_new(B.base, SIGTERM, on_signal, NULL);
    event_add(B.sigint, NULL);
    event_add(B.sigterm, NULL);
    event_base_dispatch(B.base);
    B.ending = true;
    report();
    teardown();
    return 0;
}
