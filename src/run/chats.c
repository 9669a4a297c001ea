/* The chat runtime registry, run queue and phase machine. One run at a
 * time per chat, FIFO; run_set_phase is the only writer of a run's phase.
 * The turn itself (sandbox, CLI, stream) lives in turn.c. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chats_int.h"
#include "corral/bus.h"
#include "corral/cli_proc.h"
#include "corral/gateway.h"
#include "corral/ids.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/sandbox.h"
#include "corral/server.h"
#include "corral/store_runs.h"
#include "attach.h"
#include "budget.h"
#include "cli_slots.h"
#include "lifecycle.h"
#include "perm.h"
#include "turn.h"

/* ---- registry ---- */

/* Every request and run step finds its chat by id: with thousands of live
 * chats a walk of the list was the loop's largest cost (bench shape 7). */
static size_t rt_bucket(const struct chats *c, const char *chat_id)
{
    return (size_t)ids_hash(chat_id) & (c->nb - 1);
}

static struct chat_rt *rt_find(struct chats *c, const char *chat_id)
{
    if (c->nb == 0)
        return NULL;
    struct chat_rt *rt = c->tab[rt_bucket(c, chat_id)];
    while (rt && strcmp(rt->id, chat_id) != 0)
        rt = rt->hnext;
    return rt;
}

static void rt_rehash(struct chats *c, size_t nb)
{
    free(c->tab);
    c->tab = xcalloc(nb, sizeof(*c->tab));
    c->nb = nb;
    for (struct chat_rt *rt = c->list; rt; rt = rt->next) {
        size_t j = rt_bucket(c, rt->id);
        rt->hnext = c->tab[j];
        c->tab[j] = rt;
    }
}

static void rt_link(struct chats *c, struct chat_rt *rt)
{
    rt->next = c->list;
    if (c->list)
        c->list->pprev = &rt->next;
    rt->pprev = &c->list;
    c->list = rt;
    if (++c->n > c->nb) { /* at most one runtime per bucket on average */
        rt_rehash(c, c->nb ? c->nb * 2 : 64);
        return;
    }
    size_t j = rt_bucket(c, rt->id);
    rt->hnext = c->tab[j];
    c->tab[j] = rt;
}

static void rt_unlink(struct chats *c, struct chat_rt *rt)
{
    *rt->pprev = rt->next;
    if (rt->next)
        rt->next->pprev = rt->pprev;
    struct chat_rt **pp = &c->tab[rt_bucket(c, rt->id)];
    while (*pp != rt)
        pp = &(*pp)->hnext;
    *pp = rt->hnext;
    c->n--;
}

static struct chat_rt *rt_get(struct chats *c, const char *chat_id)
{
    struct chat_rt *rt = rt_find(c, chat_id);
    if (rt)
        return rt;
    rt = xcalloc(1, sizeof(*rt));
    rt->reg = c;
    snprintf(rt->id, sizeof(rt->id), "%s", chat_id);
    rt->sandbox_state = NULL; /* as stored, until this process changes it */
    rt->cli_thinking = -1;
    rt_link(c, rt);
    return rt;
}

struct chat_rt *chats_rt_lookup(struct chats *c, const char *chat_id)
{
    return rt_find(c, chat_id);
}

bool run_is_current(const struct run *run)
{
    return !run->ending && run->chat->active == run &&
           !run->chat->reg->closing;
}

/* ---- publishing ---- */

void chat_publish(struct run *run, const char *type, const struct buf *data,
                  bool durable)
{
    struct server *srv = run->chat->reg->srv;
    bus_publish(srv->bus, run->spec.chat_id, run->spec.reply_id, type,
                data->data, data->len, durable, NULL, NULL);
}

static void publish_status(struct run *run, const char *code,
                           const char *detail)
{
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", run->spec.reply_id);
    json_w_kstr(&w, "status", run_phase_message_status(run->phase));
    json_w_kstr(&w, "phase", run_phase_name(run->phase));
    if (code) {
        json_w_key(&w, "error");
        json_w_obj_begin(&w);
        json_w_kstr(&w, "code", code);
        json_w_kstr(&w, "detail", detail);
        json_w_obj_end(&w);
    }
    json_w_obj_end(&w);
    chat_publish(run, "message_status", &data, true);
    buf_deinit(&data);
}

void chat_publish_error(struct run *run, const char *code,
                        const char *detail)
{
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", run->spec.reply_id);
    json_w_kstr(&w, "code", code);
    json_w_kstr(&w, "detail", detail);
    json_w_obj_end(&w);
    chat_publish(run, "error", &data, true);
    buf_deinit(&data);
}

