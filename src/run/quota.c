/* The workspace quota (quota.h, DESIGN.md §6). A measurement is a `du`
 * child (coreutils, child.h) over the chat's workspace and home: a large
 * tree costs the child time, never the loop. Each chat runtime keeps its last measurement; a turn
 * uses one younger than quota_check_interval_s, else measures first.
 *
 * A job that belongs to a run holds a reference on it (the run holds the
 * runtime); the others find the runtime by chat id when they finish. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "corral/child.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/metrics.h"
#include "corral/quota.h"
#include "corral/server.h"
#include "lifecycle.h"
#include "turn.h"

#define DU_PATH "/usr/bin/du"
#define DU_TIMEOUT_S 120    /* a tree du cannot walk in this is not measured */

enum du_kind { DU_BEFORE_TURN, DU_DURING_TURN, DU_IDLE, DU_API };

struct du_job {
    struct du_job *next;       /* c->du_jobs */
    struct chats *c;
    char chat_id[CHATS_ID_LEN + 1];
    enum du_kind kind;
    struct run *run;           /* BEFORE/DURING_TURN: referenced */
    void (*next_fn)(struct run *run);     /* BEFORE_TURN */
    void (*cb)(void *arg, bool over, int64_t used); /* API */
    void *arg;
    struct child *child;       /* NULL: answered without measuring */
    struct event *ev_deferred; /* that answer, from the loop */
    bool failed;
};

static int64_t mono_ms(void)
{
    return (int64_t)(server_mono_us() / 1000);
}

static int64_t quota_bytes(const struct config *cfg)
{
    return (int64_t)cfg->workspace_quota_mb << 20;
}

bool quota_parse_du(const char *out, size_t len, int64_t *used)
{
    int64_t sum = 0;
    int lines = 0;
    size_t i = 0;
    while (i < len) {
        int64_t n = 0;
        size_t digits = 0;
        for (; i < len && out[i] >= '0' && out[i] <= '9'; i++, digits++) {
            if (n > (INT64_MAX - 9) / 10)
                return false;
            n = n * 10 + (out[i] - '0');
        }
        if (digits == 0 || i >= len || out[i] != '\t')
            return false;
        while (i < len && out[i] != '\n')
            i++;
        if (i >= len)
            return false; /* a line cut short */
        i++;
        if (sum > INT64_MAX - n)
            return false;
        sum += n;
        lines++;
    }
    if (lines == 0)
        return false;
    *used = sum;
    return true;
}

/* ---- the du child ---- */

static void job_unlink(struct du_job *j)
{
    struct du_job **pp = &j->c->du_jobs;
    while (*pp && *pp != j)
        pp = &(*pp)->next;
    if (*pp)
        *pp = j->next;
}

static void job_free(struct du_job *j)
{
    if (j->ev_deferred)
        event_free(j->ev_deferred);
    free(j);
}

static void job_finish(struct du_job *j, bool ok, int64_t used);

static void on_du_done(void *arg, const struct child_result *res)
{
    struct du_job *j = arg;
    int64_t used = -1;
    if (res->timed_out)
        log_warn("chat %s: du took over %d s; killed", j->chat_id,
                 DU_TIMEOUT_S);
    /* du exits 1 when a tree is missing (a chat that never ran has no
     * home yet) but still sums the others. */
    bool ok = !res->timed_out && !res->killed && !res->out_truncated &&
              quota_parse_du(res->out, res->out_len, &used);
    if (!ok)
        log_warn("chat %s: workspace usage not measured (du status %d)",
                 j->chat_id, WIFEXITED(res->status)
                                 ? WEXITSTATUS(res->status) : -1);
    job_unlink(j);
    job_finish(j, ok, ok ? used : -1);
    job_free(j);
}

/* Starts du over the chat's trees; false when it cannot be started (the
 * job is not queued then). A chat without a tree measures 0 at once. */
