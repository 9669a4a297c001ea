/* corrald: argument handling, start-up (config, keys, migrations, pools),
 * the event loop, signals, privilege drop and graceful shutdown. */
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "corral/auth_cache.h"
#include "corral/base64.h"
#include "corral/bus.h"
#include "corral/chats.h"
#include "corral/child.h"
#include "corral/spawn.h"
#include "corral/config.h"
#include "corral/crypto.h"
#include "corral/http.h"
#include "corral/httpc.h"
#include "corral/keys.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/metrics.h"
#include "corral/migrate.h"
#include "corral/password.h"
#include "corral/pg.h"
#include "corral/ratelimit.h"
#include "corral/redis.h"
#include "corral/sandbox.h"
#include "corral/server.h"
#include "corral/store.h"
#include "corral_version.h"

#define LAG_INTERVAL_US 250000
#define RATELIMIT_KEYS 100000

struct options {
    const char *config_path;
    const char *create_admin;
    bool check_config;
    bool print_routes;
};

/* Loop-owned state of main.c: signals and timers. */
struct runtime {
    struct server *srv;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *lag_timer, *drain_timer, *grace_timer;
    uint64_t lag_expected_us;
};

static void usage(FILE *out)
{
    fputs("usage: corrald [-c FILE] [--check-config] [--create-admin EMAIL]\n"
          "               [--print-routes] [--help] [--version]\n\n"
          "  -c, --config FILE     settings file (key = value lines)\n"
          "      --check-config    load and validate the settings, print\n"
          "                        them (secrets hidden) and exit\n"
          "      --create-admin E  create (or promote) the admin E; the\n"
          "                        password is read from standard input\n"
          "      --print-routes    list the API routes and exit\n"
          "  -h, --help            this text\n"
          "  -V, --version         the version\n\n"
          "Every setting may be overridden by CORRAL_<KEY> in the\n"
          "environment (CORRAL_LISTEN, CORRAL_DATABASE_URL, ...).\n",
          out);
}

static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'k'},
        {"create-admin", required_argument, NULL, 'a'},
        {"print-routes", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config_path = optarg; break;
        case 'k': o->check_config = true; break;
        case 'a': o->create_admin = optarg; break;
        case 'r': o->print_routes = true; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("corrald %s\n", CORRAL_VERSION); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "corrald: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

static void print_routes(void)
{
    for (size_t i = 0; i < http_routes_count; i++)
        if (!(http_routes[i].flags & ROUTE_NO_API))
            printf("%s %s\n", http_method_name(http_routes[i].method),
                   http_routes[i].pattern);
}

/* Reads the admin's password from the first line of stdin. */
static int create_admin(const struct config *cfg, const char *email)
{
    char pw[1100];
    if (!cfg->database_url) {
        fputs("corrald: database_url is not set\n", stderr);
        return 1;
    }
    if (!fgets(pw, sizeof(pw), stdin)) {
        fputs("corrald: no password on standard input\n", stderr);
        return 1;
    }
    pw[strcspn(pw, "\r\n")] = '\0';
    if (strlen(pw) < (size_t)cfg->min_password_length || strlen(pw) > 1024) {
        fprintf(stderr, "corrald: the password needs %d to 1024 characters\n",
                cfg->min_password_length);
        return 1;
    }
    if (migrate_run(cfg->database_url, cfg->schema_dir) < 0)
        return 1;
    char *mail = xstrdup(email); /* stored lower-case, as register does */
    for (char *p = mail; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    char *hash = password_hash_now(pw, strlen(pw),
                                   (uint32_t)cfg->pbkdf2_iterations);
    crypto_zero(pw, sizeof(pw));
    int rc = hash && store_create_admin_sync(cfg->database_url, mail, hash)
                         == 0 ? 0 : 1;
    free(hash);
    free(mail);
    return rc;
}

/* When started as root: the port is bound, now become the service user
 * (DESIGN.md §8) before touching data or spawning anything. */
static int drop_privileges(const struct config *cfg)
{
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        log_error("started as root but user '%s' does not exist", cfg->user);
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        log_error("cannot drop privileges to %s: %s", cfg->user,
                  strerror(errno));
        return -1;
    }
    log_info("running as user %s (uid %u)", cfg->user, (unsigned)pw->pw_uid);
    return 0;
}

/* The stored-hash shape with random salt and hash: verifying a password
 * for an unknown email against it costs what a real check costs. */
static void make_dummy_hash(struct server *srv)
{
    uint8_t rnd[48];
    struct buf b;
    buf_init(&b);
    if (crypto_random(rnd, sizeof(rnd)) < 0)
        memset(rnd, 0x5a, sizeof(rnd));
    buf_printf(&b, "pbkdf2-sha256$%d$", srv->cfg->pbkdf2_iterations);
    base64_encode(&b, rnd, 16);
    buf_putc(&b, '$');
    base64_encode(&b, rnd + 16, 32);
    snprintf(srv->dummy_hash, sizeof(srv->dummy_hash), "%s", b.data);
    buf_deinit(&b);
}

static void on_lag_timer(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    uint64_t now = server_mono_us();
    if (rt->lag_expected_us && now > rt->lag_expected_us)
        metrics_observe_loop_lag(rt->srv->metrics, now - rt->lag_expected_us);
    rt->lag_expected_us = now + LAG_INTERVAL_US;
}

static void on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    http_server_close_idle(rt->srv->http);
    /* Answered is not yet written: keep-alive is off during shutdown, so
     * each connection closes once its answer is out. */
    if (http_server_inflight(rt->srv->http) == 0 &&
        http_server_connections(rt->srv->http) == 0) {
        log_info("all requests answered; stopping");
        event_base_loopexit(rt->srv->base, NULL);
    }
}

