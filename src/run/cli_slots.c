/* The global cap on live CLIs (DESIGN.md §5, config cli_max_live).
 *
 * A chat holds a slot from the start of a run until it has neither a run
 * nor a CLI process (one that is closing still counts: its memory is not
 * back yet). A run of a chat without a slot waits in QUEUED when every
 * slot is held; each waiter may close one idle CLI, the least recently
 * used, and takes the slot once that CLI has exited. Waiters start in
 * arrival order. Starting them is deferred to a fresh loop turn, so a
 * slot freed inside another chat's call chain never re-enters it. */
#include <event2/event.h>
#include <unistd.h>

#include "corral/buf.h"
#include "corral/log.h"
#include "corral/server.h"
#include "cli_slots.h"
#include "turn.h"

#define CLI_BYTES_ESTIMATE (200LL << 20) /* DESIGN.md §5: ~200 MB each */

static int auto_cap(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    long long half = pages > 0 && size > 0 ? (long long)pages * size / 2 : 0;
    long long n = half / CLI_BYTES_ESTIMATE;
    return n < 1 ? 1 : n > 1000000 ? 1000000 : (int)n;
}

static void on_kick(evutil_socket_t fd, short what, void *arg);

void cli_slots_init(struct chats *c)
{
    int cfg = c->srv->cfg->cli_max_live;
    c->slots.max = cfg > 0 ? cfg : auto_cap();
    c->slots.kick = event_new(c->srv->base, -1, 0, on_kick, c);
    log_info("at most %d live CLIs (cli_max_live%s)", c->slots.max,
             cfg > 0 ? "" : ": half the memory at 200 MB each");
}

void cli_slots_free(struct chats *c)
{
    if (c->slots.kick)
        event_free(c->slots.kick);
    c->slots.kick = NULL;
}

static void schedule_kick(struct chats *c)
{
    if (c->slots.kick && c->slots.waiting && !c->closing)
        event_active(c->slots.kick, 0, 0);
}

static void wait_add(struct chat_rt *rt)
{
    struct cli_slots *s = &rt->reg->slots;
    if (rt->slot_waiting)
        return;
    rt->slot_waiting = true;
    rt->slot_next = NULL;
    struct chat_rt **pp = &s->waiters;
    while (*pp)
        pp = &(*pp)->slot_next;
    *pp = rt;
    s->waiting++;
}

static void wait_remove(struct chat_rt *rt)
{
    struct cli_slots *s = &rt->reg->slots;
    if (!rt->slot_waiting)
        return;
    struct chat_rt **pp = &s->waiters;
    while (*pp && *pp != rt)
        pp = &(*pp)->slot_next;
    if (*pp)
        *pp = rt->slot_next;
    rt->slot_waiting = false;
    rt->slot_next = NULL;
    s->waiting--;
}

/* The idle CLI used least recently, of a chat with nothing to run. */
static struct chat_rt *lru_idle(struct chats *c)
{
    struct chat_rt *best = NULL;
    for (struct chat_rt *rt = c->list; rt; rt = rt->next)
        if (rt->slot_held && !rt->slot_evicting && rt->cli &&
            rt->cli_state == CLI_IDLE && !rt->active && !rt->q_head &&
            (!best || rt->cli_used_us < best->cli_used_us))
            best = rt;
    return best;
}

/* One eviction per waiter not yet covered by an exiting CLI. */
static void evict_for_waiters(struct chats *c)
{
    struct cli_slots *s = &c->slots;
    while (s->waiting > s->evicting) {
        struct chat_rt *victim = lru_idle(c);
        if (!victim)
            return;
        log_info("chat %s: closing its idle CLI: %d CLIs live "
                 "(cli_max_live)", victim->id, s->held);
        victim->slot_evicting = true;
        s->evicting++;
        s->evictions++;
        turn_close_cli(victim, false);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct chats *c = arg;
    struct cli_slots *s = &c->slots;
    while (s->waiters && s->held < s->max && !c->closing) {
        struct chat_rt *rt = s->waiters;
        chat_rt_kick(rt); /* at the head, it takes the slot */
        if (s->waiters == rt)
            wait_remove(rt); /* it had nothing to start */
    }
    if (!c->closing)
        evict_for_waiters(c);
}

bool cli_slot_acquire(struct chat_rt *rt)
{
    struct cli_slots *s = &rt->reg->slots;
    rt->cli_used_us = server_mono_us();
    if (rt->slot_held && rt->slot_evicting) {
        /* A new turn came before its CLI exited: it keeps the slot, and
         * the waiter needs another victim. */
        rt->slot_evicting = false;
        s->evicting--;
        evict_for_waiters(rt->reg);
    }
    if (rt->slot_held)
        return true;
    if (s->held >= s->max || (s->waiters && s->waiters != rt)) {
        wait_add(rt);
        evict_for_waiters(rt->reg);
        return false;
    }
    wait_remove(rt);
    rt->slot_held = true;
    s->held++;
    return true;
}

static void release(struct chat_rt *rt)
{
    struct cli_slots *s = &rt->reg->slots;
    rt->slot_held = false;
    s->held--;
    if (rt->slot_evicting)
        s->evicting--;
    rt->slot_evicting = false;
    schedule_kick(rt->reg);
}

void cli_slot_maybe_release(struct chat_rt *rt)
{
    if (rt->slot_held && !rt->cli && !rt->active)
        release(rt);
}

void cli_slots_idle(struct chat_rt *rt)
{
    schedule_kick(rt->reg);
}

void cli_slot_forget(struct chat_rt *rt)
{
    wait_remove(rt);
    if (rt->slot_held)
        release(rt);
}

void cli_slots_render_metrics(const struct chats *c, struct buf *out)
{
    const struct cli_slots *s = &c->slots;
    buf_printf(out,
               "# HELP corral_cli_slots_held Chats holding a CLI slot (a run "
               "or a live CLI).\n# TYPE corral_cli_slots_held gauge\n"
               "corral_cli_slots_held %d\n"
               "# HELP corral_cli_slots_max cli_max_live.\n"
               "# TYPE corral_cli_slots_max gauge\ncorral_cli_slots_max %d\n"
               "# HELP corral_cli_slot_waiters Chats whose run waits in "
               "QUEUED for a CLI slot.\n"
               "# TYPE corral_cli_slot_waiters gauge\n"
               "corral_cli_slot_waiters %d\n"
               "# HELP corral_cli_evictions_total Idle CLIs closed to make "
               "room at cli_max_live.\n"
               "# TYPE corral_cli_evictions_total counter\n"
               "corral_cli_evictions_total %llu\n",
               s->held, s->max, s->waiting,
               (unsigned long long)s->evictions);
}
