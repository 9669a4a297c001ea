/* bus.c: the common part of the event bus (DESIGN.md §4): per-chat seq
 * allocation, the group commit of durable events of all chats, completion
 * of publishes in each chat's order, the local fan-out with per-subscriber
 * replay, and the life of chat state. memory.c and redis.c supply the
 * live feed and the bus-side replay behind struct bus_impl.
 *
 * Seq: this instance owns every chat (one box; leases across instances
 * are out of scope, DESIGN.md §10). A chat's seq is loaded from the log
 * (SELECT max(seq)) the first time it is needed and then allocated in
 * memory when a batch is built, never earlier: with one batch in flight at
 * a time, a failed batch is rolled back by reloading the seq from the log,
 * so the log's seqs stay contiguous.
 *
 * Publishes of a chat form one queue and complete strictly in order: a
 * durable event once its batch committed (then it is emitted to the feed
 * and done fires), an ephemeral event only when every durable event before
 * it has completed. Nothing completes from inside bus_publish: completions
 * run from the batch's callback or from the `kick` event.
 *
 * Subscribers: each has a position (the last durable seq it got). It
 * starts by replaying from the bus (memory ring or redis XRANGE) or else
 * the log, page by page, until it reaches the chat's live_seq (the last
 * durable seq fed live); it then turns live and gets `ready` once. A live
 * subscriber that sees a durable seq beyond pos + 1 (the feed skipped,
 * e.g. redis trimmed before it was read) replays the gap from the log.
 * Objects that callbacks may still reach are freed two-phase: marked dead,
 * swept from `kick` after the callback stack unwound. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"
#include "corral/config.h"
#include "corral/ids.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/sse.h"

static const struct json_limits bus_json_limits = {
    .max_bytes = 16u << 20,
    .max_depth = JSON_W_MAX_DEPTH,
    .max_tokens = 1 << 22,
};

static void chat_drain(struct bus *b, struct bus_chat *c);
static void batch_flush(struct bus *b);

/* ---- events ------------------------------------------------------------- */

struct bus_event *bus_event_take(int64_t seq, const char *chat_id,
                                 const char *type, struct buf *data)
{
    struct bus_event *ev = xcalloc(1, sizeof(*ev));
    ev->refs = 1;
    ev->seq = seq;
    snprintf(ev->chat_id, sizeof(ev->chat_id), "%s", chat_id);
    snprintf(ev->type, sizeof(ev->type), "%s", type);
    ev->data = *data;
    buf_init(data);
    buf_init(&ev->sse);
    sse_frame(&ev->sse, seq, ev->type, ev->data.data ? ev->data.data : "",
              ev->data.len);
    return ev;
}

struct bus_event *bus_event_new(int64_t seq, const char *chat_id,
                                const char *type, const char *data,
                                size_t len)
{
    struct buf d;
    buf_init(&d);
    buf_append(&d, data, len);
    return bus_event_take(seq, chat_id, type, &d);
}

void bus_event_retain(struct bus_event *ev)
{
    ev->refs++;
}

void bus_event_release(struct bus_event *ev)
{
    if (!ev || --ev->refs > 0)
        return;
    buf_deinit(&ev->data);
    buf_deinit(&ev->sse);
    free(ev);
}

/* ---- chats by id -------------------------------------------------------- */

/* Chat ids are kept in lowercase, as PostgreSQL prints uuids. */
static void id_lower(char out[BUS_CHAT_ID_LEN + 1], const char *id)
{
    size_t i = 0;
    for (; id[i] && i < BUS_CHAT_ID_LEN; i++)
        out[i] = (char)tolower((unsigned char)id[i]);
    out[i] = '\0';
}

struct bus_chat *bus_chat_find(struct bus *b, const char *id)
{
    struct bus_chat *c = b->tab[(size_t)ids_hash(id) & (b->nb - 1)];
    while (c && strcmp(c->id, id) != 0)
        c = c->hnext;
    return c;
}

static void chat_rehash(struct bus *b, size_t nb)
{
    struct bus_chat **tab = xcalloc(nb, sizeof(*tab));
    for (size_t i = 0; i < b->nb; i++) {
        struct bus_chat *c = b->tab[i], *next;
        for (; c; c = next) {
            next = c->hnext;
            size_t j = (size_t)ids_hash(c->id) & (nb - 1);
            c->hnext = tab[j];
            tab[j] = c;
        }
    }
    free(b->tab);
    b->tab = tab;
    b->nb = nb;
}

