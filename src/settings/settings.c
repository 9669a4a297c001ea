/* settings: the sealing of users' environment variables and the pure
 * checks of PUT /settings (settings.h). Nothing here touches the loop but
 * settings_mcp_command_check, which stats a few local paths. */
#include "corral/settings.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "corral/base64.h"
#include "corral/crypto.h"
#include "corral/json.h"
#include "corral/mem.h"

/* Associated data of one value: user_id "\0" name. A value sealed for
 * one user or one name does not open for another (no swapping of
 * ciphertexts between rows or keys). */
static void env_ad(struct buf *ad, const char *user_id, const char *name)
{
    buf_puts(ad, user_id);
    buf_putc(ad, '\0');
    buf_puts(ad, name);
}

int settings_env_seal(const uint8_t key[32], const char *user_id,
                      const char *name, const char *value, size_t n,
                      struct buf *out)
{
    struct buf ad, sealed;
    buf_init(&ad);
    buf_init(&sealed);
    env_ad(&ad, user_id, name);
    int rc = crypto_aes_gcm_seal_ad(key, ad.data, ad.len, value, n, &sealed);
    if (rc == 0)
        base64_encode(out, sealed.data, sealed.len);
    buf_deinit(&ad);
    buf_deinit(&sealed);
    return rc;
}

/* Opens one env_enc member into "NAME=value" (heap), or NULL. */
static char *env_open_one(const uint8_t key[32], const char *user_id,
                          const char *name, const char *b64)
{
    struct buf raw, ad, plain;
    char *kv = NULL;
    buf_init(&raw);
    buf_init(&ad);
    buf_init(&plain);
    env_ad(&ad, user_id, name);
    if (base64_decode(&raw, b64, strlen(b64)) == 0 &&
        crypto_aes_gcm_open_ad(key, ad.data, ad.len, raw.data, raw.len,
                               &plain) == 0 &&
        !memchr(plain.data, '\0', plain.len)) {
        struct buf b;
        buf_init(&b);
        buf_puts(&b, name);
        buf_putc(&b, '=');
        buf_append(&b, plain.data, plain.len);
        kv = buf_steal(&b, NULL);
    }
    if (plain.data)
        crypto_zero(plain.data, plain.len);
    buf_deinit(&raw);
    buf_deinit(&ad);
    buf_deinit(&plain);
    return kv;
}

char **settings_env_open(const uint8_t key[32], const char *user_id,
                         const char *env_enc_json)
{
    struct json_doc *doc = NULL;
    if (json_parse(env_enc_json, strlen(env_enc_json), &json_default_limits,
                   &doc, NULL) != JSON_OK ||
        json_type(doc, 0) != JSON_OBJECT) {
        json_doc_free(doc);
        return NULL;
    }
    int n = json_len(doc, 0);
    char **env = xcalloc((size_t)n + 1, sizeof(*env));
    for (int i = 0; i < n; i++) {
        int ktok, vtok = json_member(doc, 0, i, &ktok);
        char *name = json_str_dup(doc, ktok, NULL);
        char *b64 = json_str_dup(doc, vtok, NULL);
        if (name && b64 && settings_env_name_valid(name))
            env[i] = env_open_one(key, user_id, name, b64);
        free(name);
        free(b64);
        if (!env[i]) {
            settings_env_free(env);
            json_doc_free(doc);
            return NULL;
        }
    }
    json_doc_free(doc);
    return env;
}

void settings_env_free(char **env)
{
    if (!env)
        return;
    for (char **p = env; *p; p++) {
        crypto_zero(*p, strlen(*p));
        free(*p);
    }
    free(env);
}

bool settings_env_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SETTINGS_ENV_NAME_MAX || isdigit((unsigned char)*name))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(name[i] == '_' || isalnum((unsigned char)name[i])))
            return false;
    return true;
}

/* Names compare without regard to case: "path" or "Ld_Preload" are
 * refused too, so no spelling slips past a consumer that folds case. */
