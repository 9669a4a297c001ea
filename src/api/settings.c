/* User settings (API.md "Settings, usage, models"): GET and PUT
 * /settings. Every member of a PUT is checked before anything is stored,
 * so a 4xx changes nothing; the write itself is one statement (env merged
 * per name on the locked row, default_model checked against the models
 * table). Env values are sealed here (settings.h) and never leave again:
 * not in answers, problem details or logs. */
#include <stdlib.h>
#include <string.h>

#include "corral/api.h"
#include "corral/crypto.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/settings.h"
#include "corral/store_settings.h"

#define PROMPT_MAX 32768
#define MCP_MAX 16          /* servers */
#define MCP_NAME_MAX 64
#define MCP_ARGS_MAX 64
#define MCP_STR_MAX 4096    /* bytes of a command or an argument */
#define TOOL_RULES_MAX 128  /* entries of allowed_tools, disallowed_tools */
#define BUDGET_MAX 99999999.0 /* numeric(12, 4) */

/* The checked body of a PUT: heap text owned here until the query is
 * queued (pg_query copies its parameters). */
struct put_body {
    struct settings_put put;
    char *model, *mode, *prompt, *budget;
    struct buf mcp, allowed, disallowed, env_del, env_add;
};

static void put_body_clear(struct put_body *b)
{
    free(b->model);
    free(b->mode);
    free(b->prompt);
    free(b->budget);
    buf_deinit(&b->mcp);
    buf_deinit(&b->allowed);
    buf_deinit(&b->disallowed);
    buf_deinit(&b->env_del);
    /* Sealed already, but still the user's secret material. */
    if (b->env_add.data)
        crypto_zero(b->env_add.data, b->env_add.len);
    buf_deinit(&b->env_add);
}

static bool fail422(struct req *r, const char *detail)
{
    req_problem(r, 422, "validation_failed", "%s", detail);
    return false;
}

/* ---- answers ---- */

/* The settings object from the row's columns off..off+SET_NCOLS-1. */
static void write_settings(struct json_w *w, const PGresult *res, int off)
{
    const char *budget = pg_val(res, 0, off + SET_BUDGET);
    const char *cap = pg_val(res, 0, off + SET_CAP);
    const char *raw;
    json_w_obj_begin(w);
    json_w_kstr(w, "default_model", pg_val(res, 0, off + SET_MODEL));
    json_w_kstr(w, "permission_mode", pg_val(res, 0, off + SET_MODE));
    json_w_kstr(w, "system_prompt_append", pg_val(res, 0, off + SET_PROMPT));
    /* JSON produced by PostgreSQL or by our writer: copied verbatim. */
    static const struct { const char *key; int col; } js[] = {
        {"env_names", SET_ENV_NAMES}, {"mcp_servers", SET_MCP},
        {"allowed_tools", SET_ALLOWED}, {"disallowed_tools", SET_DISALLOWED},
    };
    for (size_t i = 0; i < ARRAY_SIZE(js); i++) {
        raw = pg_val(res, 0, off + js[i].col);
        json_w_key(w, js[i].key);
        json_w_raw(w, raw, strlen(raw));
    }
    json_w_kbool(w, "allow_background_tools",
                 strcmp(pg_val(res, 0, off + SET_BACKGROUND), "t") == 0);
    json_w_key(w, "monthly_budget_usd");
    budget ? json_w_raw(w, budget, strlen(budget)) : json_w_null(w);
    json_w_key(w, "monthly_budget_cap_usd");
    cap ? json_w_raw(w, cap, strlen(cap)) : json_w_null(w);
    json_w_obj_end(w);
}

static void reply_settings(struct req *r, const PGresult *res, int off)
{
    struct buf body;
    struct json_w w;
    buf_init(&body);
    json_w_init(&w, &body);
    write_settings(&w, res, off);
    req_reply_json(r, 200, &body);
    buf_deinit(&body);
}

static void on_settings(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (req_store_row(r, reply, "user"))
        reply_settings(r, reply->res, 0);
}