static bool job_start(struct du_job *j, bool *no_tree)
{
    const struct server *srv = j->c->srv;
    char root[4096], ws[4200], home[4200];
    struct stat st;
    snprintf(root, sizeof(root), "%s/sandboxes/%s", srv->cfg->data_dir,
             j->chat_id);
    *no_tree = stat(root, &st) < 0;
    if (*no_tree)
        return false;
    snprintf(ws, sizeof(ws), "%s/workspace", root);
    snprintf(home, sizeof(home), "%s/home", root);
    const char *argv[] = {DU_PATH, "-s", "-b", "--", ws, home, NULL};
    struct child_spec spec = {argv, -1, -1, DU_TIMEOUT_S * 1000, true,
                              srv->cfg->child_nice};
    j->child = child_start(srv->base, &spec, on_du_done, j);
    if (!j->child)
        log_error("chat %s: cannot run du: %s", j->chat_id, strerror(errno));
    return j->child != NULL;
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct du_job *j = arg;
    job_unlink(j);
    job_finish(j, !j->failed, j->failed ? -1 : 0);
    job_free(j);
}

/* Answers the job from the loop without measuring (failed: -1, else 0
 * bytes). */
static void job_defer(struct du_job *j, bool failed)
{
    struct timeval zero = {0, 0};
    j->failed = failed;
    j->next = j->c->du_jobs;
    j->c->du_jobs = j;
    j->ev_deferred = evtimer_new(j->c->srv->base, on_deferred, j);
    evtimer_add(j->ev_deferred, &zero);
}

/* Runs a measurement; its outcome reaches job_finish from the loop. */
static void job_run(struct du_job *j)
{
    bool no_tree = false;
    if (job_start(j, &no_tree)) {
        j->next = j->c->du_jobs;
        j->c->du_jobs = j;
        return;
    }
    job_defer(j, !no_tree);
}

static struct du_job *job_new(struct chats *c, const char *chat_id,
                              enum du_kind kind)
{
    struct du_job *j = xcalloc(1, sizeof(*j));
    j->c = c;
    j->kind = kind;
    snprintf(j->chat_id, sizeof(j->chat_id), "%s", chat_id);
    return j;
}

/* Shutdown: each job is killed and answered as not measured. */
void quota_free(struct chats *c)
{
    while (c->du_jobs) {
        struct du_job *j = c->du_jobs;
        if (j->child) {
            child_finish_now(j->child); /* on_du_done unlinks it */
            continue;
        }
        c->du_jobs = j->next;
        job_finish(j, false, -1); /* every callback fires once */
        job_free(j);
    }
}

/* ---- outcomes ---- */

static void record(struct chats *c, const char *chat_id, bool over,
                   int64_t used)
{
    struct chat_rt *rt = chats_rt_lookup(c, chat_id);
    if (!rt || used < 0)
        return;
    rt->quota_over = over;
    rt->quota_used = used;
    rt->quota_at_ms = mono_ms();
}

static void over_detail(const struct config *cfg, int64_t used,
                        char *out, size_t len)
{
    snprintf(out, len, "the workspace uses %lld MB of its %d MB quota",
             (long long)((used + (1 << 20) - 1) >> 20),
             cfg->workspace_quota_mb);
}

/* Stops the run as FAILED quota_exceeded: like an interrupt once the CLI
 * has the message (its result then ends the run), locally before. */
static void stop_run(struct run *run, int64_t used)
{
    if (run->stop_code || run->ending)
        return;
    run->stop_code = "quota_exceeded";
    over_detail(run->chat->reg->srv->cfg, used, run->stop_detail,
                sizeof(run->stop_detail));
    metrics_count(run->chat->reg->srv->metrics, "quota_exceeded", 1);
    log_info("run %s: %s", run->spec.run_id, run->stop_detail);
    if (run->user_written && !run->interrupted && run->chat->cli)
        turn_interrupt(run);
    else if (!run->interrupted)
        end_run(run, RUN_PHASE_FAILED, run->stop_code, run->stop_detail);
}

static void arm_periodic(struct chat_rt *rt);

