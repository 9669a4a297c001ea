#include <stdio.h>

#include "corral/store_settings.h"

#define TS(col)                                                             \
    "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* A settings row from s (user_settings, possibly all NULL through a left
 * join) and u (users). Numbers go out as float8 text: valid JSON for the
 * numeric(12, 4) range, without trailing zeros. */
#define SETTINGS_COLS                                                       \
    "s.default_model, s.permission_mode, "                                  \
    "coalesce(s.system_prompt_append, ''), "                                \
    "coalesce((SELECT json_agg(k ORDER BY k COLLATE \"C\")"                 \
    " FROM json_object_keys(s.env_enc) k), '[]'), "                         \
    "coalesce(s.mcp_servers, '{}'), coalesce(s.allowed_tools, '[]'), "      \
    "coalesce(s.disallowed_tools, '[]'), "                                  \
    "coalesce(s.allow_background_tools, false), "                           \
    "s.monthly_budget_usd::float8, u.monthly_budget_cap_usd::float8"

void store_settings_get(struct pg_pool *pg, const char *user_id, pg_cb cb,
                        void *arg)
{
    const char *p[] = {user_id};
    pg_query(pg,
             "SELECT " SETTINGS_COLS " FROM users u"
             " LEFT JOIN user_settings s ON s.user_id = u.id"
             " WHERE u.id = $1",
             1, p, cb, arg);
}

/* Field i of enum settings_field given: the i+1th character of $2. */
#define GIVEN(i) "substr($2, " #i ", 1) = '1'"
#define KEEP(col, i, val)                                                   \
    col " = CASE WHEN " GIVEN(i) " THEN " val " ELSE s." col " END"
#define MODEL_OK                                                            \
    "(NOT " GIVEN(1) " OR $3::text IS NULL OR EXISTS (SELECT 1 FROM"        \
    " models m WHERE m.id = $3::text AND m.enabled))"
#define ENV_MERGED                                                          \
    "((s.env_enc::jsonb - ARRAY(SELECT json_array_elements_text("           \
    "$11::json))) || $12::jsonb)"

/* The env merge runs on the locked row (ON CONFLICT), so concurrent PUTs
 * of different names both land; its count is checked there too. */
void store_settings_put(struct pg_pool *pg, const char *user_id,
                        const struct settings_put *put, pg_cb cb, void *arg)
{
    char mask[SETF_COUNT + 1], max[16];
    for (int i = 0; i < SETF_COUNT; i++)
        mask[i] = put->given[i] ? '1' : '0';
    mask[SETF_COUNT] = '\0';
    snprintf(max, sizeof(max), "%d", put->env_max);
    const char *p[] = {user_id, mask, put->val[SETF_MODEL],
                       put->val[SETF_MODE], put->val[SETF_PROMPT],
                       put->val[SETF_MCP], put->val[SETF_ALLOWED],
                       put->val[SETF_DISALLOWED], put->val[SETF_BACKGROUND],
                       put->val[SETF_BUDGET], put->env_del, put->env_add,
                       max};
    pg_query(pg,
             "WITH s AS (INSERT INTO user_settings AS s (user_id,"
             " default_model, permission_mode, system_prompt_append,"
             " mcp_servers, allowed_tools, disallowed_tools,"
             " allow_background_tools, monthly_budget_usd, env_enc)"
             " SELECT $1, $3::text, $4::text, $5::text, $6::json, $7::json,"
             " $8::json, $9::boolean, $10::numeric, $12::json"
             " WHERE " MODEL_OK
             " ON CONFLICT (user_id) DO UPDATE SET "
             KEEP("default_model", 1, "$3::text") ", "
             KEEP("permission_mode", 2, "$4::text") ", "
             KEEP("system_prompt_append", 3, "$5::text") ", "
             KEEP("mcp_servers", 4, "$6::json") ", "
             KEEP("allowed_tools", 5, "$7::json") ", "
             KEEP("disallowed_tools", 6, "$8::json") ", "
             KEEP("allow_background_tools", 7, "$9::boolean") ", "
             KEEP("monthly_budget_usd", 8, "$10::numeric") ", "
             "env_enc = " ENV_MERGED "::json, updated_at = now()"
             " WHERE (SELECT count(*) FROM jsonb_object_keys(" ENV_MERGED
             ")) <= $13::int RETURNING s.*)"
             " SELECT EXISTS (SELECT 1 FROM s), " MODEL_OK ", " SETTINGS_COLS
             " FROM (SELECT 1) one LEFT JOIN s ON true"
             " LEFT JOIN users u ON u.id = s.user_id",
             13, p, cb, arg);
}