void api_settings_get(struct req *r)
{
    store_settings_get(r->srv->pg, r->auth.user_id, on_settings, r);
}

/* ---- PUT: the members ---- */

/* Members PUT does not take are refused by name, so a typo or a field
 * that belongs elsewhere never passes silently. */
static bool check_members(struct req *r)
{
    static const char *const known[] = {
        "default_model", "permission_mode", "system_prompt_append", "env",
        "mcp_servers", "allowed_tools", "disallowed_tools",
        "allow_background_tools", "monthly_budget_usd",
    };
    if (json_get(r->json, 0, "monthly_budget_cap_usd") >= 0) {
        if (!r->auth.admin)
            req_problem(r, 403, "admin_only", "monthly_budget_cap_usd "
                        "is set by an administrator");
        else
            fail422(r, "monthly_budget_cap_usd is read-only here; use "
                    "PATCH /admin/users/{id}");
        return false;
    }
    if (json_get(r->json, 0, "env_names") >= 0)
        return fail422(r, "env_names is read-only; set env instead");
    return req_json_known_members(r, known, ARRAY_SIZE(known));
}

/* default_model and permission_mode: a string or null (the server's
 * default). */
static bool read_model_mode(struct req *r, struct put_body *b)
{
    struct settings_put *p = &b->put;
    int tok = json_get(r->json, 0, "default_model");
    p->given[SETF_MODEL] = tok >= 0;
    if (!req_json_str(r, "default_model", false, 1, 100, &b->model))
        return false;
    if (b->model && !settings_model_id_valid(b->model))
        return fail422(r, "default_model is not a model id (GET /models)");
    tok = json_get(r->json, 0, "permission_mode");
    p->given[SETF_MODE] = tok >= 0;
    if (!req_json_str(r, "permission_mode", false, 1, 8, &b->mode))
        return false;
    if (b->mode && strcmp(b->mode, "ask") != 0 &&
        strcmp(b->mode, "auto") != 0 && strcmp(b->mode, "plan") != 0)
        return fail422(r, "permission_mode must be one of ask, auto, plan");
    p->val[SETF_MODEL] = b->model;
    p->val[SETF_MODE] = b->mode;
    return true;
}

static bool read_prompt(struct req *r, struct put_body *b)
{
    int tok = json_get(r->json, 0, "system_prompt_append");
    b->put.given[SETF_PROMPT] = tok >= 0;
    b->put.val[SETF_PROMPT] = "";
    if (tok < 0)
        return true;
    if (json_type(r->json, tok) != JSON_STRING)
        return fail422(r, "system_prompt_append must be a string");
    if (!req_json_str(r, "system_prompt_append", true, 0, PROMPT_MAX,
                      &b->prompt))
        return false;
    b->put.val[SETF_PROMPT] = b->prompt;
    return true;
}

static bool read_background_budget(struct req *r, struct put_body *b)
{
    struct settings_put *p = &b->put;
    bool bg = false;
    if (!req_json_bool(r, "allow_background_tools", false, &bg,
                       &p->given[SETF_BACKGROUND]))
        return false;
    p->val[SETF_BACKGROUND] = bg ? "t" : "f";
    int tok = json_get(r->json, 0, "monthly_budget_usd");
    p->given[SETF_BUDGET] = tok >= 0;
    if (tok < 0 || json_type(r->json, tok) == JSON_NULL)
        return true;
    double v;
    if (json_get_double(r->json, tok, &v) < 0 || !(v >= 0 && v <= BUDGET_MAX))
        return fail422(r, "monthly_budget_usd must be null or a number "
                       "from 0 to 99999999");
    /* The JSON number's own text: PostgreSQL's numeric reads it exactly. */
    size_t n;
    const char *raw = json_raw(r->json, tok, &n);
    b->budget = xstrndup(raw, n);
    p->val[SETF_BUDGET] = b->budget;
    return true;
}

/* allowed_tools / disallowed_tools: arrays of tool rules, rewritten
 * through the writer (the stored text is ours). */