static struct bus_chat *chat_get(struct bus *b, const char *id)
{
    struct bus_chat *c = bus_chat_find(b, id);
    if (c)
        return c;
    if (b->nchats >= b->nb)
        chat_rehash(b, b->nb * 2);
    c = xcalloc(1, sizeof(*c));
    snprintf(c->id, sizeof(c->id), "%s", id);
    c->qtail = &c->qhead;
    c->active_us = server_mono_us();
    size_t j = (size_t)ids_hash(id) & (b->nb - 1);
    c->hnext = b->tab[j];
    b->tab[j] = c;
    b->nchats++;
    return c;
}

static void chat_free(struct bus *b, struct bus_chat *c)
{
    b->impl->chat_free(b, c);
    free(c);
}

/* ---- deferred work and async ops ---------------------------------------- */

static void kick(struct bus *b)
{
    if (!b->freeing)
        event_active(&b->kick, EV_TIMEOUT, 1);
}

static void drain_schedule(struct bus *b, struct bus_chat *c)
{
    if (c->in_drain)
        return;
    c->in_drain = true;
    c->drnext = NULL;
    *b->drain_tail = c;
    b->drain_tail = &c->drnext;
    kick(b);
}

void bus_sub_run_later(struct bus_sub *s)
{
    struct bus *b = s->b;
    if (s->queued || s->dead)
        return;
    s->queued = true;
    s->rnext = NULL;
    *b->run_tail = s;
    b->run_tail = &s->rnext;
    kick(b);
}

struct bus_op *bus_op_new(struct bus *b, struct bus_chat *c)
{
    struct bus_op *op = xcalloc(1, sizeof(*op));
    op->b = b;
    op->chat = c;
    if (c)
        c->ops++;
    op->next = b->ops;
    if (b->ops)
        b->ops->prev = op;
    b->ops = op;
    return op;
}

struct bus *bus_op_end(struct bus_op *op)
{
    struct bus *b = op->b;
    if (!b)
        return NULL;
    if (op->prev)
        op->prev->next = op->next;
    else
        b->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    if (op->chat)
        op->chat->ops--;
    return b;
}

/* ---- publish ------------------------------------------------------------ */

static void pub_free(struct bus_pub *p)
{
    buf_deinit(&p->data);
    free(p);
}

static void pub_fail_now(struct bus *b, struct bus_pub *p, const char *err)
{
    if (p->kind == BUS_PUB_DURABLE || p->kind == BUS_PUB_EPHEMERAL)
        b->stats.failed++;
    if (p->done)
        p->done(p->arg, -1, err);
    pub_free(p);
}

/* Failures found in bus_publish itself are delivered from the loop. */
static void pub_fail_later(struct bus *b, struct bus_pub *p, const char *err)
{
    p->err = err;
    p->next = NULL;
    *b->failq_tail = p;
    b->failq_tail = &p->next;
    kick(b);
}

static bool type_ok(const char *t)
{
    size_t n = 0;
    for (; t && t[n]; n++)
        if (!islower((unsigned char)t[n]) && !isdigit((unsigned char)t[n]) &&
            t[n] != '_')
            return false;
    return n > 0 && n <= BUS_TYPE_MAX;
}

/* A durable event goes into a batch with other chats' events: one that
 * PostgreSQL's json input would refuse must not fail the whole batch. */
static bool json_object_ok(const char *data, size_t len)
{
    struct json_doc *doc = NULL;
    if (json_parse(data, len, &bus_json_limits, &doc, NULL) != JSON_OK)
        return false;
    bool ok = json_type(doc, 0) == JSON_OBJECT;
    json_doc_free(doc);
    return ok;
}

static const char *pub_check(const char *chat_id, const char *mid,
                             const char *type, const char *data, size_t len,
                             bool durable)
{
    if (!chat_id || !ids_is_uuid(chat_id))
        return "bad_chat_id";
    if (mid && !ids_is_uuid(mid))
        return "bad_message_id";
    if (!type_ok(type))
        return "bad_type";
    if ((!data && len) || (len && memchr(data, '\0', len)))
        return "bad_data";
    if (durable && !json_object_ok(data ? data : "", len))
        return "invalid_json";
    return NULL;
}

static void dirty_add(struct bus *b, struct bus_chat *c)
{
    if (c->in_dirty)
        return;
    c->in_dirty = true;
    c->dnext = NULL;
    c->dprev = b->dirty_tail;
    if (b->dirty_tail)
        b->dirty_tail->dnext = c;
    else
        b->dirty_head = c;
    b->dirty_tail = c;
}

static void dirty_remove(struct bus *b, struct bus_chat *c)
{
    if (!c->in_dirty)
        return;
    c->in_dirty = false;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        b->dirty_head = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    else
        b->dirty_tail = c->dprev;
    c->dprev = c->dnext = NULL;
}

