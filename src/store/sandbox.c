/* Sandbox states (see store_sandbox.h). The old state comes back with
 * every change so that the per-state counts of /metrics follow the rows
 * without counting the table again. */
#include <string.h>

#include "corral/store_sandbox.h"

void store_sandbox_state(struct pg_pool *pg, const char *chat_id,
                         const char *state, pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, state};
    /* The subquery locks the row, so the old value is the one replaced. */
    pg_query_patient(pg,
             "UPDATE chats c SET sandbox_state = $2 FROM (SELECT id,"
             " sandbox_state AS old FROM chats WHERE id = $1"
             " AND (deleted_at IS NULL OR $2 = 'none') FOR UPDATE) o"
             " WHERE c.id = o.id RETURNING o.old",
             2, p, cb, arg);
}

void store_sandbox_recover(struct pg_pool *pg, pg_cb cb, void *arg)
{
    /* The outer SELECT sees the rows as before the UPDATE (one snapshot):
     * the changed ones are counted as stopped by hand. */
    pg_query(pg,
             "WITH u AS (UPDATE chats SET sandbox_state = 'stopped'"
             " WHERE sandbox_state IN ('starting', 'running') RETURNING id)"
             " SELECT CASE WHEN c.id IN (SELECT id FROM u) THEN 'stopped'"
             " ELSE c.sandbox_state END AS s, count(*) FROM chats c"
             " WHERE c.deleted_at IS NULL AND c.sandbox_state <> 'none'"
             " GROUP BY 1",
             0, NULL, cb, arg);
}
