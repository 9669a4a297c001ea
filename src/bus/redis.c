/* redis.c: the bus over Redis Streams (DESIGN.md §4), one stream per chat
 * at corral:events:<chat id>.
 *
 * Writing: an event completed in its chat's order is XADDed on the
 * command connection (srv->redis) with MAXLEN ~ bus_stream_maxlen: a
 * durable one with the explicit id <seq>-0, an ephemeral one with
 * <last seq>-* (Redis picks the sequence part, so ids stay increasing and
 * a later owner never collides). bus_end_chat adds a marker entry (field
 * x=end) so other instances end their subscribers too.
 *
 * Waking: each XADD is followed, on the same connection, by an entry
 * naming the chat on one shared stream, corral:wake (MAXLEN ~ 100,000).
 * Each instance's reader blocks on that one stream (XREAD BLOCK on a
 * connection of its own; its command timeout well above BLOCK only
 * catches a dead connection), so a read costs the same whatever the
 * number of chats watched (it used to name every watched stream: O(chats)
 * per event). The chats it names that have local subscribers become due,
 * and one XREAD without BLOCK on the command connection reads their
 * streams from each chat's position; wakes that come meanwhile wait for
 * it. Each chat is read once and fanned out locally (bus.c).
 *
 * A wake is a hint, the chat's own stream and position are the truth:
 * every watched chat is read once when it joins (from the position
 * below), when the wake position is (re)taken (start, reconnect), after a
 * failed read, and once every RD_SWEEP_S (a slice each RD_SWEEP_TICK_MS),
 * so a lost wake delays an event, it never loses it. Entries at or before a chat's position are skipped.
 *
 * Joining: a chat joins after its position is known: its stream's last
 * id (XREVRANGE) and the chat's committed seq from the log; live_seq is
 * the larger, so nothing the subscribers were told precedes `ready` is
 * delivered again.
 *
 * Replay: XRANGE from <pos+1>-0 while the stream still holds the range
 * contiguously (ephemeral entries are skipped), else the log. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "bus_int.h"
#include "corral/config.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/redis.h"
#include "corral/server.h"

#define RD_PREFIX "corral:events:"
#define RD_KEY_MAX (sizeof(RD_PREFIX) + BUS_CHAT_ID_LEN)
#define RD_WAKE_KEY "corral:wake"
#define RD_WAKE_MAXLEN "100000"
#define RD_WAKE_COUNT "1000"
#define RD_BLOCK_MS "1000"
#define RD_READ_TIMEOUT_MS 6000
#define RD_COUNT "500"         /* entries per stream per read */
#define RD_COUNT_N 500
#define RD_RETRY_MS 250
#define RD_SWEEP_S 5            /* every watched stream read, a backstop */
#define RD_SWEEP_TICK_MS 100    /* ... a slice at a time */
#define RD_ID_MAX 48

/* XADD outcomes, shared with the commands in flight (they may complete
 * after bus_free, from redis_free of the command connection): one warning
 * per outage instead of one per event. */
struct rd_xadd_log {
    int refs;                  /* the bus + XADDs in flight */
    uint64_t failed;           /* failures since the last success */
};

struct rd_state {
    struct redis *rd;          /* the wake stream's XREAD BLOCK */
    struct rd_xadd_log *xlog;
    bool reading;              /* a wake read (or its position) in flight */
    bool pos_known;            /* wake_ms/sq hold for this connection */
    uint64_t pos_reconnects;   /* rd's reconnect count when taken */
    uint64_t wake_ms, wake_sq; /* last wake entry read */
    bool fetching;             /* an XREAD of woken streams in flight */
    bool sweep_due;            /* read every watched stream at the retry */
    struct event retry, sweep;
    struct bus_chat *head, *tail; /* READY chats */
    int n;
    struct bus_chat *due_head; /* READY chats whose streams are to read */
    int ndue;
    struct bus_chat *sweep_next; /* the backstop's place in head..tail */
    int sweep_credit;
};

