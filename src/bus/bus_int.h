/* bus_int.h: what bus.c (the common part: seq allocation, group commit,
 * fan-out, replay) shares with the two implementations behind it,
 * memory.c and redis.c. Not for other modules. */
#ifndef CORRAL_BUS_INT_H
#define CORRAL_BUS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "corral/bus.h"

#define BUS_RING_MAX 256           /* memory: recent durable events kept */
#define BUS_RING_BYTES (256u << 10) /* ... and at most this many bytes: a
                                     * thousand busy chats hold 256 MiB */
#define BUS_PAGE 500               /* replay page (log rows, XRANGE count) */
#define BUS_STEP_EVENTS 256        /* replayed per subscriber per turn */
#define BUS_BATCH_BYTES (4u << 20) /* group commit payload cap */
#define BUS_CHAT_IDLE_US (60ull * 1000000) /* unused chat state is dropped */
#define BUS_GC_BUCKETS 1024        /* hash buckets the GC visits a second */

enum bus_pub_kind {
    BUS_PUB_DURABLE,
    BUS_PUB_EPHEMERAL,
    BUS_PUB_LAST_SEQ, /* a bus_last_seq call, in the queue for ordering */
    BUS_PUB_END,      /* bus_end_chat's marker for other instances */
};

enum bus_pub_state {
    BUS_PUB_WAITING, /* durable: not in a batch yet; others: not at head */
    BUS_PUB_BATCHED, /* in the batch being committed */
    BUS_PUB_OK,      /* committed */
    BUS_PUB_FAILED,
};

/* One bus_publish (or bus_last_seq) call, in its chat's queue until it is
 * completed in order. */
struct bus_pub {
    struct bus_pub *next;    /* chat queue, or the bus's failure queue */
    struct bus_chat *chat;
    enum bus_pub_kind kind;
    enum bus_pub_state state;
    int64_t seq;             /* durable: assigned when batched */
    const char *err;         /* static */
    bus_done_cb done;
    void *arg;
    char type[BUS_TYPE_MAX + 1];
    char message_id[BUS_CHAT_ID_LEN + 1]; /* "" for none */
    struct buf data;
};

enum bus_load { BUS_UNLOADED, BUS_LOADING, BUS_LOADED };
/* The chat's live feed: NONE without subscribers; INIT while its position
 * is being found; READY when events arrive and live_seq is valid. */
enum bus_watch { BUS_WATCH_NONE, BUS_WATCH_INIT, BUS_WATCH_READY };

struct bus_chat {
    char id[BUS_CHAT_ID_LEN + 1];
    struct bus_chat *hnext;     /* hash chain */
    uint64_t active_us;         /* last use, for dropping idle state */
    int ops;                    /* async ops holding this pointer */
    /* seq allocation (this instance owns every chat: DESIGN.md §10) */
    enum bus_load load;
    int64_t last_alloc;         /* highest seq handed to a batch */
    int64_t committed;          /* highest committed seq */
    int64_t emitted;            /* highest durable seq completed in order
                                   (bus_last_seq; redis: ephemeral ids) */
    /* publish queue, completed strictly in order */
    struct bus_pub *qhead, **qtail;
    int nwait;                  /* durable pubs WAITING */
    struct bus_chat *dprev, *dnext; /* dirty list: loaded, nwait > 0 */
    bool in_dirty;
    struct bus_chat *drnext;    /* drain list */
    bool in_drain;
    bool batch_ok;              /* scratch during a batch completion */
    bool batch_seen;
    /* fan-out */
    struct bus_sub *subs, *subs_tail; /* incl. dead ones until swept */
    int nsubs;                  /* alive */
    enum bus_watch watch;
    uint32_t watch_gen;
    int64_t live_seq;           /* highest durable seq fed live */
    bool live_init;             /* memory: live_seq set at the first load */
    /* memory: ring of recent durable events, contiguous seqs */
    struct bus_event **ring;
    int ring_head, ring_n, ring_cap;
    size_t ring_bytes;
    struct bus_chat *rprev, *rnext; /* the bus's ring list, by last push */
    bool in_rings;
    /* redis: stream position and the watch init */
    uint64_t pos_ms, pos_sq;    /* last entry id read */
    bool init_got;              /* XREVRANGE answered */
    struct bus_chat *wprev, *wnext; /* the reader's set */
    struct bus_chat *due_prev, *due_next; /* woken: its stream to read */
    bool due;
};

enum bus_sub_state { BUS_SUB_START, BUS_SUB_REPLAY, BUS_SUB_LIVE };

struct bus_sub {
    struct bus *b;
    struct bus_chat *chat;
    struct bus_sub *prev, *next; /* chat's list */
    struct bus_sub_cbs cbs;
    void *arg;
    enum bus_sub_state state;
    int64_t after;
    int64_t pos;                /* last durable seq delivered */
    bool dead, ready_sent, held, queued, in_grave;
    struct bus_sub *rnext;      /* run list */
    struct bus_sub *gnext;      /* graveyard */
    struct bus_op *op;          /* replay read in flight */
};

