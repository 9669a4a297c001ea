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

#endif
