/* One turn on the wire: the chat's sandbox and gateway, its warm or newly
 * launched CLI, the per-message settings, the user message, and the CLI's
 * output mapped to events until `result` (DESIGN.md §5). Callbacks carry
 * the chat runtime and its turn_seq, so an answer that arrives after its
 * run ended is recognised and dropped. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "corral/cli_proc.h"
#include "corral/gateway.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/sandbox.h"
#include "corral/server.h"
#include "attach.h"
#include "budget.h"
#include "cli_slots.h"
#include "lifecycle.h"
#include "perm.h"
#include "turn.h"

/* Where the in-sandbox forwarder listens; the sandbox has its own network
 * namespace, so any port is free there. */
#define GATEWAY_PORT 8484

struct ctl_ctx {
    struct chat_rt *rt;
    uint64_t seq;
};

static struct ctl_ctx *ctl_ctx_new(struct chat_rt *rt)
{
    struct ctl_ctx *x = xmalloc(sizeof(*x));
    x->rt = rt;
    x->seq = rt->turn_seq;
    return x;
}

/* The active run if the callback still belongs to it. */
static struct run *ctx_run(struct ctl_ctx *x)
{
    struct run *run = x->rt->active;
    if (!run || run->ending || x->seq != x->rt->turn_seq ||
        x->rt->reg->closing)
        return NULL;
    return run;
}

static struct server *rt_srv(struct chat_rt *rt)
{
    return rt->reg->srv;
}

static void fail(struct run *run, const char *code, const char *detail)
{
    end_run(run, RUN_PHASE_FAILED, code, detail);
}

/* ---- the CLI's output ---- */

static void emit_event(void *arg, const char *type, const struct buf *data,
                       bool durable)
{
    chat_publish(arg, type, data, durable);
}

static void on_result(struct run *run, const struct turn_line *tl)
{
    struct chat_rt *rt = run->chat;
    rt->cli_state = CLI_IDLE;
    run->result = *tl;
    run->have_result = true;
    budget_cross_check(run);
    if (run->interrupted)
        end_interrupted(run);
    else if (tl->is_error && budget_refused(run))
        fail(run, "budget_exceeded", "the monthly budget was reached during "
                                     "this turn");
    else if (tl->is_error)
        fail(run, "model_error", tl->error_text[0] ? tl->error_text
                                                   : "the model call failed");
    else
        end_run(run, RUN_PHASE_DONE, NULL, NULL);
}

static void on_cli_request(struct chat_rt *rt, const struct json_doc *d)
{
    char *id = json_str_dup(d, json_get(d, 0, "request_id"), NULL);
    int request = json_get(d, 0, "request");
    if (!id)
        return;
    if (json_str_eq(d, json_get(d, request, "subtype"), "can_use_tool"))
        perm_on_request(rt, d, id, request);
    else
        cli_proc_respond_error(rt->cli, id, "not supported by this host");
    free(id);
}

static void cli_on_line(void *arg, const struct json_doc *d)
{
    struct chat_rt *rt = arg;
    int type = json_get(d, 0, "type");
    if (json_str_eq(d, type, "control_request")) {
        on_cli_request(rt, d);
        return;
    }
    if (json_str_eq(d, type, "control_cancel_request")) {
        char *id = json_str_dup(d, json_get(d, 0, "request_id"), NULL);
        if (id)
            perm_on_cancel(rt, id);
        free(id);
        return;
    }
    struct run *run = rt->active;
    if (!run || run->ending || !run->user_written) {
        log_debug("chat %s: CLI output outside a turn ignored", rt->id);
        return;
    }
    if (run->t_written) {
        log_debug("chat %s: turn start: loaded %.1f ms, user line %.1f ms, "
                  "first CLI line %.1f ms after queued", rt->id,
                  (double)(run->t_loaded - run->t_queued) / 1e3,
                  (double)(run->t_written - run->t_queued) / 1e3,
                  (double)(server_mono_us() - run->t_queued) / 1e3);
        run->t_written = 0;
    }
    struct turn_line tl;
    turn_map_line(&run->map, d, emit_event, run, &tl);
    if (tl.is_result)
        on_result(run, &tl);
}

static void cli_on_bad_line(void *arg, const char *why)
{
    struct chat_rt *rt = arg;
    log_error("chat %s: CLI protocol error: %s", rt->id, why);
    struct run *run = rt->active;
    turn_close_cli(rt, true);
    if (run && !run->ending && run->phase != RUN_PHASE_QUEUED &&
        run->phase != RUN_PHASE_SANDBOX_PREPARE)
        fail(run, "cli_failed", why);
}