static void rd_read(struct bus *b);

static void rd_key(char out[RD_KEY_MAX], const char *chat_id)
{
    snprintf(out, RD_KEY_MAX, "%s%s", RD_PREFIX, chat_id);
}

static bool rd_parse_id(const char *s, size_t len, uint64_t *ms,
                        uint64_t *sq)
{
    char tmp[RD_ID_MAX], *end;
    if (!s || len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    *ms = strtoull(tmp, &end, 10);
    if (*end != '-')
        return false;
    *sq = strtoull(end + 1, &end, 10);
    return *end == '\0';
}

/* Field value of an entry's [f1, v1, f2, v2 ...] array, or NULL. */
static const redisReply *rd_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    size_t n = strlen(name);
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && f->len == n &&
            memcmp(f->str, name, n) == 0 && v->type == REDIS_REPLY_STRING)
            return v;
    }
    return NULL;
}

/* An entry as an event: seq from its id (0 when ephemeral), type and data
 * from fields t and d. NULL when it is not an event. */
static struct bus_event *rd_entry_event(const char *chat_id, uint64_t ms,
                                        uint64_t sq, const redisReply *fields)
{
    const redisReply *t = rd_field(fields, "t"), *d = rd_field(fields, "d");
    char type[BUS_TYPE_MAX + 1];
    if (!t || !d || t->len == 0 || t->len > BUS_TYPE_MAX)
        return NULL;
    for (size_t i = 0; i < t->len; i++) {
        char ch = t->str[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return NULL; /* never let a stray entry break the framing */
        type[i] = ch;
    }
    type[t->len] = '\0';
    return bus_event_new(sq == 0 ? (int64_t)ms : 0, chat_id, type, d->str,
                         d->len);
}

/* ---- writing ------------------------------------------------------------ */

static void xlog_release(struct rd_xadd_log *x)
{
    if (--x->refs == 0)
        free(x);
}

/* A failed XADD leaves the event committed in the log but not in the
 * stream: readers see the gap at the chat's next event and replay it from
 * the log. */
static void rd_on_xadd(void *arg, redisReply *reply, const char *err)
{
    struct rd_xadd_log *x = arg;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        if (x->failed++ == 0)
            log_warn("bus: XADD failed: %s", err ? err
                                                 : reply ? reply->str : "?");
    } else if (x->failed) {
        log_info("bus: XADD works again after %" PRIu64 " failures",
                 x->failed);
        x->failed = 0;
    }
    xlog_release(x);
}

static void rd_emit(struct bus *b, struct bus_chat *c, struct bus_pub *p)
{
    char key[RD_KEY_MAX], id[RD_ID_MAX], maxlen[24];
    const char *argv[14];
    size_t lens[14];
    int n = 0;
    rd_key(key, c->id);
    snprintf(maxlen, sizeof(maxlen), "%d", b->srv->cfg->bus_stream_maxlen);
    if (p->kind == BUS_PUB_DURABLE)
        snprintf(id, sizeof(id), "%" PRId64 "-0", p->seq);
    else /* emitted: the last durable seq XADDed for this chat */
        snprintf(id, sizeof(id), "%" PRId64 "-*", c->emitted);
#define ARG(s, l) (argv[n] = (s), lens[n++] = (l))
    ARG("XADD", 4);
    ARG(key, strlen(key));
    ARG("MAXLEN", 6);
    ARG("~", 1);
    ARG(maxlen, strlen(maxlen));
    ARG(id, strlen(id));
    if (p->kind == BUS_PUB_END) {
        ARG("x", 1);
        ARG("end", 3);
        ARG("c", 1);
        ARG(p->type, strlen(p->type));
        ARG("e", 1);
    } else {
        ARG("t", 1);
        ARG(p->type, strlen(p->type));
        ARG("d", 1);
    }
    ARG(p->data.data ? p->data.data : "", p->data.len);
    if (p->kind == BUS_PUB_DURABLE && p->message_id[0]) {
        ARG("m", 1);
        ARG(p->message_id, strlen(p->message_id));
    }
#undef ARG
    struct rd_state *st = b->impl_state;
    st->xlog->refs++;
    redis_command(b->srv->redis, n, argv, lens, rd_on_xadd, st->xlog);
    /* After the entry on the same connection, so a reader woken by this
     * finds it. */
    const char *wake[] = {"XADD", RD_WAKE_KEY, "MAXLEN", "~", RD_WAKE_MAXLEN,
                          "*", "c", c->id};
    redis_command(b->srv->redis, 8, wake, NULL, NULL, NULL);
}