/* The recent commit rate: durable events committed in a sliding span of
 * RATE_WINDOWS group-commit windows (the last span's count weighted by
 * how much of it still overlaps). Long against one window, so a turn's
 * burst does not read as load, and a steady stream does. */
#define RATE_WINDOWS 16

static uint64_t rate_span_us(const struct bus *b)
{
    return (uint64_t)b->srv->cfg->event_batch_delay_ms * 1000u * RATE_WINDOWS;
}

static void rate_roll(struct bus *b, uint64_t now)
{
    uint64_t span = rate_span_us(b);
    if (now - b->rate_start_us < span)
        return;
    b->rate_prev = now - b->rate_start_us < 2 * span ? b->rate_cur : 0;
    b->rate_cur = 0;
    b->rate_start_us = now;
}

/* Light load: fewer than event_batch_eager events committed in the
 * recent span. */
static bool light_load(struct bus *b, uint64_t now)
{
    rate_roll(b, now);
    uint64_t span = rate_span_us(b), into = now - b->rate_start_us;
    double recent = b->rate_cur + b->rate_prev * (double)(span - into) /
                                      (double)span;
    return recent < b->srv->cfg->event_batch_eager;
}

static void batch_schedule(struct bus *b)
{
    const struct config *cfg = b->srv->cfg;
    if (b->ready <= 0 || b->freeing)
        return;
    /* Leading edge: with no commit in flight, an event is committed at the
     * end of this loop turn when no commit started within
     * event_batch_delay_ms, or while the load is light (a turn's few
     * durable events, a follow-up POST right after the last turn's end:
     * none is held back a window; DESIGN.md §4). Otherwise it waits for
     * the timer, so under load there is still one commit per window. */
    uint64_t window_us = (uint64_t)cfg->event_batch_delay_ms * 1000u;
    uint64_t now = server_mono_us();
    if (b->ready >= cfg->event_batch_max || cfg->event_batch_delay_ms <= 0 ||
        (!b->inflight && (now - b->last_flush_us >= window_us ||
                          light_load(b, now)))) {
        b->flush_due = true;
        kick(b);
        return;
    }
    if (!evtimer_pending(&b->batch_timer, NULL)) {
        int ms = cfg->event_batch_delay_ms;
        struct timeval tv = ms_to_timeval(ms);
        evtimer_add(&b->batch_timer, &tv);
    }
}

static void chat_enqueue(struct bus *b, struct bus_chat *c, struct bus_pub *p)
{
    p->chat = c;
    p->next = NULL;
    *c->qtail = p;
    c->qtail = &p->next;
    c->active_us = server_mono_us();
    if (p->kind == BUS_PUB_DURABLE) {
        c->nwait++;
        if (c->load == BUS_LOADED) {
            dirty_add(b, c);
            b->ready++;
            batch_schedule(b);
        }
    }
    if (c->load != BUS_LOADED)
        bus_chat_load(b, c);
    else if (p->kind != BUS_PUB_DURABLE)
        drain_schedule(b, c);
}

void bus_publish(struct bus *b, const char *chat_id, const char *message_id,
                 const char *type, const char *data, size_t len,
                 bool durable, bus_done_cb done, void *arg)
{
    struct bus_pub *p = xcalloc(1, sizeof(*p));
    p->kind = durable ? BUS_PUB_DURABLE : BUS_PUB_EPHEMERAL;
    p->done = done;
    p->arg = arg;
    buf_init(&p->data);
    if (b->freeing) {
        /* bus_free is running (a callback published): no loop turn is
         * left to defer to. */
        pub_fail_now(b, p, "shutting_down");
        return;
    }
    const char *err = pub_check(chat_id, message_id, type, data, len,
                                durable);
    if (err) {
        pub_fail_later(b, p, err);
        return;
    }
    snprintf(p->type, sizeof(p->type), "%s", type);
    if (message_id)
        id_lower(p->message_id, message_id);
    buf_append(&p->data, data ? data : "", len);
    char id[BUS_CHAT_ID_LEN + 1];
    id_lower(id, chat_id);
    chat_enqueue(b, chat_get(b, id), p);
}

void bus_last_seq(struct bus *b, const char *chat_id, bus_done_cb cb,
                  void *arg)
{
    struct bus_pub *p = xcalloc(1, sizeof(*p));
    p->kind = BUS_PUB_LAST_SEQ;
    p->done = cb;
    p->arg = arg;
    buf_init(&p->data);
    if (b->freeing) {
        pub_fail_now(b, p, "shutting_down");
        return;
    }
    if (!chat_id || !ids_is_uuid(chat_id)) {
        pub_fail_later(b, p, "bad_chat_id");
        return;
    }
    char id[BUS_CHAT_ID_LEN + 1];
    id_lower(id, chat_id);
    chat_enqueue(b, chat_get(b, id), p);
}