static void cli_on_exit(void *arg, int status, const char *tail)
{
    struct chat_rt *rt = arg;
    rt->cli = NULL;
    rt->cli_state = CLI_NONE;
    struct run *run = rt->active;
    bool ours = run && !run->ending &&
                (run->phase == RUN_PHASE_CLI_LAUNCH || run->user_written);
    log_info("chat %s: CLI exited (status %d)", rt->id,
             WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    if (!ours) {
        turn_idle_check(rt);
        chat_rt_release_idle(rt); /* nothing runs: let its resources go */
        return;
    }
    if (run->interrupted) {
        end_interrupted(run);
        return;
    }
    char detail[600];
    snprintf(detail, sizeof(detail), "the CLI exited (%s %d)%s%.400s",
             WIFEXITED(status) ? "status" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
             *tail ? ": " : "", tail);
    fail(run, "cli_failed", detail);
}

static const struct cli_proc_cbs cli_cbs = {cli_on_line, cli_on_bad_line,
                                            cli_on_exit};

/* ---- writing the user message, after the per-message settings ---- */

static void apply_settings(struct chat_rt *rt, struct run *run);

static void on_setting_applied(void *arg, bool ok, const struct json_doc *d,
                               int response, const char *err)
{
    struct ctl_ctx *x = arg;
    struct run *run = ctx_run(x);
    free(x);
    if (!run)
        return;
    if (!ok) {
        fail(run, "cli_failed", err);
        return;
    }
    apply_settings(run->chat, run);
}

static bool send_setting(struct chat_rt *rt, const char *subtype,
                         struct buf *fields)
{
    bool ok = cli_proc_control(rt->cli, subtype, fields->data,
                               on_setting_applied, ctl_ctx_new(rt)) == 0;
    buf_deinit(fields);
    return ok;
}

/* Field text for a control request: ,"key":value members. */
static void field_str(struct buf *b, const char *key, const char *v)
{
    json_escape_str(b, key, strlen(key));
    buf_putc(b, ':');
    json_escape_str(b, v, strlen(v));
}

/* Sends the next setting that differs from the live CLI's, or, when all
 * match, the user message. Each answer comes back here. */
static void apply_settings(struct chat_rt *rt, struct run *run)
{
    struct buf f;
    buf_init(&f);
    bool plan = strcmp(run->mode, "plan") == 0;
    bool sent = true;
    if (strcmp(rt->cli_model, run->model) != 0) {
        snprintf(rt->cli_model, sizeof(rt->cli_model), "%s", run->model);
        field_str(&f, "model", run->model);
        sent = send_setting(rt, "set_model", &f);
    } else if (rt->cli_plan != plan) {
        rt->cli_plan = plan;
        field_str(&f, "mode", plan ? "plan" : "default");
        sent = send_setting(rt, "set_permission_mode", &f);
    } else if (run->thinking >= 0 && rt->cli_thinking != run->thinking) {
        rt->cli_thinking = run->thinking;
        buf_printf(&f, "\"max_thinking_tokens\":%lld",
                   (long long)run->thinking);
        sent = send_setting(rt, "set_max_thinking_tokens", &f);
    } else {
        buf_deinit(&f);
        if ((run->att ? attach_send_user(run, rt->cli)
                      : cli_proc_send_user(rt->cli, run->content,
                                           run->spec.user_message_id)) < 0) {
            fail(run, "cli_failed", "the CLI does not accept input");
            return;
        }
        run->user_written = true;
        run->t_written = server_mono_us();
        rt->cli_state = CLI_BUSY;
        return;
    }
    if (!sent)
        fail(run, "cli_failed", "the CLI does not accept input");
}

static void begin_turn(struct run *run)
{
    if (!run_set_phase(run, RUN_PHASE_STREAMING))
        return;
    apply_settings(run->chat, run);
}

/* ---- launching the CLI ---- */

static void on_initialized(void *arg, bool ok, const struct json_doc *d,
                           int response, const char *err)
{
    struct ctl_ctx *x = arg;
    struct chat_rt *rt = x->rt;
    struct run *run = ctx_run(x);
    free(x);
    if (ok && rt->cli_state == CLI_STARTING)
        rt->cli_state = CLI_IDLE;
    if (!run || run->phase != RUN_PHASE_CLI_LAUNCH)
        return;
    if (!ok) {
        fail(run, "cli_failed", err);
        return;
    }
    begin_turn(run);
}

/* A growing argv or envp; strings made here are owned and freed. */
struct argv_b {
    const char **v;
    int n, cap;
    char **owned;
    int nowned;
};

static void arg_add(struct argv_b *a, const char *s)
{
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? 2 * a->cap : 32;
        a->v = xrealloc(a->v, sizeof(*a->v) * (size_t)a->cap);
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

/* Adds prefix followed by v as one argument ("--resume=" + id). */
static void arg_cat(struct argv_b *a, const char *prefix, const char *v)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, prefix);
    buf_puts(&b, v);
    a->owned = xrealloc(a->owned, sizeof(*a->owned) * (size_t)(a->nowned + 1));
    a->owned[a->nowned++] = buf_steal(&b, NULL);
    arg_add(a, a->owned[a->nowned - 1]);
}