/* ---- run life ---- */

void run_release(struct run *run)
{
    if (--run->refs > 0)
        return;
    struct chat_rt *rt = run->chat;
    if (run->timer)
        event_free(run->timer);
    free(run->content);
    launch_free(&run->launch);
    attach_free(run->att);
    for (int i = 0; i < 3; i++)
        free(run->finish[i]);
    turn_map_deinit(&run->map);
    free(run);
    if (--rt->nruns == 0)
        chat_rt_release_idle(rt);
}

static void write_finish(struct run *run);

static void write_phase(struct run *run);

static void on_phase_stored(void *arg, const struct pg_reply *reply)
{
    struct run *run = arg;
    run->db_busy = false;
    if (reply->status != PG_OK)
        log_warn("run %s: phase not recorded: %s", run->spec.run_id,
                 reply->errmsg);
    if (run->finish_ready && !run->chat->reg->closing)
        write_finish(run);
    else if (run->db_dirty && !run->chat->reg->closing)
        write_phase(run);
    run_release(run);
}

/* Records the run's current phase, after any write still in flight. */
static void write_phase(struct run *run)
{
    if (run->db_busy) {
        run->db_dirty = true;
        return;
    }
    struct server *srv = run->chat->reg->srv;
    run->db_busy = true;
    run->db_dirty = false;
    run->refs++;
    store_run_phase(srv->pg, run->spec.run_id, run->spec.reply_id,
                    run_phase_name(run->phase),
                    run_phase_message_status(run->phase), on_phase_stored,
                    run);
}

void end_interrupted(struct run *run)
{
    if (run->stop_code)
        end_run(run, RUN_PHASE_FAILED, run->stop_code, run->stop_detail);
    else
        end_run(run, RUN_PHASE_CANCELLED, NULL, NULL);
}

static void on_phase_timeout(evutil_socket_t fd, short what, void *arg);

static int phase_timeout_ms(const struct config *cfg, enum run_phase p)
{
    switch (p) {
    case RUN_PHASE_SANDBOX_CONNECT:
    case RUN_PHASE_SANDBOX_PREPARE: return cfg->sandbox_prepare_timeout_ms;
    case RUN_PHASE_CLI_LAUNCH: return cfg->cli_launch_timeout_ms;
    case RUN_PHASE_STREAMING: return cfg->turn_timeout_ms;
    case RUN_PHASE_QUEUED:
    case RUN_PHASE_AWAITING_PERMISSION:
    case RUN_PHASE_FINALIZE:
    case RUN_PHASE_CHECKPOINT:
    case RUN_PHASE_DONE:
    case RUN_PHASE_FAILED:
    case RUN_PHASE_CANCELLED:
    case RUN_PHASE_COUNT: break;
    }
    return 0;
}

static void arm_phase_timer(struct run *run)
{
    struct server *srv = run->chat->reg->srv;
    int ms = phase_timeout_ms(srv->cfg, run->phase);
    if (!run->timer)
        run->timer = evtimer_new(srv->base, on_phase_timeout, run);
    evtimer_del(run->timer);
    if (ms > 0) {
        struct timeval tv = ms_to_timeval(ms);
        evtimer_add(run->timer, &tv);
    }
}

/* The only writer of run->phase. Terminal phases are recorded by
 * end_run's own statement, the others here. */
bool run_set_phase(struct run *run, enum run_phase to)
{
    if (!run_phase_allowed(run->phase, to)) {
        log_error("run %s: refused transition %s -> %s", run->spec.run_id,
                  run_phase_name(run->phase), run_phase_name(to));
        return false;
    }
    log_info("run %s: %s -> %s", run->spec.run_id,
             run_phase_name(run->phase), run_phase_name(to));
    bool after_checkpoint = run->phase == RUN_PHASE_CHECKPOINT;
    run->phase = to;
    arm_phase_timer(run);
    if (!run_phase_terminal(to)) {
        write_phase(run);
        publish_status(run, NULL, NULL);
    } else if (after_checkpoint) {
        write_phase(run); /* the finish statement recorded `done` early */
    }
    return true;
}

static void rt_kick(struct chat_rt *rt);

/* The turn's usage per model: the result's, or without one what the
 * gateway metered (tokens spent upstream are charged either way). */