static void on_grace_over(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    log_warn("shutdown grace over with %d requests in flight",
             http_server_inflight(rt->srv->http));
    event_base_loopexit(rt->srv->base, NULL);
}

static void begin_shutdown(struct runtime *rt)
{
    struct server *srv = rt->srv;
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    log_info("shutting down: not accepting, finishing %d requests",
             http_server_inflight(srv->http));
    http_server_stop_accepting(srv->http);
    int ms = srv->cfg->shutdown_grace_ms;
    struct timeval grace = ms_to_timeval(ms);
    struct timeval tick = {0, 20000};
    rt->grace_timer = evtimer_new(srv->base, on_grace_over, rt);
    evtimer_add(rt->grace_timer, &grace);
    rt->drain_timer = event_new(srv->base, -1, EV_PERSIST, on_drain_check, rt);
    evtimer_add(rt->drain_timer, &tick);
    on_drain_check(-1, 0, rt);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    if (sig == SIGHUP) {
        if (log_reopen() < 0)
            log_error("cannot reopen the log file");
        else
            log_info("log reopened");
        return;
    }
    begin_shutdown(rt);
}

static void runtime_start(struct runtime *rt, struct server *srv)
{
    struct timeval lag = {0, LAG_INTERVAL_US};
    rt->srv = srv;
    rt->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, rt);
    rt->sig_int = evsignal_new(srv->base, SIGINT, on_signal, rt);
    rt->sig_hup = evsignal_new(srv->base, SIGHUP, on_signal, rt);
    rt->lag_timer = event_new(srv->base, -1, EV_PERSIST, on_lag_timer, rt);
    evsignal_add(rt->sig_term, NULL);
    evsignal_add(rt->sig_int, NULL);
    evsignal_add(rt->sig_hup, NULL);
    evtimer_add(rt->lag_timer, &lag);
}

static void runtime_stop(struct runtime *rt)
{
    struct event *evs[] = {rt->sig_term, rt->sig_int, rt->sig_hup,
                           rt->lag_timer, rt->drain_timer, rt->grace_timer};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
}

/* Migrations run before the loop. A database that is still starting gets
 * some seconds (start-up scripts may launch both at once); a failing
 * migration is not retried. */