/* ---- which streams to read --------------------------------------------- */

static void due_add(struct bus *b, struct bus_chat *c)
{
    struct rd_state *st = b->impl_state;
    if (c->due || c->watch != BUS_WATCH_READY)
        return;
    c->due = true;
    c->due_prev = NULL;
    c->due_next = st->due_head;
    if (st->due_head)
        st->due_head->due_prev = c;
    st->due_head = c;
    st->ndue++;
}

static void due_remove(struct rd_state *st, struct bus_chat *c)
{
    if (!c->due)
        return;
    if (c->due_prev)
        c->due_prev->due_next = c->due_next;
    else
        st->due_head = c->due_next;
    if (c->due_next)
        c->due_next->due_prev = c->due_prev;
    c->due_prev = c->due_next = NULL;
    c->due = false;
    st->ndue--;
}

/* Every watched chat read once: after the wake position was (re)taken,
 * and after a failed read. */
static void due_all(struct bus *b)
{
    struct rd_state *st = b->impl_state;
    for (struct bus_chat *c = st->head; c; c = c->wnext)
        due_add(b, c);
}

/* ---- reading the woken streams (on the command connection) -------------- */

static void rd_fetch(struct bus *b);

static void rd_retry_later(struct bus *b)
{
    struct rd_state *st = b->impl_state;
    struct timeval tv = {0, RD_RETRY_MS * 1000};
    if (!evtimer_pending(&st->retry, NULL))
        evtimer_add(&st->retry, &tv);
}

static void rd_entry(struct bus *b, struct bus_chat *c, uint64_t ms,
                     uint64_t sq, const redisReply *fields)
{
    const redisReply *x = rd_field(fields, "x");
    if (x && x->len == 3 && memcmp(x->str, "end", 3) == 0) {
        const redisReply *code = rd_field(fields, "c");
        const redisReply *detail = rd_field(fields, "e");
        char cs[BUS_TYPE_MAX + 1] = "chat_deleted", ds[256] = "";
        if (code && code->len < sizeof(cs))
            snprintf(cs, sizeof(cs), "%.*s", (int)code->len, code->str);
        if (detail)
            snprintf(ds, sizeof(ds), "%.*s", (int)detail->len, detail->str);
        bus_chat_end_subs(b, c, cs, ds);
        return;
    }
    /* An ephemeral entry older than the live position precedes what the
     * subscribers were told came before `ready`. */
    if (sq != 0 && (int64_t)ms < c->live_seq)
        return;
    struct bus_event *ev = rd_entry_event(c->id, ms, sq, fields);
    if (!ev)
        return;
    bus_feed(b, c, ev);
    bus_event_release(ev);
}

/* A watched chat by the BUS_CHAT_ID_LEN bytes of its id, or NULL. */
static struct bus_chat *rd_watched(struct bus *b, const char *id_bytes)
{
    char id[BUS_CHAT_ID_LEN + 1];
    memcpy(id, id_bytes, BUS_CHAT_ID_LEN);
    id[BUS_CHAT_ID_LEN] = '\0';
    struct bus_chat *c = bus_chat_find(b, id);
    return c && c->watch == BUS_WATCH_READY ? c : NULL;
}