/* An async operation's context. The bus frees what it waits for only
 * through these: at bus_free b becomes NULL; a swept subscriber sets sub
 * to NULL. The completion frees the op. */
struct bus_op {
    struct bus *b;
    struct bus_op *prev, *next;
    struct bus_chat *chat;      /* holds chat->ops */
    struct bus_sub *sub;
    struct bus_batch *batch;
    uint32_t gen;
    int64_t from;
};

struct bus_batch {
    int n;
    struct bus_pub **pubs;
    char (*seqs)[24];
    const char **params;
};

#define BUS_REPLAY_MISS (-1)  /* the bus does not hold pos+1: use the log */
#define BUS_REPLAY_ASYNC (-2) /* a read is in flight (s->op) */

struct bus_impl {
    const char *name;
    void (*start)(struct bus *b);
    void (*stop)(struct bus *b);          /* first step of bus_free */
    /* A pub reaching its chat's head: durable OK, ephemeral or END. */
    void (*emit)(struct bus *b, struct bus_chat *c, struct bus_pub *p);
    void (*watch)(struct bus *b, struct bus_chat *c);   /* 0 -> 1 subs */
    void (*unwatch)(struct bus *b, struct bus_chat *c); /* 1 -> 0 subs */
    void (*loaded)(struct bus *b, struct bus_chat *c);  /* load done */
    /* Delivers what it holds after s->pos (at most max events): a count,
     * BUS_REPLAY_MISS or BUS_REPLAY_ASYNC. */
    int (*replay)(struct bus *b, struct bus_sub *s, int max);
    void (*chat_free)(struct bus *b, struct bus_chat *c);
};

extern const struct bus_impl bus_memory_impl;
extern const struct bus_impl bus_redis_impl;

struct bus {
    struct server *srv;
    const struct bus_impl *impl;
    void *impl_state;
    struct sse_hub *sse;
    /* chats by id */
    struct bus_chat **tab;
    size_t nb, nchats, gc_cursor;
    /* group commit */
    struct bus_chat *dirty_head, *dirty_tail;
    int ready;                  /* durable pubs of loaded chats waiting */
    bool flush_due;
    struct bus_batch *inflight;
    uint64_t last_flush_us;  /* server_mono_us of the last group commit */
    uint64_t rate_start_us;  /* the recent commit rate (light_load) */
    uint64_t rate_cur, rate_prev;
    struct event batch_timer;
    /* deferred work, run from `kick` once the callback stack unwound */
    struct event kick;
    struct bus_pub *failq, **failq_tail;
    struct bus_chat *drain_head, **drain_tail;
    struct bus_sub *run_head, **run_tail;
    struct bus_sub *grave;
    struct event gc_timer;
    struct bus_op *ops;
    /* memory: chats with a non-empty ring, least recently pushed first */
    struct bus_chat *rings_head, *rings_tail;
    struct bus_stats stats;
    bool freeing;
};

/* ---- for the implementations (bus.c) ---- */

struct bus_chat *bus_chat_find(struct bus *b, const char *id);
/* Starts loading the chat's seq from the log if it is not loaded. */
void bus_chat_load(struct bus *b, struct bus_chat *c);
/* The watch became READY (live_seq set): starting subscribers proceed. */
void bus_watch_ready(struct bus *b, struct bus_chat *c);
/* Ends every live subscription of c (on_end). */
void bus_chat_end_subs(struct bus *b, struct bus_chat *c, const char *code,
                       const char *detail);
/* The live feed: each event of c once, durable ones in seq order. */
void bus_feed(struct bus *b, struct bus_chat *c, struct bus_event *ev);
/* Hands a replayed event to s (it must be s->pos + 1). */
void bus_sub_deliver(struct bus_sub *s, struct bus_event *ev);
/* Runs s's replay again from the loop. */
void bus_sub_run_later(struct bus_sub *s);
/* Replays the next page after s->pos from the durable log. */
void bus_replay_from_log(struct bus *b, struct bus_sub *s);

struct bus_op *bus_op_new(struct bus *b, struct bus_chat *c);
/* Unlinks op (and releases its chat hold); returns the bus or NULL when it
 * was freed meanwhile. */
struct bus *bus_op_end(struct bus_op *op);

/* A new event (refs 1): copies data, builds the SSE frame. */
struct bus_event *bus_event_new(int64_t seq, const char *chat_id,
                                const char *type, const char *data,
                                size_t len);
/* The same, taking over data's heap block. */
struct bus_event *bus_event_take(int64_t seq, const char *chat_id,
                                 const char *type, struct buf *data);

/* ---- test hooks ---- */

/* Drops the state of every chat without subscribers, pending publishes
 * or reads, regardless of its idle time (the memory ring goes with it). */
void bus_debug_drop_idle(struct bus *b);

#endif
