/* Attachment rows (include/corral/store_attach.h). */
#include "corral/store_attach.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define TS_US(col)                                                          \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

#define ATT_JSON                                                            \
    "json_build_object('id', a.id, 'filename', a.filename,"                 \
    " 'content_type', a.content_type, 'size', a.size, 'sha256', a.sha256,"  \
    " 'created_at', " TS("a.created_at") ")"

#define OWNED_CHAT                                                          \
    " JOIN chats c ON c.id = a.chat_id AND c.owner_id = $3"                 \
    " AND c.deleted_at IS NULL"

void store_attach_insert(struct pg_pool *pg, const char *const p[7],
                         pg_cb cb, void *arg)
{
    pg_query(pg,
             "WITH a AS (INSERT INTO attachments (id, chat_id, filename,"
             " content_type, size, sha256) SELECT $1, c.id, $4, $5,"
             " $6::bigint, $7 FROM chats c WHERE c.id = $2 AND"
             " c.owner_id = $3 AND c.deleted_at IS NULL RETURNING *)"
             " SELECT " ATT_JSON "::text FROM a",
             7, p, cb, arg);
}

void store_attach_list(struct pg_pool *pg, const char *chat_id,
                       const char *owner_id, const char *cursor_ts,
                       const char *cursor_id, const char *limit, pg_cb cb,
                       void *arg)
{
    const char *p[] = {chat_id, owner_id, cursor_ts, cursor_id, limit};
    pg_query(pg,
             "SELECT x.obj, x.cursor FROM chats c LEFT JOIN LATERAL"
             " (SELECT " ATT_JSON "::text AS obj, concat_ws('|', "
             TS_US("a.created_at") ", a.id) AS cursor,"
             " a.created_at, a.id FROM attachments a WHERE a.chat_id = c.id"
             " AND ($3::timestamptz IS NULL OR (a.created_at, a.id) <"
             " ($3::timestamptz, $4::uuid)) ORDER BY a.created_at DESC,"
             " a.id DESC LIMIT $5::int + 1) x ON true"
             " WHERE c.id = $1 AND c.owner_id = $2 AND c.deleted_at IS NULL"
             " ORDER BY x.created_at DESC, x.id DESC",
             5, p, cb, arg);
}

void store_attach_get(struct pg_pool *pg, const char *id,
                      const char *chat_id, const char *owner_id, pg_cb cb,
                      void *arg)
{
    const char *p[] = {id, chat_id, owner_id};
    pg_query(pg,
             "SELECT a.filename, a.content_type, a.size, a.sha256"
             " FROM attachments a" OWNED_CHAT
             " WHERE a.id = $1 AND a.chat_id = $2",
             3, p, cb, arg);
}

void store_attach_delete(struct pg_pool *pg, const char *id,
                         const char *chat_id, const char *owner_id,
                         pg_cb cb, void *arg)
{
    const char *p[] = {id, chat_id, owner_id};
    /* The outer count reads the snapshot from before the delete, so the
     * row itself is excluded by id. A run in `checkpoint` has its reply
     * completed and its attachments long copied: not busy. */
    pg_query(pg,
             "WITH a AS (SELECT a.id, a.sha256 FROM attachments a" OWNED_CHAT
             " WHERE a.id = $1 AND a.chat_id = $2),"
             " busy AS (SELECT 1 FROM messages m JOIN runs r ON"
             " r.user_message_id = m.id WHERE m.chat_id = $2 AND r.phase"
             " NOT IN ('checkpoint', 'done', 'failed', 'cancelled') AND"
             " m.attachments::jsonb @> jsonb_build_array("
             "jsonb_build_object('id', $1::uuid::text)) LIMIT 1),"
             " d AS (DELETE FROM attachments WHERE id IN (SELECT id FROM a)"
             " AND NOT EXISTS (SELECT 1 FROM busy) RETURNING sha256)"
             " SELECT EXISTS (SELECT 1 FROM busy), (SELECT sha256 FROM d),"
             " (SELECT count(*) FROM attachments x WHERE x.sha256 = a.sha256"
             " AND x.id <> a.id) FROM a",
             3, p, cb, arg);
}

void store_attach_resolve(struct pg_pool *pg, const char *ids_array,
                          const char *chat_id, const char *owner_id,
                          pg_cb cb, void *arg)
{
    const char *p[] = {ids_array, chat_id, owner_id};
    /* The aggregate always yields one row, so the lateral join does too:
     * no row only when the chat is not the owner's. */
    pg_query(pg,
             "SELECT COALESCE(x.objs, '[]')::text, x.n FROM chats c"
             " CROSS JOIN LATERAL (SELECT json_agg(" ATT_JSON
             " ORDER BY u.ord) AS objs, count(a.id) AS n"
             " FROM unnest($1::uuid[]) WITH ORDINALITY u(id, ord)"
             " JOIN attachments a ON a.id = u.id WHERE a.chat_id = c.id) x"
             " WHERE c.id = $2 AND c.owner_id = $3 AND c.deleted_at IS NULL",
             3, p, cb, arg);
}
