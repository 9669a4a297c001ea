/* Table-driven configuration: one row per key names its type, field,
 * default and bounds, so the file parser, the environment overrides,
 * validation and --check-config all walk the same table. */
#include "corral/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "corral/mem.h"

enum opt_type { OPT_STR, OPT_INT, OPT_INT64, OPT_DOUBLE, OPT_BOOL, OPT_LISTEN };

struct opt {
    const char *key;
    enum opt_type type;
    size_t off;
    const char *def; /* NULL: unset */
    double min, max; /* numeric bounds, inclusive */
    bool secret;     /* printed as (set) */
};

#define F(field) offsetof(struct config, field)

static const struct opt opts[] = {
    {"listen", OPT_LISTEN, 0, "127.0.0.1:8080", 0, 0, false},
    {"database_url", OPT_STR, F(database_url), NULL, 0, 0, true},
    {"redis_url", OPT_STR, F(redis_url), NULL, 0, 0, true},
    {"data_dir", OPT_STR, F(data_dir), "var", 0, 0, false},
    {"schema_dir", OPT_STR, F(schema_dir), "schema", 0, 0, false},
    {"user", OPT_STR, F(user), "corral", 0, 0, false},
    {"public_url", OPT_STR, F(public_url), NULL, 0, 0, false},
    {"model_upstream_url", OPT_STR, F(model_upstream_url),
     "https://api.anthropic.com", 0, 0, false},
    {"model_api_key", OPT_STR, F(model_api_key), NULL, 0, 0, true},
    {"cli_path", OPT_STR, F(cli_path), NULL, 0, 0, false},
    {"sandbox", OPT_STR, F(sandbox), "local", 0, 0, false},
    {"jwt_secret", OPT_STR, F(jwt_secret), NULL, 0, 0, true},
    {"secret_key", OPT_STR, F(secret_key), NULL, 0, 0, true},
    {"log_file", OPT_STR, F(log_file), NULL, 0, 0, false},
    {"log_level", OPT_STR, F(log_level), "info", 0, 0, false},
    {"pg_pool_size", OPT_INT, F(pg_pool_size), "4", 1, 64, false},
    {"pg_max_waiting", OPT_INT, F(pg_max_waiting), "10000", 1, 1e6, false},
    {"pg_connect_timeout_ms", OPT_INT, F(pg_connect_timeout_ms), "3000",
     100, 600000, false},
    {"pg_queue_timeout_ms", OPT_INT, F(pg_queue_timeout_ms), "5000", 10,
     600000, false},
    {"pg_query_timeout_ms", OPT_INT, F(pg_query_timeout_ms), "30000", 0,
     3600000, false},
    {"max_body_bytes", OPT_INT64, F(max_body_bytes), "1048576", 1024,
     1099511627776.0, false},
    {"attachment_max_bytes", OPT_INT64, F(attachment_max_bytes), "26214400",
     1, 1099511627776.0, false},
    {"workspace_put_max_bytes", OPT_INT64, F(workspace_put_max_bytes),
     "104857600", 1, 1099511627776.0, false},
    {"json_max_depth", OPT_INT, F(json_max_depth), "32", 2, 64, false},
    {"json_max_tokens", OPT_INT, F(json_max_tokens), "65536", 16, 1 << 24,
     false},
    {"header_timeout_ms", OPT_INT, F(header_timeout_ms), "10000", 50,
     600000, false},
    {"keepalive_timeout_ms", OPT_INT, F(keepalive_timeout_ms), "60000", 50,
     3600000, false},
    {"max_connections", OPT_INT, F(max_connections), "16000", 16, 1 << 20,
     false},
    {"shutdown_grace_ms", OPT_INT, F(shutdown_grace_ms), "10000", 0,
     600000, false},
    {"cors_origins", OPT_STR, F(cors_origins), NULL, 0, 0, false},
    {"access_token_ttl", OPT_INT, F(access_token_ttl), "900", 10, 86400,
     false},
    {"refresh_token_ttl", OPT_INT, F(refresh_token_ttl), "2592000", 60,
     31536000, false},
    {"pbkdf2_iterations", OPT_INT, F(pbkdf2_iterations), "600000", 1000,
     10000000, false},
    {"pbkdf2_cpu_share", OPT_DOUBLE, F(pbkdf2_cpu_share), "0.25", 0.01, 1,
     false},
    {"hash_queue_max", OPT_INT, F(hash_queue_max), "64", 1, 100000, false},
    {"hash_queue_max_wait_ms", OPT_INT, F(hash_queue_max_wait_ms), "10000", 100,
     3600000, false},
    {"min_password_length", OPT_INT, F(min_password_length), "8", 1, 1024,
     false},
    {"rate_auth_ip_per_min", OPT_INT, F(rate_auth_ip_per_min), "60", 1,
     1000000, false},
    {"rate_auth_account_per_min", OPT_INT, F(rate_auth_account_per_min),
     "10", 1, 1000000, false},
    {"trust_proxy", OPT_BOOL, F(trust_proxy), "false", 0, 0, false},
    {"bench_publish", OPT_BOOL, F(bench_publish), "false", 0, 0, false},
    {"default_model", OPT_STR, F(default_model), "claude-sonnet-4-5", 0, 0,
     false},
    {"cli_max_retries", OPT_INT, F(cli_max_retries), "2", 0, 20, false},
    {"cli_max_line_bytes", OPT_INT64, F(cli_max_line_bytes), "67108864",
     65536, 1073741824.0, false},
    {"cli_idle_timeout_s", OPT_INT, F(cli_idle_timeout_s), "600", 1, 86400,
     false},
    {"child_nice", OPT_INT, F(child_nice), "10", 0, 20, false},
    {"cli_max_live", OPT_INT, F(cli_max_live), "0", 0, 1000000, false},
    {"cli_close_grace_ms", OPT_INT, F(cli_close_grace_ms), "5000", 10,
     600000, false},
    {"interrupt_grace_ms", OPT_INT, F(interrupt_grace_ms), "5000", 10,
     600000, false},
    {"cli_launch_timeout_ms", OPT_INT, F(cli_launch_timeout_ms), "60000",
     100, 600000, false},
    {"turn_timeout_ms", OPT_INT, F(turn_timeout_ms), "1800000", 100,
     86400000, false},
    {"auth_cache_ttl_ms", OPT_INT, F(auth_cache_ttl_ms), "5000", 0,
     3600000, false},
    {"permission_timeout_s", OPT_INT, F(permission_timeout_s), "300", 1,
     86400, false},
    {"sandbox_prepare_timeout_ms", OPT_INT, F(sandbox_prepare_timeout_ms),
     "30000", 100, 600000, false},
    {"max_queued_messages", OPT_INT, F(max_queued_messages), "100", 1,
     100000, false},
    {"sandbox_mem_mb", OPT_INT, F(sandbox_mem_mb), "4096", 256, 1048576,
     false},
    {"sandbox_nproc", OPT_INT, F(sandbox_nproc), "256", 8, 100000, false},
    {"sandbox_fsize_mb", OPT_INT, F(sandbox_fsize_mb), "1024", 1, 1048576,
     false},
    {"sandbox_cpu_s", OPT_INT, F(sandbox_cpu_s), "0", 0, 31536000, false},
    {"sandbox_starts_max", OPT_INT, F(sandbox_starts_max), "8", 1, 1024,
     false},
    {"sandbox_init_path", OPT_STR, F(sandbox_init_path), NULL, 0, 0, false},
    {"snapshot_path", OPT_STR, F(snapshot_path), NULL, 0, 0, false},
    {"checkpoint_timeout_ms", OPT_INT, F(checkpoint_timeout_ms), "120000",
     100, 3600000, false},
    {"checkpoint_retention", OPT_INT, F(checkpoint_retention), "20", 1,
     10000, false},
    {"sandbox_idle_timeout_s", OPT_INT, F(sandbox_idle_timeout_s), "900", 1,
     604800, false},
    {"workspace_quota_mb", OPT_INT, F(workspace_quota_mb), "5120", 0,
     1048576 * 64, false},
    {"quota_check_interval_s", OPT_INT, F(quota_check_interval_s), "10", 1,
     3600, false},
    {"event_batch_delay_ms", OPT_INT, F(event_batch_delay_ms), "5", 0, 1000,
     false},
    {"event_batch_max", OPT_INT, F(event_batch_max), "512", 1, 100000,
     false},
    {"event_batch_eager", OPT_INT, F(event_batch_eager), "64", 0, 100000,
     false},
    {"sse_heartbeat_s", OPT_INT, F(sse_heartbeat_s), "15", 1, 3600, false},
    {"sse_max_pending_bytes", OPT_INT64, F(sse_max_pending_bytes), "4194304",
     65536, 1073741824.0, false},
    {"bus_stream_maxlen", OPT_INT, F(bus_stream_maxlen), "10000", 100,
     10000000, false},
    {"bus_ring_total_bytes", OPT_INT64, F(bus_ring_total_bytes), "67108864",
     0, 68719476736.0, false},
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const struct opt *find_opt(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++)
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

static int parse_listen(struct config *cfg, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v)
        return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    const char *host = v;
    size_t hlen = (size_t)(colon - v);
    if (host[0] == '[' && hlen >= 2 && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    free(cfg->listen_host);
    cfg->listen_host = xstrndup(host, hlen);
    cfg->listen_port = (uint16_t)port;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcmp(v, yes[i]) == 0)
            return *out = true, 0;
        if (strcmp(v, no[i]) == 0)
            return *out = false, 0;
    }
    return -1;
}

