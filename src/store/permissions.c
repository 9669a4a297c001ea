/* The runtime's permission SQL (store_perm.h): requests as they are made
 * and decided, rules stored with `remember`, and the rules that may
 * decide a request. */
#include "corral/store_perm.h"

void store_perm_insert(struct pg_pool *pg, const char *const params[11],
                       pg_cb cb, void *arg)
{
    pg_query_patient(pg,
             "INSERT INTO permission_requests AS p (id, chat_id, message_id,"
             " tool_use_id, tool_name, input, suggestions, status, decision,"
             " reason, expires_at, decided_at) VALUES ($1, $2, $3, $4, $5,"
             " $6::json, $7::json, $8, $9, $10, clock_timestamp() +"
             " make_interval(secs => $11::int), CASE WHEN $8 = 'resolved'"
             " THEN clock_timestamp() END) RETURNING " PERM_REQUEST_JSON_SQL ", "
             PERM_EVENT_JSON_SQL,
             11, params, cb, arg);
}

void store_perm_resolve(struct pg_pool *pg, const char *const params[6],
                        pg_cb cb, void *arg)
{
    pg_query_patient(pg,
             "UPDATE permission_requests AS p SET status = 'resolved',"
             " decision = $2, reason = $3, decided_by = $4::uuid,"
             " deny_message = $5, updated_input = $6::json,"
             " decided_at = clock_timestamp()"
             " WHERE id = $1 AND status = 'pending'"
             " RETURNING " PERM_REQUEST_JSON_SQL,
             6, params, cb, arg);
}

void store_rule_insert(struct pg_pool *pg, const char *const params[6],
                       pg_cb cb, void *arg)
{
    pg_query(pg,
             "INSERT INTO permission_rules (id, chat_id, tool_name, content,"
             " behavior, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
             6, params, cb, arg);
}

void store_rules_for_tool(struct pg_pool *pg, const char *chat_id,
                          const char *tool_name, pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, tool_name};
    pg_query(pg,
             "SELECT tool_name, content, behavior, 'chat'"
             " FROM permission_rules WHERE chat_id = $1 AND tool_name = $2"
             " UNION ALL"
             " SELECT m.parts[1], m.parts[2], 'allow', 'user'"
             " FROM chats c JOIN user_settings s ON s.user_id = c.owner_id,"
             " json_array_elements_text(s.allowed_tools) AS t(entry),"
             " regexp_match(t.entry, '^([^()]+?)(?:\\((.*)\\))?$') AS m(parts)"
             " WHERE c.id = $1 AND m.parts[1] = $2",
             2, p, cb, arg);
}
