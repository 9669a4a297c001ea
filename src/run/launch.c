/* Launch settings from the run's row; see launch.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/buf.h"
#include "corral/crypto.h"
#include "corral/json.h"
#include "corral/mem.h"
#include "corral/settings.h"
#include "corral/store_runs.h"
#include "launch.h"

/* Offered only with allow_background_tools (DESIGN.md §5): a turn they
 * start later would run with nobody's message in flight. */
static const char *const background_tools[] = {
    "CronCreate", "CronDelete", "CronList", "ScheduleWakeup", "RemoteTrigger",
};

static char *join_prompts(const char *user, const char *chat)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, user);
    if (*user && *chat)
        buf_puts(&b, "\n\n");
    buf_puts(&b, chat);
    if (b.len == 0) {
        buf_deinit(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

/* {"mcpServers": <the user's servers>}, or NULL when there are none. */
static char *mcp_config(const char *servers)
{
    struct json_doc *d = NULL;
    if (json_parse(servers, strlen(servers), NULL, &d, NULL) != JSON_OK)
        return NULL;
    int n = json_type(d, 0) == JSON_OBJECT ? json_len(d, 0) : 0;
    json_doc_free(d);
    if (n == 0)
        return NULL;
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "{\"mcpServers\":");
    buf_puts(&b, servers);
    buf_putc(&b, '}');
    return buf_steal(&b, NULL);
}

static void list_add(char ***list, int *n, char *s)
{
    *list = xrealloc(*list, sizeof(**list) * (size_t)(*n + 2));
    (*list)[(*n)++] = s;
    (*list)[*n] = NULL;
}

static char **disallowed_tools(const char *json, bool background_ok)
{
    char **list = NULL;
    int n = 0;
    if (!background_ok)
        for (size_t i = 0; i < ARRAY_SIZE(background_tools); i++)
            list_add(&list, &n, xstrdup(background_tools[i]));
    struct json_doc *d = NULL;
    if (json_parse(json, strlen(json), NULL, &d, NULL) == JSON_OK) {
        for (int i = 0; json_type(d, 0) == JSON_ARRAY && i < json_len(d, 0);
             i++) {
            char *s = json_str_dup(d, json_at(d, 0, i), NULL);
            if (s)
                list_add(&list, &n, s);
        }
        json_doc_free(d);
    }
    if (!list)
        list = xcalloc(1, sizeof(*list));
    return list;
}

static void key_add(struct buf *b, const char *tag, const char *v)
{
    buf_printf(b, "%s:%zu:", tag, v ? strlen(v) : 0);
    if (v)
        buf_puts(b, v);
}

static void compute_key(struct launch *l)
{
    struct buf b;
    uint8_t digest[CRYPTO_SHA256_LEN];
    buf_init(&b);
    key_add(&b, "prompt", l->prompt);
    key_add(&b, "mcp", l->mcp_config);
    for (char **e = l->env; *e; e++)
        key_add(&b, "env", *e);
    for (char **t = l->disallowed; *t; t++)
        key_add(&b, "deny", *t);
    crypto_sha256(b.data ? b.data : "", b.len, digest);
    crypto_zero(b.data, b.cap); /* it held the user's secrets */
    buf_deinit(&b);
    for (int i = 0; i < CRYPTO_SHA256_LEN; i++)
        snprintf(l->key + 2 * i, 3, "%02x", digest[i]);
}

bool launch_load(struct launch *l, const PGresult *res,
                 const char *chat_prompt, const uint8_t key[32],
                 const char **err)
{
    const char *owner = pg_val(res, 0, RUNLOAD_OWNER);
    memset(l, 0, sizeof(*l));
    l->env = settings_env_open(key, owner, pg_val(res, 0, RUNLOAD_ENV));
    if (!l->env) {
        *err = "the user's environment variables cannot be decrypted "
               "(was secret_key changed?)";
        return false;
    }
    l->prompt = join_prompts(pg_val(res, 0, RUNLOAD_USER_PROMPT),
                             chat_prompt ? chat_prompt : "");
    l->mcp_config = mcp_config(pg_val(res, 0, RUNLOAD_MCP));
    l->disallowed = disallowed_tools(
        pg_val(res, 0, RUNLOAD_DISALLOWED),
        strcmp(pg_val(res, 0, RUNLOAD_BACKGROUND), "t") == 0);
    compute_key(l);
    return true;
}

static void free_list(char **list)
{
    for (char **p = list; p && *p; p++)
        free(*p);
    free(list);
}

void launch_free(struct launch *l)
{
    free(l->prompt);
    free(l->mcp_config);
    if (l->env)
        settings_env_free(l->env);
    free_list(l->disallowed);
    memset(l, 0, sizeof(*l));
}
