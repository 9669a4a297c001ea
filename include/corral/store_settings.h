/* store_settings: the SQL of user settings, the models table and the
 * admin's user list (schema 0001/0003; API.md "Settings, usage, models",
 * "Admin"). Same contract as store.h: one statement, cb exactly once. */
#ifndef CORRAL_STORE_SETTINGS_H
#define CORRAL_STORE_SETTINGS_H

#include <stdbool.h>

#include "corral/pg.h"

/* A settings row: default_model and permission_mode (NULL: the server's
 * default), system_prompt_append, env_names (JSON array text, sorted
 * bytewise), mcp_servers, allowed_tools, disallowed_tools (JSON text),
 * allow_background_tools ("t"/"f"), monthly_budget_usd and
 * monthly_budget_cap_usd (JSON number text or NULL). A user without a
 * user_settings row gets the defaults. */
enum { SET_MODEL, SET_MODE, SET_PROMPT, SET_ENV_NAMES, SET_MCP, SET_ALLOWED,
       SET_DISALLOWED, SET_BACKGROUND, SET_BUDGET, SET_CAP, SET_NCOLS };

/* One settings row, or none for an unknown user. */
void store_settings_get(struct pg_pool *pg, const char *user_id, pg_cb cb,
                        void *arg);

/* The fields of a PUT, in the order of enum settings_field. Each value is
 * the given one (text; JSON text for the json columns; NULL for SQL NULL)
 * or, when not given, the column's default for a first insert; given[i]
 * says which replace the stored value. env_del is a JSON array of names
 * to delete, env_add a JSON object of sealed values to set. */
enum settings_field {
    SETF_MODEL, SETF_MODE, SETF_PROMPT, SETF_MCP, SETF_ALLOWED,
    SETF_DISALLOWED, SETF_BACKGROUND, SETF_BUDGET, SETF_COUNT
};
struct settings_put {
    const char *val[SETF_COUNT];
    bool given[SETF_COUNT];
    const char *env_del, *env_add;
    int env_max; /* variables allowed after the merge */
};
/* Upserts in one statement. Always one row: column 0 written ("t"/"f"),
 * 1 model_ok ("t": default_model not given, null, or an enabled model),
 * then a settings row from column 2 on (NULLs when nothing was written:
 * model not ok, or more than env_max variables after the merge). */
enum { SETPUT_WRITTEN, SETPUT_MODEL_OK, SETPUT_ROW };
void store_settings_put(struct pg_pool *pg, const char *user_id,
                        const struct settings_put *put, pg_cb cb, void *arg);

/* Model rows: id, display_name, enabled ("t"/"f"), then the prices per
 * million tokens input, output, cache_write, cache_read (JSON numbers). */
enum { MODEL_ID, MODEL_NAME, MODEL_ENABLED, MODEL_P_IN, MODEL_P_OUT,
       MODEL_P_CW, MODEL_P_CR };
/* Models by id (bytewise) after cursor (NULL: from the start), enabled
 * ones only unless all is "t"; at most limit + 1 rows. */
void store_models_list(struct pg_pool *pg, const char *all,
                       const char *cursor, const char *limit, pg_cb cb,
                       void *arg);
/* Creates or replaces a model. name and enabled ("t"/"f") may be NULL:
 * kept when the model exists, else the id and "t". prices: input,
 * output, cache_write, cache_read as decimal text. One model row. */
void store_model_upsert(struct pg_pool *pg, const char *id, const char *name,
                        const char *enabled, const char *const prices[4],
                        pg_cb cb, void *arg);

/* Admin user rows: id, email, display_name, role, disabled ("t"/"f"),
 * monthly_budget_cap_usd (JSON number or NULL), created_at. */
enum { AU_ID, AU_EMAIL, AU_NAME, AU_ROLE, AU_DISABLED, AU_CAP, AU_CREATED };
/* Users oldest first (created_at, id) after the user cursor (NULL: from
 * the start), at most limit + 1 rows. */
void store_admin_users_list(struct pg_pool *pg, const char *cursor,
                            const char *limit, pg_cb cb, void *arg);
/* Changes the given fields of a user (disabled "t"/"f" and role NULL:
 * unchanged; cap changes only when set_cap, NULL clearing it). One admin
 * user row, or none. */
void store_admin_user_patch(struct pg_pool *pg, const char *id,
                            const char *disabled, const char *role,
                            bool set_cap, const char *cap, pg_cb cb,
                            void *arg);

#endif
