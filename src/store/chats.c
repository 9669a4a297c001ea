/* Chats (API.md "Chats"). Every statement is scoped by the owner and skips
 * soft-deleted chats, so another user's chat and a deleted one look the
 * same to callers: no row. */
#include <stdio.h>
#include <string.h>

#include "corral/ids.h"
#include "corral/store.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
/* Cursor timestamps keep microseconds, the full precision of timestamptz:
 * cut to milliseconds, rows sharing a millisecond would be skipped. */
#define TS_US(col)                                                          \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* Status without a live runtime: the oldest unfinished run's (API.md
 * "Status values"). A subquery, so a whole list stays one statement. */
#define CHAT_STATUS_SQL                                                     \
    "COALESCE((SELECT CASE r.phase WHEN 'queued' THEN 'queued'"             \
    " WHEN 'awaiting_permission' THEN 'awaiting_permission'"                \
    " ELSE 'running' END FROM runs r WHERE r.chat_id = c.id"                \
    " AND r.phase NOT IN ('done', 'failed', 'cancelled')"                   \
    " ORDER BY r.created_at, r.id LIMIT 1), 'idle')"

/* The columns of enum store_chat_col. */
#define CHAT_COLS                                                           \
    "c.id, c.title, c.model, c.permission_mode, c.system_prompt_append, "   \
    "c.pinned, c.archived, " CHAT_STATUS_SQL ", " TS("c.created_at") ", "   \
    TS("c.updated_at") ", " TS("c.last_activity_at") ", c.sandbox_state, "  \
    "concat_ws('|', CASE WHEN c.pinned THEN '1' ELSE '0' END, "             \
    TS_US("c.last_activity_at") ", c.id)"

#define OWNED "c.owner_id = $2 AND c.deleted_at IS NULL"

bool store_cursor_ts_valid(const char *ts)
{
    static const char form[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(ts) != sizeof(form) - 1)
        return false;
    for (size_t i = 0; form[i]; i++) {
        bool digit = ts[i] >= '0' && ts[i] <= '9';
        if (form[i] == 'd' ? !digit : ts[i] != form[i])
            return false;
    }
    return true;
}

bool store_chat_cursor_parse(const char *cursor, struct store_chat_key *out)
{
    const char *bar1 = strchr(cursor, '|');
    const char *bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
    if (!bar2 || bar1 - cursor != 1 || (cursor[0] != '0' && cursor[0] != '1'))
        return false;
    size_t tslen = (size_t)(bar2 - bar1 - 1);
    if (tslen >= sizeof(out->ts))
        return false;
    out->pinned[0] = cursor[0];
    out->pinned[1] = '\0';
    memcpy(out->ts, bar1 + 1, tslen);
    out->ts[tslen] = '\0';
    snprintf(out->id, sizeof(out->id), "%s", bar2 + 1);
    return store_cursor_ts_valid(out->ts) && strlen(bar2 + 1) == 36 &&
           ids_is_uuid(out->id);
}

void store_chat_insert(struct pg_pool *pg, const char *id,
                       const char *owner_id, const char *title,
                       const char *model, const char *permission_mode,
                       const char *prompt, const char *session_id,
                       const char *fallback_model, pg_cb cb, void *arg)
{
    const char *p[] = {id, owner_id, title, model, permission_mode, prompt,
                       session_id, fallback_model};
    /* The owner's default model counts only while it is enabled. */
    pg_query(pg,
             "INSERT INTO chats AS c (id, owner_id, title, model,"
             " permission_mode, system_prompt_append, session_id)"
             " VALUES ($1, $2, $3, coalesce($4::text, (SELECT s.default_model"
             " FROM user_settings s JOIN models m ON m.id = s.default_model"
             " AND m.enabled WHERE s.user_id = $2), $8::text),"
             " coalesce($5::text, (SELECT s.permission_mode FROM user_settings"
             " s WHERE s.user_id = $2), 'ask'), $6, $7) RETURNING " CHAT_COLS,
             8, p, cb, arg);
}