/* ---- loading a chat's seq ----------------------------------------------- */

static void chat_load_failed(struct bus *b, struct bus_chat *c,
                             const char *errmsg)
{
    log_warn("bus: loading the seq of chat %s failed: %s", c->id, errmsg);
    c->load = BUS_UNLOADED;
    /* Detached first: done callbacks may publish to this chat again. */
    struct bus_pub *p = c->qhead;
    c->qhead = NULL;
    c->qtail = &c->qhead;
    c->nwait = 0;
    while (p) {
        struct bus_pub *next = p->next;
        pub_fail_now(b, p, "db_unavailable");
        p = next;
    }
    if (c->watch == BUS_WATCH_INIT)
        bus_chat_end_subs(b, c, "db_unavailable",
                          "the event log could not be read");
}

static void chat_on_loaded(void *arg, const struct pg_reply *rep)
{
    struct bus_op *op = arg;
    struct bus_chat *c = op->chat;
    struct bus *b = bus_op_end(op);
    free(op);
    if (!b)
        return;
    const char *v = rep->status == PG_OK ? pg_val(rep->res, 0, 0) : NULL;
    if (!v) {
        chat_load_failed(b, c, rep->errmsg);
        return;
    }
    c->load = BUS_LOADED;
    c->last_alloc = c->committed = strtoll(v, NULL, 10);
    if (c->emitted < c->committed)
        c->emitted = c->committed;
    if (c->nwait) {
        dirty_add(b, c);
        b->ready += c->nwait;
        batch_schedule(b);
    }
    drain_schedule(b, c);
    b->impl->loaded(b, c);
}

void bus_chat_load(struct bus *b, struct bus_chat *c)
{
    if (c->load != BUS_UNLOADED || b->freeing)
        return;
    c->load = BUS_LOADING;
    struct bus_op *op = bus_op_new(b, c);
    store_events_max_seq(b->srv->pg, c->id, chat_on_loaded, op);
}

/* After a failed batch: the seqs handed out are void, and the commit may
 * even have happened (a lost connection), so the log decides again. */
static void chat_unload(struct bus *b, struct bus_chat *c)
{
    if (c->load != BUS_LOADED)
        return;
    c->load = BUS_UNLOADED;
    if (c->in_dirty) {
        b->ready -= c->nwait;
        dirty_remove(b, c);
    }
}

/* ---- group commit ------------------------------------------------------- */

static void batch_free(struct bus_batch *bt)
{
    free(bt->pubs);
    free(bt->seqs);
    free(bt->params);
    free(bt);
}

/* Takes the waiting durable events of the dirty chats, oldest chat first,
 * up to event_batch_max events and BUS_BATCH_BYTES, and numbers them. */
static struct bus_batch *batch_take(struct bus *b)
{
    int max = b->srv->cfg->event_batch_max;
    struct bus_batch *bt = xcalloc(1, sizeof(*bt));
    int cap = b->ready < max ? b->ready : max;
    size_t bytes = 0;
    bt->pubs = xcalloc((size_t)cap, sizeof(*bt->pubs));
    while (b->dirty_head && bt->n < cap) {
        struct bus_chat *c = b->dirty_head;
        for (struct bus_pub *p = c->qhead; p && bt->n < cap; p = p->next) {
            if (p->kind != BUS_PUB_DURABLE || p->state != BUS_PUB_WAITING)
                continue;
            if (bt->n > 0 && bytes + p->data.len > BUS_BATCH_BYTES)
                return bt;
            p->state = BUS_PUB_BATCHED;
            p->seq = ++c->last_alloc;
            bt->pubs[bt->n++] = p;
            bytes += p->data.len;
            c->nwait--;
            b->ready--;
        }
        dirty_remove(b, c);
        if (c->nwait > 0)
            dirty_add(b, c); /* batch full: its rest goes after the others */
    }
    return bt;
}

static const char *pg_err_code(enum pg_status st)
{
    switch (st) {
    case PG_OK: return NULL;
    case PG_E_QUERY: return "db_error";
    case PG_E_UNAVAILABLE: return "db_unavailable";
    case PG_E_TIMEOUT: return "db_timeout";
    case PG_E_CANCELLED: return "shutting_down";
    }
    return "db_error";
}

