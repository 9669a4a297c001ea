#include "corral/store.h"

void store_user_by_email(struct pg_pool *pg, const char *email, pg_cb cb,
                         void *arg)
{
    const char *p[] = {email};
    pg_query(pg, "SELECT " STORE_USER_COLS " FROM users u WHERE u.email = $1",
             1, p, cb, arg);
}

void store_user_by_id(struct pg_pool *pg, const char *id, pg_cb cb,
                      void *arg)
{
    const char *p[] = {id};
    pg_query(pg, "SELECT " STORE_USER_COLS " FROM users u WHERE u.id = $1",
             1, p, cb, arg);
}

void store_user_insert(struct pg_pool *pg, const char *id, const char *email,
                       const char *name, const char *hash,
                       const char *bootstrap, pg_cb cb, void *arg)
{
    const char *p[] = {id, email, name, hash, bootstrap};
    pg_query(pg,
             "INSERT INTO users AS u (id, email, display_name, password_hash,"
             " bootstrap_admin, role) VALUES ($1, $2, $3, $4, $5::boolean,"
             " CASE WHEN $5::boolean THEN 'admin' ELSE 'user' END)"
             " RETURNING " STORE_USER_COLS,
             5, p, cb, arg);
}

void store_user_count(struct pg_pool *pg, pg_cb cb, void *arg)
{
    pg_query(pg, "SELECT count(*) AS n FROM users", 0, NULL, cb, arg);
}

void store_user_set_password(struct pg_pool *pg, const char *id,
                             const char *hash, pg_cb cb, void *arg)
{
    const char *p[] = {id, hash};
    pg_query(pg,
             "WITH revoked AS (UPDATE refresh_tokens SET revoked_at = now()"
             " WHERE user_id = $1 AND revoked_at IS NULL)"
             " UPDATE users SET password_hash = $2, updated_at = now()"
             " WHERE id = $1",
             2, p, cb, arg);
}