static int parse_number(const struct opt *o, const char *v, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d < o->min || d > o->max)
        return -1;
    if (o->type != OPT_DOUBLE && d != floor(d))
        return -1;
    *out = d;
    return 0;
}

static int apply_opt(struct config *cfg, const struct opt *o, const char *v)
{
    char *field = (char *)cfg + o->off;
    double d;
    switch (o->type) {
    case OPT_LISTEN:
        return parse_listen(cfg, v);
    case OPT_STR: {
        char **s = (char **)(void *)field;
        free(*s);
        *s = *v ? xstrdup(v) : NULL; /* an empty value unsets */
        return 0;
    }
    case OPT_BOOL:
        return parse_bool(v, (bool *)(void *)field);
    case OPT_INT:
        if (parse_number(o, v, &d) < 0)
            return -1;
        *(int *)(void *)field = (int)d;
        return 0;
    case OPT_INT64:
        if (parse_number(o, v, &d) < 0)
            return -1;
        *(int64_t *)(void *)field = (int64_t)d;
        return 0;
    case OPT_DOUBLE:
        if (parse_number(o, v, &d) < 0)
            return -1;
        *(double *)(void *)field = d;
        return 0;
    }
    return -1;
}

int config_set(struct config *cfg, const char *key, const char *value,
               char *err, size_t errlen)
{
    const struct opt *o = find_opt(key);
    if (!o) {
        set_err(err, errlen, "unknown setting '%s'", key);
        return -1;
    }
    if (apply_opt(cfg, o, value) < 0) {
        set_err(err, errlen, "invalid value for '%s': '%s'", key, value);
        return -1;
    }
    return 0;
}

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++)
        if (opts[i].def && apply_opt(cfg, &opts[i], opts[i].def) < 0)
            abort(); /* a bad default is a programming error */
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Strips one pair of double quotes; a quoted value keeps its '#'. */
static char *unquote(char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v[n - 1] = '\0';
        return v + 1;
    }
    char *hash = strstr(v, " #");
    if (hash)
        *hash = '\0';
    return trim(v);
}

