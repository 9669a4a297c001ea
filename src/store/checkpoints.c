/* The checkpoints table (include/corral/store_checkpoints.h). Ids are
 * UUIDv7: id order is creation order, and the list's cursor is an id. */
#include "corral/store_checkpoints.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define CKPT_JSON(t)                                                        \
    "json_build_object('id', " t ".id, 'message_id', " t ".message_id,"     \
    " 'created_at', " TS(t ".created_at") ", 'files', " t ".files,"         \
    " 'bytes', " t ".bytes)::text"

void store_checkpoint_insert(struct pg_pool *pg, const char *const p[7],
                             pg_cb cb, void *arg)
{
    /* The DELETE does not see the row being inserted (one snapshot):
     * it keeps retention - 1 of the older ones. */
    pg_query_patient(pg,
             "WITH ins AS (INSERT INTO checkpoints (id, chat_id, message_id,"
             " files, bytes, bytes_total) VALUES ($1, $2, $3, $4, $5, $6)"
             " RETURNING id),"
             " old AS (DELETE FROM checkpoints WHERE id IN (SELECT id FROM"
             " checkpoints WHERE chat_id = $2 ORDER BY id DESC"
             " OFFSET $7::int - 1) RETURNING id)"
             " SELECT (SELECT count(*) FROM old),"
             " concat_ws(' ', (SELECT string_agg(id::text, ' ') FROM ins),"
             " (SELECT string_agg(id::text, ' ') FROM checkpoints WHERE"
             " chat_id = $2 AND id NOT IN (SELECT id FROM old)))",
             7, p, cb, arg);
}

void store_checkpoint_list(struct pg_pool *pg, const char *chat_id,
                           const char *owner_id, const char *cursor,
                           const char *limit, pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, owner_id, cursor, limit};
    pg_query(pg,
             "SELECT cp.id, " CKPT_JSON("cp") " FROM chats ch"
             " LEFT JOIN LATERAL (SELECT * FROM checkpoints k"
             " WHERE k.chat_id = ch.id AND ($3::uuid IS NULL OR k.id <"
             " $3::uuid) ORDER BY k.id DESC LIMIT $4::int + 1) cp ON true"
             " WHERE ch.id = $1 AND ch.owner_id = $2"
             " AND ch.deleted_at IS NULL ORDER BY cp.id DESC",
             4, p, cb, arg);
}

void store_checkpoint_get(struct pg_pool *pg, const char *chat_id,
                          const char *owner_id, const char *cid, pg_cb cb,
                          void *arg)
{
    const char *p[] = {chat_id, owner_id, cid};
    pg_query(pg,
             "SELECT " CKPT_JSON("cp") " FROM checkpoints cp"
             " JOIN chats ch ON ch.id = cp.chat_id WHERE cp.id = $3"
             " AND ch.id = $1 AND ch.owner_id = $2 AND ch.deleted_at IS NULL",
             3, p, cb, arg);
}

void store_checkpoint_revert(struct pg_pool *pg, const char *chat_id,
                             const char *cid, pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, cid};
    pg_query(pg,
             "WITH cp AS (SELECT k.id, m.created_at AS turn_at FROM"
             " checkpoints k JOIN messages m ON m.id = k.message_id"
             " WHERE k.id = $2 AND k.chat_id = $1),"
             " live AS (SELECT user_message_id AS id FROM runs WHERE"
             " chat_id = $1 AND phase NOT IN ('done', 'failed', 'cancelled')"
             " UNION SELECT reply_message_id FROM runs WHERE chat_id = $1"
             " AND phase NOT IN ('done', 'failed', 'cancelled')),"
             " rev AS (UPDATE messages SET status = 'reverted' WHERE"
             " chat_id = $1 AND created_at > (SELECT turn_at FROM cp)"
             " AND status <> 'reverted' AND id NOT IN (SELECT id FROM live"
             " WHERE id IS NOT NULL) RETURNING id, created_at),"
             " del AS (DELETE FROM checkpoints WHERE chat_id = $1 AND"
             " id > (SELECT id FROM cp) RETURNING id)"
             " SELECT (SELECT count(*) FROM rev),"
             " (SELECT json_agg(id ORDER BY created_at) FROM rev)::text,"
             " (SELECT string_agg(id::text, ' ') FROM checkpoints WHERE"
             " chat_id = $1 AND id NOT IN (SELECT id FROM del))",
             2, p, cb, arg);
}