static void usage_json(const struct run *run, struct buf *out)
{
    struct json_w w;
    struct turn_usage metered;
    const struct turn_usage *rows = run->result.usage;
    int n = run->have_result ? run->result.nusage : 0;
    if ((!run->have_result || !run->result.usage_per_model) &&
        budget_metered_usage(run, &metered)) {
        rows = &metered;
        n = 1;
    }
    json_w_init(&w, out);
    json_w_arr_begin(&w);
    for (int i = 0; i < n; i++) {
        const struct turn_usage *u = &rows[i];
        json_w_obj_begin(&w);
        json_w_kstr(&w, "model", u->model[0] ? u->model : run->model);
        json_w_kint(&w, "input_tokens", u->input_tokens);
        json_w_kint(&w, "output_tokens", u->output_tokens);
        json_w_kint(&w, "cache_creation_input_tokens",
                    u->cache_creation_input_tokens);
        json_w_kint(&w, "cache_read_input_tokens",
                    u->cache_read_input_tokens);
        json_w_obj_end(&w);
    }
    json_w_arr_end(&w);
}

/* One `usage` event per model, priced by the finish statement. */
static void publish_usage(struct run *run, const PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++) {
        struct buf data = {0};
        const char *v = pg_val(res, i, 0);
        data.data = (char *)v;
        data.len = strlen(v);
        chat_publish(run, "usage", &data, true);
    }
}

void run_leave_slot(struct run *run)
{
    struct chat_rt *rt = run->chat;
    run_set_phase(run, run->final);
    publish_status(run, run->err_code[0] ? run->err_code : NULL,
                   run->err_detail);
    if (rt->active == run) {
        rt->active = NULL;
        run_release(run); /* the slot's reference */
    }
    rt_kick(rt);
}

static void on_run_finished(void *arg, const struct pg_reply *reply)
{
    struct run *run = arg;
    struct chat_rt *rt = run->chat;
    run->db_busy = false;
    if (rt->reg->closing) {
        run_release(run);
        return;
    }
    if (reply->status != PG_OK)
        log_error("run %s: result not stored: %s", run->spec.run_id,
                  reply->errmsg);
    else
        publish_usage(run, reply->res);
    if (run->final == RUN_PHASE_DONE && reply->status == PG_OK &&
        rt->active == run)
        checkpoint_run(run); /* ends in run_leave_slot */
    else
        run_leave_slot(run);
    run_release(run); /* last: it may free rt */
}

static void error_json(const struct run *run, struct buf *out)
{
    struct json_w w;
    json_w_init(&w, out);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "code", run->err_code);
    json_w_kstr(&w, "detail", run->err_detail);
    json_w_obj_end(&w);
}

void end_run(struct run *run, enum run_phase final, const char *code,
             const char *detail)
{
    if (run->ending)
        return;
    perm_end_run(run, final == RUN_PHASE_CANCELLED ? "interrupt"
                                                   : "cli_cancelled");
    run->ending = true;
    run->final = final;
    if (run->timer)
        evtimer_del(run->timer);
    snprintf(run->err_code, sizeof(run->err_code), "%s", code ? code : "");
    snprintf(run->err_detail, sizeof(run->err_detail), "%s",
             detail ? detail : "");
    if (final == RUN_PHASE_DONE)
        run_set_phase(run, RUN_PHASE_FINALIZE);
    else if (final == RUN_PHASE_FAILED)
        chat_publish_error(run, run->err_code, run->err_detail);
    struct buf content, usage, error;
    buf_init(&content);
    buf_init(&usage);
    buf_init(&error);
    turn_map_content(&run->map, &content);
    usage_json(run, &usage);
    if (code)
        error_json(run, &error);
    run->finish[0] = buf_steal(&content, NULL);
    run->finish[1] = buf_steal(&usage, NULL);
    run->finish[2] = code ? buf_steal(&error, NULL) : NULL;
    buf_deinit(&error);
    run->finish_ready = true;
    if (!run->db_busy)
        write_finish(run);
}

static void write_finish(struct run *run)
{
    enum run_phase final = run->final;
    const char *params[9] = {
        run->spec.run_id, run->spec.reply_id,
        run_phase_message_status(final), run_phase_name(final),
        run->finish[0], run->finish[1], run->finish[2],
        run->model[0] ? run->model : NULL,
        run->have_result ? "t" : "f",
    };
    run->finish_ready = false;
    run->db_busy = true;
    run->refs++;
    store_run_finish(run->chat->reg->srv->pg, params, on_run_finished, run);
}

