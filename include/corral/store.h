/* store: every SQL statement of corrald, one function per operation,
 * grouped by entity (src/store/<entity>.c). Each issues one parameterised
 * query on the server's pool and hands the reply to cb exactly once. Row
 * shapes are documented with each function. Timestamps come back as RFC
 * 3339 UTC text. */
#ifndef CORRAL_STORE_H
#define CORRAL_STORE_H

#include "corral/pg.h"

/* The columns of a user as API.md shows it, in this order:
 * id, email, display_name, role, created_at, disabled, password_hash. */
#define STORE_USER_COLS                                                     \
    "u.id, u.email, u.display_name, u.role, "                               \
    "to_char(u.created_at AT TIME ZONE 'UTC', "                             \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), u.disabled, u.password_hash"
enum { USER_ID, USER_EMAIL, USER_NAME, USER_ROLE, USER_CREATED,
       USER_DISABLED, USER_HASH };

/* users.c */
void store_user_by_email(struct pg_pool *pg, const char *email, pg_cb cb,
                         void *arg);
void store_user_by_id(struct pg_pool *pg, const char *id, pg_cb cb,
                      void *arg);
/* Inserts a user; bootstrap "t" claims the first-admin slot (role admin),
 * which fails with 23505 on users_bootstrap_admin if another user took it. */
void store_user_insert(struct pg_pool *pg, const char *id, const char *email,
                       const char *name, const char *hash,
                       const char *bootstrap, pg_cb cb, void *arg);
/* One row with column "n": the number of users. */
void store_user_count(struct pg_pool *pg, pg_cb cb, void *arg);
/* Sets the password and revokes all the user's refresh tokens. */
void store_user_set_password(struct pg_pool *pg, const char *id,
                             const char *hash, pg_cb cb, void *arg);

/* tokens.c: refresh tokens (hashes only). */
void store_refresh_insert(struct pg_pool *pg, const char *id,
                          const char *user_id, const char *family_id,
                          const char *hash, const char *ttl_s, pg_cb cb,
                          void *arg);
/* Rotates: marks the token with old_hash rotated and inserts new_hash in
 * its family, if the token is live. One row (STORE_USER_COLS + family) or
 * none. */
void store_refresh_rotate(struct pg_pool *pg, const char *old_hash,
                          const char *new_id, const char *new_hash,
                          const char *ttl_s, pg_cb cb, void *arg);
/* One row (family_id, rotated, revoked, expired) or none. */
void store_refresh_lookup(struct pg_pool *pg, const char *hash, pg_cb cb,
                          void *arg);
/* Revokes every live token of the family holding hash. */
void store_refresh_revoke_family_of(struct pg_pool *pg, const char *hash,
                                    pg_cb cb, void *arg);

/* api_keys.c */
void store_api_key_insert(struct pg_pool *pg, const char *id,
                          const char *user_id, const char *name,
                          const char *prefix, const char *hash, pg_cb cb,
                          void *arg);
/* Rows (id, name, prefix, created_at, last_used_at), newest first, at
 * most limit + 1 (to tell whether a next page exists), after cursor id. */
void store_api_key_list(struct pg_pool *pg, const char *user_id,
                        const char *cursor, const char *limit, pg_cb cb,
                        void *arg);
void store_api_key_delete(struct pg_pool *pg, const char *id,
                          const char *user_id, pg_cb cb, void *arg);
/* Marks the key used; one row (user id, role, disabled) or none. */
void store_api_key_use(struct pg_pool *pg, const char *hash, pg_cb cb,
                       void *arg);

/* bootstrap.c: blocking, for the command line only (never on the loop).
 * Creates the admin, or promotes and resets an existing account. 0/-1. */
int store_create_admin_sync(const char *conninfo, const char *email,
                            const char *hash);

#endif
