/* Checkpoints (DESIGN.md §5 CHECKPOINT, docs/notes.md "Checkpoints and
 * restore"): after a completed turn, while the run still holds the
 * chat's run slot, the corral-snapshot helper (src/sandbox/snapshot.c)
 * copies what changed in the workspace and in the CLI's session tree
 * into the chat's store, <data_dir>/checkpoints/<chat_id>; the row goes
 * into `checkpoints`, the oldest beyond checkpoint_retention are deleted
 * and their blobs collected. A restore holds the slot the same way.
 *
 * The helper runs as a child process (child.h): nothing here blocks the
 * loop. Each job's done callback fires exactly once, from the loop, also
 * at shutdown (then with an error, and callbacks only release). */
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corral/bus.h"
#include "corral/child.h"
#include "corral/config.h"
#include "corral/ids.h"
#include "corral/json.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/sandbox.h"
#include "corral/server.h"
#include "corral/store_checkpoints.h"
#include "turn.h"

#define SNAPSHOT_NAME "corral-snapshot"

typedef void (*job_done_fn)(void *arg, const char *err, const char *out);

struct ckpt_job {
    struct ckpt_job *next;     /* on chats->jobs */
    struct chats *reg;
    struct child *child;
    job_done_fn done;
    void *arg;
};

/* ---- the helper as a child process ---- */

static void job_unlink(struct ckpt_job *j)
{
    struct ckpt_job **pp = &j->reg->jobs;
    while (*pp && *pp != j)
        pp = &(*pp)->next;
    if (*pp)
        *pp = j->next;
}

/* The last non-empty line of the output (the JSON of a success, the
 * message of a failure). */
static const char *last_line(char *out)
{
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    char *nl = strrchr(out, '\n');
    return nl ? nl + 1 : out;
}

static void on_job_done(void *arg, const struct child_result *res)
{
    struct ckpt_job *j = arg;
    job_unlink(j);
    const char *line = last_line(res->out);
    char err[CHILD_OUT_MAX + 64];
    const char *e = NULL;
    int st = res->status;
    if (res->timed_out)
        e = "the checkpoint took longer than checkpoint_timeout_ms";
    else if (res->killed)
        e = "interrupted";
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(err, sizeof(err), "corral-snapshot failed (%s %d)%s%s",
                 WIFEXITED(st) ? "status" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
                 *line ? ": " : "", line);
        e = err;
    }
    if (e)
        log_warn("checkpoint job %d: %s", child_pid(j->child), e);
    j->done(j->arg, e, e ? NULL : line);
    free(j);
}

static void job_kill(struct ckpt_job *j)
{
    child_kill(j->child);
}

/* Starts the helper with args (after its path); NULL with *err when it
 * could not be started (done is not called then). */
static struct ckpt_job *job_start(struct chats *c, const char *const *args,
                                  job_done_fn done, void *arg,
                                  const char **err)
{
    struct server *srv = c->srv;
    char *helper = child_find_helper(srv->cfg->snapshot_path, SNAPSHOT_NAME);
    if (!helper) {
        *err = SNAPSHOT_NAME " was not found (set snapshot_path)";
        return NULL;
    }
    size_t n = 0;
    while (args[n])
        n++;
    const char **argv = xcalloc(n + 2, sizeof(*argv));
    argv[0] = helper;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = args[i];
    struct ckpt_job *j = xcalloc(1, sizeof(*j));
    struct child_spec spec = {argv, -1, -1, srv->cfg->checkpoint_timeout_ms,
                              false, srv->cfg->child_nice};
    j->child = child_start(srv->base, &spec, on_job_done, j);
    free(helper);
    free(argv);
    if (!j->child) {
        log_error("checkpoint: cannot start " SNAPSHOT_NAME ": %s",
                  strerror(errno));
        free(j);
        *err = "cannot start " SNAPSHOT_NAME;
        return NULL;
    }
    j->reg = c;
    j->done = done;
    j->arg = arg;
    j->next = c->jobs;
    c->jobs = j;
    return j;
}

void checkpoint_shutdown(struct chats *c)
{
    while (c->jobs)
        child_finish_now(c->jobs->child); /* its done unlinks it */
}

/* ---- paths ---- */

struct ckpt_paths {
    char store[PATH_MAX];
    char workspace[PATH_MAX];
    char session[PATH_MAX];    /* <home>/.claude */
};

static void paths_of(const struct config *cfg, const char *chat_id,
                     struct ckpt_paths *p)
{
    snprintf(p->store, sizeof(p->store), "%s/checkpoints/%s", cfg->data_dir,
             chat_id);
    snprintf(p->workspace, sizeof(p->workspace), "%s/sandboxes/%s/workspace",
             cfg->data_dir, chat_id);
    snprintf(p->session, sizeof(p->session), "%s/sandboxes/%s/home/.claude",
             cfg->data_dir, chat_id);
}