static bool read_tools(struct req *r, const char *field, struct buf *out)
{
    int tok = json_get(r->json, 0, field);
    if (tok < 0)
        return true;
    if (json_type(r->json, tok) != JSON_ARRAY ||
        json_len(r->json, tok) > TOOL_RULES_MAX) {
        req_problem(r, 422, "validation_failed", "%s must be an array of at "
                    "most %d tool rules", field, TOOL_RULES_MAX);
        return false;
    }
    struct json_w w;
    json_w_init(&w, out);
    json_w_arr_begin(&w);
    for (int i = 0, n = json_len(r->json, tok); i < n; i++) {
        size_t len;
        char *s = json_str_dup(r->json, json_at(r->json, tok, i), &len);
        if (!s || !settings_tool_rule_valid(s, len)) {
            free(s);
            req_problem(r, 422, "validation_failed", "%s[%d] must be a tool "
                        "rule like \"Bash\" or \"Bash(npm test:*)\"", field,
                        i);
            return false;
        }
        json_w_str(&w, s);
        free(s);
    }
    json_w_arr_end(&w);
    return true;
}

/* One env member: null deletes NAME, a string sets it (sealed now). The
 * problem details name the variable, never its value. */
static bool read_env_one(struct req *r, struct put_body *b, int ktok,
                         int vtok, struct json_w *del, struct json_w *add)
{
    char *name = json_str_dup(r->json, ktok, NULL);
    bool ok = false;
    if (!settings_env_name_valid(name)) {
        fail422(r, "env: names must match [A-Za-z_][A-Za-z0-9_]* (at most "
                "128 characters)");
    } else if (settings_env_name_reserved(name)) {
        req_problem(r, 422, "validation_failed", "env.%s is reserved (set "
                    "by corral or the sandbox)", name);
    } else if (json_type(r->json, vtok) == JSON_NULL) {
        json_w_str(del, name);
        ok = true;
    } else if (json_type(r->json, vtok) != JSON_STRING) {
        req_problem(r, 422, "validation_failed", "env.%s must be a string "
                    "or null", name);
    } else {
        size_t n;
        char *v = json_str_dup(r->json, vtok, &n);
        if (n > SETTINGS_ENV_VALUE_MAX || memchr(v, '\0', n)) {
            req_problem(r, 422, "validation_failed", "env.%s must be at "
                        "most %d bytes without NUL", name,
                        SETTINGS_ENV_VALUE_MAX);
        } else {
            struct buf sealed;
            buf_init(&sealed);
            if (settings_env_seal(r->srv->secret_key, r->auth.user_id, name,
                                  v, n, &sealed) < 0) {
                req_problem(r, 500, "internal_error", "no randomness");
            } else {
                json_w_kstr(add, name, buf_cstr(&sealed));
                ok = true;
            }
            buf_deinit(&sealed);
        }
        crypto_zero(v, n);
        free(v);
    }
    free(name);
    return ok;
}

static bool read_env(struct req *r, struct put_body *b)
{
    struct json_w del, add;
    json_w_init(&del, &b->env_del);
    json_w_init(&add, &b->env_add);
    json_w_arr_begin(&del);
    json_w_obj_begin(&add);
    int tok = json_get(r->json, 0, "env");
    if (tok >= 0) {
        if (json_type(r->json, tok) != JSON_OBJECT ||
            json_len(r->json, tok) > SETTINGS_ENV_MAX)
            return fail422(r, "env must be an object of at most 64 "
                           "variables ({NAME: \"value\" or null})");
        for (int i = 0, n = json_len(r->json, tok); i < n; i++) {
            int ktok, vtok = json_member(r->json, tok, i, &ktok);
            if (!read_env_one(r, b, ktok, vtok, &del, &add))
                return false;
        }
    }
    json_w_arr_end(&del);
    json_w_obj_end(&add);
    b->put.env_del = buf_cstr(&b->env_del);
    b->put.env_add = buf_cstr(&b->env_add);
    b->put.env_max = SETTINGS_ENV_MAX;
    return true;
}

/* ---- mcp_servers ---- */

