/* Tool approvals of a run; the flow is described in perm.h.
 *
 * A request's row is inserted once (pending, or already decided by a rule
 * or mode `auto`) and updated once when a pending request is decided. The
 * pool may run two statements on two connections in either order, so a
 * decision made while the insert is in flight waits for it. A request
 * holds a reference on its run until its last statement has answered. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/cli_proc.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/metrics.h"
#include "corral/perm_rules.h"
#include "corral/server.h"
#include "corral/store_perm.h"
#include "perm.h"
#include "turn.h"

enum perm_state { PERM_DECIDING, PERM_PENDING, PERM_RESOLVED };

typedef void (*answer_cb)(void *arg, const struct pg_reply *r);

struct perm_req {
    struct perm_req *next;      /* the run's requests */
    struct run *run;            /* a reference */
    char id[UUID_STR_LEN + 1];
    char *cli_id;               /* the CLI's request_id */
    char *tool_name, *tool_use_id, *input, *suggestions;
    enum perm_state state;
    bool cancelled;             /* withdrawn while deciding */
    int db_inflight;            /* statements not yet answered */
    bool inserted;              /* the row exists */
    bool update_waits;          /* decided during the insert */
    bool allow;
    const char *reason;         /* user, rule, auto, timeout, ... */
    char by[UUID_STR_LEN + 1];  /* the deciding user, or "" */
    char *deny_message;
    char *updated_input;        /* what an allow runs with, if edited */
    answer_cb cb;               /* the API's answer, after the update */
    void *cb_arg;
    struct event *expiry;
};

static struct server *req_srv(const struct perm_req *p)
{
    return p->run->chat->reg->srv;
}

/* ---- life ---- */

static void perm_free(struct perm_req *p)
{
    struct run *run = p->run;
    struct perm_req **pp = &run->perms;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    if (p->expiry)
        event_free(p->expiry);
    free(p->cli_id);
    free(p->tool_name);
    free(p->tool_use_id);
    free(p->input);
    free(p->suggestions);
    free(p->deny_message);
    free(p->updated_input);
    free(p);
    run_release(run);
}

static void perm_maybe_free(struct perm_req *p)
{
    if (p->state == PERM_RESOLVED && p->db_inflight == 0)
        perm_free(p);
}

static char *raw_dup(const struct json_doc *d, int tok, const char *dflt)
{
    size_t len;
    const char *raw = json_raw(d, tok, &len);
    return raw ? xstrndup(raw, len) : xstrdup(dflt);
}

static struct perm_req *perm_new(struct run *run, const struct json_doc *d,
                                 const char *cli_id, int request)
{
    struct perm_req *p = xcalloc(1, sizeof(*p));
    if (ids_uuid7(p->id) < 0) {
        free(p);
        return NULL;
    }
    p->run = run;
    run->refs++;
    p->cli_id = xstrdup(cli_id);
    p->tool_name = json_str_dup(d, json_get(d, request, "tool_name"), NULL);
    if (!p->tool_name)
        p->tool_name = xstrdup("");
    p->tool_use_id = json_str_dup(d, json_get(d, request, "tool_use_id"),
                                  NULL);
    p->input = raw_dup(d, json_get(d, request, "input"), "{}");
    int sug = json_get(d, request, "permission_suggestions");
    p->suggestions = json_type(d, sug) == JSON_ARRAY ? raw_dup(d, sug, "[]")
                                                     : xstrdup("[]");
    p->next = run->perms;
    run->perms = p;
    return p;
}

/* ---- what the CLI and the stream are told ---- */

/* obj (an object's text) with "key": value added. */
static void obj_with_member(struct buf *out, const char *obj,
                            const char *key, const char *value)
{
    size_t n = strlen(obj);
    while (n > 0 && obj[n - 1] != '}')
        n--;
    bool empty = true;
    for (size_t i = 1; n > 0 && i + 1 < n; i++)
        if (obj[i] != ' ' && obj[i] != '\n' && obj[i] != '\t' &&
            obj[i] != '\r')
            empty = false;
    buf_append(out, obj, n > 0 ? n - 1 : 0);
    if (n == 0)
        buf_putc(out, '{');
    if (!empty)
        buf_putc(out, ',');
    json_escape_str(out, key, strlen(key));
    buf_putc(out, ':');
    buf_puts(out, value);
    buf_putc(out, '}');
}

