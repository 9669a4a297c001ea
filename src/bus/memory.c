/* memory.c: the embedded bus (no Redis). An event completed in its chat's
 * order is fed straight to the chat's local subscribers; the chat keeps a
 * ring of its most recent durable events (contiguous seqs, at most
 * BUS_RING_MAX events, bus_stream_maxlen if smaller, and BUS_RING_BYTES)
 * so that a client resuming from a recent id replays without touching the
 * log. The ring goes with the chat's state when the chat is idle. All
 * rings together hold at most bus_ring_total_bytes: past it the oldest
 * events of the ring pushed to longest ago go first (a thousand busy chats
 * would otherwise hold 256 MiB); a resume from before a ring's first event
 * reads the log, as one from a dropped chat does. */
#include <stdlib.h>

#include "bus_int.h"
#include "corral/config.h"
#include "corral/mem.h"
#include "corral/server.h"

static struct bus_event *ring_at(const struct bus_chat *c, int i)
{
    return c->ring[(c->ring_head + i) % c->ring_cap];
}

/* What an event held by a ring costs: its struct and both buffers as
 * allocated, so the caps bound memory, not just payload. */
static size_t ring_cost(const struct bus_event *ev)
{
    return sizeof(*ev) + ev->sse.cap + ev->data.cap;
}

static void rings_unlink(struct bus *b, struct bus_chat *c)
{
    if (!c->in_rings)
        return;
    if (c->rprev)
        c->rprev->rnext = c->rnext;
    else
        b->rings_head = c->rnext;
    if (c->rnext)
        c->rnext->rprev = c->rprev;
    else
        b->rings_tail = c->rprev;
    c->rprev = c->rnext = NULL;
    c->in_rings = false;
}

/* c was just pushed to: it goes last in the eviction order. */
static void rings_touch(struct bus *b, struct bus_chat *c)
{
    rings_unlink(b, c);
    c->rprev = b->rings_tail;
    if (b->rings_tail)
        b->rings_tail->rnext = c;
    else
        b->rings_head = c;
    b->rings_tail = c;
    c->in_rings = true;
}

static void ring_pop(struct bus *b, struct bus_chat *c)
{
    struct bus_event *ev = ring_at(c, 0);
    size_t size = ring_cost(ev);
    c->ring_bytes -= size;
    b->stats.ring_bytes -= size;
    bus_event_release(ev);
    c->ring_head = (c->ring_head + 1) % c->ring_cap;
    c->ring_n--;
}

static void ring_clear(struct bus *b, struct bus_chat *c)
{
    while (c->ring_n > 0)
        ring_pop(b, c);
    rings_unlink(b, c);
    free(c->ring);
    c->ring = NULL;
    c->ring_head = c->ring_cap = 0;
}

/* Drops the oldest events of the least recently pushed rings until all
 * rings fit in bus_ring_total_bytes. An emptied ring is freed. */
static void rings_enforce_total(struct bus *b)
{
    uint64_t cap = (uint64_t)b->srv->cfg->bus_ring_total_bytes;
    while (b->stats.ring_bytes > cap && b->rings_head) {
        struct bus_chat *c = b->rings_head;
        ring_pop(b, c);
        b->stats.ring_evictions++;
        if (c->ring_n == 0)
            ring_clear(b, c);
    }
}

/* Grows by doubling up to max: most chats hold a few events. */
static void ring_grow(struct bus_chat *c, int max)
{
    int cap = c->ring_cap ? c->ring_cap * 2 : 16;
    if (cap > max)
        cap = max;
    struct bus_event **r = xcalloc((size_t)cap, sizeof(*r));
    for (int i = 0; i < c->ring_n; i++)
        r[i] = ring_at(c, i);
    free(c->ring);
    c->ring = r;
    c->ring_head = 0;
    c->ring_cap = cap;
}

