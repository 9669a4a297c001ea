/* store/events.c: the SQL of the durable per-chat event log (schema
 * 0002_chats.sql, table events) and the chat check of the stream handler.
 * The bus (src/bus/bus.c) is the only writer of the log. */
#include <stdio.h>

#include "corral/buf.h"
#include "corral/bus.h"
#include "corral/mem.h"

#define EVENT_COLS 5
/* PostgreSQL allows 65535 parameters per statement. */
#define INSERT_MAX_ROWS (65535 / EVENT_COLS)

void store_events_max_seq(struct pg_pool *pg, const char *chat_id, pg_cb cb,
                          void *arg)
{
    const char *params[] = {chat_id};
    pg_query(pg,
             "SELECT coalesce(max(seq), 0) FROM events WHERE chat_id = $1",
             1, params, cb, arg);
}

/* One multi-row VALUES list with numbered parameters (the SQL text holds
 * placeholders only, never data). The join drops the rows of chats that
 * do not exist (deleted meanwhile) instead of failing the foreign key, so
 * one chat's late events do not fail the other chats of the group commit;
 * RETURNING says which chats were stored. */
void store_events_insert(struct pg_pool *pg, int n, const char *const *params,
                         pg_cb cb, void *arg)
{
    struct buf sql;
    buf_init(&sql);
    if (n > INSERT_MAX_ROWS)
        n = INSERT_MAX_ROWS; /* callers batch far fewer; never overflow */
    buf_puts(&sql, "WITH v (chat_id, seq, type, payload, message_id) AS "
                   "(VALUES ");
    for (int i = 0; i < n; i++) {
        int p = i * EVENT_COLS;
        buf_printf(&sql,
                   "%s($%d::uuid, $%d::bigint, $%d::text, $%d::json, "
                   "$%d::uuid)",
                   i ? ", " : "", p + 1, p + 2, p + 3, p + 4, p + 5);
    }
    buf_puts(&sql, "), ins AS (INSERT INTO events "
                   "(chat_id, seq, type, payload, message_id) "
                   "SELECT v.chat_id, v.seq, v.type, v.payload, v.message_id "
                   "FROM v JOIN chats c ON c.id = v.chat_id "
                   "RETURNING events.chat_id) "
                   "SELECT DISTINCT chat_id FROM ins");
    pg_query(pg, buf_cstr(&sql), n * EVENT_COLS, params, cb, arg);
    buf_deinit(&sql);
}

void store_events_range(struct pg_pool *pg, const char *chat_id,
                        const char *after, const char *limit, pg_cb cb,
                        void *arg)
{
    const char *params[] = {chat_id, after, limit};
    pg_query(pg,
             "SELECT seq, type, payload FROM events "
             "WHERE chat_id = $1 AND seq > $2::bigint "
             "ORDER BY seq LIMIT $3::int",
             3, params, cb, arg);
}

void store_events_chat_check(struct pg_pool *pg, const char *chat_id,
                             const char *owner_id, pg_cb cb, void *arg)
{
    const char *params[] = {chat_id, owner_id};
    pg_query(pg,
             "SELECT 1 FROM chats WHERE id = $1 AND owner_id = $2 "
             "AND deleted_at IS NULL",
             2, params, cb, arg);
}
