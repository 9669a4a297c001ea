/* cli_proc: one chat's `claude` process in its sandbox, speaking the
 * stream-json control protocol (docs/claude-cli-protocol.md §3–§6).
 *
 * It frames stdout into lines (any length up to cli_max_line_bytes),
 * parses each with the bounded JSON reader, answers the CLI's
 * control_responses to our own requests (each request's callback fires
 * exactly once: with the response, or with an error when the process
 * ends), and hands every other line to the owner. stderr is kept as a
 * bounded tail for error reports. Owner: the chat runtime; the proc frees
 * itself after on_exit returns. */
#ifndef CORRAL_CLI_PROC_H
#define CORRAL_CLI_PROC_H

#include <stdbool.h>
#include <stddef.h>

#include "corral/buf.h"
#include "corral/json.h"

struct server;
struct sandbox;
struct cli_proc;

struct cli_proc_cbs {
    /* A stdout line that is not a control_response (borrowed doc). */
    void (*on_line)(void *arg, const struct json_doc *doc);
    /* A line that is not JSON or over the cap: a protocol failure. */
    void (*on_bad_line)(void *arg, const char *why);
    /* Once, when the process is gone; stderr_tail is its last output. */
    void (*on_exit)(void *arg, int wait_status, const char *stderr_tail);
};

/* ok false: err says why (the CLI answered an error, or it exited).
 * response: the `response` object's token in doc (borrowed), or -1. */
typedef void (*cli_ctl_cb)(void *arg, bool ok, const struct json_doc *doc,
                           int response, const char *err);

struct cli_launch {
    const char *const *argv; /* argv[0]: the CLI binary */
    const char *const *env;  /* NAME=VALUE */
    const char *const *ro_binds;
    int gateway_port;
};

struct cli_proc *cli_proc_start(struct server *srv, struct sandbox *sb,
                                const struct cli_launch *launch,
                                const struct cli_proc_cbs *cbs, void *arg,
                                const char **err);
/* Sends a control_request {subtype, ...fields}; fields_json is the text
 * of extra members ("\"mode\":\"plan\"") or NULL. -1 if stdin is closed.
 * cb fires once with the response, or with ok false when the CLI exits
 * first; arg (NULL or from malloc) is free()d instead when the CLI is
 * abandoned before answering. */
int cli_proc_control(struct cli_proc *p, const char *subtype,
                     const char *fields_json, cli_ctl_cb cb, void *arg);
/* Writes a user message with our uuid. */
int cli_proc_send_user(struct cli_proc *p, const char *text,
                       const char *uuid);
/* The same with content blocks: blocks is the text of a JSON array of
 * Messages API content blocks (text, image ...), written as it is. */
int cli_proc_send_user_blocks(struct cli_proc *p, const char *blocks,
                              size_t len, const char *uuid);
/* Answers the CLI's control_request request_id with a success response
 * whose payload is response_json (an object), or with an error. */
int cli_proc_respond(struct cli_proc *p, const char *request_id,
                     const char *response_json, size_t len);
int cli_proc_respond_error(struct cli_proc *p, const char *request_id,
                           const char *message);
/* Graceful stop: close stdin; SIGKILL after grace_ms if still there. */
void cli_proc_close(struct cli_proc *p, int grace_ms);
void cli_proc_kill(struct cli_proc *p);
/* Detaches the owner: no callback fires any more (the process is killed
 * and cleaned up on its own). */
void cli_proc_abandon(struct cli_proc *p);

#endif