static void on_phase_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct run *run = arg;
    if (run->interrupted) { /* the CLI ignored the interrupt */
        log_warn("run %s: no result after interrupt; killing the CLI",
                 run->spec.run_id);
        turn_close_cli(run->chat, true);
        end_interrupted(run);
        return;
    }
    char detail[128];
    snprintf(detail, sizeof(detail), "the %s phase took too long",
             run_phase_name(run->phase));
    if (run->phase == RUN_PHASE_CLI_LAUNCH ||
        run->phase == RUN_PHASE_STREAMING)
        turn_close_cli(run->chat, true); /* its state is unknown now */
    end_run(run, RUN_PHASE_FAILED, "timeout", detail);
}

/* ---- queue ---- */

static void on_run_loaded(void *arg, const struct pg_reply *reply)
{
    struct run *run = arg;
    if (run->ending || run->chat->active != run || run->chat->reg->closing) {
        run_release(run);
        return;
    }
    if (reply->status != PG_OK || PQntuples(reply->res) != 1) {
        end_run(run, RUN_PHASE_FAILED, "sandbox_failed",
                reply->status == PG_OK ? "the run's rows are gone"
                                       : "the database is unavailable");
        run_release(run);
        return;
    }
    run->t_loaded = server_mono_us();
    const PGresult *res = reply->res;
    const char *msg_model = pg_val(res, 0, RUNLOAD_MSG_MODEL);
    snprintf(run->model, sizeof(run->model), "%s",
             msg_model ? msg_model : pg_val(res, 0, RUNLOAD_MODEL));
    run->content = xstrdup(pg_val(res, 0, RUNLOAD_CONTENT));
    run->prompt_edited = strcmp(pg_val(res, 0, RUNLOAD_EDITED), "t") == 0;
    snprintf(run->mode, sizeof(run->mode), "%s", pg_val(res, 0, RUNLOAD_MODE));
    struct chat_rt *rt = run->chat;
    snprintf(rt->session_id, sizeof(rt->session_id), "%s",
             pg_val(res, 0, RUNLOAD_SESSION));
    /* Per-message options override the chat's. */
    const char *opts = pg_val(res, 0, RUNLOAD_OPTIONS);
    struct json_doc *d = NULL;
    if (opts && json_parse(opts, strlen(opts), NULL, &d, NULL) == JSON_OK) {
        int m = json_get(d, 0, "permission_mode");
        if (json_type(d, m) == JSON_STRING) {
            char *s = json_str_dup(d, m, NULL);
            snprintf(run->mode, sizeof(run->mode), "%s", s);
            free(s);
        }
        json_get_int64(d, json_get(d, 0, "max_thinking_tokens"),
                       &run->thinking);
        json_doc_free(d);
    }
    const char *err = NULL;
    char detail[200];
    run->loaded = true;
    snprintf(detail, sizeof(detail), "the model %s is not offered by this "
             "server (see GET /models)", run->model);
    if (strcmp(pg_val(res, 0, RUNLOAD_MODEL_OFFERED), "t") != 0)
        end_run(run, RUN_PHASE_FAILED, "model_error", detail);
    else if (!launch_load(&run->launch, res, pg_val(res, 0, RUNLOAD_PROMPT),
                     run->chat->reg->srv->secret_key, &err))
        end_run(run, RUN_PHASE_FAILED, "sandbox_failed", err);
    else if (!budget_load(run, res))
        end_run(run, RUN_PHASE_FAILED, "budget_exceeded",
                "the monthly budget is used up");
    else if (!attach_load(run, pg_val(res, 0, RUNLOAD_ATTACHMENTS)))
        end_run(run, RUN_PHASE_FAILED, "sandbox_failed",
                "the message's attachments are not readable");
    else if (strcmp(pg_val(res, 0, RUNLOAD_DELETED), "t") == 0)
        end_run(run, RUN_PHASE_CANCELLED, NULL, NULL);
    else
        turn_start(run);
    run_release(run);
}

static void rt_kick(struct chat_rt *rt)
{
    if (rt->active || rt->restoring || !rt->q_head) {
        turn_idle_check(rt);
        return;
    }
    if (!cli_slot_acquire(rt))
        return; /* QUEUED until a CLI slot is free (cli_max_live) */
    struct run *run = rt->q_head;
    rt->q_head = run->next;
    if (!rt->q_head)
        rt->q_tail = NULL;
    rt->queued--;
    run->next = NULL;
    rt->active = run; /* the slot holds the queue's reference now */
    rt->turn_seq++;
    turn_idle_check(rt);
    run->refs++;
    store_run_load(rt->reg->srv->pg, run->spec.run_id, on_run_loaded, run);
}