static bool mcp_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MCP_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || s[i] == '-' || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

/* A string of 1..MCP_STR_MAX bytes without NUL, heap copy or NULL. */
static char *mcp_str(const struct json_doc *d, int tok)
{
    size_t n;
    char *s = json_str_dup(d, tok, &n);
    if (s && (n == 0 || n > MCP_STR_MAX || memchr(s, '\0', n))) {
        free(s);
        return NULL;
    }
    return s;
}

static bool mcp_fail(struct req *r, const char *name, const char *what)
{
    req_problem(r, 422, "validation_failed", "mcp_servers.%s %s", name, what);
    return false;
}

/* Only the members a stdio server has; a url or another type is a
 * remote server, which the sandbox (no network) cannot reach. */
static bool mcp_check_members(struct req *r, const char *name, int tok)
{
    static const char *const known[] = {"command", "args", "env", "type"};
    const struct json_doc *d = r->json;
    if (json_type(d, tok) != JSON_OBJECT)
        return mcp_fail(r, name, "must be an object {command, args?, env?}");
    int t = json_get(d, tok, "type");
    if (json_get(d, tok, "url") >= 0 ||
        (t >= 0 && !json_str_eq(d, t, "stdio")))
        return mcp_fail(r, name, "is not a stdio server: remote servers are "
                        "refused (the sandbox has no network)");
    for (int i = 0, n = json_len(d, tok); i < n; i++) {
        int ktok;
        bool ok = false;
        json_member(d, tok, i, &ktok);
        for (size_t k = 0; k < ARRAY_SIZE(known) && !ok; k++)
            ok = json_str_eq(d, ktok, known[k]);
        if (!ok)
            return mcp_fail(r, name, "has an unknown member (command, args, "
                            "env, type: stdio)");
    }
    return true;
}

static bool mcp_write_args(struct req *r, const char *name, int tok,
                           struct json_w *w)
{
    const struct json_doc *d = r->json;
    if (json_type(d, tok) != JSON_ARRAY || json_len(d, tok) > MCP_ARGS_MAX)
        return mcp_fail(r, name, "args must be an array of at most 64 "
                        "strings");
    json_w_key(w, "args");
    json_w_arr_begin(w);
    for (int i = 0, n = json_len(d, tok); i < n; i++) {
        char *s = mcp_str(d, json_at(d, tok, i));
        if (!s)
            return mcp_fail(r, name, "args must hold strings of 1 to 4096 "
                            "bytes without NUL");
        json_w_str(w, s);
        free(s);
    }
    json_w_arr_end(w);
    return true;
}

static bool mcp_write_env(struct req *r, const char *name, int tok,
                          struct json_w *w)
{
    const struct json_doc *d = r->json;
    if (json_type(d, tok) != JSON_OBJECT ||
        json_len(d, tok) > SETTINGS_ENV_MAX)
        return mcp_fail(r, name, "env must be an object of at most 64 "
                        "strings");
    json_w_key(w, "env");
    json_w_obj_begin(w);
    for (int i = 0, n = json_len(d, tok); i < n; i++) {
        int ktok, vtok = json_member(d, tok, i, &ktok);
        char *k = json_str_dup(d, ktok, NULL);
        char *v = mcp_str(d, vtok);
        bool ok = settings_env_name_valid(k) && v;
        if (ok)
            json_w_kstr(w, k, v);
        free(k);
        free(v);
        if (!ok)
            return mcp_fail(r, name, "env must map variable names to "
                            "strings of 1 to 4096 bytes");
    }
    json_w_obj_end(w);
    return true;
}

