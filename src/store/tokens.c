#include "corral/store.h"

void store_refresh_insert(struct pg_pool *pg, const char *id,
                          const char *user_id, const char *family_id,
                          const char *hash, const char *ttl_s, pg_cb cb,
                          void *arg)
{
    const char *p[] = {id, user_id, family_id, hash, ttl_s};
    pg_query(pg,
             "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash,"
             " expires_at) VALUES ($1, $2, $3, $4,"
             " now() + make_interval(secs => $5::int))",
             5, p, cb, arg);
}

/* The rotation is one statement so two concurrent uses of the same token
 * cannot both succeed: the UPDATE's row lock makes the second see it
 * rotated (and get no row, then be classified as reuse). */
void store_refresh_rotate(struct pg_pool *pg, const char *old_hash,
                          const char *new_id, const char *new_hash,
                          const char *ttl_s, pg_cb cb, void *arg)
{
    const char *p[] = {old_hash, new_id, new_hash, ttl_s};
    pg_query(pg,
             "WITH old AS (UPDATE refresh_tokens SET rotated_at = now()"
             " WHERE token_hash = $1 AND rotated_at IS NULL"
             " AND revoked_at IS NULL AND expires_at > now()"
             " RETURNING user_id, family_id),"
             " fresh AS (INSERT INTO refresh_tokens (id, user_id, family_id,"
             " token_hash, expires_at) SELECT $2, user_id, family_id, $3,"
             " now() + make_interval(secs => $4::int) FROM old"
             " RETURNING user_id, family_id)"
             " SELECT " STORE_USER_COLS ", fresh.family_id"
             " FROM fresh JOIN users u ON u.id = fresh.user_id",
             4, p, cb, arg);
}

void store_refresh_lookup(struct pg_pool *pg, const char *hash, pg_cb cb,
                          void *arg)
{
    const char *p[] = {hash};
    pg_query(pg,
             "SELECT family_id, rotated_at IS NOT NULL AS rotated,"
             " revoked_at IS NOT NULL AS revoked, expires_at <= now() AS"
             " expired FROM refresh_tokens WHERE token_hash = $1",
             1, p, cb, arg);
}

void store_refresh_revoke_family_of(struct pg_pool *pg, const char *hash,
                                    pg_cb cb, void *arg)
{
    const char *p[] = {hash};
    pg_query(pg,
             "UPDATE refresh_tokens SET revoked_at = now()"
             " WHERE family_id = (SELECT family_id FROM refresh_tokens"
             " WHERE token_hash = $1) AND revoked_at IS NULL",
             1, p, cb, arg);
}
