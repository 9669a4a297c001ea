/* The sandbox's lifecycle (DESIGN.md §6): its state, live on the chat's
 * runtime and stored in chats.sandbox_state; the idle stop; the
 * per-state counts of /metrics.
 *
 * States are stored one statement at a time per chat, in order: the pool
 * may run two statements on two connections in either order, so a later
 * state waits for the write in flight (like a run's phase). A writer
 * outlives the runtime that made it while its write is in flight, and a
 * new runtime of the same chat finds and reuses it.
 *
 * The counts start from one count of the table at start-up and follow
 * the old -> new pair each write answers. They are this process's view:
 * exact with one instance; with several, each sees its own changes. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/buf.h"
#include "corral/chats.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/metrics.h"
#include "corral/sandbox.h"
#include "corral/server.h"
#include "corral/store_sandbox.h"
#include "cli_slots.h"
#include "lifecycle.h"
#include "turn.h"

static const char *const sb_states[5] = {"none", "starting", "running",
                                         "stopped", "error"};

struct sb_writer {
    struct sb_writer *next;
    struct chats *c;
    char chat_id[CHATS_ID_LEN + 1];
    const char *want;          /* the newest state */
    const char *sent;          /* the one written last */
    bool busy;                 /* a write is in flight */
};

static int state_index(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, sb_states[i]) == 0)
            return i;
    return -1;
}

/* `none` is not counted: it is no sandbox, and deleted chats go there. */
static void count_move(struct chats *c, const char *from, const char *to)
{
    int a = state_index(from), b = state_index(to);
    if (a > 0)
        c->sb_counts[a]--;
    if (b > 0)
        c->sb_counts[b]++;
}

static void writer_free(struct sb_writer *w)
{
    struct sb_writer **pp = &w->c->sb_writers;
    while (*pp && *pp != w)
        pp = &(*pp)->next;
    if (*pp)
        *pp = w->next;
    free(w);
}

static void writer_send(struct sb_writer *w);

static void on_state_stored(void *arg, const struct pg_reply *reply)
{
    struct sb_writer *w = arg;
    struct chats *c = w->c;
    w->busy = false;
    if (reply->status != PG_OK)
        log_warn("chat %s: sandbox state %s not recorded: %s", w->chat_id,
                 w->sent, reply->errmsg);
    else if (PQntuples(reply->res) == 1)
        count_move(c, pg_val(reply->res, 0, 0), w->sent);
    if (!c->closing && w->want != w->sent)
        writer_send(w);
    else
        writer_free(w);
}

static void writer_send(struct sb_writer *w)
{
    w->busy = true;
    w->sent = w->want;
    store_sandbox_state(w->c->srv->pg, w->chat_id, w->sent, on_state_stored,
                        w);
}

static void store_state(struct chats *c, const char *chat_id,
                        const char *state)
{
    struct sb_writer *w = c->sb_writers;
    while (w && strcmp(w->chat_id, chat_id) != 0)
        w = w->next;
    if (!w) {
        w = xcalloc(1, sizeof(*w));
        w->c = c;
        snprintf(w->chat_id, sizeof(w->chat_id), "%s", chat_id);
        w->next = c->sb_writers;
        c->sb_writers = w;
    }
    w->want = state;
    if (!w->busy)
        writer_send(w);
}

void sandbox_set_state(struct chat_rt *rt, const char *state)
{
    if (rt->sandbox_state && strcmp(rt->sandbox_state, state) == 0)
        return;
    log_info("chat %s: sandbox %s -> %s", rt->id,
             rt->sandbox_state ? rt->sandbox_state : "(stored)", state);
    rt->sandbox_state = state;
    if (!rt->reg->closing)
        store_state(rt->reg, rt->id, state);
}

/* ---- idle stop ---- */

