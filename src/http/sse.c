/* sse.c: SSE framing and the stream connections (see sse.h).
 *
 * A connection is a struct with one event on the raw socket and a small
 * queue of frames to write; an idle one holds no buffer at all (the queue
 * array is freed whenever it drains). Frames are the bus's shared events
 * (refcounted, serialized once) or, for the response head, `ready`,
 * `error` and pings, bytes of their own. Queueing only schedules the
 * connection; the hub's flush event then writes every scheduled
 * connection's frames with one sendmsg each, after the callbacks of the
 * loop turn have run, so a burst of events costs one syscall. A write
 * that would block arms EV_WRITE on the same event until the queue drains.
 *
 * Teardown is two-phase: conn_close closes the socket and drops the
 * subscription at once (EOF, write error, slow consumer, the end of the
 * stream), and the struct is freed by the flush event after the callback
 * stack has unwound. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>

#include "corral/bus.h"
#include "corral/config.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/sse.h"

#define SSE_IOV 64
#define SSE_Q0 4          /* a queue's first array: items */
#define SSE_QCACHE 4096   /* first arrays kept for reuse: at most 512 KiB */
#define SSE_HOLD_HIGH (256u << 10) /* replay pauses above this backlog */
#define SSE_USER_LEN 36

static const char sse_ping[] = ": ping\n\n";

/* ---- framing ------------------------------------------------------------ */

void sse_frame(struct buf *out, int64_t id, const char *type,
               const char *data, size_t len)
{
    if (id > 0)
        buf_printf(out, "id: %" PRId64 "\n", id);
    buf_puts(out, "event: ");
    buf_puts(out, type);
    buf_putc(out, '\n');
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r')
            j++;
        buf_puts(out, "data: ");
        buf_append(out, data + i, j - i);
        buf_putc(out, '\n');
        if (j >= len)
            break;
        if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
            j++;
        i = j + 1;
    }
    buf_putc(out, '\n');
}

/* ---- connections -------------------------------------------------------- */

struct sse_item {
    const char *p;
    size_t len;
    struct bus_event *ev;       /* shared frame, or NULL */
    char *own;                  /* own bytes, or NULL */
};

struct sse_conn {
    struct event ev;            /* the socket: EV_READ, + EV_WRITE if due */
    struct sse_hub *hub;
    struct bus_sub *sub;        /* NULL once ended */
    struct sse_conn *prev, *next; /* heartbeat slot */
    struct sse_conn *fnext;     /* flush list */
    struct sse_conn *gnext;     /* graveyard */
    struct sse_item *q;         /* ring of frames to write; NULL if none */
    uint32_t qhead, qlen, qcap;
    uint32_t slot, last_tick;
    size_t off;                 /* bytes of q[qhead] already written */
    size_t pending;             /* bytes queued, unsent */
    bool live, held, in_flush, want_write, closing, closed;
    char user_id[SSE_USER_LEN + 1];
};

struct sse_hub {
    struct server *srv;
    struct bus *bus;
    struct sse_conn **slots;    /* heartbeat slots, one per second */
    uint32_t nslots, tick;
    struct event tick_ev;
    struct event flush_ev;
    struct sse_conn *flush_head;
    struct sse_conn *grave;
    struct qfree *qfree;        /* spare first arrays (SSE_Q0 items) */
    uint32_t nqfree;
    size_t cap, hold_high, hold_low;
    struct sse_stats stats;
    bool freeing;
};

static void conn_close(struct sse_conn *c);

static struct sse_item *q_at(struct sse_conn *c, uint32_t i)
{
    return &c->q[(c->qhead + i) % c->qcap];
}

/* A spare queue array: the first pointer of its memory links the next. */
struct qfree {
    struct qfree *next;
};

/* An idle connection keeps no queue, so a fan-out would allocate and free
 * one per delivery; the hub keeps the small first arrays for reuse
 * instead (bounded: SSE_QCACHE). */
static struct sse_item *q_alloc(struct sse_hub *h)
{
    struct qfree *f = h->qfree;
    if (!f)
        return xcalloc(SSE_Q0, sizeof(struct sse_item));
    h->qfree = f->next;
    h->nqfree--;
    return (struct sse_item *)(void *)f;
}

static void q_release(struct sse_hub *h, struct sse_item *q, uint32_t cap)
{
    if (cap != SSE_Q0 || h->nqfree >= SSE_QCACHE || h->freeing) {
        free(q);
        return;
    }
    struct qfree *f = (struct qfree *)(void *)q;
    f->next = h->qfree;
    h->qfree = f;
    h->nqfree++;
}

