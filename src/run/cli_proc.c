/* The CLI process and its control protocol (see cli_proc.h). Requests we
 * send wait in a short list keyed by request id; the CLI answers each
 * once, and whatever is still waiting when the process ends is failed. */
#include "corral/cli_proc.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/framer.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/sandbox.h"
#include "corral/server.h"

#define STDERR_TAIL 4096

struct pending_ctl {
    struct pending_ctl *next;
    char id[32];
    cli_ctl_cb cb;
    void *arg;
};

struct cli_proc {
    struct server *srv;
    struct sandbox_proc *sp;
    struct framer framer;
    struct buf err_tail;
    struct cli_proc_cbs cbs;
    void *arg;
    struct pending_ctl *pending;
    uint64_t next_id;
    struct event *kill_timer;
    struct json_limits lim;
    bool abandoned, stdin_closed;
};

static void fail_pending(struct cli_proc *p, const char *why)
{
    while (p->pending) {
        struct pending_ctl *c = p->pending;
        p->pending = c->next;
        if (!p->abandoned)
            c->cb(c->arg, false, NULL, -1, why);
        else
            free(c->arg); /* nobody waits for it any more */
        free(c);
    }
}

static void on_control_response(struct cli_proc *p, const struct json_doc *d)
{
    int resp = json_get(d, 0, "response");
    char *id = json_str_dup(d, json_get(d, resp, "request_id"), NULL);
    struct pending_ctl **pp = &p->pending;
    while (id && *pp && strcmp((*pp)->id, id) != 0)
        pp = &(*pp)->next;
    if (!id || !*pp) {
        log_warn("cli: control_response for an unknown request");
        free(id);
        return;
    }
    struct pending_ctl *c = *pp;
    *pp = c->next;
    bool ok = json_str_eq(d, json_get(d, resp, "subtype"), "success");
    char *err = ok ? NULL : json_str_dup(d, json_get(d, resp, "error"), NULL);
    c->cb(c->arg, ok, d, json_get(d, resp, "response"),
          ok ? NULL : err ? err : "the CLI refused the request");
    free(err);
    free(c);
    free(id);
}

static void on_line(void *arg, const char *line, size_t len)
{
    struct cli_proc *p = arg;
    if (p->abandoned || len == 0 || line[0] != '{')
        return; /* some builds print non-JSON diagnostics on stdout */
    struct json_doc *d = NULL;
    const char *why = NULL;
    if (json_parse(line, len, &p->lim, &d, &why) != JSON_OK) {
        p->cbs.on_bad_line(p->arg, why ? why : "malformed JSON");
        return;
    }
    if (json_str_eq(d, json_get(d, 0, "type"), "control_response"))
        on_control_response(p, d);
    else
        p->cbs.on_line(p->arg, d);
    json_doc_free(d);
}

static void on_overlong(void *arg, size_t seen)
{
    struct cli_proc *p = arg;
    if (!p->abandoned)
        p->cbs.on_bad_line(p->arg, "a stdout line exceeds cli_max_line_bytes");
}

static const struct framer_cbs framer_cbs = {on_line, on_overlong};

static void sp_stdout(void *arg, const char *data, size_t len)
{
    struct cli_proc *p = arg;
    framer_feed(&p->framer, data, len, &framer_cbs, p);
}

static void sp_stderr(void *arg, const char *data, size_t len)
{
    struct cli_proc *p = arg;
    if (len >= STDERR_TAIL) {
        data += len - STDERR_TAIL;
        len = STDERR_TAIL;
    }
    if (p->err_tail.len + len > STDERR_TAIL) {
        size_t drop = p->err_tail.len + len - STDERR_TAIL;
        memmove(p->err_tail.data, p->err_tail.data + drop,
                p->err_tail.len - drop);
        p->err_tail.len -= drop;
    }
    buf_append(&p->err_tail, data, len);
}

static void sp_exit(void *arg, int status)
{
    struct cli_proc *p = arg;
    fail_pending(p, "the CLI exited");
    if (!p->abandoned)
        p->cbs.on_exit(p->arg, status, buf_cstr(&p->err_tail));
    if (p->kill_timer)
        event_free(p->kill_timer);
    framer_deinit(&p->framer);
    buf_deinit(&p->err_tail);
    free(p);
}

static const struct sandbox_proc_cbs sp_cbs = {sp_stdout, sp_stderr,
                                               sp_exit};

struct cli_proc *cli_proc_start(struct server *srv, struct sandbox *sb,
                                const struct cli_launch *launch,
                                const struct cli_proc_cbs *cbs, void *arg,
                                const char **err)
{
    struct cli_proc *p = xcalloc(1, sizeof(*p));
    p->srv = srv;
    p->cbs = *cbs;
    p->arg = arg;
    p->lim.max_bytes = (size_t)srv->cfg->cli_max_line_bytes;
    p->lim.max_depth = 64;
    p->lim.max_tokens = 1 << 22;
    framer_init(&p->framer, (size_t)srv->cfg->cli_max_line_bytes);
    buf_init(&p->err_tail);
    struct sandbox_spawn_opts o = {
        .argv = launch->argv,
        .env = launch->env,
        .gateway_port = launch->gateway_port,
        .ro_binds = launch->ro_binds,
    };
    p->sp = sandbox_local.spawn(sb, &o, &sp_cbs, p, err);
    if (!p->sp) {
        framer_deinit(&p->framer);
        buf_deinit(&p->err_tail);
        free(p);
        return NULL;
    }
    return p;
}