static void batch_mark(struct bus *b, struct bus_batch *bt,
                       const struct pg_reply *rep)
{
    bool ok = rep->status == PG_OK;
    for (int i = 0; ok && i < PQntuples(rep->res); i++) {
        const char *id = pg_val(rep->res, i, 0);
        struct bus_chat *c = id ? bus_chat_find(b, id) : NULL;
        if (c)
            c->batch_ok = true;
    }
    for (int i = 0; i < bt->n; i++) {
        struct bus_pub *p = bt->pubs[i];
        struct bus_chat *c = p->chat;
        if (ok && c->batch_ok) {
            p->state = BUS_PUB_OK;
            if (p->seq > c->committed)
                c->committed = p->seq;
        } else {
            p->state = BUS_PUB_FAILED;
            p->err = ok ? "chat_not_found" : pg_err_code(rep->status);
            chat_unload(b, c);
        }
    }
}

static void batch_on_done(void *arg, const struct pg_reply *rep)
{
    struct bus_op *op = arg;
    struct bus_batch *bt = op->batch;
    struct bus *b = bus_op_end(op);
    free(op);
    if (!b) { /* bus_free failed and freed the events already */
        batch_free(bt);
        return;
    }
    b->inflight = NULL;
    if (rep->status == PG_OK)
        b->stats.committed_batches++;
    else
        log_warn("bus: group commit of %d events failed: %s", bt->n,
                 rep->errmsg);
    batch_mark(b, bt, rep);
    for (int i = 0; i < bt->n; i++) {
        struct bus_chat *c = bt->pubs[i]->chat;
        c->batch_ok = false;
        drain_schedule(b, c);
        if (c->load == BUS_UNLOADED)
            bus_chat_load(b, c);
    }
    batch_free(bt);
    /* What arrived meanwhile has waited one commit already. */
    if (b->ready > 0) {
        b->flush_due = true;
        batch_flush(b);
    }
}

static void batch_flush(struct bus *b)
{
    if (b->inflight || b->ready <= 0 || b->freeing)
        return;
    b->flush_due = false;
    b->last_flush_us = server_mono_us();
    evtimer_del(&b->batch_timer);
    struct bus_batch *bt = batch_take(b);
    rate_roll(b, b->last_flush_us);
    b->rate_cur += bt->n;
    bt->seqs = xcalloc((size_t)bt->n, sizeof(*bt->seqs));
    bt->params = xcalloc((size_t)bt->n * 5, sizeof(*bt->params));
    for (int i = 0; i < bt->n; i++) {
        struct bus_pub *p = bt->pubs[i];
        const char **pa = bt->params + i * 5;
        snprintf(bt->seqs[i], sizeof(bt->seqs[i]), "%" PRId64, p->seq);
        pa[0] = p->chat->id;
        pa[1] = bt->seqs[i];
        pa[2] = p->type;
        pa[3] = buf_cstr(&p->data);
        pa[4] = p->message_id[0] ? p->message_id : NULL;
    }
    b->inflight = bt;
    struct bus_op *op = bus_op_new(b, NULL);
    op->batch = bt;
    store_events_insert(b->srv->pg, bt->n, bt->params, batch_on_done, op);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    b->flush_due = true;
    batch_flush(b);
}

/* ---- completing publishes in order -------------------------------------- */

static bool pub_ready(const struct bus_chat *c, const struct bus_pub *p)
{
    switch (p->kind) {
    case BUS_PUB_DURABLE:
        return p->state == BUS_PUB_OK || p->state == BUS_PUB_FAILED;
    case BUS_PUB_EPHEMERAL:
    case BUS_PUB_LAST_SEQ:
    case BUS_PUB_END:
        return c->load == BUS_LOADED;
    }
    return false;
}

static void pub_complete(struct bus *b, struct bus_chat *c, struct bus_pub *p)
{
    switch (p->kind) {
    case BUS_PUB_DURABLE:
        if (p->state != BUS_PUB_OK) {
            b->stats.failed++;
            if (p->done)
                p->done(p->arg, -1, p->err);
            return;
        }
        c->emitted = p->seq;
        b->impl->emit(b, c, p);
        b->stats.published++;
        if (p->done)
            p->done(p->arg, p->seq, NULL);
        return;
    case BUS_PUB_EPHEMERAL:
        b->impl->emit(b, c, p);
        b->stats.published++;
        if (p->done)
            p->done(p->arg, 0, NULL);
        return;
    case BUS_PUB_LAST_SEQ:
        if (p->done)
            p->done(p->arg, c->emitted, NULL);
        return;
    case BUS_PUB_END:
        b->impl->emit(b, c, p);
        return;
    }
}

static void chat_drain(struct bus *b, struct bus_chat *c)
{
    struct bus_pub *p;
    while ((p = c->qhead) && !b->freeing && pub_ready(c, p)) {
        c->qhead = p->next;
        if (!c->qhead)
            c->qtail = &c->qhead;
        pub_complete(b, c, p);
        pub_free(p);
    }
}

/* ---- subscribers -------------------------------------------------------- */