static int migrate_when_reachable(const struct config *cfg)
{
    if (!cfg->database_url) {
        log_error("database_url is not set (CORRAL_DATABASE_URL)");
        return -1;
    }
    for (int attempt = 1; PQping(cfg->database_url) != PQPING_OK; attempt++) {
        if (attempt == 20) {
            log_error("database not reachable; giving up");
            return -1;
        }
        /* Start-up only: no loop runs yet, so waiting blocks nobody. */
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int n = migrate_run(cfg->database_url, cfg->schema_dir);
    if (n < 0)
        return -1;
    log_info("migrations: %d applied", n);
    return 0;
}

static int open_stores(struct server *srv)
{
    const struct config *cfg = srv->cfg;
    struct pg_pool_opts po = {
        .size = cfg->pg_pool_size,
        .max_waiting = cfg->pg_max_waiting,
        .connect_timeout_ms = cfg->pg_connect_timeout_ms,
        .queue_timeout_ms = cfg->pg_queue_timeout_ms,
        .query_timeout_ms = cfg->pg_query_timeout_ms,
        .backoff_min_ms = 100,
        .backoff_max_ms = 2000,
    };
    srv->pg = pg_pool_new(srv->base, cfg->database_url, &po);
    if (!cfg->redis_url)
        return 0;
    struct redis_opts ro = {2000, 2000, 100, 5000};
    const char *err = NULL;
    srv->redis = redis_new(srv->base, cfg->redis_url, &ro, &err);
    if (!srv->redis) {
        log_error("redis_url: %s", err ? err : "invalid");
        return -1;
    }
    return 0;
}

static void on_recovered(void *arg, const char *err)
{
    if (err)
        log_error("could not mark unfinished runs failed: %s", err);
}

/* The chat pipeline: event bus, outbound HTTP for the model gateway (its
 * upstream host resolved now, never on the loop), the chat runtime. */
static int open_pipeline(struct server *srv)
{
    char **resolve = NULL;
    const char *err = NULL;
    if (httpc_resolve_url(srv->cfg->model_upstream_url, &resolve, &err) < 0)
        log_warn("model_upstream_url: %s; model calls will fail",
                 err ? err : "cannot resolve its host");
    srv->httpc = httpc_new(srv->base, (const char *const *)resolve);
    httpc_resolve_free(resolve);
    srv->bus = bus_new(srv);
    srv->chats = chats_new(srv);
    chats_recover(srv->chats, on_recovered, NULL);
    return srv->httpc && srv->bus && srv->chats ? 0 : -1;
}

static void server_close(struct server *srv)
{
    /* Pending work completes (as cancelled) while HTTP still exists to
     * carry the answers, then HTTP goes. Runs first: their CLIs die and
     * they stop reacting; the bus ends its streams; the pool's cancelled
     * callbacks then find everything still allocated. */
    if (srv->chats) {
        chats_shutdown(srv->chats);
        /* The killed sandboxes must be reaped to be freed. */
        if (sandbox_local_drain(srv, 2000) > 0)
            log_warn("sandbox processes still running at exit");
    }
    child_finish_all();
    spawn_service_stop();
    if (srv->bus)
        bus_free(srv->bus);
    hasher_free(srv->hasher);
    srv->hasher = NULL;
    if (srv->httpc)
        httpc_free(srv->httpc);
    if (srv->redis)
        redis_free(srv->redis);
    if (srv->pg)
        pg_pool_free(srv->pg);
    chats_free(srv->chats);
    http_server_free(srv->http);
    ratelimit_free(srv->rl_ip);
    ratelimit_free(srv->rl_account);
    auth_cache_free(srv->auth_cache);
    metrics_free(srv->metrics);
    crypto_zero(srv->jwt_key, sizeof(srv->jwt_key));
    crypto_zero(srv->secret_key, sizeof(srv->secret_key));
}

static int serve(const struct config *cfg)
{
    struct server srv = {.cfg = cfg};
    struct runtime rt = {0};
    int rc = 1;
    srv.base = event_base_new();
    srv.metrics = metrics_new(http_routes_count);
    srv.http = http_server_new(&srv);
    /* Migrations read schema/ before the privilege drop: the service user
     * need not be able to read the source tree. */
    if (!srv.http || migrate_when_reachable(cfg) < 0 ||
        drop_privileges(cfg) < 0 ||
        keys_load(cfg, srv.jwt_key, srv.secret_key) < 0)
        goto out;
    /* Forked while little is open, after the privilege drop: it starts
     * sandboxes and helpers as the service user. */
    if (spawn_service_start(cfg->child_nice) < 0)
        log_warn("no spawner process (%s): processes start in place",
                 strerror(errno));
    spawn_service_attach(srv.base);
    if (open_stores(&srv) < 0)
        goto out;
    if (open_pipeline(&srv) < 0)
        goto out;
    srv.hasher = hasher_new(srv.base, cfg->pbkdf2_cpu_share,
                            cfg->hash_queue_max, cfg->hash_queue_max_wait_ms);
    srv.auth_cache = auth_cache_new(cfg->auth_cache_ttl_ms);
    srv.rl_ip = ratelimit_new(cfg->rate_auth_ip_per_min, RATELIMIT_KEYS);
    srv.rl_account = ratelimit_new(cfg->rate_auth_account_per_min,
                                   RATELIMIT_KEYS);
    make_dummy_hash(&srv);
    runtime_start(&rt, &srv);
    log_info("corrald %s listening on %s:%u", CORRAL_VERSION,
             cfg->listen_host, cfg->listen_port);
    event_base_dispatch(srv.base);
    rc = 0;
out:
    runtime_stop(&rt);
    if (srv.http)
        server_close(&srv);
    else
        metrics_free(srv.metrics);
    event_base_free(srv.base);
    log_info("corrald stopped");
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    struct config cfg;
    char err[512];
    if (parse_args(argc, argv, &o) < 0)
        return 2;
    if (o.print_routes) {
        print_routes();
        return 0;
    }
    config_defaults(&cfg);
    if (config_load(&cfg, o.config_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "corrald: %s\n", err);
        return 2;
    }
    if (o.check_config) {
        config_print(&cfg, stdout);
        puts("# configuration OK");
        config_deinit(&cfg);
        return 0;
    }
    enum log_level level = LOG_INFO;
    (void)log_level_parse(cfg.log_level, &level);
    if (log_open(cfg.log_file, level) < 0) {
        fprintf(stderr, "corrald: cannot open log %s\n", cfg.log_file);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = o.create_admin ? create_admin(&cfg, o.create_admin)
                            : serve(&cfg);
    config_deinit(&cfg);
    log_close();
    return rc;
}
