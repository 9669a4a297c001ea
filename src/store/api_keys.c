#include "corral/store.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

void store_api_key_insert(struct pg_pool *pg, const char *id,
                          const char *user_id, const char *name,
                          const char *prefix, const char *hash, pg_cb cb,
                          void *arg)
{
    const char *p[] = {id, user_id, name, prefix, hash};
    pg_query(pg,
             "INSERT INTO api_keys (id, user_id, name, prefix, key_hash)"
             " VALUES ($1, $2, $3, $4, $5) RETURNING id, name, prefix, "
             TS("created_at"),
             5, p, cb, arg);
}

/* Ids are UUIDv7, so id order is creation order and the cursor is the
 * last id shown. */
void store_api_key_list(struct pg_pool *pg, const char *user_id,
                        const char *cursor, const char *limit, pg_cb cb,
                        void *arg)
{
    const char *p[] = {user_id, cursor, limit};
    pg_query(pg,
             "SELECT id, name, prefix, " TS("created_at") ", "
             TS("last_used_at") " FROM api_keys WHERE user_id = $1"
             " AND ($2::uuid IS NULL OR id < $2::uuid)"
             " ORDER BY id DESC LIMIT $3::int + 1",
             3, p, cb, arg);
}

void store_api_key_delete(struct pg_pool *pg, const char *id,
                          const char *user_id, pg_cb cb, void *arg)
{
    const char *p[] = {id, user_id};
    pg_query(pg, "DELETE FROM api_keys WHERE id = $1 AND user_id = $2", 2, p,
             cb, arg);
}

void store_api_key_use(struct pg_pool *pg, const char *hash, pg_cb cb,
                       void *arg)
{
    const char *p[] = {hash};
    pg_query(pg,
             "WITH k AS (SELECT id, user_id, last_used_at FROM api_keys"
             " WHERE key_hash = $1),"
             /* A row write per request would dominate an API key's cost
              * (WAL, dead tuples): last_used_at is kept to the minute. */
             " w AS (UPDATE api_keys SET last_used_at = now()"
             " WHERE id = (SELECT id FROM k) AND (last_used_at IS NULL"
             " OR last_used_at < now() - interval '1 minute'))"
             " SELECT u.id, u.role, u.disabled FROM k"
             " JOIN users u ON u.id = k.user_id",
             1, p, cb, arg);
}
