/* Unit tests for the SSE hub's fan-out path (src/http/sse.c): streams on
 * real loopback TCP sockets, driven by a stand-in for the bus (the five bus
 * calls the hub makes are defined here, so the real bus is not linked).
 * Checked: the socket gets TCP_NODELAY, frames queued in one loop turn go
 * out in one write, one flush serves every connection scheduled in a turn,
 * all connections share the event's one frame (refcount back to 1), and
 * queues grow and reuse the hub's spare arrays safely. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "corral/bus.h"
#include "corral/config.h"
#include "corral/server.h"
#include "corral/sse.h"

#define NCONN 40
#define HEAD "HTTP/1.1 200 OK\r\n\r\n"

/* ---- the bus stand-in ---- */

struct bus_sub {
    const struct bus_sub_cbs *cbs;
    void *arg;
};

static struct bus_sub *subs[NCONN];
static int nsubs;

struct bus_sub *bus_subscribe(struct bus *b, const char *chat_id,
                              int64_t after, const struct bus_sub_cbs *cbs,
                              void *arg)
{
    struct bus_sub *s = calloc(1, sizeof(*s));
    s->cbs = cbs;
    s->arg = arg;
    subs[nsubs++] = s;
    return s;
}

void bus_unsubscribe(struct bus_sub *s)
{
    for (int i = 0; i < nsubs; i++)
        if (subs[i] == s)
            subs[i] = NULL;
    free(s);
}

void bus_sub_hold(struct bus_sub *s, bool hold)
{
}

void bus_event_retain(struct bus_event *ev)
{
    ev->refs++;
}

void bus_event_release(struct bus_event *ev) /* the test owns the memory */
{
    if (ev)
        ev->refs--;
}

/* ---- fixture ---- */

struct fx {
    struct event_base *base;
    struct config cfg;
    struct server srv;
    struct sse_hub *hub;
    int client[NCONN], server_fd[NCONN];
};

static void tcp_pair(int *client, int *server)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*client, (struct sockaddr *)&a, sizeof(a)), 0);
    *server = accept(l, NULL, NULL);
    assert_true(*server >= 0);
    close(l);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    f->cfg.sse_heartbeat_s = 15;
    f->cfg.sse_max_pending_bytes = 1 << 20;
    f->srv.base = f->base;
    f->srv.cfg = &f->cfg;
    f->hub = sse_hub_new(&f->srv, NULL);
    nsubs = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sse_hub_free(f->hub);
    for (int i = 0; i < NCONN; i++)
        if (f->client[i] > 0)
            close(f->client[i]);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* One recv of what is there within 0.2 s, -1 if nothing came (one write
 * arrives whole on loopback). */
static ssize_t read_some(int fd, char *buf, size_t cap)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 200) != 1)
        return -1;
    ssize_t n = recv(fd, buf, cap - 1, MSG_DONTWAIT);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

/* Opens n streams; their response heads are written and read off. */
static void open_streams(struct fx *f, int n)
{
    for (int i = 0; i < n; i++) {
        tcp_pair(&f->client[i], &f->server_fd[i]);
        struct bufferevent *bev =
            bufferevent_socket_new(f->base, f->server_fd[i], 0);
        bufferevent_write(bev, HEAD, strlen(HEAD));
        assert_int_equal(sse_serve(f->hub, bev, "c1", "u1", -1), 0);
    }
    assert_int_equal(nsubs, n);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    for (int i = 0; i < n; i++) {
        char buf[64];
        assert_int_equal(read_some(f->client[i], buf, sizeof(buf)),
                         (ssize_t)strlen(HEAD));
    }
}

static struct bus_event *event(int64_t seq)
{
    struct bus_event *ev = calloc(1, sizeof(*ev));
    ev->refs = 1;
    ev->seq = seq;
    buf_init(&ev->sse);
    sse_frame(&ev->sse, seq, "bench", "{}", 2);
    return ev;
}

static void bus_ev_free(struct bus_event *ev)
{
    buf_deinit(&ev->sse);
    free(ev);
}

static void test_nodelay(void **state)
{
    struct fx *f = *state;
    open_streams(f, 1);
    int on = 0;
    socklen_t len = sizeof(on);
    assert_int_equal(getsockopt(f->server_fd[0], IPPROTO_TCP, TCP_NODELAY,
                                &on, &len), 0);
    assert_int_equal(on, 1);
}

static void test_one_write_per_turn(void **state)
{
    struct fx *f = *state;
    open_streams(f, 1);
    struct bus_event *a = event(1), *b = event(2);
    subs[0]->cbs->on_event(subs[0]->arg, a);
    subs[0]->cbs->on_event(subs[0]->arg, b);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    char buf[256];
    ssize_t n = read_some(f->client[0], buf, sizeof(buf));
    assert_int_equal(n, (ssize_t)(a->sse.len + b->sse.len));
    assert_string_equal(buf, "id: 1\nevent: bench\ndata: {}\n\n"
                             "id: 2\nevent: bench\ndata: {}\n\n");
    assert_int_equal(a->refs, 1);
    assert_int_equal(b->refs, 1);
    bus_ev_free(a);
    bus_ev_free(b);
}

/* Every connection scheduled in a turn is written by the one flush (only
 * the first of the turn activates it), and all share the one frame. */
static void test_fanout_one_flush(void **state)
{
    struct fx *f = *state;
    open_streams(f, NCONN);
    struct bus_event *ev = event(7);
    for (int i = 0; i < NCONN; i++)
        subs[i]->cbs->on_event(subs[i]->arg, ev);
    assert_int_equal(ev->refs, 1 + NCONN);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(ev->refs, 1);
    for (int i = 0; i < NCONN; i++) {
        char buf[128];
        assert_int_equal(read_some(f->client[i], buf, sizeof(buf)),
                         (ssize_t)ev->sse.len);
        assert_string_equal(buf, "id: 7\nevent: bench\ndata: {}\n\n");
    }
    /* A second turn: the flush is activated again. */
    for (int i = 0; i < NCONN; i += 2)
        subs[i]->cbs->on_event(subs[i]->arg, ev);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(ev->refs, 1);
    for (int i = 0; i < NCONN; i += 2) {
        char buf[128];
        assert_int_equal(read_some(f->client[i], buf, sizeof(buf)),
                         (ssize_t)ev->sse.len);
    }
    bus_ev_free(ev);
}

/* More frames than a queue's first array holds (it grows), then turns
 * that reuse the hub's spare arrays: every frame arrives, in order, and
 * ASan sees no array used after its release. */
static void test_queue_growth_and_reuse(void **state)
{
    struct fx *f = *state;
    open_streams(f, 3);
    struct bus_event *ev[10];
    for (int i = 0; i < 10; i++)
        ev[i] = event(i + 1);
    for (int turn = 0; turn < 3; turn++) {
        int n = turn == 0 ? 10 : 1; /* 10: grows past 4 items */
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < n; i++)
                subs[k]->cbs->on_event(subs[k]->arg, ev[i]);
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        for (int k = 0; k < 3; k++) {
            char buf[1024], want[1024] = "";
            for (int i = 0; i < n; i++)
                strncat(want, ev[i]->sse.data, ev[i]->sse.len);
            assert_int_equal(read_some(f->client[k], buf, sizeof(buf)),
                             (ssize_t)strlen(want));
            assert_string_equal(buf, want);
        }
    }
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ev[i]->refs, 1);
        bus_ev_free(ev[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nodelay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_write_per_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fanout_one_flush, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_growth_and_reuse, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
