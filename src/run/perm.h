/* Tool approvals of a run (DESIGN.md §5, API.md "Permissions"): each
 * can_use_tool request of the CLI is decided by a rule, by mode `auto`,
 * or waits for the user (AWAITING_PERMISSION) until answered, expired,
 * withdrawn by the CLI or ended with its run. Every request is stored
 * (the audit record) and published. Private to src/run. */
#ifndef CORRAL_RUN_PERM_H
#define CORRAL_RUN_PERM_H

#include "chats_int.h"
#include "corral/json.h"

struct perm_req;

/* A can_use_tool control request (request = its `request` object). */
void perm_on_request(struct chat_rt *rt, const struct json_doc *d,
                     const char *cli_id, int request);
/* The CLI's control_cancel_request for one of its requests. */
void perm_on_cancel(struct chat_rt *rt, const char *cli_id);
/* The run is being interrupted or is ending: every undecided request is
 * denied with reason (`interrupt` or `cli_cancelled`) and nothing is sent
 * to the CLI (it withdraws them itself, or is gone). */
void perm_end_run(struct run *run, const char *reason);

/* Shutdown, after every database callback has fired: lets go of the
 * run's requests whatever their state (their rows stay as they are;
 * chats_recover resolves pending ones at the next start). */
void perm_drop_all(struct run *run);

#endif