static void on_sandbox_idle(evutil_socket_t fd, short what, void *arg)
{
    struct chat_rt *rt = arg;
    if (rt->active || rt->q_head || !rt->sb || rt->reg->closing)
        return;
    log_info("chat %s: sandbox idle for sandbox_idle_timeout_s; stopping "
             "it", rt->id);
    metrics_count(rt->reg->srv->metrics, "sandbox_idle_stops", 1);
    rt->sb_stopping = true;
    /* The CLI is the sandbox's process: closed gracefully (one the CLI
     * idle timer is closing already is left to finish), and its exit
     * lets the runtime go (turn.c cli_on_exit). */
    if (rt->cli && rt->cli_state != CLI_CLOSING)
        turn_close_cli(rt, false);
    if (!rt->cli)
        chat_rt_release_idle(rt);
}

void sandbox_idle_check(struct chat_rt *rt)
{
    struct server *srv = rt->reg->srv;
    bool idle = rt->sb && !rt->active && !rt->q_head && !rt->deleted;
    if (!idle) {
        if (rt->sb_idle_timer)
            evtimer_del(rt->sb_idle_timer);
        rt->sb_stopping = false;
        return;
    }
    if (rt->sb_stopping)
        return; /* stopped already: nothing to re-arm */
    if (!rt->sb_idle_timer)
        rt->sb_idle_timer = evtimer_new(srv->base, on_sandbox_idle, rt);
    if (evtimer_pending(rt->sb_idle_timer, NULL))
        return; /* idle since the last run: the time counts from there */
    struct timeval tv = {srv->cfg->sandbox_idle_timeout_s, 0};
    evtimer_add(rt->sb_idle_timer, &tv);
    quota_measure_idle(rt); /* a run just ended: what did it write? */
}

bool sandbox_hold(const struct chat_rt *rt)
{
    return rt->sb && !rt->deleted && !rt->sb_stopping && !rt->reg->closing;
}

void sandbox_rt_deinit(struct chat_rt *rt)
{
    if (rt->sb_idle_timer)
        event_free(rt->sb_idle_timer);
    if (rt->quota_timer)
        event_free(rt->quota_timer);
    rt->sb_idle_timer = rt->quota_timer = NULL;
}

void sandbox_on_release(struct chat_rt *rt)
{
    if (rt->sb && !rt->deleted)
        sandbox_set_state(rt, "stopped");
    sandbox_rt_deinit(rt);
}

/* ---- start-up and metrics ---- */

static void on_recovered(void *arg, const struct pg_reply *reply)
{
    struct chats *c = arg;
    if (reply->status != PG_OK) {
        log_error("sandbox states of an earlier process not recovered: %s",
                  reply->errmsg);
        return;
    }
    for (int i = 0; i < PQntuples(reply->res); i++) {
        int s = state_index(pg_val(reply->res, i, 0));
        if (s > 0)
            c->sb_counts[s] += strtoll(pg_val(reply->res, i, 1), NULL, 10);
    }
}

void sandbox_lifecycle_start(struct chats *c)
{
    /* Sandbox processes die with corrald (bwrap --die-with-parent), and
     * gateway sockets are replaced when opened: what a crash leaves is the
     * trash of unfinished destroys (swept) and the stored states. */
    sandbox_local_sweep(c->srv);
    store_sandbox_recover(c->srv->pg, on_recovered, c);
}

void sandbox_lifecycle_free(struct chats *c)
{
    while (c->sb_writers)
        writer_free(c->sb_writers); /* the pool answered every write */
    quota_free(c);
}

void chats_render_metrics(struct chats *c, struct buf *out)
{
    buf_puts(out, "# HELP corral_sandboxes Chats' sandboxes by state.\n"
                  "# TYPE corral_sandboxes gauge\n");
    for (int i = 1; i < 5; i++)
        buf_printf(out, "corral_sandboxes{state=\"%s\"} %lld\n",
                   sb_states[i],
                   (long long)(c->sb_counts[i] > 0 ? c->sb_counts[i] : 0));
    int starting, waiting;
    sandbox_local_starts(&starting, &waiting);
    buf_printf(out,
               "# HELP corral_sandbox_starts Sandboxes in their set-up, and "
               "launches waiting for a slot (sandbox_starts_max).\n"
               "# TYPE corral_sandbox_starts gauge\n"
               "corral_sandbox_starts{state=\"starting\"} %d\n"
               "corral_sandbox_starts{state=\"waiting\"} %d\n",
               starting, waiting);
    runs_render_metrics(c, out);
    cli_slots_render_metrics(c, out);
}
