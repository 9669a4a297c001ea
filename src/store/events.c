/* store/events.c: the SQL of the durable per-chat event log (schema
 * 0002_chats.sql, table events) and the chat check of the stream handler.
 * The bus (src/bus/bus.c) is the only writer of the log. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "corral/buf.h"
#include "corral/bus.h"
#include "corral/mem.h"

#define EVENT_COLS 5

void store_events_max_seq(struct pg_pool *pg, const char *chat_id, pg_cb cb,
                          void *arg)
{
    const char *params[] = {chat_id};
    pg_query(pg,
             "SELECT coalesce(max(seq), 0) FROM events WHERE chat_id = $1",
             1, params, cb, arg);
}

/* One element of a PostgreSQL array literal: quoted, with \ and "
 * escaped; NULL unquoted. */
static void array_elem(struct buf *b, const char *v, bool first)
{
    if (!first)
        buf_putc(b, ',');
    if (!v) {
        buf_puts(b, "NULL");
        return;
    }
    buf_putc(b, '"');
    for (const char *p = v; *p; p++) {
        size_t run = strcspn(p, "\\\"");
        buf_append(b, p, run);
        p += run;
        if (!*p)
            break;
        buf_putc(b, '\\');
        buf_putc(b, *p);
    }
    buf_putc(b, '"');
}

/* The rows go as five array parameters, one per column, so the statement
 * text is the same for every batch: PostgreSQL parses a fixed, short
 * statement instead of a VALUES list as long as the batch. The join
 * drops the rows of chats that do not exist (deleted meanwhile) instead
 * of failing the foreign key, so one chat's late events do not fail the
 * other chats of the group commit; RETURNING says which chats were
 * stored. */
void store_events_insert(struct pg_pool *pg, int n, const char *const *params,
                         pg_cb cb, void *arg)
{
    struct buf col[EVENT_COLS];
    const char *arrays[EVENT_COLS];
    for (int c = 0; c < EVENT_COLS; c++) {
        buf_init(&col[c]);
        buf_putc(&col[c], '{');
        for (int i = 0; i < n; i++)
            array_elem(&col[c], params[i * EVENT_COLS + c], i == 0);
        buf_putc(&col[c], '}');
        arrays[c] = buf_cstr(&col[c]);
    }
    pg_query_patient(pg,
             "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], "
             "$3::text[], $4::json[], $5::uuid[]) "
             "AS v (chat_id, seq, type, payload, message_id)), "
             "ins AS (INSERT INTO events "
             "(chat_id, seq, type, payload, message_id) "
             "SELECT v.chat_id, v.seq, v.type, v.payload, v.message_id "
             "FROM v JOIN chats c ON c.id = v.chat_id "
             "RETURNING events.chat_id) "
             "SELECT DISTINCT chat_id FROM ins",
             EVENT_COLS, arrays, cb, arg);
    for (int c = 0; c < EVENT_COLS; c++)
        buf_deinit(&col[c]);
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
