#include "corral/store_runs.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* The API.md Message object, built by PostgreSQL from a messages row m. */
#define MESSAGE_JSON                                                        \
    "json_build_object('id', m.id, 'chat_id', m.chat_id, 'role', m.role,"   \
    " 'origin', m.origin, 'reply_to', m.reply_to, 'status', m.status,"      \
    " 'content', m.content, 'attachments', m.attachments, 'model', m.model," \
    " 'usage', m.usage, 'cost_usd', m.cost_usd, 'error', m.error,"          \
    " 'created_at', " TS("m.created_at") ", 'started_at', "                 \
    TS("m.started_at") ", 'completed_at', " TS("m.completed_at") ")"

void store_send_message(struct pg_pool *pg, const char *const params[9],
                        pg_cb cb, void *arg)
{
    pg_query(pg,
             "WITH c AS (UPDATE chats SET last_activity_at = clock_timestamp()"
             " WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL"
             " RETURNING id, model),"
             " um AS (INSERT INTO messages (id, chat_id, role, origin, status,"
             " content, attachments, model, options) SELECT $3, c.id, 'user',"
             " 'user', 'completed', $6::json, $9::json, COALESCE($8, c.model),"
             " $7::json FROM c RETURNING *),"
             " rm AS (INSERT INTO messages (id, chat_id, role, origin,"
             " reply_to, status, content, model, created_at) SELECT $4,"
             " um.chat_id, 'assistant', 'user', um.id, 'queued', '[]',"
             " um.model, um.created_at + interval '1 microsecond' FROM um"
             " RETURNING *),"
             " r AS (INSERT INTO runs (id, chat_id, user_message_id,"
             " reply_message_id, phase) SELECT $5, rm.chat_id, rm.reply_to,"
             " rm.id, 'queued' FROM rm RETURNING id)"
             " SELECT (SELECT " MESSAGE_JSON " FROM um m),"
             " (SELECT " MESSAGE_JSON " FROM rm m),"
             " (SELECT count(*) FROM runs WHERE chat_id = $1 AND phase NOT IN"
             " ('done', 'failed', 'cancelled'))"
             " FROM r",
             9, params, cb, arg);
}

void store_run_load(struct pg_pool *pg, const char *run_id, pg_cb cb,
                    void *arg)
{
    const char *p[] = {run_id};
    pg_query_patient(pg,
             "SELECT c.model, c.permission_mode, c.system_prompt_append,"
             " c.session_id, c.session_started, c.prompt_edited,"
             " c.deleted_at IS NOT NULL, m.content #>> '{}', m.model,"
             " m.options, c.owner_id,"
             " COALESCE(s.system_prompt_append, ''),"
             " COALESCE(s.env_enc::text, '{}'),"
             " COALESCE(s.mcp_servers::text, '{}'),"
             " COALESCE(s.disallowed_tools::text, '[]'),"
             " COALESCE(s.allow_background_tools, false),"
             " b.limit_usd, b.spent_usd, p.price_input, p.price_output,"
             " p.price_cache_write, p.price_cache_read,"
             " COALESCE(p.enabled, false), m.attachments::text"
             " FROM runs r JOIN chats c ON c.id = r.chat_id"
             " JOIN messages m ON m.id = r.user_message_id"
             " LEFT JOIN user_settings s ON s.user_id = c.owner_id"
             " CROSS JOIN budget_state(c.owner_id) b"
             " LEFT JOIN LATERAL model_price(COALESCE(m.model, c.model)) p"
             " ON true WHERE r.id = $1",
             1, p, cb, arg);
}

void store_run_phase(struct pg_pool *pg, const char *run_id,
                     const char *reply_id, const char *phase,
                     const char *status, pg_cb cb, void *arg)
{
    const char *p[] = {run_id, reply_id, phase, status};
    pg_query_patient(pg,
             "WITH r AS (UPDATE runs SET phase = $3, started_at ="
             " COALESCE(started_at, CASE WHEN $3 <> 'queued' THEN"
             " clock_timestamp() END) WHERE id = $1)"
             " UPDATE messages SET status = $4, started_at ="
             " COALESCE(started_at, CASE WHEN $4 <> 'queued' THEN"
             " clock_timestamp() END) WHERE id = $2",
             4, p, cb, arg);
}

/* Costs come from the models table as it is when the turn ends
 * (model_price(), schema 0003); a model without a price costs 0. */