static bool mcp_write_server(struct req *r, const char *name, int tok,
                             struct json_w *w)
{
    const struct json_doc *d = r->json;
    if (!mcp_check_members(r, name, tok))
        return false;
    char *cmd = mcp_str(d, json_get(d, tok, "command"));
    if (!cmd)
        return mcp_fail(r, name, "command must be a string of 1 to 4096 "
                        "bytes");
    const char *why = settings_mcp_command_check(cmd);
    if (why) {
        free(cmd);
        req_problem(r, 422, "validation_failed", "mcp_servers.%s.command %s",
                    name, why);
        return false;
    }
    json_w_key(w, name);
    json_w_obj_begin(w);
    json_w_kstr(w, "command", cmd);
    free(cmd);
    int args = json_get(d, tok, "args"), env = json_get(d, tok, "env");
    if ((args >= 0 && !mcp_write_args(r, name, args, w)) ||
        (env >= 0 && !mcp_write_env(r, name, env, w)))
        return false;
    json_w_obj_end(w);
    return true;
}

static bool read_mcp(struct req *r, struct put_body *b)
{
    int tok = json_get(r->json, 0, "mcp_servers");
    b->put.given[SETF_MCP] = tok >= 0;
    b->put.val[SETF_MCP] = "{}";
    if (tok < 0)
        return true;
    if (json_type(r->json, tok) != JSON_OBJECT ||
        json_len(r->json, tok) > MCP_MAX)
        return fail422(r, "mcp_servers must be an object of at most 16 "
                       "servers ({name: {command, args?, env?}})");
    struct json_w w;
    json_w_init(&w, &b->mcp);
    json_w_obj_begin(&w);
    for (int i = 0, n = json_len(r->json, tok); i < n; i++) {
        int ktok, vtok = json_member(r->json, tok, i, &ktok);
        char *name = json_str_dup(r->json, ktok, NULL);
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) {
            int other;
            json_member(r->json, tok, j, &other);
            dup = json_str_eq(r->json, other, name);
        }
        bool ok = !dup && mcp_name_valid(name);
        if (!ok)
            fail422(r, "mcp_servers: names must be unique, 1 to 64 of "
                    "A-Z a-z 0-9 _ -");
        else
            ok = mcp_write_server(r, name, vtok, &w);
        free(name);
        if (!ok)
            return false;
    }
    json_w_obj_end(&w);
    b->put.val[SETF_MCP] = buf_cstr(&b->mcp);
    return true;
}

/* ---- PUT ---- */

static void on_settings_put(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    if (reply->status != PG_OK) {
        req_store_error(r, reply->status, reply->errmsg);
        return;
    }
    const PGresult *res = reply->res;
    if (strcmp(pg_val(res, 0, SETPUT_WRITTEN), "t") == 0)
        reply_settings(r, res, SETPUT_ROW);
    else if (strcmp(pg_val(res, 0, SETPUT_MODEL_OK), "t") != 0)
        fail422(r, "default_model must name an enabled model (GET /models)");
    else
        fail422(r, "env: at most 64 variables per user");
}

static bool read_put(struct req *r, struct put_body *b)
{
    if (!check_members(r) || !read_model_mode(r, b) || !read_prompt(r, b) ||
        !read_background_budget(r, b) || !read_mcp(r, b))
        return false;
    b->put.given[SETF_ALLOWED] = json_get(r->json, 0, "allowed_tools") >= 0;
    b->put.given[SETF_DISALLOWED] =
        json_get(r->json, 0, "disallowed_tools") >= 0;
    if (!read_tools(r, "allowed_tools", &b->allowed) ||
        !read_tools(r, "disallowed_tools", &b->disallowed))
        return false;
    b->put.val[SETF_ALLOWED] = b->allowed.len ? buf_cstr(&b->allowed) : "[]";
    b->put.val[SETF_DISALLOWED] =
        b->disallowed.len ? buf_cstr(&b->disallowed) : "[]";
    /* Last: sealing costs the most and needs every other check passed. */
    return read_env(r, b);
}

void api_settings_put(struct req *r)
{
    struct put_body b;
    memset(&b, 0, sizeof(b));
    buf_init(&b.mcp);
    buf_init(&b.allowed);
    buf_init(&b.disallowed);
    buf_init(&b.env_del);
    buf_init(&b.env_add);
    if (read_put(r, &b))
        store_settings_put(r->srv->pg, r->auth.user_id, &b.put,
                           on_settings_put, r);
    put_body_clear(&b); /* pg_query copied the parameters */
}