static const char *default_deny_message(const char *reason)
{
    if (strcmp(reason, "timeout") == 0)
        return "Nobody answered this permission request in time, so the "
               "tool use was denied.";
    if (strcmp(reason, "rule") == 0)
        return "A permission rule of this chat denies this tool use.";
    return "The user denied this tool use.";
}

static void respond_to_cli(struct perm_req *p, const char *answers)
{
    struct chat_rt *rt = p->run->chat;
    struct buf out;
    struct json_w w;
    if (!rt->cli)
        return;
    buf_init(&out);
    json_w_init(&w, &out);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "behavior", p->allow ? "allow" : "deny");
    if (p->allow) {
        const char *in = p->updated_input ? p->updated_input : p->input;
        struct buf merged;
        buf_init(&merged);
        if (answers)
            obj_with_member(&merged, in, "answers", answers);
        else
            buf_puts(&merged, in);
        json_w_key(&w, "updatedInput");
        json_w_raw(&w, merged.data, merged.len);
        buf_deinit(&merged);
    } else {
        json_w_kstr(&w, "message", p->deny_message
                                       ? p->deny_message
                                       : default_deny_message(p->reason));
    }
    json_w_obj_end(&w);
    cli_proc_respond(rt->cli, p->cli_id, out.data, out.len);
    buf_deinit(&out);
}

static void publish_resolved(struct perm_req *p)
{
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", p->run->spec.reply_id);
    json_w_kstr(&w, "request_id", p->id);
    json_w_kstr(&w, "decision", p->allow ? "allow" : "deny");
    json_w_kstr(&w, "reason", p->reason);
    json_w_kstr(&w, "by", p->by[0] ? p->by : NULL);
    json_w_obj_end(&w);
    chat_publish(p->run, "permission_resolved", &data, true);
    buf_deinit(&data);
}

static void publish_request(struct perm_req *p, const char *request_json)
{
    struct buf data;
    struct json_w w;
    buf_init(&data);
    json_w_init(&w, &data);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "message_id", p->run->spec.reply_id);
    json_w_key(&w, "request");
    json_w_raw(&w, request_json, strlen(request_json));
    json_w_obj_end(&w);
    chat_publish(p->run, "permission_request", &data, true);
    buf_deinit(&data);
}

/* ---- the rows ---- */

static void write_update(struct perm_req *p);

static void on_updated(void *arg, const struct pg_reply *reply)
{
    struct perm_req *p = arg;
    p->db_inflight--;
    if (reply->status != PG_OK)
        log_error("permission %s: decision not stored: %s", p->id,
                  reply->errmsg);
    if (p->cb)
        p->cb(p->cb_arg, reply);
    p->cb = NULL;
    perm_maybe_free(p);
}

static void write_update(struct perm_req *p)
{
    const char *params[6] = {
        p->id, p->allow ? "allow" : "deny", p->reason,
        p->by[0] ? p->by : NULL, p->allow ? NULL : p->deny_message,
        p->allow ? p->updated_input : NULL,
    };
    p->db_inflight++;
    store_perm_resolve(req_srv(p)->pg, params, on_updated, p);
}

static void arm_expiry(struct perm_req *p);

static void on_inserted(void *arg, const struct pg_reply *reply)
{
    struct perm_req *p = arg;
    p->db_inflight--;
    bool ok = reply->status == PG_OK && PQntuples(reply->res) == 1;
    if (!ok)
        log_error("permission %s: request not stored: %s", p->id,
                  reply->status == PG_OK ? "no row" : reply->errmsg);
    p->inserted = ok;
    if (ok && p->state == PERM_PENDING && !p->update_waits)
        publish_request(p, pg_val(reply->res, 0, 1));
    if (p->update_waits) {
        p->update_waits = false;
        if (ok)
            write_update(p);
        else if (p->cb)
            p->cb(p->cb_arg, reply);
    }
    perm_maybe_free(p);
}

static void write_insert(struct perm_req *p)
{
    char timeout[16];
    bool decided = p->state == PERM_RESOLVED;
    snprintf(timeout, sizeof(timeout), "%d",
             req_srv(p)->cfg->permission_timeout_s);
    const char *params[11] = {
        p->id, p->run->spec.chat_id, p->run->spec.reply_id, p->tool_use_id,
        p->tool_name, p->input, p->suggestions,
        decided ? "resolved" : "pending",
        decided ? (p->allow ? "allow" : "deny") : NULL,
        decided ? p->reason : NULL, timeout,
    };
    p->db_inflight++;
    store_perm_insert(req_srv(p)->pg, params, on_inserted, p);
}