static int write_line(struct cli_proc *p, struct buf *line)
{
    buf_putc(line, '\n');
    if (p->stdin_closed)
        return -1;
    return sandbox_proc_write(p->sp, line->data, line->len);
}

int cli_proc_control(struct cli_proc *p, const char *subtype,
                     const char *fields_json, cli_ctl_cb cb, void *arg)
{
    struct pending_ctl *c = xcalloc(1, sizeof(*c));
    snprintf(c->id, sizeof(c->id), "corral_%llu",
             (unsigned long long)++p->next_id);
    /* The request object: subtype plus the caller's members, which the
     * caller wrote with json_w. */
    struct buf req, line;
    buf_init(&req);
    buf_init(&line);
    buf_puts(&req, "{\"subtype\":");
    json_escape_str(&req, subtype, strlen(subtype));
    if (fields_json && *fields_json) {
        buf_putc(&req, ',');
        buf_puts(&req, fields_json);
    }
    buf_putc(&req, '}');
    struct json_w w;
    json_w_init(&w, &line);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "control_request");
    json_w_kstr(&w, "request_id", c->id);
    json_w_key(&w, "request");
    json_w_raw(&w, req.data, req.len);
    json_w_obj_end(&w);
    buf_deinit(&req);
    int rc = write_line(p, &line);
    buf_deinit(&line);
    if (rc < 0) {
        free(c);
        return -1;
    }
    c->cb = cb;
    c->arg = arg;
    c->next = p->pending;
    p->pending = c;
    return 0;
}

int cli_proc_send_user(struct cli_proc *p, const char *text,
                       const char *uuid)
{
    struct buf line;
    struct json_w w;
    buf_init(&line);
    json_w_init(&w, &line);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "user");
    json_w_key(&w, "message");
    json_w_obj_begin(&w);
    json_w_kstr(&w, "role", "user");
    json_w_kstr(&w, "content", text);
    json_w_obj_end(&w);
    json_w_knull(&w, "parent_tool_use_id");
    json_w_kstr(&w, "session_id", "default");
    json_w_kstr(&w, "uuid", uuid);
    json_w_obj_end(&w);
    int rc = write_line(p, &line);
    buf_deinit(&line);
    return rc;
}

int cli_proc_send_user_blocks(struct cli_proc *p, const char *blocks,
                              size_t len, const char *uuid)
{
    static const char head[] =
        "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":";
    struct buf line;
    buf_init(&line);
    buf_reserve(&line, sizeof(head) + len + 128);
    buf_append(&line, head, sizeof(head) - 1);
    buf_append(&line, blocks, len);
    buf_puts(&line, "},\"parent_tool_use_id\":null,\"session_id\":"
                    "\"default\",\"uuid\":");
    json_escape_str(&line, uuid, strlen(uuid));
    buf_putc(&line, '}');
    int rc = write_line(p, &line);
    buf_deinit(&line);
    return rc;
}

static int respond(struct cli_proc *p, const char *request_id, bool ok,
                   const char *payload, size_t len, const char *message)
{
    struct buf line;
    struct json_w w;
    buf_init(&line);
    json_w_init(&w, &line);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "type", "control_response");
    json_w_key(&w, "response");
    json_w_obj_begin(&w);
    json_w_kstr(&w, "subtype", ok ? "success" : "error");
    json_w_kstr(&w, "request_id", request_id);
    if (ok) {
        json_w_key(&w, "response");
        json_w_raw(&w, payload, len);
    } else {
        json_w_kstr(&w, "error", message);
    }
    json_w_obj_end(&w);
    json_w_obj_end(&w);
    int rc = write_line(p, &line);
    buf_deinit(&line);
    return rc;
}

int cli_proc_respond(struct cli_proc *p, const char *request_id,
                     const char *response_json, size_t len)
{
    return respond(p, request_id, true, response_json, len, NULL);
}

int cli_proc_respond_error(struct cli_proc *p, const char *request_id,
                           const char *message)
{
    return respond(p, request_id, false, NULL, 0, message);
}

static void on_kill_timer(evutil_socket_t fd, short what, void *arg)
{
    struct cli_proc *p = arg;
    log_warn("cli: still running after its stdin closed; killing it");
    sandbox_proc_kill(p->sp);
}

void cli_proc_close(struct cli_proc *p, int grace_ms)
{
    if (!p->stdin_closed) {
        p->stdin_closed = true;
        sandbox_proc_close_stdin(p->sp);
    }
    if (!p->kill_timer) {
        struct timeval tv = ms_to_timeval(grace_ms);
        p->kill_timer = evtimer_new(p->srv->base, on_kill_timer, p);
        evtimer_add(p->kill_timer, &tv);
    }
}

void cli_proc_kill(struct cli_proc *p)
{
    p->stdin_closed = true;
    sandbox_proc_kill(p->sp);
}

void cli_proc_abandon(struct cli_proc *p)
{
    p->abandoned = true;
    fail_pending(p, NULL);
    cli_proc_kill(p);
}