#define MODEL_COLS                                                          \
    "id, display_name, enabled, price_input::float8, price_output::float8," \
    " price_cache_write::float8, price_cache_read::float8"

void store_models_list(struct pg_pool *pg, const char *all,
                       const char *cursor, const char *limit, pg_cb cb,
                       void *arg)
{
    const char *p[] = {all, cursor, limit};
    pg_query(pg,
             "SELECT " MODEL_COLS " FROM models"
             " WHERE ($1::boolean OR enabled)"
             " AND ($2::text IS NULL OR id COLLATE \"C\" > $2::text)"
             " ORDER BY id COLLATE \"C\" LIMIT $3::int + 1",
             3, p, cb, arg);
}

void store_model_upsert(struct pg_pool *pg, const char *id, const char *name,
                        const char *enabled, const char *const prices[4],
                        pg_cb cb, void *arg)
{
    const char *p[] = {id, name, enabled, prices[0], prices[1], prices[2],
                       prices[3]};
    pg_query(pg,
             "INSERT INTO models AS m (id, display_name, enabled,"
             " price_input, price_output, price_cache_write,"
             " price_cache_read) VALUES ($1, coalesce($2::text, $1),"
             " coalesce($3::boolean, true), $4::numeric, $5::numeric,"
             " $6::numeric, $7::numeric)"
             " ON CONFLICT (id) DO UPDATE SET"
             " display_name = coalesce($2::text, m.display_name),"
             " enabled = coalesce($3::boolean, m.enabled),"
             " price_input = EXCLUDED.price_input,"
             " price_output = EXCLUDED.price_output,"
             " price_cache_write = EXCLUDED.price_cache_write,"
             " price_cache_read = EXCLUDED.price_cache_read,"
             " updated_at = now() RETURNING " MODEL_COLS,
             7, p, cb, arg);
}

#define ADMIN_USER_COLS                                                     \
    "u.id, u.email, u.display_name, u.role, u.disabled,"                    \
    " u.monthly_budget_cap_usd::float8, " TS("u.created_at")

/* The cursor is the last user shown; its (created_at, id) is looked up,
 * so the list stays in creation order whatever the ids look like. */
void store_admin_users_list(struct pg_pool *pg, const char *cursor,
                            const char *limit, pg_cb cb, void *arg)
{
    const char *p[] = {cursor, limit};
    pg_query(pg,
             "SELECT " ADMIN_USER_COLS " FROM users u"
             " WHERE $1::uuid IS NULL OR (u.created_at, u.id) >"
             " (SELECT c.created_at, c.id FROM users c WHERE c.id = $1::uuid)"
             " ORDER BY u.created_at, u.id LIMIT $2::int + 1",
             2, p, cb, arg);
}

void store_admin_user_patch(struct pg_pool *pg, const char *id,
                            const char *disabled, const char *role,
                            bool set_cap, const char *cap, pg_cb cb,
                            void *arg)
{
    const char *p[] = {id, disabled, role, set_cap ? "t" : "f", cap};
    pg_query(pg,
             "UPDATE users u SET disabled = coalesce($2::boolean, u.disabled),"
             " role = coalesce($3::text, u.role),"
             " monthly_budget_cap_usd = CASE WHEN $4::boolean THEN"
             " $5::numeric ELSE u.monthly_budget_cap_usd END,"
             " updated_at = now() WHERE u.id = $1 RETURNING " ADMIN_USER_COLS,
             5, p, cb, arg);
}