static void ring_push(struct bus *b, struct bus_chat *c, struct bus_event *ev)
{
    int max = b->srv->cfg->bus_stream_maxlen;
    if (max <= 0 || max > BUS_RING_MAX)
        max = BUS_RING_MAX;
    size_t size = ring_cost(ev);
    if (c->ring_n > 0 && ring_at(c, c->ring_n - 1)->seq + 1 != ev->seq)
        ring_clear(b, c); /* a jump (seq reloaded): keep it contiguous */
    while (c->ring_n > 0 &&
           (c->ring_n >= max || c->ring_bytes + size > BUS_RING_BYTES))
        ring_pop(b, c);
    if (size > BUS_RING_BYTES ||
        size > (uint64_t)b->srv->cfg->bus_ring_total_bytes) {
        ring_clear(b, c); /* the ring would not be contiguous */
        return;
    }
    if (c->ring_n == c->ring_cap)
        ring_grow(c, max);
    bus_event_retain(ev);
    c->ring[(c->ring_head + c->ring_n) % c->ring_cap] = ev;
    c->ring_n++;
    c->ring_bytes += size;
    b->stats.ring_bytes += size;
    rings_touch(b, c);
    rings_enforce_total(b);
}

static void mem_start(struct bus *b)
{
}

static void mem_stop(struct bus *b)
{
}

static void mem_emit(struct bus *b, struct bus_chat *c, struct bus_pub *p)
{
    if (p->kind == BUS_PUB_END)
        return; /* one process: bus_end_chat ended everything already */
    int64_t seq = p->kind == BUS_PUB_DURABLE ? p->seq : 0;
    struct bus_event *ev = bus_event_take(seq, c->id, p->type, &p->data);
    if (seq > 0)
        ring_push(b, c, ev);
    bus_feed(b, c, ev);
    bus_event_release(ev);
}

static void mem_make_ready(struct bus *b, struct bus_chat *c)
{
    c->watch = BUS_WATCH_READY;
    bus_watch_ready(b, c);
}

/* live_seq is the last durable seq fed here, from the first load on. */
static void mem_loaded(struct bus *b, struct bus_chat *c)
{
    if (!c->live_init) {
        c->live_init = true;
        c->live_seq = c->committed;
    }
    if (c->watch == BUS_WATCH_INIT)
        mem_make_ready(b, c);
}

static void mem_watch(struct bus *b, struct bus_chat *c)
{
    b->stats.upstream++;
    if (c->live_init) {
        mem_make_ready(b, c);
        return;
    }
    c->watch = BUS_WATCH_INIT;
    bus_chat_load(b, c);
}

static void mem_unwatch(struct bus *b, struct bus_chat *c)
{
    b->stats.upstream--;
    c->watch = BUS_WATCH_NONE;
}

static int mem_replay(struct bus *b, struct bus_sub *s, int max)
{
    struct bus_chat *c = s->chat;
    if (c->ring_n == 0)
        return BUS_REPLAY_MISS;
    int64_t first = ring_at(c, 0)->seq;
    int64_t last = first + c->ring_n - 1;
    if (s->pos + 1 < first || s->pos >= last)
        return BUS_REPLAY_MISS;
    int n = 0;
    /* Nothing changes the ring while callbacks run: emits happen only
     * from the deferred pass, never from inside a delivery. */
    while (n < max && !s->dead && !s->held && s->pos < last) {
        bus_sub_deliver(s, ring_at(c, (int)(s->pos + 1 - first)));
        n++;
    }
    return n;
}

static void mem_chat_free(struct bus *b, struct bus_chat *c)
{
    ring_clear(b, c);
}

const struct bus_impl bus_memory_impl = {
    .name = "memory",
    .start = mem_start,
    .stop = mem_stop,
    .emit = mem_emit,
    .watch = mem_watch,
    .unwatch = mem_unwatch,
    .loaded = mem_loaded,
    .replay = mem_replay,
    .chat_free = mem_chat_free,
};