static void job_finish(struct du_job *j, bool ok, int64_t used)
{
    struct chats *c = j->c;
    const struct config *cfg = c->srv->cfg;
    bool over = ok && used > quota_bytes(cfg);
    if (!c->closing)
        record(c, j->chat_id, over, ok ? used : -1);
    struct run *run = j->run;
    switch (j->kind) {
    case DU_API:
        j->cb(j->arg, over, ok ? used : -1);
        break;
    case DU_BEFORE_TURN:
        if (run_is_current(run) && run->phase == RUN_PHASE_SANDBOX_PREPARE) {
            if (over) {
                char d[128];
                over_detail(cfg, used, d, sizeof(d));
                end_run(run, RUN_PHASE_FAILED, "quota_exceeded", d);
            } else {
                arm_periodic(run->chat);
                j->next_fn(run);
            }
        }
        break;
    case DU_DURING_TURN:
        run->chat->quota_measuring = false;
        if (over && run_is_current(run))
            stop_run(run, used);
        break;
    case DU_IDLE:
        break;
    }
    if (run)
        run_release(run);
}

/* ---- runs ---- */

static void on_periodic(evutil_socket_t fd, short what, void *arg)
{
    struct chat_rt *rt = arg;
    struct run *run = rt->active;
    if (!run || run->ending || rt->reg->closing)
        return;
    arm_periodic(rt);
    if (rt->quota_measuring)
        return; /* the last one is still walking the tree */
    rt->quota_measuring = true;
    struct du_job *j = job_new(rt->reg, rt->id, DU_DURING_TURN);
    j->run = run;
    run->refs++;
    job_run(j);
}

static void arm_periodic(struct chat_rt *rt)
{
    struct server *srv = rt->reg->srv;
    if (!rt->quota_timer)
        rt->quota_timer = evtimer_new(srv->base, on_periodic, rt);
    struct timeval tv = {srv->cfg->quota_check_interval_s, 0};
    evtimer_add(rt->quota_timer, &tv);
}

static bool fresh(const struct chat_rt *rt, const struct config *cfg)
{
    return rt->quota_at_ms > 0 &&
           mono_ms() - rt->quota_at_ms <
               (int64_t)cfg->quota_check_interval_s * 1000;
}

void quota_before_turn(struct run *run, void (*next)(struct run *run))
{
    struct chat_rt *rt = run->chat;
    const struct config *cfg = rt->reg->srv->cfg;
    if (cfg->workspace_quota_mb <= 0) {
        next(run);
        return;
    }
    if (fresh(rt, cfg) && rt->quota_over) {
        char d[128];
        over_detail(cfg, rt->quota_used, d, sizeof(d));
        end_run(run, RUN_PHASE_FAILED, "quota_exceeded", d);
        return;
    }
    /* A warm chat was measured after its last run: the turn starts at
     * once and an old figure is renewed during it (the quota is soft, and
     * the turn's own writes are checked periodically anyway). */
    if (rt->quota_at_ms > 0 && !rt->quota_over) {
        if (fresh(rt, cfg))
            arm_periodic(rt);
        else
            on_periodic(-1, 0, rt);
        next(run);
        return;
    }
    struct du_job *j = job_new(rt->reg, rt->id, DU_BEFORE_TURN);
    j->run = run;
    j->next_fn = next;
    run->refs++;
    job_run(j);
}

void quota_measure_idle(struct chat_rt *rt)
{
    if (rt->reg->srv->cfg->workspace_quota_mb <= 0 || rt->reg->closing)
        return;
    job_run(job_new(rt->reg, rt->id, DU_IDLE));
}

/* ---- the API of quota.h ---- */

void workspace_quota_check(struct server *srv, const char *chat_id,
                           void (*cb)(void *arg, bool over,
                                      int64_t used_bytes),
                           void *arg)
{
    struct du_job *j = job_new(srv->chats, chat_id, DU_API);
    j->cb = cb;
    j->arg = arg;
    if (srv->cfg->workspace_quota_mb <= 0 || !ids_is_uuid(chat_id)) {
        /* Off (or no chat): answered from the loop like a measurement. */
        job_defer(j, true);
        return;
    }
    job_run(j);
}

bool workspace_quota_over(struct server *srv, const char *chat_id)
{
    struct chat_rt *rt = srv->chats ? chats_rt_lookup(srv->chats, chat_id)
                                    : NULL;
    return rt && srv->cfg->workspace_quota_mb > 0 && fresh(rt, srv->cfg) &&
           rt->quota_over;
}