/* A watched chat by its stream key, or NULL. */
static struct bus_chat *rd_chat_of_key(struct bus *b, const char *key,
                                       size_t len)
{
    size_t plen = strlen(RD_PREFIX);
    if (len != plen + BUS_CHAT_ID_LEN || memcmp(key, RD_PREFIX, plen) != 0)
        return NULL;
    return rd_watched(b, key + plen);
}

static void rd_stream(struct bus *b, const redisReply *st)
{
    if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
        st->element[0]->type != REDIS_REPLY_STRING ||
        st->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    const redisReply *entries = st->element[1];
    struct bus_chat *c = rd_chat_of_key(b, st->element[0]->str,
                                        st->element[0]->len);
    for (size_t i = 0; c && i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        uint64_t ms, sq;
        if (c->watch != BUS_WATCH_READY)
            return; /* its subscribers left during a callback */
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            !rd_parse_id(e->element[0]->str, e->element[0]->len, &ms, &sq))
            continue;
        /* Entries at or before the position were read already (a reply
         * that raced a re-watch, or two reads of one wake). */
        if (ms < c->pos_ms || (ms == c->pos_ms && sq <= c->pos_sq))
            continue;
        c->pos_ms = ms;
        c->pos_sq = sq;
        rd_entry(b, c, ms, sq, e->element[1]);
    }
    /* A full page: more is waiting. */
    if (c && c->watch == BUS_WATCH_READY &&
        entries->elements >= RD_COUNT_N)
        due_add(b, c);
}

static void rd_on_fetch(void *arg, redisReply *reply, const char *err)
{
    struct bus_op *op = arg;
    struct bus *b = bus_op_end(op);
    free(op);
    if (!b)
        return;
    struct rd_state *st = b->impl_state;
    st->fetching = false;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("bus: XREAD of woken streams failed: %s",
                 err ? err : reply ? reply->str : "?");
        st->sweep_due = true; /* which chats were asked is not kept */
        rd_retry_later(b);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements; i++)
            rd_stream(b, reply->element[i]);
    rd_fetch(b);
}

/* One XREAD without BLOCK over the streams of the chats due, from each
 * chat's position; one in flight at a time (what is woken meanwhile waits
 * for it, so busy chats are read together). */
static void rd_fetch(struct bus *b)
{
    struct rd_state *st = b->impl_state;
    if (b->freeing || st->fetching || !st->due_head)
        return;
    if (!redis_connected(b->srv->redis)) {
        rd_retry_later(b);
        return;
    }
    int n = st->ndue;
    int argc = 4 + 2 * n, k = 4, i = 0;
    const char **argv = xmalloc((size_t)argc * sizeof(*argv));
    char *keys = xmalloc((size_t)n * RD_KEY_MAX);
    char *ids = xmalloc((size_t)n * RD_ID_MAX);
    const char *head[] = {"XREAD", "COUNT", RD_COUNT, "STREAMS"};
    memcpy(argv, head, sizeof(head));
    while (st->due_head) {
        struct bus_chat *c = st->due_head;
        char *key = keys + (size_t)i * RD_KEY_MAX;
        char *id = ids + (size_t)i * RD_ID_MAX;
        due_remove(st, c);
        rd_key(key, c->id);
        snprintf(id, RD_ID_MAX, "%" PRIu64 "-%" PRIu64, c->pos_ms, c->pos_sq);
        argv[k + i] = key;
        argv[k + n + i] = id;
        i++;
    }
    st->fetching = true;
    redis_command(b->srv->redis, argc, argv, NULL, rd_on_fetch,
                  bus_op_new(b, NULL));
    free(argv);
    free(keys);
    free(ids);
}

/* ---- the wake reader (its own connection) ------------------------------- */

static void rd_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    struct rd_state *st = b->impl_state;
    if (st->sweep_due) {
        st->sweep_due = false;
        due_all(b);
    }
    rd_fetch(b);
    rd_read(b);
}