static void sub_kill(struct bus *b, struct bus_sub *s)
{
    struct bus_chat *c = s->chat;
    s->dead = true;
    c->nsubs--;
    c->active_us = server_mono_us();
    b->stats.subscribers--;
    if (c->nsubs == 0)
        b->impl->unwatch(b, c);
    s->in_grave = true;
    s->gnext = b->grave;
    b->grave = s;
    kick(b);
}

static void sub_end(struct bus *b, struct bus_sub *s, const char *code,
                    const char *detail)
{
    sub_kill(b, s);
    s->cbs.on_end(s->arg, code, detail);
}

void bus_chat_end_subs(struct bus *b, struct bus_chat *c, const char *code,
                       const char *detail)
{
    /* Safe while callbacks run: nothing leaves the list until the sweep. */
    for (struct bus_sub *s = c->subs; s; s = s->next)
        if (!s->dead)
            sub_end(b, s, code, detail);
}

void bus_sub_deliver(struct bus_sub *s, struct bus_event *ev)
{
    if (ev->seq > 0)
        s->pos = ev->seq;
    s->b->stats.delivered++;
    s->cbs.on_event(s->arg, ev);
}

void bus_feed(struct bus *b, struct bus_chat *c, struct bus_event *ev)
{
    if (ev->seq > 0) {
        if (ev->seq <= c->live_seq)
            return; /* already fed (redis: read back after a re-watch) */
        c->live_seq = ev->seq;
    }
    for (struct bus_sub *s = c->subs; s; s = s->next) {
        if (s->dead || s->state != BUS_SUB_LIVE)
            continue;
        if (ev->seq > 0 && ev->seq <= s->pos)
            continue;
        if (ev->seq > s->pos + 1) {
            /* A gap in the feed: the log has it (committed first). */
            s->state = BUS_SUB_REPLAY;
            bus_sub_run_later(s);
            continue;
        }
        bus_sub_deliver(s, ev);
    }
}

static void sub_go_live(struct bus_sub *s)
{
    s->state = BUS_SUB_LIVE;
    if (!s->ready_sent) {
        s->ready_sent = true;
        s->cbs.on_ready(s->arg, s->pos);
    }
}

static void sub_step(struct bus *b, struct bus_sub *s)
{
    struct bus_chat *c = s->chat;
    if (s->op || s->held || c->watch != BUS_WATCH_READY ||
        s->state == BUS_SUB_LIVE)
        return;
    if (s->state == BUS_SUB_START) {
        s->pos = s->after < 0 ? c->live_seq : s->after;
        s->state = BUS_SUB_REPLAY;
    }
    int budget = BUS_STEP_EVENTS;
    while (!s->dead && !s->held && s->state == BUS_SUB_REPLAY) {
        if (s->pos >= c->live_seq) {
            sub_go_live(s);
            return;
        }
        if (budget <= 0) { /* let other work run between pages */
            bus_sub_run_later(s);
            return;
        }
        int n = b->impl->replay(b, s, budget);
        if (n == BUS_REPLAY_ASYNC)
            return;
        if (n <= 0) {
            bus_replay_from_log(b, s);
            return;
        }
        b->stats.replay_bus++;
        budget -= n;
    }
}

static void log_page_deliver(struct bus_sub *s, PGresult *res)
{
    int n = PQntuples(res);
    for (int i = 0; i < n && !s->dead && !s->held; i++) {
        const char *v = pg_val(res, i, 0), *type = pg_val(res, i, 1);
        const char *payload = pg_val(res, i, 2);
        if (!v || !type || !payload)
            continue;
        int64_t seq = strtoll(v, NULL, 10);
        if (seq <= s->pos)
            continue;
        struct bus_event *ev = bus_event_new(
            seq, s->chat->id, type, payload, (size_t)PQgetlength(res, i, 2));
        bus_sub_deliver(s, ev);
        bus_event_release(ev);
    }
    if (n == 0 && !s->dead && s->pos < s->chat->live_seq) {
        log_warn("bus: the log of chat %s ends at %" PRId64
                 " before the live feed's %" PRId64,
                 s->chat->id, s->pos, s->chat->live_seq);
        s->pos = s->chat->live_seq;
    }
}

static void on_log_page(void *arg, const struct pg_reply *rep)
{
    struct bus_op *op = arg;
    struct bus_sub *s = op->sub;
    struct bus *b = bus_op_end(op);
    free(op);
    if (!b || !s) /* bus gone, or subscriber swept meanwhile */
        return;
    s->op = NULL;
    if (s->dead)
        return;
    if (rep->status != PG_OK) {
        log_warn("bus: replay of chat %s: %s", s->chat->id, rep->errmsg);
        sub_end(b, s, "db_unavailable", "the event log could not be read");
        return;
    }
    log_page_deliver(s, rep->res);
    if (!s->dead)
        bus_sub_run_later(s);
}