static void q_grow(struct sse_conn *c)
{
    if (c->qcap == 0) {
        c->q = q_alloc(c->hub);
        c->qcap = SSE_Q0;
        c->qhead = 0;
        return;
    }
    uint32_t cap = c->qcap * 2;
    struct sse_item *q = xcalloc(cap, sizeof(*q));
    for (uint32_t i = 0; i < c->qlen; i++)
        q[i] = *q_at(c, i);
    q_release(c->hub, c->q, c->qcap);
    c->q = q;
    c->qcap = cap;
    c->qhead = 0;
}

static void item_release(struct sse_item *it)
{
    bus_event_release(it->ev);
    free(it->own);
}

static void q_pop(struct sse_conn *c)
{
    item_release(q_at(c, 0));
    c->qhead = (c->qhead + 1) % c->qcap;
    c->off = 0;
    if (--c->qlen == 0) { /* idle connections keep no queue */
        q_release(c->hub, c->q, c->qcap);
        c->q = NULL;
        c->qcap = c->qhead = 0;
    }
}

static void conn_schedule(struct sse_conn *c)
{
    struct sse_hub *h = c->hub;
    if (c->in_flush || c->want_write)
        return; /* EV_WRITE is armed: it flushes when writable */
    c->in_flush = true;
    c->fnext = h->flush_head;
    h->flush_head = c;
    if (!c->fnext) /* the first of the turn: one activation per fan-out */
        event_active(&h->flush_ev, EV_TIMEOUT, 1);
}

/* Queues a frame. Takes ev's reference and own. */
static void conn_push(struct sse_conn *c, const char *p, size_t len,
                      struct bus_event *ev, char *own)
{
    struct sse_hub *h = c->hub;
    if (c->closed || len == 0) { /* an empty item would never be consumed */
        bus_event_release(ev);
        free(own);
        return;
    }
    if (c->qlen == c->qcap)
        q_grow(c);
    *q_at(c, c->qlen) = (struct sse_item){p, len, ev, own};
    c->qlen++;
    c->pending += len;
    c->last_tick = h->tick;
    if (c->pending > h->cap) {
        h->stats.dropped_slow++;
        log_info("sse: dropping a slow consumer (%zu bytes pending)",
                 c->pending);
        conn_close(c);
        return;
    }
    conn_schedule(c);
}

static void conn_want_write(struct sse_conn *c, bool on)
{
    if (c->want_write == on)
        return;
    evutil_socket_t fd = event_get_fd(&c->ev);
    event_callback_fn cb = event_get_callback(&c->ev);
    c->want_write = on;
    event_del(&c->ev);
    event_assign(&c->ev, c->hub->srv->base, fd,
                 EV_READ | EV_PERSIST | (on ? EV_WRITE : 0), cb, c);
    event_add(&c->ev, NULL);
}

static void conn_consume(struct sse_conn *c, size_t n)
{
    while (n > 0 && c->qlen > 0) {
        size_t rest = q_at(c, 0)->len - c->off;
        if (n < rest) {
            c->off += n;
            c->pending -= n;
            return;
        }
        n -= rest;
        c->pending -= rest;
        q_pop(c);
    }
}

static void conn_unhold(struct sse_conn *c)
{
    if (c->held && c->sub && c->pending <= c->hub->hold_low) {
        c->held = false;
        bus_sub_hold(c->sub, false);
    }
}

/* Writes what the socket takes; returns false when c was closed. */
static bool conn_write(struct sse_conn *c)
{
    struct iovec iov[SSE_IOV];
    while (c->qlen > 0) {
        int n = 0;
        for (uint32_t i = 0; i < c->qlen && n < SSE_IOV; i++, n++) {
            struct sse_item *it = q_at(c, i);
            size_t off = i == 0 ? c->off : 0;
            iov[n].iov_base = (void *)(it->p + off);
            iov[n].iov_len = it->len - off;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(event_get_fd(&c->ev), &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_want_write(c, true);
            return true;
        }
        if (w < 0) {
            conn_close(c);
            return false;
        }
        c->hub->stats.bytes_out += (uint64_t)w;
        conn_consume(c, (size_t)w);
    }
    conn_want_write(c, false);
    if (c->closing) { /* the closing `error` frame is out */
        conn_close(c);
        return false;
    }
    conn_unhold(c);
    return true;
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
    struct sse_conn *c = arg;
    if (what & EV_READ) {
        /* The client sends nothing after its request: only EOF matters. */
        char tmp[512];
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                       errno != EINTR)) {
            conn_close(c);
            return;
        }
    }
    if (what & EV_WRITE)
        conn_write(c);
}

