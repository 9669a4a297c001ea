/* bus: each chat's ordered event stream (DESIGN.md §4, API.md "Stream").
 *
 * Durable events get seq 1, 2, 3 ... per chat, allocated in memory by this
 * instance (initialised from the log's highest seq the first time a chat
 * publishes), are written to the events table in group commits (all chats,
 * at most event_batch_delay_ms or event_batch_max events, one statement)
 * and are delivered only after their commit. An ephemeral event (seq 0)
 * is never stored; it keeps its place behind the chat's uncommitted
 * durable events.
 *
 * Two implementations behind one interface, chosen by config: `memory`
 * (no redis_url: fan-out inside the process) and `redis` (XADD with the
 * explicit id <seq>-0, MAXLEN ~ bus_stream_maxlen; ephemeral events as
 * <last seq>-*; each instance reads each chat stream it has subscribers
 * for ONCE on a dedicated XREAD BLOCK connection and fans out locally).
 *
 * Each event is serialized once into an SSE frame shared (refcounted) by
 * every subscriber.
 *
 * Seq ownership: this process allocates every chat's seq (one box owns all
 * chats). Several instances publishing to the same chat would collide:
 * leases (DESIGN.md §10) are out of scope here. A chat's state (seq, the
 * memory ring) is dropped after a minute without subscribers or publishes
 * and re-initialised from the log when used again. */
#ifndef CORRAL_BUS_H
#define CORRAL_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"
#include "corral/pg.h"

struct server;
struct bus;
struct bus_sub;
struct sse_hub;

#define BUS_CHAT_ID_LEN 36
#define BUS_TYPE_MAX 31

/* An event as delivered. Borrowed in callbacks: bus_event_retain to keep
 * it past the callback, bus_event_release when done. */
struct bus_event {
    int refs;
    int64_t seq;                          /* 0: ephemeral */
    char chat_id[BUS_CHAT_ID_LEN + 1];
    char type[BUS_TYPE_MAX + 1];
    struct buf data;  /* the JSON object of `data` */
    struct buf sse;   /* the whole SSE frame: [id: N\n]event: T\ndata: ..\n\n */
};

void bus_event_retain(struct bus_event *ev);
void bus_event_release(struct bus_event *ev);

/* Created at start-up; redis implementation when srv->redis is set. */
struct bus *bus_new(struct server *srv);
/* Ends all subscriptions (on_end "shutting_down"; SSE streams get their
 * closing `error` frame written without blocking) and fails pending
 * publishes with "shutting_down" (a batch already sent may still commit).
 * Call before pg_pool_free and redis_free, never from a bus callback. */
void bus_free(struct bus *b);

/* done fires exactly once, never from inside bus_publish: with the event's
 * seq (0 for ephemeral) after it was committed and handed to the fan-out,
 * or with seq -1 and err when it could not be stored (the event is then not
 * delivered). err (static): bad_chat_id, bad_message_id, bad_type,
 * bad_data, invalid_json (refused before anything else), db_error,
 * db_unavailable, db_timeout, chat_not_found (the chat row is gone),
 * shutting_down. A failed group commit fails every event in it (all
 * chats); the seqs are reused, so the log never has gaps. */
typedef void (*bus_done_cb)(void *arg, int64_t seq, const char *err);

/* Publishes an event of chat_id. data/len: one JSON object (written with
 * json_w; a durable one is checked, an ephemeral one is trusted). type:
 * 1..31 of [a-z0-9_]. message_id may be NULL. The bytes are copied. Events
 * of one chat complete (done, delivery) in publish order: an ephemeral
 * event waits for the commit of the durable events published before it. */
void bus_publish(struct bus *b, const char *chat_id, const char *message_id,
                 const char *type, const char *data, size_t len,
                 bool durable, bus_done_cb done, void *arg);

/* The chat's last durable seq as of this call: cb fires once, after every
 * event of the chat published before this call was committed (or failed),
 * with the chat's last committed seq (initialising from the log if
 * needed), or with -1 and err. It never runs ahead of an event published
 * after the call, so `?after=<it>` loses nothing published later. */
void bus_last_seq(struct bus *b, const char *chat_id, bus_done_cb cb,
                  void *arg);

