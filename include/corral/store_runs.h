/* store_runs: the SQL of the run pipeline (src/store/runs.c): sending a
 * message (user message + reply + run rows in one statement, scoped by
 * the chat's owner), loading what a run needs, recording phases and
 * results, and recovering runs a previous process left unfinished. */
#ifndef CORRAL_STORE_RUNS_H
#define CORRAL_STORE_RUNS_H

#include "corral/pg.h"

/* Inserts the user message, the queued reply and the run, bumps the
 * chat's last_activity_at. No row when the chat is not the owner's or
 * deleted; else one row: the two message objects as JSON text
 * (user_json, reply_json) and queued (runs waiting or running before
 * this one). params: chat_id, owner_id, user_msg_id, reply_id, run_id,
 * content (JSON string text), options (JSON object text), model or NULL,
 * attachments (JSON array text). */
void store_send_message(struct pg_pool *pg, const char *const params[9],
                        pg_cb cb, void *arg);

/* One row: chat model, permission_mode, system_prompt_append,
 * session_id, session_started, prompt_edited, deleted, user content
 * (the text), message model, options (JSON text), owner_id; then the
 * owner's settings (defaults without a row): system_prompt_append,
 * env_enc, mcp_servers, disallowed_tools (JSON text) and
 * allow_background_tools; the owner's budget_state() (limit or NULL,
 * spent); the prices of the run's model (NULL without a price) per
 * million input, output, cache-write and cache-read tokens, and whether
 * that model is offered (a price row, enabled); the user message's
 * attachments (JSON array text of their objects). */
enum {
    RUNLOAD_MODEL, RUNLOAD_MODE, RUNLOAD_PROMPT, RUNLOAD_SESSION,
    RUNLOAD_STARTED, RUNLOAD_EDITED, RUNLOAD_DELETED, RUNLOAD_CONTENT,
    RUNLOAD_MSG_MODEL, RUNLOAD_OPTIONS, RUNLOAD_OWNER, RUNLOAD_USER_PROMPT,
    RUNLOAD_ENV, RUNLOAD_MCP, RUNLOAD_DISALLOWED, RUNLOAD_BACKGROUND,
    RUNLOAD_BUDGET_LIMIT, RUNLOAD_BUDGET_SPENT, RUNLOAD_PRICE_INPUT,
    RUNLOAD_PRICE_OUTPUT, RUNLOAD_PRICE_CACHE_WRITE, RUNLOAD_PRICE_CACHE_READ,
    RUNLOAD_MODEL_OFFERED, RUNLOAD_ATTACHMENTS
};
void store_run_load(struct pg_pool *pg, const char *run_id, pg_cb cb,
                    void *arg);

/* Records the run's phase and its reply's status. */
void store_run_phase(struct pg_pool *pg, const char *run_id,
                     const char *reply_id, const char *phase,
                     const char *status, pg_cb cb, void *arg);

/* Records the end of a run: the reply's final status, content, usage
 * priced from the models table, cost, error and model; the usage ledger
 * rows; the run's phase; the chat's activity and session_started.
 * params: run_id, reply_id, status, phase, content, usage (a JSON array
 * of {model, input_tokens, output_tokens, cache_creation_input_tokens,
 * cache_read_input_tokens}), error (JSON or NULL), model,
 * session_started ("t"/"f"). Rows: the data of each `usage` event (text),
 * in the order given. */
void store_run_finish(struct pg_pool *pg, const char *const params[9],
                      pg_cb cb, void *arg);

/* Fails every unfinished run (and its reply) with instance_lost; their
 * pending permission requests are denied (reason cli_cancelled). */
void store_runs_recover(struct pg_pool *pg, pg_cb cb, void *arg);

/* One row (status, chat_id) if the chat is the owner's and not deleted. */
void store_chat_owned(struct pg_pool *pg, const char *chat_id,
                      const char *owner_id, pg_cb cb, void *arg);

/* One row: the user message's content and options when reply_id is a
 * failed or cancelled reply of an owned chat: (content, options, model,
 * attachments, status). */
void store_retry_source(struct pg_pool *pg, const char *chat_id,
                        const char *owner_id, const char *reply_id,
                        pg_cb cb, void *arg);

#endif