/* ---- the CHECKPOINT phase of a run ---- */

struct ckpt_ctx {
    struct run *run;
    char id[CHATS_ID_LEN + 1];
};

static struct server *run_srv(const struct run *run)
{
    return run->chat->reg->srv;
}

static void ckpt_end(struct ckpt_ctx *x)
{
    struct run *run = x->run;
    run->ckpt = NULL;
    if (!run->chat->reg->closing)
        run_leave_slot(run);
    run_release(run);
    free(x);
}

static void ckpt_fail(struct ckpt_ctx *x, const char *detail)
{
    if (!x->run->chat->reg->closing)
        chat_publish_error(x->run, "checkpoint_failed", detail);
    ckpt_end(x);
}

static void on_gc_done(void *arg, const char *err, const char *out)
{
    struct ckpt_ctx *x = arg;
    if (err)
        log_warn("chat %s: checkpoint gc: %s", x->run->spec.chat_id, err);
    ckpt_end(x);
}

/* Retention: manifests and blobs of the deleted rows go, off the loop,
 * still inside the run slot (no snapshot or restore meanwhile). */
static void start_gc(struct chats *c, const char *chat_id, const char *keep,
                     job_done_fn done, void *arg)
{
    struct ckpt_paths p;
    paths_of(c->srv->cfg, chat_id, &p);
    /* argv: gc, store, then the kept ids (at most retention of them). */
    int n = 1;
    for (const char *s = keep; *s; s++)
        n += *s == ' ';
    const char **args = xcalloc((size_t)n + 3, sizeof(*args));
    char *copy = xstrdup(keep);
    args[0] = "gc";
    args[1] = p.store;
    int k = 2;
    for (char *save = NULL, *t = strtok_r(copy, " ", &save); t;
         t = strtok_r(NULL, " ", &save))
        args[k++] = t;
    const char *err = NULL;
    struct ckpt_job *j = job_start(c, args, done, arg, &err);
    free(args);
    free(copy);
    if (!j)
        done(arg, err, NULL);
}

static void publish_checkpoint(struct run *run, const char *id)
{
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", run->spec.reply_id);
    json_w_kstr(&w, "checkpoint_id", id);
    json_w_obj_end(&w);
    chat_publish(run, "checkpoint", &data, true);
    buf_deinit(&data);
}

static void on_ckpt_stored(void *arg, const struct pg_reply *reply)
{
    struct ckpt_ctx *x = arg;
    struct run *run = x->run;
    if (run->chat->reg->closing) {
        ckpt_end(x);
        return;
    }
    if (reply->status != PG_OK || PQntuples(reply->res) != 1) {
        ckpt_fail(x, "the checkpoint could not be recorded");
        return;
    }
    publish_checkpoint(run, x->id);
    if (strcmp(pg_val(reply->res, 0, 0), "0") == 0) {
        ckpt_end(x);
        return;
    }
    start_gc(run->chat->reg, run->spec.chat_id, pg_val(reply->res, 0, 1),
             on_gc_done, x);
}

/* {files, bytes_stored, bytes_total} of the helper, as decimal text. */
static bool parse_totals(const char *line, char out[3][24])
{
    static const char *const keys[3] = {"files", "bytes_stored",
                                        "bytes_total"};
    struct json_doc *d = NULL;
    if (json_parse(line, strlen(line), NULL, &d, NULL) != JSON_OK)
        return false;
    bool ok = true;
    for (int i = 0; i < 3 && ok; i++) {
        int64_t v = -1;
        ok = json_get_int64(d, json_get(d, 0, keys[i]), &v) == 0 && v >= 0;
        snprintf(out[i], 24, "%lld", (long long)v);
    }
    json_doc_free(d);
    return ok;
}

static void on_snapshot_done(void *arg, const char *err, const char *out)
{
    struct ckpt_ctx *x = arg;
    struct run *run = x->run;
    char totals[3][24];
    if (err || run->chat->reg->closing) {
        ckpt_fail(x, err ? err : "shutting down");
        return;
    }
    if (!parse_totals(out, totals)) {
        ckpt_fail(x, "corral-snapshot answered something unexpected");
        return;
    }
    char retention[16];
    snprintf(retention, sizeof(retention), "%d",
             run_srv(run)->cfg->checkpoint_retention);
    const char *p[7] = {x->id, run->spec.chat_id, run->spec.reply_id,
                        totals[0], totals[1], totals[2], retention};
    store_checkpoint_insert(run_srv(run)->pg, p, on_ckpt_stored, x);
}