static void argv_free(struct argv_b *a)
{
    for (int i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->v);
}

/* Whether the CLI wrote the session's transcript: then the next launch
 * must --resume it (reusing --session-id fails), else --session-id again
 * (a CLI that never got a message writes none). A turn killed before its
 * result still leaves one, so the file decides, not the last result. */
static bool transcript_exists(const struct chat_rt *rt)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/.claude/projects/-workspace/%s.jsonl",
             sandbox_home_dir(rt->sb), rt->session_id);
    return stat(path, &st) == 0;
}

/* DESIGN.md §5 "argv". Numbers are formatted into owned strings. */
static void build_argv(struct chat_rt *rt, struct run *run,
                       struct argv_b *a)
{
    char num[24];
    arg_add(a, rt->reg->cli_real);
    static const char *const fixed[] = {
        "-p", "--output-format", "stream-json", "--verbose",
        "--input-format", "stream-json", "--permission-prompt-tool", "stdio",
        "--include-partial-messages",
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        arg_add(a, fixed[i]);
    arg_add(a, "--model");
    arg_add(a, run->model);
    arg_add(a, "--permission-mode");
    arg_add(a, strcmp(run->mode, "plan") == 0 ? "plan" : "default");
    if (run->launch.prompt) {
        arg_add(a, "--append-system-prompt");
        arg_add(a, run->launch.prompt);
    }
    if (run->launch.mcp_config) {
        arg_add(a, "--mcp-config");
        arg_add(a, run->launch.mcp_config);
    }
    if (run->launch.disallowed && *run->launch.disallowed) {
        arg_add(a, "--disallowedTools"); /* variadic: up to the next flag */
        for (char **t = run->launch.disallowed; *t; t++)
            arg_add(a, *t);
    }
    if (run->thinking >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)run->thinking);
        arg_add(a, "--max-thinking-tokens");
        arg_cat(a, "", num);
    }
    arg_cat(a, transcript_exists(rt) ? "--resume=" : "--session-id=",
            rt->session_id);
    if (run->prompt_edited) {
        arg_add(a, "--system-prompt-snapshot");
        arg_add(a, "off");
    }
}

