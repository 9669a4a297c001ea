/* store_usage: usage ledger reads and budgets (schema 0003). The ledger
 * rows themselves are written with the end of a run (store_run_finish). */
#ifndef CORRAL_STORE_USAGE_H
#define CORRAL_STORE_USAGE_H

#include "corral/pg.h"

/* One row (limit_usd, spent_usd) for the user: limit_usd is the lower of
 * user_settings.monthly_budget_usd and users.monthly_budget_cap_usd (NULL
 * when neither is set); spent_usd is the ledger's cost since the start of
 * the current calendar month (UTC). Both as decimal text. */
enum { BUDGET_LIMIT, BUDGET_SPENT };
void store_budget_state(struct pg_pool *pg, const char *user_id, pg_cb cb,
                        void *arg);

/* The usage report of user_id over [from, to) (timestamps as RFC 3339
 * text): first the totals row, then, when group_by is "day", "model" or
 * "chat" (NULL: none), one row per group in bytewise order of its key
 * (day: YYYY-MM-DD in UTC; model id; chat id). No row at all when the
 * user does not exist. Columns: enum below; the sums and the count are
 * integer text, cost the exact decimal without trailing zeros, is_total
 * "1" on the totals row (its key is NULL). */
enum {
    USAGE_KEY, USAGE_INPUT, USAGE_OUTPUT, USAGE_CACHE_CREATE,
    USAGE_CACHE_READ, USAGE_COST, USAGE_MESSAGES, USAGE_IS_TOTAL
};
void store_usage_report(struct pg_pool *pg, const char *user_id,
                        const char *from, const char *to,
                        const char *group_by, pg_cb cb, void *arg);

#endif
