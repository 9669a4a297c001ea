/* store_attach: attachment rows (schema 0004), scoped by the chat's
 * owner: another user's chat, a deleted one and a missing one all give no
 * row. Objects come back as the API.md attachment JSON text {id,
 * filename, content_type, size, sha256, created_at}. */
#ifndef CORRAL_STORE_ATTACH_H
#define CORRAL_STORE_ATTACH_H

#include "corral/pg.h"

/* Inserts a row when the chat is the owner's. One row (object JSON) or
 * none. p: id, chat_id, owner_id, filename, content_type, size, sha256. */
void store_attach_insert(struct pg_pool *pg, const char *const p[7],
                         pg_cb cb, void *arg);
/* Newest first ((created_at, id) descending) after the cursor "ts|id"
 * (NULL: from the start), at most limit + 1. Columns: object JSON,
 * cursor. No row when the chat is not the owner's; one all-NULL row when
 * it has none. */
void store_attach_list(struct pg_pool *pg, const char *chat_id,
                       const char *owner_id, const char *cursor_ts,
                       const char *cursor_id, const char *limit, pg_cb cb,
                       void *arg);
/* One row (filename, content_type, size, sha256) or none. */
void store_attach_get(struct pg_pool *pg, const char *id,
                      const char *chat_id, const char *owner_id, pg_cb cb,
                      void *arg);
/* Deletes the row unless a queued or running message uses it. One row
 * (busy "t"/"f", sha256 of the deleted row or NULL, rows still sharing
 * that sha256) or none when there is no such attachment. */
void store_attach_delete(struct pg_pool *pg, const char *id,
                         const char *chat_id, const char *owner_id,
                         pg_cb cb, void *arg);
/* The objects of the ids (a PostgreSQL array literal of UUIDs) that
 * belong to the owner's chat, in the order given: one row (JSON array
 * text, count found), or none when the chat is not the owner's. */
void store_attach_resolve(struct pg_pool *pg, const char *ids_array,
                          const char *chat_id, const char *owner_id,
                          pg_cb cb, void *arg);

#endif
