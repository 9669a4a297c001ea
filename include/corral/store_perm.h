/* store_perm: the SQL of tool approvals (schema 0003): permission
 * requests and the chat's permission rules. Runtime writes live in
 * src/store/permissions.c, the API's reads in src/store/permissions_read.c.
 * Every read is scoped by the chat's owner. */
#ifndef CORRAL_STORE_PERM_H
#define CORRAL_STORE_PERM_H

#include "corral/pg.h"

/* The API's Request object, built by PostgreSQL from a row aliased p:
 * {id, message_id, tool_name, input, suggestions, status, decision,
 * reason, by, expires_at, created_at, decided_at}. */
#define PERM_REQUEST_JSON_SQL                                               \
    "json_build_object('id', p.id, 'message_id', p.message_id, "           \
    "'tool_name', p.tool_name, 'input', p.input, "                          \
    "'suggestions', p.suggestions, 'status', p.status, "                    \
    "'decision', p.decision, 'reason', p.reason, 'by', p.decided_by, "      \
    "'expires_at', to_char(p.expires_at AT TIME ZONE 'UTC', "               \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "                                \
    "'created_at', to_char(p.created_at AT TIME ZONE 'UTC', "               \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "                                \
    "'decided_at', to_char(p.decided_at AT TIME ZONE 'UTC', "               \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"

/* The `request` of a permission_request event, from a row aliased p:
 * {id, tool_name, input, suggestions, expires_at}. */
#define PERM_EVENT_JSON_SQL                                                 \
    "json_build_object('id', p.id, 'tool_name', p.tool_name, "             \
    "'input', p.input, 'suggestions', p.suggestions, "                      \
    "'expires_at', to_char(p.expires_at AT TIME ZONE 'UTC', "               \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"

/* The Rule object from a row aliased r: {id, tool_name, content,
 * behavior, created_at}. */
#define PERM_RULE_JSON_SQL                                                  \
    "json_build_object('id', r.id, 'tool_name', r.tool_name, "             \
    "'content', r.content, 'behavior', r.behavior, "                        \
    "'created_at', to_char(r.created_at AT TIME ZONE 'UTC', "               \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"

/* ---- runtime writes (src/store/permissions.c) ---- */

/* Inserts a request; one row: the request JSON and the event's request
 * JSON. params: id, chat_id,
 * message_id, tool_use_id, tool_name, input (JSON), suggestions (JSON),
 * status, decision or NULL, reason or NULL, timeout seconds. */
void store_perm_insert(struct pg_pool *pg, const char *const params[11],
                       pg_cb cb, void *arg);
/* Resolves a pending request; one row (the request JSON) when it was
 * pending, none otherwise. params: id, decision, reason, decided_by or
 * NULL, deny_message or NULL, updated_input JSON or NULL. */
void store_perm_resolve(struct pg_pool *pg, const char *const params[6],
                        pg_cb cb, void *arg);
/* Stores a rule. params: id, chat_id, tool_name, content or NULL,
 * behavior, created_by. */
void store_rule_insert(struct pg_pool *pg, const char *const params[6],
                       pg_cb cb, void *arg);
/* Rows (tool_name, content, behavior, source) that may decide a request
 * for tool_name in chat_id: the chat's rules (source "chat") and the
 * owner's allowed_tools setting entries (source "user", behavior allow,
 * content parsed from "Tool(content)"). */
void store_rules_for_tool(struct pg_pool *pg, const char *chat_id,
                          const char *tool_name, pg_cb cb, void *arg);

/* ---- API reads (src/store/permissions_read.c) ---- */

/* Rows (json, cursor) of the chat's requests, oldest first (created_at,
 * id), after the cursor (created_at text "|" id, or NULL), at most
 * limit + 1; cursor is the row's key in that form. pending_only filters
 * status = 'pending'. No rows when the chat is not the owner's (or is
 * deleted); one row with both columns NULL when it is but the page is
 * empty, so one statement tells 404 from an empty list. */
void store_perm_list(struct pg_pool *pg, const char *chat_id,
                     const char *owner_id, bool pending_only,
                     const char *cursor, int limit, pg_cb cb, void *arg);
/* One row (json, status) when the request exists in an owned chat. */
void store_perm_get(struct pg_pool *pg, const char *chat_id,
                    const char *owner_id, const char *request_id, pg_cb cb,
                    void *arg);
/* Rows (json, cursor) of the chat's rules, oldest first, paged and with
 * the same rows for a foreign chat or an empty page as requests. */
void store_rules_list(struct pg_pool *pg, const char *chat_id,
                      const char *owner_id, const char *cursor, int limit,
                      pg_cb cb, void *arg);
/* Deletes a rule of an owned chat; PQcmdTuples "1" when it existed. */
void store_rule_delete(struct pg_pool *pg, const char *chat_id,
                       const char *owner_id, const char *rule_id, pg_cb cb,
                       void *arg);

#endif