static void sweep_arm(struct rd_state *st)
{
    struct timeval tv = {0, RD_SWEEP_TICK_MS * 1000};
    if (st->n > 0 && !evtimer_pending(&st->sweep, NULL))
        evtimer_add(&st->sweep, &tv);
}

/* The backstop, spread out: each tick reads the next slice of the
 * watched chats, round the list once every RD_SWEEP_S (one read of all
 * 1,000 streams at once held the others' events back). */
static void rd_on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    struct rd_state *st = b->impl_state;
    int ticks = RD_SWEEP_S * 1000 / RD_SWEEP_TICK_MS;
    st->sweep_credit += st->n; /* n chats per `ticks` ticks */
    for (; st->sweep_credit >= ticks && st->n > 0; st->sweep_credit -= ticks) {
        if (!st->sweep_next)
            st->sweep_next = st->head;
        due_add(b, st->sweep_next);
        st->sweep_next = st->sweep_next->wnext;
    }
    rd_fetch(b);
    sweep_arm(st);
}

/* The wake reader's answer arrived: its state, or NULL at bus_free. */
static struct rd_state *reader_answered(struct bus *b)
{
    if (b->freeing)
        return NULL;
    struct rd_state *st = b->impl_state;
    st->reading = false;
    return st;
}

static void rd_on_wake(void *arg, redisReply *reply, const char *err)
{
    struct bus *b = arg;
    struct rd_state *st = reader_answered(b);
    if (!st)
        return;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        if (!err && reply)
            log_warn("bus: XREAD of the wake stream failed: %s", reply->str);
        rd_retry_later(b);
        return;
    }
    /* [[key, [[id, [c, <chat id>]] ...]]], or nil when BLOCK ran out */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY &&
        reply->element[0]->elements == 2) {
        const redisReply *entries = reply->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                !rd_parse_id(e->element[0]->str, e->element[0]->len,
                             &st->wake_ms, &st->wake_sq))
                continue;
            const redisReply *chat = rd_field(e->element[1], "c");
            struct bus_chat *c = chat && chat->len == BUS_CHAT_ID_LEN
                                     ? rd_watched(b, chat->str)
                                     : NULL;
            if (c)
                due_add(b, c);
        }
    }
    rd_fetch(b);
    rd_read(b);
}

static void rd_on_wake_pos(void *arg, redisReply *reply, const char *err)
{
    struct bus *b = arg;
    struct rd_state *st = reader_answered(b);
    if (!st)
        return;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("bus: XREVRANGE of the wake stream failed: %s",
                 err ? err : reply ? reply->str : "?");
        rd_retry_later(b);
        return;
    }
    st->wake_ms = st->wake_sq = 0;
    if (reply->elements > 0) {
        const redisReply *e = reply->element[0];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[0]->type == REDIS_REPLY_STRING)
            rd_parse_id(e->element[0]->str, e->element[0]->len,
                        &st->wake_ms, &st->wake_sq);
    }
    st->pos_known = true;
    /* Entries added before this position woke nobody: read every chat
     * once from its own position. */
    due_all(b);
    rd_fetch(b);
    rd_read(b);
}

/* The wake position is per connection: a new one (or a reader that was
 * idle with no chat watched) takes it again. */
static bool rd_pos_valid(struct rd_state *st)
{
    struct redis_stats rs;
    redis_get_stats(st->rd, &rs);
    if (rs.reconnects != st->pos_reconnects) {
        st->pos_reconnects = rs.reconnects;
        st->pos_known = false;
    }
    return st->pos_known;
}

