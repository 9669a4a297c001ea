/* store_sandbox: the SQL of sandbox lifecycle (src/store/sandbox.c): a
 * chat's stored sandbox state and the counts behind /metrics. */
#ifndef CORRAL_STORE_SANDBOX_H
#define CORRAL_STORE_SANDBOX_H

#include "corral/pg.h"

/* Sets the chat's sandbox_state (a value of API.md's sandbox.state). A
 * live chat answers one row: the state before (old). A deleted chat is
 * left alone (no row), unless state is "none": deletion's own write,
 * which then answers the old state of the deleted row. */
void store_sandbox_state(struct pg_pool *pg, const char *chat_id,
                         const char *state, pg_cb cb, void *arg);

/* Start-up: states `starting` and `running` left by an earlier process
 * become `stopped` (its sandboxes died with it). Rows: (state, count) of
 * the chats not deleted and not `none`, after that change. */
void store_sandbox_recover(struct pg_pool *pg, pg_cb cb, void *arg);

#endif
