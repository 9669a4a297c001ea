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
 * every subscriber. */
#ifndef CORRAL_BUS_H
#define CORRAL_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

struct server;
struct bus;
struct bus_sub;

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
/* Ends all subscriptions (on_error "shutting_down") and fails pending
 * publishes; flushes nothing further. */
void bus_free(struct bus *b);

/* done fires exactly once: with the event's seq (0 for ephemeral) after it
 * was committed and handed to the fan-out, or with seq -1 and err when it
 * could not be stored (the event is then not delivered). */
typedef void (*bus_done_cb)(void *arg, int64_t seq, const char *err);

/* Publishes an event of chat_id. data/len: one JSON object (written with
 * json_w). message_id may be NULL. The bytes are copied. */
void bus_publish(struct bus *b, const char *chat_id, const char *message_id,
                 const char *type, const char *data, size_t len,
                 bool durable, bus_done_cb done, void *arg);

/* The chat's last allocated durable seq (initialising from the log if
 * needed): cb fires once with it, or -1 and err. */
void bus_last_seq(struct bus *b, const char *chat_id, bus_done_cb cb,
                  void *arg);

struct bus_sub_cbs {
    /* Each event after `after`, in seq order, each exactly once; replayed
     * events first (from the bus or the durable log), then live ones. */
    void (*on_event)(void *arg, struct bus_event *ev);
    /* Once, between replay and live (API.md `ready`). */
    void (*on_ready)(void *arg, int64_t last_event_id);
    /* The subscription ended (code: chat_deleted, user_disabled,
     * shutting_down, db_unavailable, ...). After it nothing more arrives;
     * the subscription is already freed. */
    void (*on_end)(void *arg, const char *code, const char *detail);
};

/* after < 0: live only. Owner: the caller (bus_unsubscribe), unless
 * on_end fired. Callbacks never fire from inside bus_subscribe. */
struct bus_sub *bus_subscribe(struct bus *b, const char *chat_id,
                              int64_t after, const struct bus_sub_cbs *cbs,
                              void *arg);
void bus_unsubscribe(struct bus_sub *s);

/* Ends every local subscription of the chat with on_end(code, detail)
 * (chat deletion). */
void bus_end_chat(struct bus *b, const char *chat_id, const char *code,
                  const char *detail);

struct bus_stats {
    uint64_t published, delivered, committed_batches;
    int subscribers, chats;
};
void bus_get_stats(const struct bus *b, struct bus_stats *out);

#endif