static void rd_read(struct bus *b)
{
    struct rd_state *st = b->impl_state;
    if (b->freeing || !st->rd || st->reading)
        return;
    if (st->n == 0) {
        st->pos_known = false; /* nothing to wake: stop reading */
        return;
    }
    if (!redis_connected(st->rd)) {
        rd_retry_later(b);
        return;
    }
    st->reading = true;
    if (!rd_pos_valid(st)) {
        const char *argv[] = {"XREVRANGE", RD_WAKE_KEY, "+", "-", "COUNT",
                              "1"};
        redis_command(st->rd, 6, argv, NULL, rd_on_wake_pos, b);
        return;
    }
    char id[RD_ID_MAX];
    snprintf(id, sizeof(id), "%" PRIu64 "-%" PRIu64, st->wake_ms,
             st->wake_sq);
    const char *argv[] = {"XREAD", "COUNT", RD_WAKE_COUNT, "BLOCK",
                          RD_BLOCK_MS, "STREAMS", RD_WAKE_KEY, id};
    redis_command(st->rd, 8, argv, NULL, rd_on_wake, b);
}

/* ---- watching a chat ---------------------------------------------------- */

static void rd_try_ready(struct bus *b, struct bus_chat *c)
{
    struct rd_state *st = b->impl_state;
    if (c->watch != BUS_WATCH_INIT || !c->init_got || c->load != BUS_LOADED)
        return;
    c->live_seq = (int64_t)c->pos_ms > c->committed ? (int64_t)c->pos_ms
                                                    : c->committed;
    c->watch = BUS_WATCH_READY;
    c->wnext = NULL;
    c->wprev = st->tail;
    if (st->tail)
        st->tail->wnext = c;
    else
        st->head = c;
    st->tail = c;
    st->n++;
    b->stats.upstream++;
    sweep_arm(st);
    /* Read once from the position found: what was added between the
     * XREVRANGE and the wake reader's position woke nobody. */
    due_add(b, c);
    rd_fetch(b);
    rd_read(b);
    bus_watch_ready(b, c);
}
static void rd_on_xrev(void *arg, redisReply *reply, const char *err)
{
    struct bus_op *op = arg;
    struct bus_chat *c = op->chat;
    uint32_t gen = op->gen;
    struct bus *b = bus_op_end(op);
    free(op);
    if (!b || c->watch != BUS_WATCH_INIT || c->watch_gen != gen)
        return;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("bus: XREVRANGE of chat %s failed: %s", c->id,
                 err ? err : reply ? reply->str : "?");
        bus_chat_end_subs(b, c, "bus_unavailable",
                          "the event stream could not be read");
        return;
    }
    c->pos_ms = c->pos_sq = 0;
    if (reply->elements > 0) {
        const redisReply *e = reply->element[0];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[0]->type == REDIS_REPLY_STRING)
            rd_parse_id(e->element[0]->str, e->element[0]->len, &c->pos_ms,
                        &c->pos_sq);
    }
    c->init_got = true;
    rd_try_ready(b, c);
}

static void rd_watch(struct bus *b, struct bus_chat *c)
{
    char key[RD_KEY_MAX];
    c->watch = BUS_WATCH_INIT;
    c->watch_gen++;
    c->init_got = false;
    bus_chat_load(b, c);
    struct bus_op *op = bus_op_new(b, c);
    op->gen = c->watch_gen;
    rd_key(key, c->id);
    const char *argv[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
    redis_command(b->srv->redis, 6, argv, NULL, rd_on_xrev, op);
}

static void rd_unwatch(struct bus *b, struct bus_chat *c)
{
    struct rd_state *st = b->impl_state;
    if (c->watch == BUS_WATCH_READY && st) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            st->head = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        else
            st->tail = c->wprev;
        if (st->sweep_next == c)
            st->sweep_next = c->wnext;
        c->wprev = c->wnext = NULL;
        st->n--;
        b->stats.upstream--;
        due_remove(st, c);
    }
    c->watch = BUS_WATCH_NONE;
    c->init_got = false;
}

static void rd_loaded(struct bus *b, struct bus_chat *c)
{
    rd_try_ready(b, c);
}

/* ---- replay ------------------------------------------------------------- */