static int load_line(struct config *cfg, char *line, const char *path,
                     int lineno, char *err, size_t errlen)
{
    char *s = trim(line);
    if (!*s || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq) {
        snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
        return -1;
    }
    *eq = '\0';
    char *key = trim(s);
    char *value = unquote(trim(eq + 1));
    char msg[256];
    if (config_set(cfg, key, value, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
        return -1;
    }
    return 0;
}

static int load_file(struct config *cfg, const char *path, char *err,
                     size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), fp)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(fp)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        rc = load_line(cfg, line, path, lineno, err, errlen);
    }
    fclose(fp);
    return rc;
}

static int load_env(struct config *cfg, char *err, size_t errlen)
{
    char name[96];
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        size_t n = (size_t)snprintf(name, sizeof(name), "CORRAL_%s",
                                    opts[i].key);
        for (size_t j = 7; j < n; j++)
            name[j] = (char)toupper((unsigned char)name[j]);
        const char *v = getenv(name);
        if (!v && strcmp(opts[i].key, "model_api_key") == 0)
            v = getenv("ANTHROPIC_API_KEY");
        if (v && apply_opt(cfg, &opts[i], v) < 0) {
            set_err(err, errlen, "invalid value in %s: '%s'", name, v);
            return -1;
        }
    }
    return 0;
}

