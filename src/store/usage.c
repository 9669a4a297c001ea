/* The usage ledger's reads: budgets and the usage report (API.md
 * "Settings, usage, models"). Both scan one user's rows by time through
 * the index usage_ledger_user_time. */
#include "corral/store_usage.h"

void store_budget_state(struct pg_pool *pg, const char *user_id, pg_cb cb,
                        void *arg)
{
    const char *p[] = {user_id};
    pg_query(pg,
             "SELECT trim_scale(limit_usd), trim_scale(spent_usd)"
             " FROM budget_state($1)",
             1, p, cb, arg);
}

/* The grouping set () gives the totals row even over no ledger rows;
 * (k) gives the groups, dropped by HAVING when no grouping is asked
 * (k is then NULL on every row). Keys sort bytewise, whatever the
 * database's collation. */
void store_usage_report(struct pg_pool *pg, const char *user_id,
                        const char *from, const char *to,
                        const char *group_by, pg_cb cb, void *arg)
{
    const char *p[] = {user_id, from, to, group_by};
    pg_query(pg,
             "SELECT l.k, coalesce(sum(l.input_tokens), 0),"
             " coalesce(sum(l.output_tokens), 0),"
             " coalesce(sum(l.cache_creation_input_tokens), 0),"
             " coalesce(sum(l.cache_read_input_tokens), 0),"
             " trim_scale(coalesce(sum(l.cost_usd), 0)),"
             " count(DISTINCT l.message_id), grouping(l.k)"
             " FROM (SELECT l.*, CASE $4::text"
             " WHEN 'day' THEN to_char(l.created_at AT TIME ZONE 'UTC',"
             " 'YYYY-MM-DD') WHEN 'model' THEN l.model"
             " WHEN 'chat' THEN l.chat_id::text END COLLATE \"C\" AS k"
             " FROM usage_ledger l WHERE l.user_id = $1"
             " AND l.created_at >= $2::timestamptz"
             " AND l.created_at < $3::timestamptz) l"
             " GROUP BY GROUPING SETS ((), (l.k))"
             " HAVING EXISTS (SELECT 1 FROM users WHERE id = $1)"
             " AND (grouping(l.k) = 1 OR $4::text IS NOT NULL)"
             " ORDER BY grouping(l.k) DESC, l.k",
             4, p, cb, arg);
}