void chats_enqueue(struct chats *c, const struct run_spec *spec)
{
    struct chat_rt *rt = rt_get(c, spec->chat_id);
    struct run *run = xcalloc(1, sizeof(*run));
    run->chat = rt;
    rt->nruns++;
    run->spec = *spec;
    run->phase = RUN_PHASE_QUEUED;
    run->t_queued = server_mono_us();
    run->thinking = -1;
    run->refs = 1; /* the queue, then the run slot */
    turn_map_init(&run->map, spec->reply_id);
    if (rt->q_tail)
        rt->q_tail->next = run;
    else
        rt->q_head = run;
    rt->q_tail = run;
    rt->queued++;
    rt_kick(rt);
}

void runs_render_metrics(const struct chats *c, struct buf *out)
{
    int64_t n[RUN_PHASE_COUNT] = {0};
    for (const struct chat_rt *rt = c->list; rt; rt = rt->next) {
        n[RUN_PHASE_QUEUED] += rt->queued;
        if (rt->active)
            n[rt->active->phase]++;
    }
    buf_puts(out, "# HELP corral_runs Runs of this process by phase.\n"
                  "# TYPE corral_runs gauge\n");
    for (int p = 0; p < RUN_PHASE_COUNT; p++)
        if (!run_phase_terminal((enum run_phase)p))
            buf_printf(out, "corral_runs{phase=\"%s\"} %lld\n",
                       run_phase_name((enum run_phase)p), (long long)n[p]);
}

struct chat_rt *chat_rt_get(struct chats *c, const char *chat_id)
{
    return rt_get(c, chat_id);
}

void chat_rt_kick(struct chat_rt *rt)
{
    rt_kick(rt);
}

/* Cancels the queued (not started) runs. */
static int drop_queue(struct chat_rt *rt)
{
    int n = 0;
    while (rt->q_head) {
        struct run *run = rt->q_head;
        rt->q_head = run->next;
        rt->queued--;
        run->next = NULL;
        end_run(run, RUN_PHASE_CANCELLED, NULL, NULL);
        run_release(run); /* the queue's reference */
        n++;
    }
    rt->q_tail = NULL;
    return n;
}

int chats_interrupt(struct chats *c, const char *chat_id, bool drop)
{
    struct chat_rt *rt = rt_find(c, chat_id);
    if (!rt)
        return 0;
    int n = drop ? drop_queue(rt) : 0;
    struct run *run = rt->active;
    if (run && run->phase == RUN_PHASE_CHECKPOINT) {
        checkpoint_interrupt(run);
        return n + 1;
    }
    if (!run || run->ending)
        return n;
    if (run->user_written)
        turn_interrupt(run);
    else /* nothing reached the CLI yet: cancel locally */
        end_run(run, RUN_PHASE_CANCELLED, NULL, NULL);
    return n + 1;
}

void chats_delete(struct chats *c, const char *chat_id)
{
    struct chat_rt *rt = rt_get(c, chat_id);
    struct server *srv = c->srv;
    const char *err = NULL;
    rt->deleted = true;
    drop_queue(rt);
    if (rt->active && !rt->active->ending)
        end_run(rt->active, RUN_PHASE_CANCELLED, NULL, NULL);
    turn_close_cli(rt, true);
    bus_end_chat(srv->bus, chat_id, "chat_deleted", "the chat was deleted");
    if (rt->gw) {
        gateway_close(rt->gw);
        rt->gw = NULL;
    }
    /* The workspace may exist on disk without a live runtime (an earlier
     * process, or a chat idle long enough to be let go). */
    if (!rt->sb)
        rt->sb = sandbox_local.open(srv, rt->id, &err);
    if (rt->sb)
        sandbox_local.destroy(rt->sb);
    else
        log_error("chat %s: workspace not removed: %s", chat_id,
                  err ? err : "?");
    rt->sb = NULL;
    sandbox_set_state(rt, "none");
    checkpoint_chat_deleted(rt);
    chat_rt_release_idle(rt);
}

void chat_rt_release_idle(struct chat_rt *rt)
{
    struct chats *c = rt->reg;
    if (c->closing || rt->nruns || rt->active || rt->q_head || rt->cli ||
        rt->restoring || sandbox_hold(rt))
        return;
    sandbox_on_release(rt);
    cli_slot_forget(rt);
    if (rt->gw)
        gateway_close(rt->gw);
    if (rt->sb)
        sandbox_local.close(rt->sb);
    rt_unlink(c, rt);
    if (rt->idle_timer)
        event_free(rt->idle_timer);
    free(rt);
}