static void build_env(const struct config *cfg, const struct run *run,
                      struct argv_b *e)
{
    char num[24];
    snprintf(num, sizeof(num), "%d", GATEWAY_PORT);
    arg_cat(e, "ANTHROPIC_BASE_URL=http://127.0.0.1:", num);
    /* A placeholder: the gateway holds the real credential. */
    arg_add(e, "ANTHROPIC_API_KEY=sk-ant-corral-placeholder");
    arg_add(e, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1");
    snprintf(num, sizeof(num), "%d", cfg->cli_max_retries);
    arg_cat(e, "CLAUDE_CODE_MAX_RETRIES=", num);
    for (char **v = run->launch.env; v && *v; v++)
        arg_add(e, *v);
}

static void launch_cli(struct run *run)
{
    struct chat_rt *rt = run->chat;
    struct server *srv = rt_srv(rt);
    if (!run_set_phase(run, RUN_PHASE_CLI_LAUNCH))
        return;
    if (!rt->reg->cli_real) {
        fail(run, "cli_failed", "the Claude CLI is not installed (cli_path)");
        return;
    }
    turn_close_cli(rt, true); /* launched with other settings */
    struct argv_b argv = {0}, env = {0};
    build_argv(rt, run, &argv);
    build_env(srv->cfg, run, &env);
    const char *binds[] = {rt->reg->cli_dir, NULL};
    struct cli_launch l = {argv.v, env.v, binds, GATEWAY_PORT};
    const char *err = NULL;
    rt->cli = cli_proc_start(srv, rt->sb, &l, &cli_cbs, rt, &err);
    argv_free(&argv);
    argv_free(&env);
    if (!rt->cli) {
        fail(run, "sandbox_failed", err ? err : "cannot start the CLI");
        return;
    }
    rt->cli_state = CLI_STARTING;
    snprintf(rt->cli_model, sizeof(rt->cli_model), "%s", run->model);
    rt->cli_plan = strcmp(run->mode, "plan") == 0;
    rt->cli_thinking = run->thinking;
    snprintf(rt->cli_launch_key, sizeof(rt->cli_launch_key), "%s",
             run->launch.key);
    if (cli_proc_control(rt->cli, "initialize", "\"hooks\":null",
                         on_initialized, ctl_ctx_new(rt)) < 0)
        fail(run, "cli_failed", "the CLI does not accept input");
}

/* ---- the turn ---- */

static bool cli_reusable(const struct chat_rt *rt, const struct run *run)
{
    return rt->cli && rt->cli_state == CLI_IDLE &&
           strcmp(rt->cli_launch_key, run->launch.key) == 0;
}

static bool open_sandbox(struct chat_rt *rt, struct run *run)
{
    struct server *srv = rt_srv(rt);
    const char *err = NULL;
    if (!rt->sb) {
        sandbox_set_state(rt, "starting");
        rt->sb = sandbox_local.open(srv, rt->id, &err);
        if (!rt->sb) {
            sandbox_set_state(rt, "error");
            fail(run, "sandbox_failed", err ? err : "cannot open sandbox");
            return false;
        }
    }
    if (!rt->gw) {
        rt->gw = gateway_open(srv, rt->id, sandbox_gateway_socket(rt->sb),
                              &err);
        if (!rt->gw) {
            sandbox_set_state(rt, "error");
            fail(run, "sandbox_failed", err ? err : "no model gateway");
            return false;
        }
    }
    sandbox_set_state(rt, "running");
    return true;
}

/* SANDBOX_PREPARE done: on to the warm CLI or a launch. */
static void turn_prepared(struct run *run)
{
    if (cli_reusable(run->chat, run))
        begin_turn(run);
    else
        launch_cli(run);
}

/* Within the quota: the message's attachments, then the CLI. */
static void turn_continue(struct run *run)
{
    budget_begin_turn(run);
    if (run->att)
        attach_prepare(run, turn_prepared);
    else
        turn_prepared(run);
}

void turn_start(struct run *run)
{
    struct chat_rt *rt = run->chat;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    run->started_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    /* A chat whose sandbox is not open (first turn, idle stop) goes
     * through SANDBOX_CONNECT (DESIGN.md §5). */
    bool connect = !rt->sb || !rt->gw;
    if (connect && (!run_set_phase(run, RUN_PHASE_SANDBOX_CONNECT) ||
                    !open_sandbox(rt, run)))
        return;
    if (!run_set_phase(run, RUN_PHASE_SANDBOX_PREPARE))
        return;
    quota_before_turn(run, turn_continue);
}

static void on_interrupt_ack(void *arg, bool ok, const struct json_doc *d,
                             int response, const char *err)
{
    struct ctl_ctx *x = arg;
    if (!ok && ctx_run(x))
        log_warn("chat %s: interrupt refused: %s", x->rt->id, err);
    free(x);
}

void turn_interrupt(struct run *run)
{
    struct chat_rt *rt = run->chat;
    int ms = rt_srv(rt)->cfg->interrupt_grace_ms;
    if (run->interrupted || !rt->cli)
        return;
    run->interrupted = true;
    perm_end_run(run, "interrupt"); /* before the grace timer: it re-arms */
    /* The turn ends with its result; if none comes in time, the phase
     * timer (re-armed here) kills the CLI and cancels the run. */
    struct timeval tv = ms_to_timeval(ms);
    evtimer_del(run->timer);
    evtimer_add(run->timer, &tv);
    if (cli_proc_control(rt->cli, "interrupt", NULL, on_interrupt_ack,
                         ctl_ctx_new(rt)) < 0) {
        turn_close_cli(rt, true);
        end_run(run, RUN_PHASE_CANCELLED, NULL, NULL);
    }
}

void turn_close_cli(struct chat_rt *rt, bool kill)
{
    if (!rt->cli)
        return;
    if (kill || rt->cli_state != CLI_IDLE) {
        cli_proc_abandon(rt->cli); /* no callbacks from it any more */
        rt->cli = NULL;
        rt->cli_state = CLI_NONE;
        return;
    }
    rt->cli_state = CLI_CLOSING;
    cli_proc_close(rt->cli, rt_srv(rt)->cfg->cli_close_grace_ms);
}

static void on_idle_expired(evutil_socket_t fd, short what, void *arg)
{
    struct chat_rt *rt = arg;
    log_info("chat %s: CLI idle for cli_idle_timeout_s; closing it", rt->id);
    turn_close_cli(rt, false);
}

void turn_idle_check(struct chat_rt *rt)
{
    struct server *srv = rt_srv(rt);
    bool idle = rt->cli && rt->cli_state == CLI_IDLE && !rt->active &&
                !rt->q_head;
    if (!rt->idle_timer)
        rt->idle_timer = evtimer_new(srv->base, on_idle_expired, rt);
    evtimer_del(rt->idle_timer);
    if (idle) {
        struct timeval tv = {srv->cfg->cli_idle_timeout_s, 0};
        evtimer_add(rt->idle_timer, &tv);
        cli_slots_idle(rt);
    }
    cli_slot_maybe_release(rt);
    sandbox_idle_check(rt);
}
