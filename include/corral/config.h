/* config: corrald's settings. Loaded once at start-up from an optional
 * file of `key = value` lines (`#` starts a comment, values may be quoted
 * with "..."), then overridden by environment variables named CORRAL_<KEY>
 * in upper case (CORRAL_LISTEN, CORRAL_DATABASE_URL, ...; the names of
 * DESIGN.md §9 are fixed). ANTHROPIC_API_KEY is accepted for
 * model_api_key when CORRAL_MODEL_API_KEY is unset. Immutable after load.
 * docs/config.md lists every key; config_print() writes them all. */
#ifndef CORRAL_CONFIG_H
#define CORRAL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct config {
    /* network and storage */
    char *listen_host;        /* from listen = host:port */
    uint16_t listen_port;
    char *database_url;       /* libpq URI or key=value string */
    char *redis_url;          /* NULL: embedded memory bus, no Redis */
    char *data_dir;           /* workspaces, keys, logs */
    char *schema_dir;         /* NNNN_*.sql migrations */
    char *user;               /* service user to drop to when root */
    char *public_url;         /* for links; may be NULL */
    /* model and sandbox (used by later modules) */
    char *model_upstream_url;
    char *model_api_key;
    char *cli_path;
    char *sandbox;            /* "local" or "e2b" */
    /* secrets: NULL means generated under data_dir on first run */
    char *jwt_secret;
    char *secret_key;
    /* logging */
    char *log_file;           /* NULL or "-": stderr */
    char *log_level;
    /* PostgreSQL pool */
    int pg_pool_size;
    int pg_max_waiting;
    int pg_connect_timeout_ms;
    int pg_queue_timeout_ms;
    int pg_query_timeout_ms;
    /* HTTP limits */
    int64_t max_body_bytes;
    int64_t attachment_max_bytes;    /* one attachment upload (413) */
    int64_t workspace_put_max_bytes; /* one PUT of a workspace file */
    int json_max_depth;
    int json_max_tokens;
    int header_timeout_ms;
    int keepalive_timeout_ms;
    int max_connections;
    int shutdown_grace_ms;
    char *cors_origins;       /* comma list, "*" or NULL (no CORS) */
    /* auth */
    int access_token_ttl;     /* seconds */
    int refresh_token_ttl;    /* seconds */
    int pbkdf2_iterations;
    double pbkdf2_cpu_share;  /* fraction of loop time for hashing */
    int hash_queue_max;       /* hashes waiting before 429 */
    int hash_queue_max_wait_ms; /* expected wait past which: 429 */
    int min_password_length;
    int rate_auth_ip_per_min;      /* register/login/refresh per IP */
    int rate_auth_account_per_min; /* login attempts per email */
    bool trust_proxy;         /* take the client IP from X-Forwarded-For */
    /* chats and runs */
    char *default_model;
    int cli_max_retries;      /* CLAUDE_CODE_MAX_RETRIES in the sandbox */
    int64_t cli_max_line_bytes; /* longest stdout line of the CLI */
    int cli_idle_timeout_s;   /* a warm CLI waits this long for a turn */
    int cli_close_grace_ms;   /* after stdin close, before SIGKILL */
    int child_nice;           /* sandboxes and helpers run this nice */
    int cli_max_live;         /* live CLIs at most; 0: half the memory */
    int interrupt_grace_ms;   /* after an interrupt, before SIGKILL */
    int cli_launch_timeout_ms;  /* spawn to initialize response */
    int turn_timeout_ms;      /* STREAMING phase timeout */
    int sandbox_prepare_timeout_ms;
    int permission_timeout_s; /* an unanswered request is denied */
    int auth_cache_ttl_ms;    /* a checked credential is trusted this long */
    int max_queued_messages;  /* per chat */
    /* sandboxes (local provider) */
    int sandbox_mem_mb;       /* RLIMIT_AS of sandbox processes */
    int sandbox_nproc;        /* RLIMIT_NPROC inside the sandbox */
    int sandbox_fsize_mb;     /* RLIMIT_FSIZE: largest file */
    int sandbox_cpu_s;        /* RLIMIT_CPU; 0 = none */
    int sandbox_starts_max;   /* bwraps in their set-up at once */
    char *sandbox_init_path;  /* the in-sandbox init/forwarder binary */
    /* checkpoints (src/run/checkpoint.c) */
    char *snapshot_path;      /* the corral-snapshot helper binary */
    int checkpoint_timeout_ms; /* one snapshot, restore or gc */
    int checkpoint_retention; /* checkpoints kept per chat */
    int sandbox_idle_timeout_s; /* no run this long: the sandbox stops */
    int workspace_quota_mb;   /* soft, per chat; 0 = off */
    int quota_check_interval_s; /* during a run; also a measurement's age */
    /* streaming */
    int event_batch_delay_ms; /* group commit window of durable events */
    int event_batch_max;      /* events per group commit */
    int event_batch_eager;    /* light load: events per 16 windows */
    int sse_heartbeat_s;
    int64_t sse_max_pending_bytes; /* a subscriber's unsent output cap */
    int64_t bus_ring_total_bytes;  /* memory bus: all replay rings */
    int bus_stream_maxlen;    /* redis: MAXLEN ~ per chat stream */
    bool bench_publish;
};

/* Sets every field to its default. */
void config_defaults(struct config *cfg);
/* Loads path (NULL: no file) over the defaults, then the environment.
 * 0, or -1 with a message in err (errlen bytes) naming file, line or key. */
int config_load(struct config *cfg, const char *path, char *err,
                size_t errlen) __attribute__((warn_unused_result));
/* Applies one setting by key (as in the file). 0, or -1 with err set. */
int config_set(struct config *cfg, const char *key, const char *value,
               char *err, size_t errlen);
/* Checks cross-field rules. 0, or -1 with err set. */
int config_validate(const struct config *cfg, char *err, size_t errlen);
/* Writes every key = value, secrets shown as "(set)". */
void config_print(const struct config *cfg, FILE *out);
void config_deinit(struct config *cfg);

#endif