static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool settings_env_name_reserved(const char *name)
{
    /* The CLI's own configuration and the gateway's credentials
     * (ANTHROPIC_, CLAUDE_), the loader (LD_), the CLI's runtime (NODE_
     * would let NODE_OPTIONS load code into the CLI ahead of its
     * permission checks), corrald's config (CORRAL_), locale (LC_) and
     * exported shell functions. */
    static const char *const prefixes[] = {
        "ANTHROPIC_", "CLAUDE_", "LD_", "NODE_", "CORRAL_", "LC_",
        "BASH_FUNC_",
    };
    /* What the sandbox (bwrap --setenv, the shell) or the launch sets,
     * and what redirects the CLI's traffic or its shells. */
    static const char *const names[] = {
        "HOME", "PATH", "LANG", "LANGUAGE", "TERM", "USER", "LOGNAME",
        "SHELL", "TMPDIR", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "BASH_ENV",
        "ENV", "CLAUDECODE", "MAX_THINKING_TOKENS", "HTTP_PROXY",
        "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    };
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
        if (has_prefix_ci(name, prefixes[i]))
            return true;
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

bool settings_tool_rule_valid(const char *s, size_t n)
{
    if (n == 0 || n > 512 || !isalpha((unsigned char)s[0]))
        return false;
    size_t i = 1;
    while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '_' ||
                     s[i] == '-'))
        i++;
    if (i == n)
        return true;
    /* "(content)": at least one byte, closed by the last byte. */
    if (s[i] != '(' || s[n - 1] != ')' || n - i < 3)
        return false;
    for (size_t j = i + 1; j < n - 1; j++)
        if ((unsigned char)s[j] < 0x20 || s[j] == 0x7f)
            return false;
    return true;
}

/* The host path the sandbox shows at an absolute path p, or NULL when p
 * is outside the read-only system binds: /bin, /lib and /lib64 are
 * symlinks into /usr there. */
static char *sandbox_host_path(const char *p)
{
    static const struct { const char *in, *host; } map[] = {
        {"/usr/", "/usr/"},         {"/etc/", "/etc/"},
        {"/bin/", "/usr/bin/"},     {"/lib/", "/usr/lib/"},
        {"/lib64/", "/usr/lib64/"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
        size_t n = strlen(map[i].in);
        if (strncmp(p, map[i].in, n) != 0)
            continue;
        struct buf b;
        buf_init(&b);
        buf_puts(&b, map[i].host);
        buf_puts(&b, p + n);
        return buf_steal(&b, NULL);
    }
    return NULL;
}

static bool executable_file(const char *host_path)
{
    struct stat st;
    return stat(host_path, &st) == 0 && S_ISREG(st.st_mode) &&
           (st.st_mode & 0111) != 0;
}

const char *settings_mcp_command_check(const char *cmd)
{
    size_t n = strlen(cmd);
    if (n == 0 || n > PATH_MAX)
        return "must be 1 to 4096 bytes";
    if (strstr(cmd, "/../") || strstr(cmd, "/./") || strstr(cmd, "//") ||
        (n >= 3 && strcmp(cmd + n - 3, "/..") == 0))
        return "must be a plain path (no . or .. parts)";
    char *host;
    if (cmd[0] == '/') {
        host = sandbox_host_path(cmd);
        if (!host)
            return "is not under the sandbox's system directories "
                   "(/usr, /bin, /lib, /lib64, /etc)";
    } else if (strchr(cmd, '/')) {
        return "must be a bare command name or an absolute path";
    } else {
        /* The sandbox's PATH is /usr/bin:/bin and /bin is /usr/bin. */
        struct buf b;
        buf_init(&b);
        buf_puts(&b, "/usr/bin/");
        buf_puts(&b, cmd);
        host = buf_steal(&b, NULL);
    }
    bool ok = executable_file(host);
    free(host);
    return ok ? NULL : "does not exist in the sandbox (or is not executable)";
}

bool settings_model_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 100 || !(islower((unsigned char)id[0]) ||
                               isdigit((unsigned char)id[0])))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(islower((unsigned char)id[i]) || isdigit((unsigned char)id[i]) ||
              strchr("._:-", id[i])))
            return false;
    return true;
}