/* ---- deciding ---- */

static void leave_awaiting(struct run *run)
{
    if (run->npending == 0 && run->phase == RUN_PHASE_AWAITING_PERMISSION &&
        !run->ending)
        run_set_phase(run, RUN_PHASE_STREAMING);
}

/* Decides a pending request: tells the CLI (unless it withdrew the
 * request or is gone), publishes, records. */
static void resolve(struct perm_req *p, bool allow, const char *reason,
                    bool tell_cli, const char *answers)
{
    bool was_pending = p->state == PERM_PENDING;
    p->state = PERM_RESOLVED;
    p->allow = allow;
    p->reason = reason;
    if (p->expiry)
        evtimer_del(p->expiry);
    if (tell_cli)
        respond_to_cli(p, answers);
    publish_resolved(p);
    if (!was_pending) {
        write_insert(p); /* decided at once: one row, already resolved */
        return;
    }
    p->run->npending--;
    if (p->inserted)
        write_update(p);
    else if (p->db_inflight > 0)
        p->update_waits = true;
    leave_awaiting(p->run);
}

static void on_expired(evutil_socket_t fd, short what, void *arg)
{
    struct perm_req *p = arg;
    log_info("permission %s (%s): no answer in time; denied", p->id,
             p->tool_name);
    resolve(p, false, "timeout", true, NULL);
    perm_maybe_free(p);
}

static void arm_expiry(struct perm_req *p)
{
    struct server *srv = req_srv(p);
    struct timeval tv = {srv->cfg->permission_timeout_s, 0};
    if (!p->expiry)
        p->expiry = evtimer_new(srv->base, on_expired, p);
    evtimer_add(p->expiry, &tv);
}

static void wait_for_user(struct perm_req *p)
{
    struct run *run = p->run;
    metrics_count(req_srv(p)->metrics, "permission_asked", 1);
    p->state = PERM_PENDING;
    run->npending++;
    arm_expiry(p);
    write_insert(p);
    if (run->phase == RUN_PHASE_STREAMING)
        run_set_phase(run, RUN_PHASE_AWAITING_PERMISSION);
}

/* The strongest matching rule: deny wins over allow. Returns "deny",
 * "allow" or NULL. */
static const char *match_rules(const struct perm_req *p, const PGresult *res)
{
    const char *found = NULL;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *content = PQgetisnull(res, i, 1) ? NULL
                                                     : pg_val(res, i, 1);
        if (!perm_rule_matches(p->tool_name, content, p->input))
            continue;
        found = pg_val(res, i, 2);
        if (strcmp(found, "deny") == 0)
            return found;
    }
    return found;
}

static void decide(struct perm_req *p, const PGresult *rules)
{
    struct run *run = p->run;
    const char *rule = rules ? match_rules(p, rules) : NULL;
    if (p->cancelled || run->perm_end) {
        resolve(p, false, p->cancelled ? "cli_cancelled" : run->perm_end,
                false, NULL);
    } else if (rule) {
        resolve(p, strcmp(rule, "allow") == 0, "rule", true, NULL);
    } else if (strcmp(run->mode, "auto") == 0) {
        resolve(p, true, "auto", true, NULL);
    } else {
        wait_for_user(p);
    }
}

static void on_rules(void *arg, const struct pg_reply *reply)
{
    struct perm_req *p = arg;
    p->db_inflight--;
    if (reply->status != PG_OK)
        log_warn("permission %s: rules not read (%s); deciding without them",
                 p->id, reply->errmsg);
    decide(p, reply->status == PG_OK ? reply->res : NULL);
    perm_maybe_free(p);
}

void perm_on_request(struct chat_rt *rt, const struct json_doc *d,
                     const char *cli_id, int request)
{
    struct run *run = rt->active;
    if (!run || run->ending || !run->user_written || run->perm_end) {
        static const char none[] = "{\"behavior\":\"deny\",\"message\":"
                                   "\"No turn of this chat is running.\"}";
        cli_proc_respond(rt->cli, cli_id, none, sizeof(none) - 1);
        return;
    }
    struct perm_req *p = perm_new(run, d, cli_id, request);
    if (!p) {
        cli_proc_respond_error(rt->cli, cli_id, "no request id available");
        return;
    }
    metrics_count(rt->reg->srv->metrics, "permission_requests", 1);
    p->db_inflight++;
    store_rules_for_tool(rt->reg->srv->pg, run->spec.chat_id, p->tool_name,
                         on_rules, p);
}

