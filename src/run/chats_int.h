/* Private to src/run: the live chat runtime and its runs. */
#ifndef CORRAL_CHATS_INT_H
#define CORRAL_CHATS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "corral/chats.h"
#include "corral/gateway.h"
#include "corral/run.h"
#include "corral/turn_map.h"
#include "launch.h"

struct event;
struct sandbox;
struct gateway;
struct cli_proc;
struct perm_req;
struct ckpt_job;
struct run_attach;

enum cli_state { CLI_NONE, CLI_STARTING, CLI_IDLE, CLI_BUSY, CLI_CLOSING };

struct chat_rt;

struct run {
    struct run *next;          /* the chat's queue */
    struct chat_rt *chat;
    struct run_spec spec;
    enum run_phase phase;
    int refs;                  /* the runtime + in-flight queries */
    struct event *timer;       /* phase timeout, then interrupt grace */
    int64_t started_ms;
    bool loaded;               /* store_run_load answered */
    char *content;             /* the user's text */
    char model[104];
    char mode[8];              /* ask, auto, plan */
    int64_t thinking;          /* -1: not set */
    struct launch launch;      /* launch settings, once loaded */
    bool prompt_edited;
    struct turn_map map;
    bool user_written;         /* the CLI has our message */
    bool interrupted;
    bool ending;               /* end_run started */
    struct turn_line result;
    bool have_result;
    enum run_phase final;      /* where end_run is taking it */
    /* The run's rows are written one statement at a time, in order: the
     * pool may run two statements on two connections in either order. */
    bool db_busy;              /* a write is in flight */
    bool db_dirty;             /* the phase changed meanwhile */
    char *finish[3];           /* end_run's content, usage, error JSON */
    bool finish_ready;         /* end_run waits for the write in flight */
    char err_code[32];
    char err_detail[512];
    /* budget (budget.c) */
    double budget_left;        /* USD when the run started; < 0: none */
    double price_per_token[4]; /* the run model's: in, out, cache w/r */
    double metered_usd;        /* this turn so far, by the gateway */
    bool metering;             /* the turn began on the gateway */
    uint64_t refusals_before;  /* the gateway's refusals at turn start */
    struct gateway_usage metered_before;
    struct perm_req *perms;    /* this run's requests not yet let go */
    int npending;              /* waiting for the user */
    const char *perm_end;      /* set once the run stops asking */
    struct ckpt_job *ckpt;     /* CHECKPOINT's child (checkpoint.c) */
    const char *stop_code;     /* corral interrupted it (quota): the
                                  run ends FAILED with this code */
    char stop_detail[128];
    struct run_attach *att;    /* the message's attachments (attach.c) */
    /* monotonic µs: queued, loaded, user line written (a debug log of
     * where a turn's start goes, at its first CLI line) */
    uint64_t t_queued, t_loaded, t_written;
};

struct chat_rt {
    struct chat_rt *next, **pprev; /* chats->list */
    struct chat_rt *hnext;     /* its bucket in chats->tab */
    struct chats *reg;
    char id[CHATS_ID_LEN + 1];
    struct run *active;
    struct run *q_head, *q_tail;
    int queued;
    uint64_t turn_seq;         /* bumped per run start: stale callbacks */
    struct sandbox *sb;
    struct gateway *gw;
    const char *sandbox_state;
    struct cli_proc *cli;
    enum cli_state cli_state;
    char cli_model[104];       /* what the live CLI runs with now */
    bool cli_plan;
    int64_t cli_thinking;
    char cli_launch_key[LAUNCH_KEY_LEN + 1]; /* the live CLI's */
    char session_id[CHATS_ID_LEN + 1];
    int nruns;                 /* runs allocated for this chat, any state */
    struct event *idle_timer;
    bool deleted;
    bool restoring;            /* a restore holds the run slot */
    struct ckpt_job *restore_job; /* its child (checkpoint.c) */
    /* sandbox lifecycle (lifecycle.c) and quota (quota.c) */
    struct event *sb_idle_timer; /* sandbox_idle_timeout_s after a run */
    bool sb_stopping;          /* idle stop: waiting for the CLI to exit */
    struct event *quota_timer; /* quota_check_interval_s during a run */
    bool quota_measuring;      /* the run's periodic check in flight */
    bool quota_over;           /* the last measurement */
    int64_t quota_used;
    int64_t quota_at_ms;       /* its monotonic time; 0: none */
    /* the cap on live CLIs (cli_slots.c) */
    bool slot_held;
    bool slot_waiting;
    bool slot_evicting;        /* its idle CLI is closing for a waiter */
    struct chat_rt *slot_next; /* the wait list */
    uint64_t cli_used_us;      /* a run last started (LRU) */
};

/* The runtime of chat_id, or NULL (chats.c). */
struct chat_rt *chats_rt_lookup(struct chats *c, const char *chat_id);

/* The cap on live CLIs (cli_slots.c). */
struct cli_slots {
    int max;                   /* cli_max_live */
    int held;                  /* chats holding a slot */
    int waiting;               /* chats on the wait list */
    int evicting;              /* idle CLIs closing for waiters */
    uint64_t evictions;
    struct chat_rt *waiters;   /* in arrival order, via slot_next */
    struct event *kick;        /* starts waiters on a fresh loop turn */
};

struct chats {
    struct server *srv;
    struct chat_rt *list;      /* every runtime, for walks */
    struct chat_rt **tab;      /* the same by id: nb buckets, n runtimes */
    size_t nb, n;
    char *cli_real;            /* realpath of the CLI binary */
    char *cli_dir;             /* its directory, bound into sandboxes */
    bool closing;              /* shutting down: callbacks only release */
    struct ckpt_job *jobs;     /* checkpoint children (checkpoint.c) */
    struct sb_writer *sb_writers; /* sandbox states being stored */
    int64_t sb_counts[5];      /* chats by stored sandbox state */
    struct du_job *du_jobs;    /* quota measurements in flight */
    struct cli_slots slots;
};

/* The corral_runs{phase} gauge (part of chats_render_metrics). */
struct buf;
void runs_render_metrics(const struct chats *c, struct buf *out);

#endif