void bus_replay_from_log(struct bus *b, struct bus_sub *s)
{
    char after[24], limit[16];
    struct bus_op *op = bus_op_new(b, NULL);
    op->sub = s;
    op->from = s->pos;
    s->op = op;
    snprintf(after, sizeof(after), "%" PRId64, s->pos);
    snprintf(limit, sizeof(limit), "%d", BUS_PAGE);
    b->stats.replay_log++;
    store_events_range(b->srv->pg, s->chat->id, after, limit, on_log_page,
                       op);
}

void bus_watch_ready(struct bus *b, struct bus_chat *c)
{
    for (struct bus_sub *s = c->subs; s; s = s->next)
        if (!s->dead && s->state == BUS_SUB_START)
            bus_sub_run_later(s);
}

struct bus_sub *bus_subscribe(struct bus *b, const char *chat_id,
                              int64_t after, const struct bus_sub_cbs *cbs,
                              void *arg)
{
    if (b->freeing || !cbs || !chat_id || !ids_is_uuid(chat_id))
        return NULL;
    char id[BUS_CHAT_ID_LEN + 1];
    id_lower(id, chat_id);
    struct bus_chat *c = chat_get(b, id);
    struct bus_sub *s = xcalloc(1, sizeof(*s));
    s->b = b;
    s->chat = c;
    s->cbs = *cbs;
    s->arg = arg;
    s->after = after;
    s->state = BUS_SUB_START;
    s->prev = c->subs_tail;
    if (c->subs_tail)
        c->subs_tail->next = s;
    else
        c->subs = s;
    c->subs_tail = s;
    c->active_us = server_mono_us();
    b->stats.subscribers++;
    if (++c->nsubs == 1)
        b->impl->watch(b, c);
    bus_sub_run_later(s);
    return s;
}

void bus_unsubscribe(struct bus_sub *s)
{
    if (s && !s->dead)
        sub_kill(s->b, s);
}

void bus_sub_hold(struct bus_sub *s, bool hold)
{
    if (!s || s->dead)
        return;
    s->held = hold;
    if (!hold && s->state != BUS_SUB_LIVE)
        bus_sub_run_later(s);
}

void bus_end_chat(struct bus *b, const char *chat_id, const char *code,
                  const char *detail)
{
    if (!chat_id || !ids_is_uuid(chat_id))
        return;
    char id[BUS_CHAT_ID_LEN + 1];
    id_lower(id, chat_id);
    struct bus_chat *c = bus_chat_find(b, id);
    if (c)
        bus_chat_end_subs(b, c, code, detail);
    if (b->freeing || b->impl != &bus_redis_impl)
        return;
    /* Other instances end their subscribers when they read this marker,
     * in the chat's order. */
    struct bus_pub *p = xcalloc(1, sizeof(*p));
    p->kind = BUS_PUB_END;
    buf_init(&p->data);
    snprintf(p->type, sizeof(p->type), "%s", code ? code : "chat_deleted");
    buf_puts(&p->data, detail ? detail : "");
    chat_enqueue(b, chat_get(b, id), p);
}

/* ---- the deferred pass -------------------------------------------------- */

static void sub_free(struct bus_sub *s)
{
    struct bus_chat *c = s->chat;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        c->subs_tail = s->prev;
    if (s->op)
        s->op->sub = NULL;
    free(s);
}

static void sweep(struct bus *b)
{
    struct bus_sub *s = b->grave, *keep = NULL;
    b->grave = NULL;
    while (s) {
        struct bus_sub *next = s->gnext;
        if (s->queued) { /* still on the run list: next pass */
            s->gnext = keep;
            keep = s;
        } else {
            sub_free(s);
        }
        s = next;
    }
    b->grave = keep;
    if (keep)
        kick(b);
}

static void run_pass(struct bus *b)
{
    struct bus_pub *f = b->failq;
    b->failq = NULL;
    b->failq_tail = &b->failq;
    while (f) {
        struct bus_pub *next = f->next;
        pub_fail_now(b, f, f->err);
        f = next;
    }
    struct bus_chat *c = b->drain_head;
    b->drain_head = NULL;
    b->drain_tail = &b->drain_head;
    while (c) {
        struct bus_chat *next = c->drnext;
        c->in_drain = false;
        chat_drain(b, c);
        c = next;
    }
    if (b->flush_due)
        batch_flush(b);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    run_pass(b);
    struct bus_sub *s = b->run_head;
    b->run_head = NULL;
    b->run_tail = &b->run_head;
    while (s) {
        struct bus_sub *next = s->rnext;
        s->queued = false;
        if (!s->dead)
            sub_step(b, s);
        s = next;
    }
    sweep(b);
}