void chats_settings_changed(struct chats *c, const char *chat_id)
{
    struct chat_rt *rt = rt_find(c, chat_id);
    /* An idle CLI was launched with the old prompt: let it go now rather
     * than keep its memory until the next turn relaunches it. */
    if (rt && !rt->active && rt->cli_state == CLI_IDLE)
        turn_close_cli(rt, false);
}

bool chats_live(struct chats *c, const char *chat_id, struct chat_live *out)
{
    struct chat_rt *rt = rt_find(c, chat_id);
    memset(out, 0, sizeof(*out));
    if (!rt || rt->deleted)
        return false;
    out->queued = rt->queued;
    out->sandbox_state = rt->sandbox_state;
    const struct run *any = rt->active ? rt->active : rt->q_head;
    if (any)
        snprintf(out->owner_id, sizeof(out->owner_id), "%s",
                 any->spec.owner_id);
    struct run *run = rt->active;
    if (!run) {
        out->status = rt->queued ? "queued" : "idle";
        return true;
    }
    out->has_run = true;
    snprintf(out->message_id, sizeof(out->message_id), "%s",
             run->spec.reply_id);
    out->phase = run_phase_name(run->phase);
    out->status = run_phase_chat_status(run->phase);
    out->started_unix_ms = run->started_ms;
    return true;
}

struct recover_ctx {
    void (*cb)(void *arg, const char *err);
    void *arg;
};

static void on_recovered(void *arg, const struct pg_reply *reply)
{
    struct recover_ctx *ctx = arg;
    if (reply->status == PG_OK && strcmp(PQcmdTuples(reply->res), "0") != 0)
        log_warn("marked %s unfinished runs of a previous process failed",
                 PQcmdTuples(reply->res));
    ctx->cb(ctx->arg, reply->status == PG_OK ? NULL : reply->errmsg);
    free(ctx);
}

void chats_recover(struct chats *c, void (*cb)(void *arg, const char *err),
                   void *arg)
{
    struct recover_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->cb = cb;
    ctx->arg = arg;
    store_runs_recover(c->srv->pg, on_recovered, ctx);
}

/* The CLI binary is resolved once; its directory is bound read-only into
 * every sandbox at the same path, so argv[0] is valid inside too. */
static void resolve_cli(struct chats *c)
{
    const char *path = c->srv->cfg->cli_path
                           ? c->srv->cfg->cli_path
                           : "var/cli/node_modules/.bin/claude";
    char *real = realpath(path, NULL);
    if (!real) {
        log_warn("the Claude CLI was not found at %s (set cli_path); runs "
                 "will fail until it exists", path);
        return;
    }
    c->cli_real = real;
    c->cli_dir = xstrdup(real);
    char *slash = strrchr(c->cli_dir, '/');
    if (slash && slash != c->cli_dir)
        *slash = '\0';
    log_info("Claude CLI: %s", real);
}

struct chats *chats_new(struct server *srv)
{
    struct chats *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    resolve_cli(c);
    cli_slots_init(c);
    sandbox_lifecycle_start(c);
    return c;
}

void chats_shutdown(struct chats *c)
{
    c->closing = true;
    checkpoint_shutdown(c);
    quota_free(c);
    for (struct chat_rt *rt = c->list; rt; rt = rt->next) {
        turn_close_cli(rt, true);
        if (rt->gw) {
            gateway_close(rt->gw);
            rt->gw = NULL;
        }
        if (rt->sb) {
            sandbox_local.close(rt->sb);
            rt->sb = NULL;
        }
    }
}

void chats_free(struct chats *c)
{
    if (!c)
        return;
    while (c->list) {
        struct chat_rt *rt = c->list;
        rt_unlink(c, rt);
        if (rt->active) {
            perm_drop_all(rt->active);
            run_release(rt->active); /* the slot's reference */
        }
        while (rt->q_head) {
            struct run *run = rt->q_head;
            rt->q_head = run->next;
            run_release(run); /* the queue's reference */
        }
        if (rt->idle_timer)
            event_free(rt->idle_timer);
        sandbox_rt_deinit(rt);
        free(rt);
    }
    sandbox_lifecycle_free(c);
    cli_slots_free(c);
    free(c->tab);
    free(c->cli_real);
    free(c->cli_dir);
    free(c);
}