void checkpoint_run(struct run *run)
{
    struct ckpt_ctx *x = xcalloc(1, sizeof(*x));
    x->run = run;
    run->refs++; /* the checkpoint's, until ckpt_end */
    if (!run_set_phase(run, RUN_PHASE_CHECKPOINT)) {
        ckpt_end(x);
        return;
    }
    if (ids_uuid7(x->id) < 0) {
        ckpt_fail(x, "no id for the checkpoint");
        return;
    }
    struct ckpt_paths p;
    paths_of(run_srv(run)->cfg, run->spec.chat_id, &p);
    const char *args[] = {"snapshot", p.store, x->id, p.workspace, p.session,
                          NULL};
    const char *err = NULL;
    run->ckpt = job_start(run->chat->reg, args, on_snapshot_done, x, &err);
    if (!run->ckpt)
        ckpt_fail(x, err);
}

void checkpoint_interrupt(struct run *run)
{
    if (run->ckpt)
        job_kill(run->ckpt); /* done reports "interrupted" */
}

/* ---- deletion ---- */

static void on_dropped(void *arg, const char *err, const char *out)
{
    if (err)
        log_warn("checkpoint store not removed: %s", err);
}

void checkpoint_chat_deleted(struct chat_rt *rt)
{
    struct chats *c = rt->reg;
    if (rt->active && rt->active->ckpt)
        job_kill(rt->active->ckpt);
    if (rt->restore_job)
        job_kill(rt->restore_job);
    struct ckpt_paths p;
    paths_of(c->srv->cfg, rt->id, &p);
    /* Renamed aside first: a new store of the same id starts empty. */
    char trash[PATH_MAX + 64];
    snprintf(trash, sizeof(trash), "%s/checkpoints/.trash-%s-%llu",
             c->srv->cfg->data_dir, rt->id,
             (unsigned long long)server_mono_us());
    if (rename(p.store, trash) < 0) {
        if (errno != ENOENT)
            log_warn("chat %s: checkpoint store: rename: %s", rt->id,
                     strerror(errno));
        return;
    }
    const char *args[] = {"drop", trash, NULL};
    const char *err = NULL;
    if (!job_start(c, args, on_dropped, NULL, &err))
        log_warn("chat %s: checkpoint store not removed: %s", rt->id, err);
}

/* ---- restore ---- */

struct restore_ctx {
    struct chats *reg;
    char chat_id[CHATS_ID_LEN + 1];
    void (*cb)(void *arg, const char *err);
    void *arg;
};

static void on_restored(void *arg, const char *err, const char *out)
{
    struct restore_ctx *x = arg;
    struct chat_rt *rt = chat_rt_get(x->reg, x->chat_id);
    rt->restore_job = NULL;
    x->cb(x->arg, err ? err : NULL);
    free(x);
}

int chats_restore(struct chats *c, const char *chat_id, const char *cid,
                  void (*cb)(void *arg, const char *err), void *arg)
{
    struct chat_rt *rt = chat_rt_get(c, chat_id);
    if (rt->active || rt->q_head || rt->restoring) {
        chat_rt_release_idle(rt);
        return -1;
    }
    /* The next turn launches a CLI that resumes the restored session. */
    turn_close_cli(rt, true);
    rt->restoring = true;
    struct restore_ctx *x = xcalloc(1, sizeof(*x));
    x->reg = c;
    snprintf(x->chat_id, sizeof(x->chat_id), "%s", chat_id);
    x->cb = cb;
    x->arg = arg;
    struct ckpt_paths p;
    paths_of(c->srv->cfg, chat_id, &p);
    const char *args[] = {"restore", p.store, cid, p.workspace, p.session,
                          NULL};
    const char *err = NULL;
    rt->restore_job = job_start(c, args, on_restored, x, &err);
    if (!rt->restore_job) {
        free(x);
        cb(arg, err);
    }
    return 0;
}

static void restore_release(struct chats *c, const char *chat_id)
{
    struct chat_rt *rt = chat_rt_get(c, chat_id);
    rt->restoring = false;
    if (c->closing)
        return;
    chat_rt_kick(rt);
    chat_rt_release_idle(rt);
}

struct gc_ctx {
    struct chats *reg;
    char chat_id[CHATS_ID_LEN + 1];
};

static void on_restore_gc(void *arg, const char *err, const char *out)
{
    struct gc_ctx *x = arg;
    if (err)
        log_warn("chat %s: checkpoint gc: %s", x->chat_id, err);
    restore_release(x->reg, x->chat_id);
    free(x);
}

void chats_restore_done(struct chats *c, const char *chat_id,
                        const char *keep)
{
    if (!keep || c->closing) {
        restore_release(c, chat_id);
        return;
    }
    struct gc_ctx *x = xcalloc(1, sizeof(*x));
    x->reg = c;
    snprintf(x->chat_id, sizeof(x->chat_id), "%s", chat_id);
    start_gc(c, chat_id, keep, on_restore_gc, x);
}