static struct perm_req *find_by_cli_id(struct run *run, const char *cli_id)
{
    for (struct perm_req *p = run ? run->perms : NULL; p; p = p->next)
        if (p->state != PERM_RESOLVED && strcmp(p->cli_id, cli_id) == 0)
            return p;
    return NULL;
}

void perm_on_cancel(struct chat_rt *rt, const char *cli_id)
{
    struct perm_req *p = find_by_cli_id(rt->active, cli_id);
    if (!p)
        return; /* already decided, or an interrupt resolved it */
    if (p->state == PERM_DECIDING) {
        p->cancelled = true;
        return;
    }
    resolve(p, false, "cli_cancelled", false, NULL);
    perm_maybe_free(p);
}

void perm_end_run(struct run *run, const char *reason)
{
    if (!run->perm_end)
        run->perm_end = reason;
    struct perm_req *p = run->perms;
    while (p) {
        struct perm_req *next = p->next;
        if (p->state == PERM_PENDING) {
            resolve(p, false, run->perm_end, false, NULL);
            perm_maybe_free(p);
        }
        p = next;
    }
}

void perm_drop_all(struct run *run)
{
    while (run->perms)
        perm_free(run->perms);
}

/* ---- the user's answer ---- */

/* The content of the CLI's suggested rule for this tool, or NULL (the
 * rule then covers every use of the tool). */
static char *suggested_content(const struct perm_req *p)
{
    struct json_doc *d = NULL;
    char *content = NULL;
    if (json_parse(p->suggestions, strlen(p->suggestions), NULL, &d,
                   NULL) != JSON_OK)
        return NULL;
    for (int i = 0; !content && i < json_len(d, 0); i++) {
        int s = json_at(d, 0, i);
        if (!json_str_eq(d, json_get(d, s, "type"), "addRules"))
            continue;
        int rules = json_get(d, s, "rules");
        for (int j = 0; !content && j < json_len(d, rules); j++) {
            int r = json_at(d, rules, j);
            if (json_str_eq(d, json_get(d, r, "toolName"), p->tool_name))
                content = json_str_dup(d, json_get(d, r, "ruleContent"),
                                       NULL);
        }
    }
    json_doc_free(d);
    return content;
}

static void on_rule_stored(void *arg, const struct pg_reply *reply)
{
    char *id = arg;
    if (reply->status != PG_OK)
        log_error("permission rule %s not stored: %s", id, reply->errmsg);
    free(id);
}

static void remember(const struct perm_req *p, const char *user_id)
{
    char id[UUID_STR_LEN + 1];
    if (ids_uuid7(id) < 0)
        return;
    char *content = suggested_content(p);
    const char *params[6] = {id, p->run->spec.chat_id, p->tool_name, content,
                             p->allow ? "allow" : "deny", user_id};
    store_rule_insert(req_srv(p)->pg, params, on_rule_stored, xstrdup(id));
    free(content);
}

static struct perm_req *find_pending(struct chats *c, const char *chat_id,
                                     const char *request_id)
{
    struct chat_rt *rt = chats_rt_lookup(c, chat_id);
    if (!rt || !rt->active)
        return NULL;
    for (struct perm_req *p = rt->active->perms; p; p = p->next)
        if (p->state == PERM_PENDING && strcmp(p->id, request_id) == 0)
            return p;
    return NULL;
}

int chats_permission_answer(struct chats *c, const char *chat_id,
                            const struct perm_answer *a, answer_cb cb,
                            void *arg)
{
    struct perm_req *p = find_pending(c, chat_id, a->request_id);
    if (!p || c->closing)
        return -1;
    snprintf(p->by, sizeof(p->by), "%s", a->user_id);
    if (a->allow && a->updated_input)
        p->updated_input = xstrdup(a->updated_input);
    if (!a->allow && a->message)
        p->deny_message = xstrdup(a->message);
    p->allow = a->allow;
    p->cb = cb;
    p->cb_arg = arg;
    if (a->remember)
        remember(p, a->user_id);
    resolve(p, a->allow, "user", true, a->allow ? a->answers : NULL);
    perm_maybe_free(p);
    return 0;
}