int config_load(struct config *cfg, const char *path, char *err,
                size_t errlen)
{
    if (path && load_file(cfg, path, err, errlen) < 0)
        return -1;
    if (load_env(cfg, err, errlen) < 0)
        return -1;
    return config_validate(cfg, err, errlen);
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
    if (strcmp(cfg->sandbox, "local") != 0 && strcmp(cfg->sandbox, "e2b")) {
        set_err(err, errlen, "sandbox must be 'local' or 'e2b', not '%s'",
                cfg->sandbox);
        return -1;
    }
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    bool level_ok = false;
    for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
        level_ok |= strcmp(cfg->log_level, levels[i]) == 0;
    if (!level_ok) {
        set_err(err, errlen, "log_level must be debug, info, warn or error");
        return -1;
    }
    if (cfg->jwt_secret && strlen(cfg->jwt_secret) < 32) {
        set_err(err, errlen, "jwt_secret must be at least 32 characters");
        return -1;
    }
    if (cfg->secret_key && strlen(cfg->secret_key) != 64) {
        set_err(err, errlen, "secret_key must be 64 hex digits (32 bytes)");
        return -1;
    }
    return 0;
}

static void print_value(const struct config *cfg, const struct opt *o,
                        FILE *out)
{
    const char *field = (const char *)cfg + o->off;
    switch (o->type) {
    case OPT_LISTEN:
        fprintf(out, "%s:%u", cfg->listen_host, cfg->listen_port);
        break;
    case OPT_STR: {
        const char *s = *(char *const *)(const void *)field;
        fputs(!s ? "" : o->secret ? "(set)" : s, out);
        break;
    }
    case OPT_BOOL:
        fputs(*(const bool *)(const void *)field ? "true" : "false", out);
        break;
    case OPT_INT:
        fprintf(out, "%d", *(const int *)(const void *)field);
        break;
    case OPT_INT64:
        fprintf(out, "%lld", (long long)*(const int64_t *)(const void *)field);
        break;
    case OPT_DOUBLE:
        fprintf(out, "%g", *(const double *)(const void *)field);
        break;
    }
}

void config_print(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        fprintf(out, "%s = ", opts[i].key);
        print_value(cfg, &opts[i], out);
        fputc('\n', out);
    }
}

void config_deinit(struct config *cfg)
{
    free(cfg->listen_host);
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        if (opts[i].type == OPT_STR) {
            char **s = (char **)(void *)((char *)cfg + opts[i].off);
            free(*s);
        }
    }
    memset(cfg, 0, sizeof(*cfg));
}