void store_chat_get(struct pg_pool *pg, const char *id, const char *owner_id,
                    pg_cb cb, void *arg)
{
    const char *p[] = {id, owner_id};
    pg_query(pg,
             "SELECT " CHAT_COLS " FROM chats c WHERE c.id = $1 AND " OWNED,
             2, p, cb, arg);
}

/* Keyset paging: the row comparison matches the index order (all columns
 * descending), so each page starts right after the previous one's last
 * row however the table changes in between. */
void store_chat_list(struct pg_pool *pg, const char *owner_id,
                     const char *archived, const struct store_chat_key *key,
                     const char *limit, pg_cb cb, void *arg)
{
    const char *p[] = {owner_id, archived, key ? key->pinned : NULL,
                       key ? key->ts : NULL, key ? key->id : NULL, limit};
    pg_query(pg,
             "SELECT " CHAT_COLS " FROM chats c WHERE c.owner_id = $1"
             " AND c.deleted_at IS NULL AND c.archived = $2::boolean"
             " AND ($3::boolean IS NULL OR (c.pinned, c.last_activity_at,"
             " c.id) < ($3::boolean, $4::timestamptz, $5::uuid))"
             " ORDER BY c.pinned DESC, c.last_activity_at DESC, c.id DESC"
             " LIMIT $6::int + 1",
             6, p, cb, arg);
}

/* The locked subquery o holds the prompt as it was before the update, so
 * the caller learns whether it changed (and must relaunch the CLI). */
void store_chat_update(struct pg_pool *pg, const char *id,
                       const char *owner_id, const char *title,
                       const char *pinned, const char *archived,
                       const char *model, const char *permission_mode,
                       const char *prompt, pg_cb cb, void *arg)
{
    const char *p[] = {id, owner_id, title, pinned, archived, model,
                       permission_mode, prompt};
    pg_query(pg,
             "UPDATE chats c SET title = COALESCE($3, c.title),"
             " pinned = COALESCE($4::boolean, c.pinned),"
             " archived = COALESCE($5::boolean, c.archived),"
             " model = COALESCE($6, c.model),"
             " permission_mode = COALESCE($7, c.permission_mode),"
             " system_prompt_append = COALESCE($8, c.system_prompt_append),"
             " prompt_edited = c.prompt_edited"
             " OR COALESCE($8 <> c.system_prompt_append, false),"
             " updated_at = now()"
             " FROM (SELECT id, system_prompt_append FROM chats c"
             " WHERE c.id = $1 AND " OWNED " FOR UPDATE) o"
             " WHERE c.id = o.id AND c.deleted_at IS NULL"
             " RETURNING " CHAT_COLS ", c.system_prompt_append"
             " IS DISTINCT FROM o.system_prompt_append",
             8, p, cb, arg);
}

void store_chat_delete(struct pg_pool *pg, const char *id,
                       const char *owner_id, pg_cb cb, void *arg)
{
    const char *p[] = {id, owner_id};
    /* The chat's attachments go with it; the answer lists the blobs no
     * other attachment shares (the outer query sees the rows from before
     * the delete, so the deleted ones are excluded by id). */
    pg_query(pg,
             "WITH c AS (UPDATE chats c SET deleted_at = now(),"
             " updated_at = now() WHERE c.id = $1 AND " OWNED
             " RETURNING c.id),"
             " d AS (DELETE FROM attachments a WHERE a.chat_id IN"
             " (SELECT id FROM c) RETURNING a.id, a.sha256)"
             " SELECT c.id, (SELECT string_agg(DISTINCT d.sha256, ',')"
             " FROM d WHERE NOT EXISTS (SELECT 1 FROM attachments x"
             " WHERE x.sha256 = d.sha256 AND x.id NOT IN"
             " (SELECT id FROM d))) FROM c",
             2, p, cb, arg);
}
