/* store_checkpoints: the SQL of checkpoints (src/store/checkpoints.c).
 * Rows only: the snapshots themselves are files (src/run/checkpoint.c). */
#ifndef CORRAL_STORE_CHECKPOINTS_H
#define CORRAL_STORE_CHECKPOINTS_H

#include "corral/pg.h"

/* Inserts a checkpoint and deletes the chat's oldest beyond retention.
 * params: id, chat_id, message_id, files, bytes, bytes_total, retention.
 * One row: (deleted count, the ids kept separated by spaces). */
void store_checkpoint_insert(struct pg_pool *pg, const char *const p[7],
                             pg_cb cb, void *arg);

/* Newest first, from after cursor (an id or NULL), limit + 1 rows of
 * (id, checkpoint JSON text) when the chat is the owner's; a single row
 * with NULLs when it has none; no row when the chat is not the owner's. */
void store_checkpoint_list(struct pg_pool *pg, const char *chat_id,
                           const char *owner_id, const char *cursor,
                           const char *limit, pg_cb cb, void *arg);

/* One row (checkpoint JSON text) when cid is a checkpoint of the owner's
 * chat. */
void store_checkpoint_get(struct pg_pool *pg, const char *chat_id,
                          const char *owner_id, const char *cid, pg_cb cb,
                          void *arg);

/* After a restore to cid: every message of the chat created after the
 * checkpoint's turn becomes `reverted` (not those of runs still queued),
 * and the later checkpoints are deleted. One row: (count reverted, their
 * ids as a JSON array text or NULL, the ids kept separated by spaces). */
void store_checkpoint_revert(struct pg_pool *pg, const char *chat_id,
                             const char *cid, pg_cb cb, void *arg);

#endif