static void slot_link(struct sse_hub *h, struct sse_conn *c)
{
    c->slot = h->tick % h->nslots;
    c->prev = NULL;
    c->next = h->slots[c->slot];
    if (c->next)
        c->next->prev = c;
    h->slots[c->slot] = c;
}

static void slot_unlink(struct sse_hub *h, struct sse_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->slots[c->slot] = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_close(struct sse_conn *c)
{
    struct sse_hub *h = c->hub;
    if (c->closed)
        return;
    c->closed = true;
    event_del(&c->ev);
    close(event_get_fd(&c->ev));
    while (c->qlen > 0)
        q_pop(c);
    c->pending = 0;
    slot_unlink(h, c);
    h->stats.conns--;
    if (c->sub) {
        struct bus_sub *s = c->sub;
        c->sub = NULL;
        bus_unsubscribe(s); /* safe inside the bus's own callbacks */
    }
    c->gnext = h->grave;
    h->grave = c;
    if (!h->freeing)
        event_active(&h->flush_ev, EV_TIMEOUT, 1);
}

/* ---- bus callbacks ------------------------------------------------------ */

static void conn_push_frame(struct sse_conn *c, const char *type,
                            struct buf *json)
{
    struct buf f;
    size_t len;
    buf_init(&f);
    sse_frame(&f, 0, type, json->data ? json->data : "", json->len);
    char *p = buf_steal(&f, &len);
    conn_push(c, p, len, NULL, p);
}

/* The closing `error` frame (no id: never stored, never replayed). */
static void conn_end(struct sse_conn *c, const char *code,
                     const char *detail)
{
    struct buf j;
    struct json_w w;
    buf_init(&j);
    json_w_init(&w, &j);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "code", code);
    json_w_kstr(&w, "detail", detail ? detail : "");
    json_w_obj_end(&w);
    c->closing = true;
    conn_push_frame(c, "error", &j);
    buf_deinit(&j);
}

static void sse_on_event(void *arg, struct bus_event *ev)
{
    struct sse_conn *c = arg;
    bus_event_retain(ev);
    conn_push(c, ev->sse.data, ev->sse.len, ev, NULL);
    if (!c->closed && !c->live && !c->held &&
        c->pending > c->hub->hold_high) {
        c->held = true;
        bus_sub_hold(c->sub, true);
    }
}

static void sse_on_ready(void *arg, int64_t last_event_id)
{
    struct sse_conn *c = arg;
    struct buf j;
    struct json_w w;
    c->live = true;
    buf_init(&j);
    json_w_init(&w, &j);
    json_w_obj_begin(&w);
    json_w_kint(&w, "last_event_id", last_event_id);
    json_w_obj_end(&w);
    conn_push_frame(c, "ready", &j);
    buf_deinit(&j);
}

static void sse_on_end(void *arg, const char *code, const char *detail)
{
    struct sse_conn *c = arg;
    c->sub = NULL; /* already freed by the bus */
    conn_end(c, code, detail);
}

static const struct bus_sub_cbs sse_cbs = {
    .on_event = sse_on_event,
    .on_ready = sse_on_ready,
    .on_end = sse_on_end,
};

/* ---- the hub ------------------------------------------------------------ */

static void hub_sweep(struct sse_hub *h)
{
    struct sse_conn *c = h->grave, *keep = NULL;
    h->grave = NULL;
    while (c) {
        struct sse_conn *next = c->gnext;
        if (c->in_flush) { /* still listed: free on the next pass */
            c->gnext = keep;
            keep = c;
        } else {
            free(c);
        }
        c = next;
    }
    h->grave = keep;
    if (keep)
        event_active(&h->flush_ev, EV_TIMEOUT, 1);
}

static void hub_on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct sse_hub *h = arg;
    struct sse_conn *c = h->flush_head;
    h->flush_head = NULL;
    while (c) {
        struct sse_conn *next = c->fnext;
        c->in_flush = false;
        if (!c->closed)
            conn_write(c);
        c = next;
    }
    hub_sweep(h);
}

/* One slot a second: its connections get a ping when nothing was queued
 * for them during the last interval. A closing connection still here has
 * not taken its last frame for a whole interval: it goes. */
static void hub_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sse_hub *h = arg;
    h->tick++;
    struct sse_conn *c = h->slots[h->tick % h->nslots], *next;
    for (; c; c = next) {
        next = c->next;
        if (c->closing)
            conn_close(c);
        else if (c->qlen == 0 && h->tick - c->last_tick >= h->nslots)
            conn_push(c, sse_ping, sizeof(sse_ping) - 1, NULL, NULL);
    }
}

