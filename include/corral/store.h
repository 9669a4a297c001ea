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
/* Marks the key used (last_used_at, to the minute); one row (user id,
 * role, disabled) or none. */
void store_api_key_use(struct pg_pool *pg, const char *hash, pg_cb cb,
                       void *arg);

/* bootstrap.c: blocking, for the command line only (never on the loop).
 * Creates the admin, or promotes and resets an existing account. 0/-1. */
int store_create_admin_sync(const char *conninfo, const char *email,
                            const char *hash);

/* chats.c: chats of one owner; deleted chats are never returned. Every
 * function is scoped by owner_id and deleted_at IS NULL. Rows that return
 * a chat have the columns of enum store_chat_col, in this order: status is
 * derived from the chat's oldest unfinished run (idle when none), for a
 * chat without a live runtime, and cursor is the row's keyset list key
 * (see store_chat_cursor_parse). */
enum store_chat_col {
    CHAT_ID, CHAT_TITLE, CHAT_MODEL, CHAT_PERMISSION_MODE, CHAT_PROMPT,
    CHAT_PINNED, CHAT_ARCHIVED, CHAT_STATUS, CHAT_CREATED, CHAT_UPDATED,
    CHAT_ACTIVITY, CHAT_SANDBOX_STATE, CHAT_CURSOR,
    CHAT_NCOLS /* extra columns of a statement start here */
};

/* The sort key of a chat list (pinned first, then last_activity_at desc,
 * then id desc), as carried by a cursor: "p|ts|id" with p 0 or 1, ts the
 * activity time in UTC with microseconds (full precision, so no row is
 * skipped or repeated between pages) and id the chat's id. */
struct store_chat_key {
    char pinned[2];  /* "1" or "0" */
    char ts[32];
    char id[37];
};
/* Splits and checks a decoded cursor; false when it is malformed. */
bool store_chat_cursor_parse(const char *cursor, struct store_chat_key *out);
/* True when ts is "YYYY-MM-DDTHH:MM:SS.ffffffZ" (the cursors' form). */
bool store_cursor_ts_valid(const char *ts);

/* Inserts a chat; one chat row. model and permission_mode NULL: the
 * owner's settings (default_model while it is an enabled model), else
 * fallback_model and "ask". */
void store_chat_insert(struct pg_pool *pg, const char *id,
                       const char *owner_id, const char *title,
                       const char *model, const char *permission_mode,
                       const char *prompt, const char *session_id,
                       const char *fallback_model, pg_cb cb, void *arg);
/* One chat row or none. */
void store_chat_get(struct pg_pool *pg, const char *id, const char *owner_id,
                    pg_cb cb, void *arg);
/* Chat rows of archived ("t"/"f") in list order after key (NULL: from the
 * start), at most limit + 1 (to tell whether a next page exists). */
void store_chat_list(struct pg_pool *pg, const char *owner_id,
                     const char *archived, const struct store_chat_key *key,
                     const char *limit, pg_cb cb, void *arg);
/* Changes the given fields (NULL: unchanged; pinned and archived "t"/"f")
 * and bumps updated_at. A prompt different from the stored one also sets
 * prompt_edited. One chat row plus column CHAT_NCOLS, prompt_changed
 * ("t"/"f"), or none. */
void store_chat_update(struct pg_pool *pg, const char *id,
                       const char *owner_id, const char *title,
                       const char *pinned, const char *archived,
                       const char *model, const char *permission_mode,
                       const char *prompt, pg_cb cb, void *arg);
/* Soft delete: sets deleted_at. One row (the chat's id in canonical
 * form) or none. */
void store_chat_delete(struct pg_pool *pg, const char *id,
                       const char *owner_id, pg_cb cb, void *arg);

/* messages.c: messages of a chat, scoped by the chat's owner. Rows that
 * return a message have the columns of enum store_message_col: content,
 * attachments, usage and error are the json columns' text (error NULL when
 * none), cost_usd a JSON number's text, timestamps RFC 3339 or NULL, and
 * cursor the keyset list key "ts|id" (ts as in struct store_chat_key). */
enum store_message_col {
    MSG_ID, MSG_CHAT_ID, MSG_ROLE, MSG_ORIGIN, MSG_REPLY_TO, MSG_STATUS,
    MSG_CONTENT, MSG_ATTACHMENTS, MSG_MODEL, MSG_USAGE, MSG_COST, MSG_ERROR,
    MSG_CREATED, MSG_STARTED, MSG_COMPLETED, MSG_CURSOR, MSG_NCOLS
};

struct store_message_key {
    char ts[32];
    char id[37];
};
/* Splits and checks a decoded cursor; false when it is malformed. */
bool store_message_cursor_parse(const char *cursor,
                                struct store_message_key *out);

/* Messages of the chat by creation (created_at, id), ascending or with
 * desc descending, after key (NULL: from the start), at most limit + 1.
 * No row at all when the chat is not the owner's (or deleted); a chat
 * without messages (after key) gives one row whose columns are all NULL. */
void store_message_list(struct pg_pool *pg, const char *chat_id,
                        const char *owner_id, bool desc,
                        const struct store_message_key *key,
                        const char *limit, pg_cb cb, void *arg);
/* One message row or none (another chat's message, another owner's). */
void store_message_get(struct pg_pool *pg, const char *id,
                       const char *chat_id, const char *owner_id, pg_cb cb,
                       void *arg);

#endif
