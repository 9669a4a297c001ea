/* The API's reads of tool approvals (API.md "Permissions"): a chat's
 * requests and rules, read through the chat so that its owner and
 * deletion scope every statement. The JSON objects are built by
 * PostgreSQL with store_perm.h's macros, so the REST answers, the
 * runtime's UPDATE replies and the events share one shape. */
#include <stdio.h>

#include "corral/store_perm.h"

#define TS_US(col)                                                          \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The keyset condition on a cursor parameter "ts|id" (the handler checked
 * its form; an impossible time still fails with SQLSTATE class 22). */
#define AFTER_CURSOR(alias, param)                                          \
    "(" param "::text IS NULL OR (" alias ".created_at, " alias ".id) > ("  \
    "split_part(" param ", '|', 1)::timestamptz, split_part(" param         \
    ", '|', 2)::uuid))"

/* Both lists join the page laterally to the chat: no row when the chat is
 * not the caller's, one all-NULL row when it is but the page is empty, so
 * one statement tells 404 from an empty list. Columns: json, cursor. */
#define PERM_LIST_SQL                                                       \
    "SELECT x.json, x.cursor FROM chats c LEFT JOIN LATERAL (SELECT "       \
    PERM_REQUEST_JSON_SQL " AS json, concat_ws('|', "                       \
    TS_US("p.created_at") ", p.id) AS cursor, p.created_at AS k1,"          \
    " p.id AS k2 FROM permission_requests p WHERE p.chat_id = c.id"         \
    " AND (NOT $3::boolean OR p.status = 'pending') AND "                   \
    AFTER_CURSOR("p", "$4") " ORDER BY p.created_at, p.id"                  \
    " LIMIT $5::int + 1) x ON true"                                         \
    " WHERE c.id = $1 AND c.owner_id = $2 AND c.deleted_at IS NULL"         \
    " ORDER BY x.k1, x.k2"

#define RULE_LIST_SQL                                                       \
    "SELECT x.json, x.cursor FROM chats c LEFT JOIN LATERAL (SELECT "       \
    PERM_RULE_JSON_SQL " AS json, concat_ws('|', "                          \
    TS_US("r.created_at") ", r.id) AS cursor, r.created_at AS k1,"          \
    " r.id AS k2 FROM permission_rules r WHERE r.chat_id = c.id AND "       \
    AFTER_CURSOR("r", "$3") " ORDER BY r.created_at, r.id"                  \
    " LIMIT $4::int + 1) x ON true"                                         \
    " WHERE c.id = $1 AND c.owner_id = $2 AND c.deleted_at IS NULL"         \
    " ORDER BY x.k1, x.k2"

void store_perm_list(struct pg_pool *pg, const char *chat_id,
                     const char *owner_id, bool pending_only,
                     const char *cursor, int limit, pg_cb cb, void *arg)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {chat_id, owner_id, pending_only ? "true" : "false",
                       cursor, lim};
    pg_query(pg, PERM_LIST_SQL, 5, p, cb, arg);
}

void store_perm_get(struct pg_pool *pg, const char *chat_id,
                    const char *owner_id, const char *request_id, pg_cb cb,
                    void *arg)
{
    const char *p[] = {request_id, chat_id, owner_id};
    pg_query(pg,
             "SELECT " PERM_REQUEST_JSON_SQL ", p.status"
             " FROM permission_requests p JOIN chats c ON c.id = p.chat_id"
             " WHERE p.id = $1 AND p.chat_id = $2 AND c.owner_id = $3"
             " AND c.deleted_at IS NULL",
             3, p, cb, arg);
}

void store_rules_list(struct pg_pool *pg, const char *chat_id,
                      const char *owner_id, const char *cursor, int limit,
                      pg_cb cb, void *arg)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *p[] = {chat_id, owner_id, cursor, lim};
    pg_query(pg, RULE_LIST_SQL, 4, p, cb, arg);
}

void store_rule_delete(struct pg_pool *pg, const char *chat_id,
                       const char *owner_id, const char *rule_id, pg_cb cb,
                       void *arg)
{
    const char *p[] = {rule_id, chat_id, owner_id};
    pg_query(pg,
             "DELETE FROM permission_rules r USING chats c"
             " WHERE r.id = $1 AND r.chat_id = $2 AND c.id = r.chat_id"
             " AND c.owner_id = $3 AND c.deleted_at IS NULL",
             3, p, cb, arg);
}