/* ---- dropping idle chat state ------------------------------------------- */

static bool chat_collectable(const struct bus_chat *c)
{
    return !c->subs && !c->qhead && c->ops == 0 && !c->in_drain &&
           !c->in_dirty && c->load != BUS_LOADING &&
           c->watch == BUS_WATCH_NONE;
}

static void gc_bucket(struct bus *b, size_t i, uint64_t now, uint64_t idle)
{
    struct bus_chat **pp = &b->tab[i];
    while (*pp) {
        struct bus_chat *c = *pp;
        if (chat_collectable(c) && now - c->active_us >= idle) {
            *pp = c->hnext;
            b->nchats--;
            chat_free(b, c);
        } else {
            pp = &c->hnext;
        }
    }
}

/* A slice of the table per tick, so a tick stays short with many chats;
 * a chat's seq is reloaded from the log when it is used again. */
static void on_gc_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    uint64_t now = server_mono_us();
    for (size_t n = 0; n < BUS_GC_BUCKETS && n < b->nb; n++) {
        b->gc_cursor = (b->gc_cursor + 1) & (b->nb - 1);
        gc_bucket(b, b->gc_cursor, now, BUS_CHAT_IDLE_US);
    }
}

void bus_debug_drop_idle(struct bus *b)
{
    uint64_t now = server_mono_us();
    for (size_t i = 0; i < b->nb; i++)
        gc_bucket(b, i, now, 0);
}

/* ---- life cycle --------------------------------------------------------- */

struct bus *bus_new(struct server *srv)
{
    struct bus *b = xcalloc(1, sizeof(*b));
    b->srv = srv;
    b->impl = srv->redis ? &bus_redis_impl : &bus_memory_impl;
    b->nb = 64;
    b->tab = xcalloc(b->nb, sizeof(*b->tab));
    b->failq_tail = &b->failq;
    b->drain_tail = &b->drain_head;
    b->run_tail = &b->run_head;
    event_assign(&b->kick, srv->base, -1, 0, on_kick, b);
    evtimer_assign(&b->batch_timer, srv->base, on_batch_timer, b);
    event_assign(&b->gc_timer, srv->base, -1, EV_PERSIST, on_gc_timer, b);
    struct timeval sec = {1, 0};
    evtimer_add(&b->gc_timer, &sec);
    b->sse = sse_hub_new(srv, b);
    b->impl->start(b);
    log_info("bus: %s implementation", b->impl->name);
    return b;
}

static void fail_all_pubs(struct bus *b)
{
    for (size_t i = 0; i < b->nb; i++) {
        for (struct bus_chat *c = b->tab[i]; c; c = c->hnext) {
            struct bus_pub *p = c->qhead;
            c->qhead = NULL;
            c->qtail = &c->qhead;
            c->nwait = 0;
            dirty_remove(b, c);
            while (p) {
                struct bus_pub *next = p->next;
                pub_fail_now(b, p, "shutting_down");
                p = next;
            }
        }
    }
    b->ready = 0;
    while (b->failq)
        run_pass(b); /* deferred failures, incl. ones queued just now */
}

static void free_all_chats(struct bus *b)
{
    for (size_t i = 0; i < b->nb; i++) {
        struct bus_chat *c = b->tab[i], *next;
        for (; c; c = next) {
            next = c->hnext;
            while (c->subs) {
                struct bus_sub *s = c->subs;
                c->subs = s->next;
                free(s);
            }
            chat_free(b, c);
        }
    }
    free(b->tab);
}

void bus_free(struct bus *b)
{
    if (!b)
        return;
    b->freeing = true;
    b->impl->stop(b);
    for (size_t i = 0; i < b->nb; i++)
        for (struct bus_chat *c = b->tab[i]; c; c = c->hnext)
            bus_chat_end_subs(b, c, "shutting_down",
                              "the server is shutting down");
    sse_hub_free(b->sse);
    b->sse = NULL;
    fail_all_pubs(b);
    /* In-flight reads and the batch complete later, into nothing. */
    for (struct bus_op *op = b->ops; op; op = op->next)
        op->b = NULL;
    b->ops = NULL;
    b->inflight = NULL;
    event_del(&b->kick);
    event_del(&b->batch_timer);
    event_del(&b->gc_timer);
    free_all_chats(b);
    free(b);
}

void bus_get_stats(const struct bus *b, struct bus_stats *out)
{
    *out = b->stats;
    out->chats = (int)b->nchats;
}

struct sse_hub *bus_sse_hub(struct bus *b)
{
    return b->sse;
}