struct bus_sub_cbs {
    /* Each event after `after`, in seq order, each exactly once; replayed
     * events first (from the bus or the durable log), then live ones. */
    void (*on_event)(void *arg, struct bus_event *ev);
    /* Once, between replay and live (API.md `ready`): the last durable
     * seq before the live events (`after` itself when it is beyond the
     * chat's last seq). A live subscriber that falls behind a gap in the
     * feed replays it from the log without a second ready. */
    void (*on_ready)(void *arg, int64_t last_event_id);
    /* The subscription ended (code: chat_deleted, user_disabled,
     * shutting_down, db_unavailable: the log could not be read,
     * bus_unavailable: the redis stream could not be read). After it
     * nothing more arrives; the subscription is already freed. */
    void (*on_end)(void *arg, const char *code, const char *detail);
};

/* after < 0: live only. Owner: the caller (bus_unsubscribe), unless
 * on_end fired. Callbacks never fire from inside bus_subscribe. NULL when
 * chat_id is not a UUID or the bus is being freed. */
struct bus_sub *bus_subscribe(struct bus *b, const char *chat_id,
                              int64_t after, const struct bus_sub_cbs *cbs,
                              void *arg);
/* Safe anywhere, including inside the subscription's own callbacks; no
 * callback of s fires after it returns. */
void bus_unsubscribe(struct bus_sub *s);
/* Replay flow control: while held, the subscription fetches and delivers
 * no further replayed events (a consumer whose output is backed up holds
 * it and releases it once drained). Live delivery is never held: a
 * consumer that cannot keep up with live events is the caller's to drop. */
void bus_sub_hold(struct bus_sub *s, bool hold);

/* Ends every local subscription of the chat with on_end(code, detail)
 * (chat deletion), at once; with redis also those of other instances,
 * through a marker entry in the chat's stream. */
void bus_end_chat(struct bus *b, const char *chat_id, const char *code,
                  const char *detail);

struct bus_stats {
    uint64_t published, delivered, committed_batches;
    int subscribers, chats;
    int upstream;          /* chat feeds read upstream (redis: streams in
                              the one XREAD; memory: chats with
                              subscribers): one per chat, never per
                              subscriber */
    uint64_t replay_log;   /* replay pages read from the durable log */
    uint64_t replay_bus;   /* replay pages served by the bus (memory ring,
                              redis XRANGE) */
    uint64_t failed;       /* publishes that completed with -1 */
    uint64_t ring_bytes;   /* memory: bytes held by all replay rings */
    uint64_t ring_evictions; /* memory: events dropped for
                                bus_ring_total_bytes */
};
void bus_get_stats(const struct bus *b, struct bus_stats *out);

/* The SSE connections (sse.h) are the bus's subscribers: their hub is
 * created and freed with the bus (bus_free ends their streams first). */
struct sse_hub *bus_sse_hub(struct bus *b);

/* ---- the durable log's SQL (src/store/events.c) ----
 * Declared here until store.h takes them; same contract as store.h: one
 * parameterised statement each, cb fires exactly once. */

/* One row, one column: the chat's highest seq, 0 when it has none. */
void store_events_max_seq(struct pg_pool *pg, const char *chat_id, pg_cb cb,
                          void *arg);
/* Inserts n events in one statement (one implicit transaction). params
 * holds 5 per event: chat_id, seq, type, payload (JSON), message_id (NULL
 * allowed). Events of chats that do not exist are skipped, not an error;
 * the rows returned (column chat_id) are the distinct chats whose events
 * were stored. */
void store_events_insert(struct pg_pool *pg, int n, const char *const *params,
                         pg_cb cb, void *arg);
/* Rows (seq, type, payload) with seq > after, in seq order, at most limit
 * (decimal strings). */
void store_events_range(struct pg_pool *pg, const char *chat_id,
                        const char *after, const char *limit, pg_cb cb,
                        void *arg);
/* One row when chat_id exists, is not deleted and is owned by owner_id;
 * none otherwise. */
void store_events_chat_check(struct pg_pool *pg, const char *chat_id,
                             const char *owner_id, pg_cb cb, void *arg);

#endif