#define USAGE_ROWS_SQL                                                      \
    " t AS (SELECT e.ord, e.v->>'model' AS model,"                          \
    " (e.v->>'input_tokens')::bigint AS input_tokens,"                      \
    " (e.v->>'output_tokens')::bigint AS output_tokens,"                    \
    " (e.v->>'cache_creation_input_tokens')::bigint AS cache_creation,"     \
    " (e.v->>'cache_read_input_tokens')::bigint AS cache_read"              \
    " FROM json_array_elements($6::json) WITH ORDINALITY AS e(v, ord)),"    \
    " u AS (SELECT t.*, round((t.input_tokens * COALESCE(m.price_input, 0)" \
    " + t.output_tokens * COALESCE(m.price_output, 0)"                      \
    " + t.cache_creation * COALESCE(m.price_cache_write, 0)"                \
    " + t.cache_read * COALESCE(m.price_cache_read, 0)) / 1000000, 6)"     \
    " AS cost_usd FROM t LEFT JOIN LATERAL model_price(t.model) m ON true),"

#define USAGE_OBJ_SQL                                                       \
    "'model', u.model, 'input_tokens', u.input_tokens,"                     \
    " 'output_tokens', u.output_tokens,"                                    \
    " 'cache_creation_input_tokens', u.cache_creation,"                     \
    " 'cache_read_input_tokens', u.cache_read, 'cost_usd', u.cost_usd"

void store_run_finish(struct pg_pool *pg, const char *const params[9],
                      pg_cb cb, void *arg)
{
    pg_query_patient(pg,
             "WITH r AS (UPDATE runs SET phase = $4, ended_at ="
             " clock_timestamp() WHERE id = $1 RETURNING chat_id),"
             " c AS (UPDATE chats SET last_activity_at = clock_timestamp(),"
             " session_started = session_started OR $9::boolean"
             " WHERE id = (SELECT chat_id FROM r) RETURNING id, owner_id),"
             USAGE_ROWS_SQL
             " l AS (INSERT INTO usage_ledger (user_id, chat_id, message_id,"
             " model, input_tokens, output_tokens,"
             " cache_creation_input_tokens, cache_read_input_tokens,"
             " cost_usd) SELECT c.owner_id, c.id, $2, u.model,"
             " u.input_tokens, u.output_tokens, u.cache_creation,"
             " u.cache_read, u.cost_usd FROM u, c WHERE u.input_tokens +"
             " u.output_tokens + u.cache_creation + u.cache_read > 0),"
             " msg AS (UPDATE messages SET status = $3, content = $5::json,"
             " usage = (SELECT COALESCE(json_agg(json_build_object("
             USAGE_OBJ_SQL ") ORDER BY u.ord), '[]') FROM u),"
             " cost_usd = (SELECT COALESCE(sum(u.cost_usd), 0) FROM u),"
             " error = $7::json, model = COALESCE($8, model),"
             " started_at = COALESCE(started_at, clock_timestamp()),"
             " completed_at = clock_timestamp() WHERE id = $2)"
             " SELECT json_build_object('message_id', $2::uuid, "
             USAGE_OBJ_SQL ")::text FROM u ORDER BY u.ord",
             9, params, cb, arg);
}

void store_runs_recover(struct pg_pool *pg, pg_cb cb, void *arg)
{
    pg_query(pg,
             /* A run that got as far as CHECKPOINT had completed. */
             "WITH r AS (UPDATE runs SET phase = CASE WHEN phase ="
             " 'checkpoint' THEN 'done' ELSE 'failed' END, ended_at = now()"
             " WHERE phase NOT IN ('done', 'failed', 'cancelled')"
             " RETURNING reply_message_id, phase),"
             " p AS (UPDATE permission_requests SET status = 'resolved',"
             " decision = 'deny', reason = 'cli_cancelled',"
             " decided_at = now() WHERE status = 'pending')"
             " UPDATE messages SET status = 'failed', completed_at = now(),"
             " error = json_build_object('code', 'instance_lost', 'detail',"
             " 'the server stopped while this message was being answered')"
             " WHERE id IN (SELECT reply_message_id FROM r"
             " WHERE phase = 'failed')",
             0, NULL, cb, arg);
}

void store_chat_owned(struct pg_pool *pg, const char *chat_id,
                      const char *owner_id, pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, owner_id};
    pg_query(pg,
             "SELECT id FROM chats WHERE id = $1 AND owner_id = $2"
             " AND deleted_at IS NULL",
             2, p, cb, arg);
}

void store_retry_source(struct pg_pool *pg, const char *chat_id,
                        const char *owner_id, const char *reply_id,
                        pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, owner_id, reply_id};
    pg_query(pg,
             "SELECT u.content, u.options, u.model, u.attachments, r.status"
             " FROM messages r JOIN messages u ON u.id = r.reply_to"
             " JOIN chats c ON c.id = r.chat_id"
             " WHERE r.id = $3 AND r.chat_id = $1 AND c.owner_id = $2"
             " AND c.deleted_at IS NULL AND r.role = 'assistant'",
             3, p, cb, arg);
}
