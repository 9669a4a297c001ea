/* The monthly budget during a turn (DESIGN.md §5 "Usage and cost"): the
 * chat's gateway meters every upstream answer; once the turn's metered
 * cost reaches what the budget had left when the run started, the
 * gateway refuses further calls (402), the CLI ends the turn and the run
 * fails with budget_exceeded. The guard prices every metered token at the
 * run model's prices (side calls to cheaper models count high); the
 * ledger, written at the end, is exact. Also cross-checks the result's
 * usage against the gateway's metering. Private to src/run. */
#ifndef CORRAL_RUN_BUDGET_H
#define CORRAL_RUN_BUDGET_H

#include <stdbool.h>

#include "chats_int.h"
#include "corral/pg.h"

/* From row 0 of store_run_load. false when the budget is already used up
 * (the run must not start). */
bool budget_load(struct run *run, const PGresult *res);
/* The turn starts on the chat's gateway: meter it for this run. */
void budget_begin_turn(struct run *run);
/* Whether the gateway refused a call of this turn for the budget. */
bool budget_refused(const struct run *run);
/* The turn's usage when the CLI stated none (no result: killed, timed
 * out, exited): what the gateway metered since the turn began, as one
 * row for the run's model. false when nothing was metered. */
bool budget_metered_usage(const struct run *run, struct turn_usage *out);
/* At the result: compares its usage with the gateway's metering of the
 * turn (logged and counted when they differ). */
void budget_cross_check(const struct run *run);

#endif