struct sse_hub *sse_hub_new(struct server *srv, struct bus *bus)
{
    struct sse_hub *h = xcalloc(1, sizeof(*h));
    const struct config *cfg = srv->cfg;
    h->srv = srv;
    h->bus = bus;
    h->nslots = cfg->sse_heartbeat_s > 0 ? (uint32_t)cfg->sse_heartbeat_s : 15;
    h->slots = xcalloc(h->nslots, sizeof(*h->slots));
    h->cap = cfg->sse_max_pending_bytes > 0
                 ? (size_t)cfg->sse_max_pending_bytes : (4u << 20);
    h->hold_high = SSE_HOLD_HIGH < h->cap / 2 ? SSE_HOLD_HIGH : h->cap / 2;
    h->hold_low = h->hold_high / 4;
    event_assign(&h->flush_ev, srv->base, -1, 0, hub_on_flush, h);
    event_assign(&h->tick_ev, srv->base, -1, EV_PERSIST, hub_on_tick, h);
    struct timeval sec = {1, 0};
    evtimer_add(&h->tick_ev, &sec);
    return h;
}

void sse_hub_free(struct sse_hub *h)
{
    if (!h)
        return;
    h->freeing = true;
    for (uint32_t i = 0; i < h->nslots; i++) {
        while (h->slots[i]) {
            struct sse_conn *c = h->slots[i];
            if (conn_write(c)) /* best effort, never blocks */
                conn_close(c);
        }
    }
    for (struct sse_conn *c = h->flush_head; c; c = c->fnext)
        c->in_flush = false;
    h->flush_head = NULL;
    hub_sweep(h);
    while (h->qfree) {
        struct qfree *f = h->qfree;
        h->qfree = f->next;
        free(f);
    }
    event_del(&h->flush_ev);
    event_del(&h->tick_ev);
    free(h->slots);
    free(h);
}

/* Moves the socket out of the bufferevent without closing it: with the fd
 * set to -1 bufferevent_free neither closes it nor keeps it registered. */
static evutil_socket_t take_socket(struct bufferevent *bev, char **head,
                                   size_t *len)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct evbuffer *out = bufferevent_get_output(bev);
    /* A bufferevent freezes the start of its output (only it drains it):
     * thaw it to take the response head out. */
    evbuffer_unfreeze(out, 1);
    *len = evbuffer_get_length(out);
    *head = xmalloc(*len + 1);
    if (evbuffer_remove(out, *head, *len) != (int)*len)
        *len = 0;
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    bufferevent_setfd(bev, -1);
    bufferevent_free(bev);
    return fd;
}

/* Without TCP_NODELAY a frame written while the previous one is not yet
 * acknowledged waits for that ACK (Nagle), and a reader that only reads
 * sends its ACKs delayed: up to tens of ms added to an event's latency.
 * Frames are already coalesced per loop turn. Fails harmlessly on a unix
 * socket. */
static void sock_nodelay(evutil_socket_t fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int sse_serve(struct sse_hub *h, struct bufferevent *bev,
              const char *chat_id, const char *user_id, int64_t after)
{
    char *head;
    size_t len;
    evutil_socket_t fd = take_socket(bev, &head, &len);
    if (fd < 0 || h->freeing) {
        free(head);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    evutil_make_socket_nonblocking(fd);
    sock_nodelay(fd);
    struct sse_conn *c = xcalloc(1, sizeof(*c));
    c->hub = h;
    event_assign(&c->ev, h->srv->base, fd, EV_READ | EV_PERSIST, conn_on_io,
                 c);
    event_add(&c->ev, NULL);
    slot_link(h, c);
    h->stats.conns++;
    if (user_id)
        snprintf(c->user_id, sizeof(c->user_id), "%s", user_id);
    conn_push(c, head, len, NULL, head);
    c->sub = bus_subscribe(h->bus, chat_id, after, &sse_cbs, c);
    if (!c->sub) {
        conn_close(c);
        return -1;
    }
    return 0;
}

void sse_end_user(struct sse_hub *h, const char *user_id, const char *code,
                  const char *detail)
{
    for (uint32_t i = 0; i < h->nslots; i++) {
        for (struct sse_conn *c = h->slots[i], *next; c; c = next) {
            next = c->next;
            if (!c->sub || strcmp(c->user_id, user_id) != 0)
                continue;
            struct bus_sub *s = c->sub;
            c->sub = NULL;
            bus_unsubscribe(s);
            conn_end(c, code, detail);
        }
    }
}

void sse_get_stats(const struct sse_hub *h, struct sse_stats *out)
{
    *out = h->stats;
}