/* Delivers the durable entries that continue s->pos without a gap. */
static int rd_deliver_range(struct bus_sub *s, const redisReply *r)
{
    int n = 0;
    for (size_t i = 0; i < r->elements && !s->dead && !s->held; i++) {
        const redisReply *e = r->element[i];
        uint64_t ms, sq;
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            !rd_parse_id(e->element[0]->str, e->element[0]->len, &ms, &sq))
            continue;
        if (sq != 0 || (int64_t)ms <= s->pos)
            continue; /* ephemeral entries are never replayed */
        if ((int64_t)ms != s->pos + 1)
            break;    /* trimmed: the log has the rest */
        struct bus_event *ev = rd_entry_event(s->chat->id, ms, sq,
                                              e->element[1]);
        if (!ev)
            break;
        bus_sub_deliver(s, ev);
        bus_event_release(ev);
        n++;
    }
    return n;
}

static void rd_on_xrange(void *arg, redisReply *reply, const char *err)
{
    struct bus_op *op = arg;
    struct bus_sub *s = op->sub;
    struct bus *b = bus_op_end(op);
    free(op);
    if (!b || !s)
        return;
    s->op = NULL;
    if (s->dead)
        return;
    int n = 0;
    if (!err && reply && reply->type == REDIS_REPLY_ARRAY)
        n = rd_deliver_range(s, reply);
    if (n > 0) {
        b->stats.replay_bus++;
        bus_sub_run_later(s);
    } else if (!s->dead) {
        bus_replay_from_log(b, s);
    }
}

static int rd_replay(struct bus *b, struct bus_sub *s, int max)
{
    char key[RD_KEY_MAX], start[RD_ID_MAX];
    rd_key(key, s->chat->id);
    snprintf(start, sizeof(start), "%" PRId64 "-0", s->pos + 1);
    struct bus_op *op = bus_op_new(b, NULL);
    op->sub = s;
    op->from = s->pos;
    s->op = op;
    const char *argv[] = {"XRANGE", key, start, "+", "COUNT", RD_COUNT};
    redis_command(b->srv->redis, 6, argv, NULL, rd_on_xrange, op);
    return BUS_REPLAY_ASYNC;
}

/* ---- life cycle --------------------------------------------------------- */

static void rd_start(struct bus *b)
{
    struct rd_state *st = xcalloc(1, sizeof(*st));
    const char *err = NULL;
    b->impl_state = st;
    st->xlog = xcalloc(1, sizeof(*st->xlog));
    st->xlog->refs = 1;
    evtimer_assign(&st->retry, b->srv->base, rd_on_retry, b);
    evtimer_assign(&st->sweep, b->srv->base, rd_on_sweep, b);
    /* XREAD BLOCK answers within RD_BLOCK_MS: a reply much later means a
     * dead connection (no RST), which the timeout replaces. */
    struct redis_opts o = {.connect_timeout_ms = 2000,
                           .command_timeout_ms = RD_READ_TIMEOUT_MS,
                           .backoff_min_ms = 100,
                           .backoff_max_ms = 2000};
    st->rd = b->srv->cfg->redis_url
                 ? redis_new(b->srv->base, b->srv->cfg->redis_url, &o, &err)
                 : NULL;
    if (!st->rd)
        log_error("bus: no XREAD connection: %s",
                  err ? err : "redis_url is not set");
}

/* First step of bus_free: the XREAD fails at once with "closing" (its
 * callback sees b->freeing), then the state goes; unwatch calls that
 * follow while subscriptions end find none. */
static void rd_stop(struct bus *b)
{
    struct rd_state *st = b->impl_state;
    event_del(&st->retry);
    event_del(&st->sweep);
    redis_free(st->rd);
    xlog_release(st->xlog);
    free(st);
    b->impl_state = NULL;
}

static void rd_chat_free(struct bus *b, struct bus_chat *c)
{
}

const struct bus_impl bus_redis_impl = {
    .name = "redis",
    .start = rd_start,
    .stop = rd_stop,
    .emit = rd_emit,
    .watch = rd_watch,
    .unwatch = rd_unwatch,
    .loaded = rd_loaded,
    .replay = rd_replay,
    .chat_free = rd_chat_free,
};
