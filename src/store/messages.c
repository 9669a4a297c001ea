/* Messages (API.md "Messages and runs"), read through their chat so that
 * the chat's owner and deletion scope every statement. */
#include <stdio.h>
#include <string.h>

#include "corral/ids.h"
#include "corral/store.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define TS_US(col)                                                          \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The columns of enum store_message_col. cost_usd goes out as float8,
 * whose text is the shortest exact form ("0.25", not "0.250000"). */
#define MSG_COLS                                                            \
    "m.id, m.chat_id, m.role, m.origin, m.reply_to, m.status, m.content,"   \
    " m.attachments, m.model, m.usage, m.cost_usd::float8 AS cost_usd,"     \
    " m.error, " TS("m.created_at") " AS created, " TS("m.started_at")      \
    " AS started, " TS("m.completed_at") " AS completed,"                   \
    " concat_ws('|', " TS_US("m.created_at") ", m.id) AS cursor"

/* The lateral join yields no row for a chat that is not the caller's, and
 * one all-NULL row for a chat of theirs without (further) messages: one
 * statement tells 404 from an empty page. k1 and k2 carry the order out
 * of the subquery; the caller ignores them. */
#define MSG_LIST_SQL(cmp, dir)                                              \
    "SELECT m.* FROM chats c LEFT JOIN LATERAL (SELECT " MSG_COLS ","       \
    " m.created_at AS k1, m.id AS k2 FROM messages m"                       \
    " WHERE m.chat_id = c.id AND ($3::timestamptz IS NULL"                  \
    " OR (m.created_at, m.id) " cmp " ($3::timestamptz, $4::uuid))"         \
    " ORDER BY m.created_at " dir ", m.id " dir                             \
    " LIMIT $5::int + 1) m ON true"                                         \
    " WHERE c.id = $1 AND c.owner_id = $2 AND c.deleted_at IS NULL"         \
    " ORDER BY m.k1 " dir ", m.k2 " dir

bool store_message_cursor_parse(const char *cursor,
                                struct store_message_key *out)
{
    const char *bar = strchr(cursor, '|');
    if (!bar)
        return false;
    size_t tslen = (size_t)(bar - cursor);
    if (tslen >= sizeof(out->ts))
        return false;
    memcpy(out->ts, cursor, tslen);
    out->ts[tslen] = '\0';
    snprintf(out->id, sizeof(out->id), "%s", bar + 1);
    return store_cursor_ts_valid(out->ts) && strlen(bar + 1) == 36 &&
           ids_is_uuid(out->id);
}

void store_message_list(struct pg_pool *pg, const char *chat_id,
                        const char *owner_id, bool desc,
                        const struct store_message_key *key,
                        const char *limit, pg_cb cb, void *arg)
{
    const char *p[] = {chat_id, owner_id, key ? key->ts : NULL,
                       key ? key->id : NULL, limit};
    pg_query(pg, desc ? MSG_LIST_SQL("<", "DESC") : MSG_LIST_SQL(">", "ASC"),
             5, p, cb, arg);
}

void store_message_get(struct pg_pool *pg, const char *id,
                       const char *chat_id, const char *owner_id, pg_cb cb,
                       void *arg)
{
    const char *p[] = {id, chat_id, owner_id};
    pg_query(pg,
             "SELECT " MSG_COLS " FROM messages m JOIN chats c"
             " ON c.id = m.chat_id WHERE m.id = $1 AND m.chat_id = $2"
             " AND c.owner_id = $3 AND c.deleted_at IS NULL",
             3, p, cb, arg);
}
