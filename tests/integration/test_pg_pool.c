/* Integration tests for pg (the non-blocking pool) and migrate, against a
 * live PostgreSQL named by CORRAL_TEST_PG_URL: a libpq URI whose role may
 * create databases. Unset is a failure, not a skip (STYLE.md §3, Tests).
 *
 * Each run creates its own databases (named after the pid) and drops them
 * at the end. Every test runs its own event_base and drives it with
 * EVLOOP_ONCE until what it waits for has happened or a deadline passes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "corral/migrate.h"
#include "corral/pg.h"

#define MAXQ 32
#define MAXCOL 6

/* ---- fixtures ----------------------------------------------------------- */

struct env {
    const char *url; /* CORRAL_TEST_PG_URL */
    char dbname[64]; /* the pool tests' database */
    char *conninfo;  /* conninfo for dbname */
    int ndbs;        /* databases created, for names and cleanup */
    char dbs[16][64];
};

/* Appends key='value' to out, quoting as libpq wants. */
static void ci_append(char *out, size_t cap, const char *key, const char *val)
{
    size_t n = strlen(out);
    n += (size_t)snprintf(out + n, cap - n, "%s%s='", n ? " " : "", key);
    for (const char *p = val; *p && n + 3 < cap; p++) {
        if (*p == '\'' || *p == '\\')
            out[n++] = '\\';
        out[n++] = *p;
    }
    snprintf(out + n, cap - n, "'");
}

/* The base URL's settings with dbname (and optionally application_name)
 * replaced, as a key=value string. */
static char *conninfo_for(const char *url, const char *dbname,
                          const char *appname)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    assert_non_null(opts);
    size_t cap = 4096;
    char *out = calloc(1, cap);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || strcmp(o->keyword, "dbname") == 0 ||
            strcmp(o->keyword, "application_name") == 0)
            continue;
        ci_append(out, cap, o->keyword, o->val);
    }
    ci_append(out, cap, "dbname", dbname);
    if (appname)
        ci_append(out, cap, "application_name", appname);
    PQconninfoFree(opts);
    return out;
}

static void quiet_notice(void *arg, const char *msg)
{
}

/* Runs one statement on a blocking connection (fine in a test) and
 * returns the first value, copied, or NULL for no rows. */
static char *admin_query(const char *conninfo, const char *sql, int nparams,
                         const char *const *params)
{
    PGconn *db = PQconnectdb(conninfo);
    if (PQstatus(db) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(db));
    PQsetNoticeProcessor(db, quiet_notice, NULL);
    PGresult *res = PQexecParams(db, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    char *val = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        val = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(db);
    return val;
}

static void admin_exec(const char *url, const char *sql)
{
    free(admin_query(url, sql, 0, NULL));
}

/* Creates a fresh database and returns a conninfo for it. */
static char *env_new_db(struct env *e, const char *tag)
{
    assert_true(e->ndbs < 16);
    char *name = e->dbs[e->ndbs++];
    snprintf(name, 64, "corral_t_%s_%ld", tag, (long)getpid());
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
    admin_exec(e->url, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    admin_exec(e->url, sql);
    return conninfo_for(e->url, name, NULL);
}

static int group_setup(void **state)
{
    static struct env e;
    e.url = getenv("CORRAL_TEST_PG_URL");
    if (!e.url || !*e.url) {
        fprintf(stderr, "CORRAL_TEST_PG_URL is not set: these tests need a "
                        "live PostgreSQL (a libpq URI with CREATEDB)\n");
        return -1;
    }
    free(env_new_db(&e, "pool"));
    snprintf(e.dbname, sizeof(e.dbname), "%s", e.dbs[0]);
    e.conninfo = conninfo_for(e.url, e.dbname, NULL);
    *state = &e;
    return 0;
}

static int group_teardown(void **state)
{
    struct env *e = *state;
    if (!e)
        return 0; /* setup failed: nothing was created */
    for (int i = 0; i < e->ndbs; i++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)",
                 e->dbs[i]);
        admin_exec(e->url, sql);
    }
    free(e->conninfo);
    return 0;
}

/* ---- running the loop --------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Runs the loop until pred(arg) holds or timeout_ms pass. A 5 ms tick
 * makes EVLOOP_ONCE return often enough to re-check. */
static bool run_until(struct event_base *base, bool (*pred)(void *), void *arg,
                      int timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(tick, &tv);
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    bool ok;
    while (!(ok = pred && pred(arg)) && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return ok;
}

static void run_for(struct event_base *base, int ms)
{
    run_until(base, NULL, NULL, ms);
}

static bool pool_all_up(void *arg)
{
    struct pg_pool_stats s;
    pg_pool_get_stats(arg, &s);
    return s.connected == s.size;
}

/* ---- recording replies -------------------------------------------------- */

struct rec;

struct slot {
    struct rec *rec;
    int id;
};

struct rec {
    struct pg_pool *pool;
    struct slot slots[MAXQ];
    int n;           /* callbacks so far */
    int order[MAXQ]; /* ids in completion order */
    int calls[MAXQ]; /* callbacks per id (must end at 1) */
    enum pg_status st[MAXQ];
    char sqlstate[MAXQ][6];
    char errmsg[MAXQ][256];
    bool had_res[MAXQ];
    int ntuples[MAXQ];
    bool isnull[MAXQ][MAXCOL];
    char val[MAXQ][MAXCOL][128];
    bool in_query;      /* the test is inside pg_query() */
    bool called_inside; /* a callback ran inside pg_query(): a bug */
    int chain_from;     /* this id's callback queries id chain_to */
    int chain_to;
    int free_from;         /* this id's callback frees the pool */
    bool query_after_free; /* ...and then queries id free_from + 10 */
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->chain_from = r->free_from = -1;
    for (int i = 0; i < MAXQ; i++)
        r->slots[i] = (struct slot){r, i};
}

static void rec_query(struct rec *r, int id, const char *sql, int n,
                      const char *const *params);

static void rec_save(struct rec *r, int id, const struct pg_reply *reply)
{
    r->st[id] = reply->status;
    snprintf(r->sqlstate[id], sizeof(r->sqlstate[id]), "%s", reply->sqlstate);
    snprintf(r->errmsg[id], sizeof(r->errmsg[id]), "%s", reply->errmsg);
    r->had_res[id] = reply->res != NULL;
    r->ntuples[id] = reply->res ? PQntuples(reply->res) : -1;
    for (int c = 0; reply->res && c < MAXCOL; c++) {
        const char *v = pg_val(reply->res, 0, c);
        r->isnull[id][c] = v == NULL;
        snprintf(r->val[id][c], sizeof(r->val[id][c]), "%s", v ? v : "");
    }
}

static void rec_cb(void *arg, const struct pg_reply *reply)
{
    struct slot *s = arg;
    struct rec *r = s->rec;

    if (r->in_query)
        r->called_inside = true;
    r->calls[s->id]++;
    r->order[r->n++] = s->id;
    rec_save(r, s->id, reply);
    if (s->id == r->chain_from)
        rec_query(r, r->chain_to, "SELECT 'chained'", 0, NULL);
    if (s->id == r->free_from) {
        pg_pool_free(r->pool);
        if (r->query_after_free)
            rec_query(r, s->id + 10, "SELECT 1", 0, NULL);
    }
}

static void rec_query(struct rec *r, int id, const char *sql, int n,
                      const char *const *params)
{
    bool was = r->in_query;
    r->in_query = true;
    pg_query(r->pool, sql, n, params, rec_cb, &r->slots[id]);
    r->in_query = was;
}

struct count_goal {
    struct rec *rec;
    int n;
};

static bool rec_reached(void *arg)
{
    struct count_goal *g = arg;
    return g->rec->n >= g->n;
}

static bool rec_wait(struct event_base *base, struct rec *r, int n, int ms)
{
    struct count_goal g = {r, n};
    return run_until(base, rec_reached, &g, ms);
}

static void rec_assert_once(const struct rec *r)
{
    assert_false(r->called_inside);
    for (int i = 0; i < MAXQ; i++)
        assert_true(r->calls[i] <= 1);
}

static struct pg_pool *pool_open(struct event_base *base, const char *ci,
                                 int size, int max_waiting)
{
    struct pg_pool_opts o = {
        .size = size,
        .max_waiting = max_waiting,
        .connect_timeout_ms = 3000,
        .queue_timeout_ms = 10000,
        .backoff_min_ms = 20,
        .backoff_max_ms = 200,
    };
    struct pg_pool *p = pg_pool_new(base, ci, &o);
    assert_non_null(p);
    assert_true(run_until(base, pool_all_up, p, 5000));
    return p;
}

/* ---- pool tests --------------------------------------------------------- */

static void test_select_params(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 2, 100);

    const char *uni = "h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac "
                      "\xf0\x9f\x90\x82"; /* héllo ✓ 日本 🐂 */
    const char *params[] = {"hello", NULL, uni};
    rec_query(&r, 0,
              "SELECT $1::text AS a, $2::text AS b, $2::text IS NULL AS bnull, "
              "$3::text AS u, length($3::text) AS ulen",
              3, params);
    assert_true(rec_wait(base, &r, 1, 5000));
    assert_int_equal(r.st[0], PG_OK);
    assert_true(r.had_res[0]);
    assert_string_equal(r.sqlstate[0], "");
    assert_string_equal(r.val[0][0], "hello");
    assert_true(r.isnull[0][1]);
    assert_string_equal(r.val[0][2], "t");
    assert_string_equal(r.val[0][3], uni);
    assert_string_equal(r.val[0][4], "12");
    assert_true(r.isnull[0][5]); /* out of range */

    struct pg_pool_stats s;
    pg_pool_get_stats(r.pool, &s);
    assert_int_equal(s.size, 2);
    assert_int_equal(s.connected, 2);
    assert_int_equal(s.busy, 0);
    assert_int_equal(s.waiting, 0);
    assert_int_equal(s.queries, 1);
    assert_int_equal(s.errors, 0);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

/* pg_field and pg_val on a real result, inside the callback. */
static void field_cb(void *arg, const struct pg_reply *reply)
{
    int *ok = arg;
    const PGresult *res = reply->res;
    const char *answer = pg_field(res, 0, "answer");
    bool good = reply->status == PG_OK && answer && strcmp(answer, "42") == 0 &&
                pg_field(res, 0, "nothing") == NULL &&
                pg_field(res, 0, "missing") == NULL &&
                pg_val(res, 1, 0) == NULL && pg_val(res, 0, -1) == NULL &&
                pg_val(NULL, 0, 0) == NULL;
    *ok = good ? 1 : -1;
}

static bool int_set(void *arg)
{
    return *(int *)arg != 0;
}

static void test_field_access(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct pg_pool *pool = pool_open(base, e->conninfo, 1, 100);
    int ok = 0;
    pg_query(pool, "SELECT 42 AS answer, NULL::text AS nothing", 0, NULL,
             field_cb, &ok);
    assert_true(run_until(base, int_set, &ok, 5000));
    assert_int_equal(ok, 1);
    pg_pool_free(pool);
    event_base_free(base);
}

/* Pool of one: completions in submission order, and a query chained from
 * a callback queues behind those already waiting. */
static void test_fifo_order(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 100);
    r.chain_from = 0;
    r.chain_to = 20;

    rec_query(&r, 0, "SELECT pg_sleep(0.05), 0", 0, NULL);
    for (int i = 1; i < 20; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *p[] = {v};
        rec_query(&r, i, "SELECT $1::int", 1, p);
    }
    struct pg_pool_stats s;
    pg_pool_get_stats(r.pool, &s);
    assert_int_equal(s.busy, 1);
    assert_int_equal(s.waiting, 19);

    assert_true(rec_wait(base, &r, 21, 10000));
    for (int i = 0; i < 21; i++) {
        assert_int_equal(r.order[i], i);
        assert_int_equal(r.st[i], PG_OK);
    }
    for (int i = 1; i < 20; i++)
        assert_int_equal(atoi(r.val[i][0]), i);
    assert_string_equal(r.val[20][0], "chained");
    pg_pool_get_stats(r.pool, &s);
    assert_int_equal(s.queries, 21);
    assert_int_equal(s.waiting, 0);
    assert_true(s.wait_us_total > 0);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

static void test_sql_errors(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 100);

    rec_query(&r, 0, "SELECT * FROM no_such_table_xyz", 0, NULL);
    rec_query(&r, 1, "SELEC 1", 0, NULL);
    rec_query(&r, 2, "SELECT 1", 0, NULL); /* the connection still works */
    assert_true(rec_wait(base, &r, 3, 5000));
    assert_int_equal(r.st[0], PG_E_QUERY);
    assert_string_equal(r.sqlstate[0], "42P01");
    assert_non_null(strstr(r.errmsg[0], "no_such_table_xyz"));
    assert_false(r.had_res[0]);
    assert_int_equal(r.st[1], PG_E_QUERY);
    assert_string_equal(r.sqlstate[1], "42601");
    assert_int_equal(r.st[2], PG_OK);
    assert_string_equal(r.val[2][0], "1");

    struct pg_pool_stats s;
    pg_pool_get_stats(r.pool, &s);
    assert_int_equal(s.errors, 2);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

static void test_unique_violation(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 100);
    const char *p[] = {"1"};

    rec_query(&r, 0, "CREATE TABLE uq_t (id int PRIMARY KEY)", 0, NULL);
    rec_query(&r, 1, "INSERT INTO uq_t VALUES ($1::int)", 1, p);
    rec_query(&r, 2, "INSERT INTO uq_t VALUES ($1::int)", 1, p);
    assert_true(rec_wait(base, &r, 3, 5000));
    assert_int_equal(r.st[0], PG_OK);
    assert_int_equal(r.st[1], PG_OK);
    assert_int_equal(r.st[2], PG_E_QUERY);
    assert_string_equal(r.sqlstate[2], "23505");
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

/* The pool's backends are terminated mid-query: the running queries fail
 * with PG_E_UNAVAILABLE (not retried), and the pool reconnects. */
static void test_backend_terminated(void **state)
{
    struct env *e = *state;
    char app[64];
    snprintf(app, sizeof(app), "corral_pgpool_kill_%ld", (long)getpid());
    char *ci = conninfo_for(e->url, e->dbname, app);
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, ci, 2, 100);

    rec_query(&r, 0, "SELECT pg_sleep(30)", 0, NULL);
    rec_query(&r, 1, "SELECT pg_sleep(30)", 0, NULL);
    run_for(base, 300); /* both are on the server now */
    const char *p[] = {app};
    char *killed = admin_query(e->conninfo,
                               "SELECT count(pg_terminate_backend(pid)) "
                               "FROM pg_stat_activity "
                               "WHERE application_name = $1",
                               1, p);
    assert_string_equal(killed, "2");
    free(killed);

    uint64_t t0 = now_ms();
    assert_true(rec_wait(base, &r, 2, 5000));
    assert_true(now_ms() - t0 < 5000);
    assert_int_equal(r.st[0], PG_E_UNAVAILABLE);
    assert_int_equal(r.st[1], PG_E_UNAVAILABLE);
    assert_true(r.errmsg[0][0] != '\0');

    assert_true(run_until(base, pool_all_up, r.pool, 5000));
    rec_query(&r, 2, "SELECT 'back'", 0, NULL);
    rec_query(&r, 3, "SELECT 'again'", 0, NULL);
    assert_true(rec_wait(base, &r, 4, 5000));
    assert_int_equal(r.st[2], PG_OK);
    assert_string_equal(r.val[2][0], "back");
    assert_int_equal(r.st[3], PG_OK);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
    free(ci);
}

/* An idle pool whose backends die notices it and reconnects on its own. */
static void test_idle_backend_terminated(void **state)
{
    struct env *e = *state;
    char app[64];
    snprintf(app, sizeof(app), "corral_pgpool_idle_%ld", (long)getpid());
    char *ci = conninfo_for(e->url, e->dbname, app);
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, ci, 2, 100);

    const char *p[] = {app};
    free(admin_query(e->conninfo,
                     "SELECT count(pg_terminate_backend(pid)) "
                     "FROM pg_stat_activity WHERE application_name = $1",
                     1, p));
    run_for(base, 300);
    assert_true(run_until(base, pool_all_up, r.pool, 5000));
    rec_query(&r, 0, "SELECT 1", 0, NULL);
    assert_true(rec_wait(base, &r, 1, 5000));
    assert_int_equal(r.st[0], PG_OK);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
    free(ci);
}

/* A port that was just free is almost surely closed. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_server_down_fails_fast(void **state)
{
    char ci[128];
    snprintf(ci, sizeof(ci), "hostaddr=127.0.0.1 port=%d dbname=x user=x",
             closed_port());
    struct event_base *base = event_base_new();
    struct pg_pool_opts o = {.size = 2,
                             .queue_timeout_ms = 10000,
                             .backoff_min_ms = 50,
                             .backoff_max_ms = 400};
    struct rec r;
    rec_init(&r);
    r.pool = pg_pool_new(base, ci, &o);

    /* Queued while the first attempts are in flight; failed as soon as
     * they fail, long before the 10 s queue timeout. */
    uint64_t t0 = now_ms();
    for (int i = 0; i < 3; i++)
        rec_query(&r, i, "SELECT 1", 0, NULL);
    assert_true(rec_wait(base, &r, 3, 2000));
    assert_true(now_ms() - t0 < 2000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r.st[i], PG_E_UNAVAILABLE);

    /* Later queries fail on the next loop turn. */
    run_for(base, 200);
    assert_false(pg_pool_ready(r.pool));
    t0 = now_ms();
    rec_query(&r, 3, "SELECT 1", 0, NULL);
    assert_int_equal(r.n, 3); /* not called inside pg_query */
    assert_true(rec_wait(base, &r, 4, 1000));
    assert_true(now_ms() - t0 < 500);
    assert_int_equal(r.st[3], PG_E_UNAVAILABLE);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

/* A server that accepts TCP but never answers: the attempt times out,
 * and the queries queued for it fail then, not after the queue timeout. */
static void test_connect_timeout(void **state)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    char ci[128];
    snprintf(ci, sizeof(ci), "hostaddr=127.0.0.1 port=%d dbname=x user=x",
             ntohs(sa.sin_port));

    struct event_base *base = event_base_new();
    struct pg_pool_opts o = {
        .size = 1, .connect_timeout_ms = 200, .queue_timeout_ms = 10000};
    struct rec r;
    rec_init(&r);
    r.pool = pg_pool_new(base, ci, &o);
    uint64_t t0 = now_ms();
    rec_query(&r, 0, "SELECT 1", 0, NULL);
    assert_true(rec_wait(base, &r, 1, 3000));
    uint64_t took = now_ms() - t0;
    assert_int_equal(r.st[0], PG_E_UNAVAILABLE);
    assert_true(took >= 150 && took < 2000);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
    close(lfd);
}

/* A 64 MiB parameter outruns the socket buffers even on loopback, so
 * PQflush returns 1 and the pool waits for EV_WRITE; large results take
 * several reads. */
static void test_large_data(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 100);
    size_t n = 64u << 20;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    const char *p[] = {big};
    rec_query(&r, 0, "SELECT length($1::text)", 1, p);
    free(big); /* pg_query copied it */
    rec_query(&r, 1,
              "SELECT g, repeat('y', 100) FROM generate_series(1, 100000) g", 0,
              NULL);
    rec_query(&r, 2, "SELECT repeat('z', 4000000)", 0, NULL);
    assert_true(rec_wait(base, &r, 3, 20000));
    assert_int_equal(r.st[0], PG_OK);
    assert_string_equal(r.val[0][0], "67108864");
    assert_int_equal(r.st[1], PG_OK);
    assert_int_equal(r.ntuples[1], 100000);
    assert_string_equal(r.val[1][0], "1");
    assert_int_equal(r.st[2], PG_OK);
    assert_int_equal(strlen(r.val[2][0]), 127); /* truncated copy */
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

static void test_max_waiting(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 2);

    rec_query(&r, 0, "SELECT pg_sleep(0.3)", 0, NULL); /* running */
    rec_query(&r, 1, "SELECT 1", 0, NULL);             /* waiting */
    rec_query(&r, 2, "SELECT 2", 0, NULL);             /* waiting */
    rec_query(&r, 3, "SELECT 3", 0, NULL);             /* over the limit */
    rec_query(&r, 4, "SELECT 4", 0, NULL);             /* over the limit */
    assert_int_equal(r.n, 0);
    assert_true(rec_wait(base, &r, 5, 5000));
    assert_int_equal(r.order[0], 3);
    assert_int_equal(r.order[1], 4);
    assert_int_equal(r.st[3], PG_E_UNAVAILABLE);
    assert_int_equal(r.st[4], PG_E_UNAVAILABLE);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r.st[i], PG_OK);
    assert_string_equal(r.val[2][0], "2");
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

/* One connection, and 200 ms of queue deadline. */
static struct event_base *open_one_conn_pool(struct env *e, struct rec *r)
{
    struct event_base *base = event_base_new();
    struct pg_pool_opts o = {.size = 1, .queue_timeout_ms = 200};
    rec_init(r);
    r->pool = pg_pool_new(base, e->conninfo, &o);
    assert_true(run_until(base, pool_all_up, r->pool, 5000));
    return base;
}

static void test_queue_timeout(void **state)
{
    struct rec r;
    struct event_base *base = open_one_conn_pool(*state, &r);

    uint64_t t0 = now_ms();
    rec_query(&r, 0, "SELECT pg_sleep(1)", 0, NULL);
    rec_query(&r, 1, "SELECT 1", 0, NULL);
    assert_true(rec_wait(base, &r, 1, 5000));
    assert_int_equal(r.order[0], 1);
    assert_int_equal(r.st[1], PG_E_TIMEOUT);
    assert_true(now_ms() - t0 < 900);
    assert_true(rec_wait(base, &r, 2, 5000));
    assert_int_equal(r.st[0], PG_OK);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

/* The server's own writes wait out a busy pool instead of failing. */
static void test_patient_query_outlasts_the_queue_timeout(void **state)
{
    struct rec r;
    struct event_base *base = open_one_conn_pool(*state, &r);

    rec_query(&r, 0, "SELECT pg_sleep(0.6)", 0, NULL);
    r.in_query = true;
    pg_query_patient(r.pool, "SELECT 'waited'", 0, NULL, rec_cb,
                     &r.slots[1]);
    r.in_query = false;
    rec_query(&r, 2, "SELECT 1", 0, NULL);
    assert_true(rec_wait(base, &r, 3, 5000));
    assert_int_equal(r.order[0], 2); /* the ordinary one timed out */
    assert_int_equal(r.st[2], PG_E_TIMEOUT);
    assert_int_equal(r.st[0], PG_OK);
    assert_int_equal(r.st[1], PG_OK);
    assert_string_equal(r.val[1][0], "waited");
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

static void test_query_timeout(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct pg_pool_opts o = {
        .size = 1, .query_timeout_ms = 200, .backoff_min_ms = 20};
    struct rec r;
    rec_init(&r);
    r.pool = pg_pool_new(base, e->conninfo, &o);
    assert_true(run_until(base, pool_all_up, r.pool, 5000));

    uint64_t t0 = now_ms();
    rec_query(&r, 0, "SELECT pg_sleep(5)", 0, NULL);
    assert_true(rec_wait(base, &r, 1, 5000));
    assert_int_equal(r.st[0], PG_E_TIMEOUT);
    assert_true(now_ms() - t0 < 2000);
    /* The connection was replaced; the next query runs normally. */
    rec_query(&r, 1, "SELECT 1", 0, NULL);
    assert_true(rec_wait(base, &r, 2, 5000));
    assert_int_equal(r.st[1], PG_OK);
    rec_assert_once(&r);
    pg_pool_free(r.pool);
    event_base_free(base);
}

/* pg_pool_free with one running and three queued queries: every callback
 * runs before it returns; one chained from a cancel callback, too. */
static void test_free_cancels(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 100);
    r.chain_from = 2;
    r.chain_to = 4;

    rec_query(&r, 0, "SELECT pg_sleep(5)", 0, NULL);
    for (int i = 1; i < 4; i++)
        rec_query(&r, i, "SELECT 1", 0, NULL);
    run_for(base, 100);
    assert_int_equal(r.n, 0);
    pg_pool_free(r.pool);
    assert_int_equal(r.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.st[i], PG_E_CANCELLED);
    }
    assert_int_equal(r.order[0], 0); /* the running one first */
    rec_assert_once(&r);
    run_for(base, 50); /* nothing of the pool is left on the loop */
    event_base_free(base);
}

/* pg_pool_free from inside a callback, then pg_query on the closing pool
 * from the same callback: all complete once, nothing is used after free
 * (ASan). */
static void test_free_from_callback(void **state)
{
    struct env *e = *state;
    struct event_base *base = event_base_new();
    struct rec r;
    rec_init(&r);
    r.pool = pool_open(base, e->conninfo, 1, 100);
    r.free_from = 0;
    r.query_after_free = true; /* queries id 10 */

    rec_query(&r, 0, "SELECT 1", 0, NULL);
    rec_query(&r, 1, "SELECT 2", 0, NULL);
    rec_query(&r, 2, "SELECT 3", 0, NULL);
    assert_true(rec_wait(base, &r, 4, 5000));
    assert_int_equal(r.st[0], PG_OK);
    assert_int_equal(r.st[1], PG_E_CANCELLED);
    assert_int_equal(r.st[2], PG_E_CANCELLED);
    assert_int_equal(r.st[10], PG_E_CANCELLED);
    assert_int_equal(r.order[3], 10);
    rec_assert_once(&r);
    run_for(base, 50);
    assert_int_equal(r.n, 4);
    event_base_free(base);
}

/* ---- migrate tests ------------------------------------------------------ */

static char *make_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/corral-migrate-XXXXXX",
             t && *t ? t : "/tmp");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return strdup(dir);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

static void remove_dir(char *dir, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        remove_file(dir, names[i]);
    rmdir(dir);
    free(dir);
}

/* The first value of sql on a blocking connection, as an int. */
static int db_int(const char *ci, const char *sql)
{
    char *v = admin_query(ci, sql, 0, NULL);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

static const char *const mig_names[] = {
    "0001_create_a.sql", "0002_create_b.sql", "0003_broken.sql",
    "0003_x.sql",        "0003_y.sql",        "README.md",
    "01_short.sql",      "0004_bad-name.sql",
};

static void test_migrate(void **state)
{
    struct env *e = *state;
    char *ci = env_new_db(e, "mig");
    char *dir = make_tmpdir();

    write_file(dir, "0002_create_b.sql",
               "CREATE TABLE b (x text);\nINSERT INTO b VALUES ('one');\n");
    write_file(dir, "0001_create_a.sql",
               "-- the first\nCREATE TABLE a (id int PRIMARY KEY);\n"
               "INSERT INTO a VALUES (1), (2);\n");
    write_file(dir, "README.md", "not a migration\n");
    write_file(dir, "01_short.sql", "SELECT no_such_function();\n");
    write_file(dir, "0004_bad-name.sql", "SELECT no_such_function();\n");

    assert_int_equal(migrate_run(ci, dir), 2);
    assert_int_equal(db_int(ci, "SELECT count(*) FROM a"), 2);
    assert_int_equal(db_int(ci, "SELECT count(*) FROM b"), 1);
    assert_int_equal(db_int(ci, "SELECT count(*) FROM schema_migrations WHERE "
                                "(version, name) IN ((1, '0001_create_a.sql'), "
                                "(2, '0002_create_b.sql'))"),
                     2);
    assert_int_equal(migrate_run(ci, dir), 0);

    /* A failing file: -1, and no trace of it. */
    write_file(dir, "0003_broken.sql",
               "CREATE TABLE c (id int);\nSELECT * FROM no_such_table;\n");
    assert_int_equal(migrate_run(ci, dir), -1);
    assert_int_equal(db_int(ci, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(
        db_int(ci, "SELECT count(*) FROM schema_migrations WHERE version = 3"),
        0);
    assert_int_equal(db_int(ci, "SELECT (to_regclass('c') IS NULL)::int"), 1);

    /* Two files with one version are refused before anything runs. */
    remove_file(dir, "0003_broken.sql");
    write_file(dir, "0003_x.sql", "CREATE TABLE x (id int);\n");
    write_file(dir, "0003_y.sql", "CREATE TABLE y (id int);\n");
    assert_int_equal(migrate_run(ci, dir), -1);
    assert_int_equal(db_int(ci, "SELECT (to_regclass('x') IS NULL)::int"), 1);

    /* A missing directory and an unreachable server fail cleanly. */
    assert_int_equal(migrate_run(ci, "/nonexistent/corral/schema"), -1);
    remove_file(dir, "0003_y.sql");
    assert_int_equal(
        migrate_run("hostaddr=127.0.0.1 port=1 dbname=x user=x", dir), -1);
    assert_int_equal(migrate_run(ci, dir), 1); /* 0003_x */

    remove_dir(dir, mig_names, (int)(sizeof(mig_names) / sizeof(mig_names[0])));
    free(ci);
}

/* Two instances starting at once: the advisory lock serialises them, both
 * succeed, and each file is applied exactly once. */
static void test_migrate_concurrent(void **state)
{
    struct env *e = *state;
    char *ci = env_new_db(e, "migc");
    char *dir = make_tmpdir();
    write_file(dir, "0001_create_a.sql",
               "SELECT pg_sleep(0.5);\nCREATE TABLE a (id int);\n");
    write_file(dir, "0002_create_b.sql", "CREATE TABLE b (id int);\n");

    fflush(NULL);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            int n = migrate_run(ci, dir);
            _exit(n < 0 ? 100 : n);
        }
    }
    int total = 0;
    for (int i = 0; i < 2; i++) {
        int status = 0;
        assert_int_equal(waitpid(kids[i], &status, 0), kids[i]);
        assert_true(WIFEXITED(status));
        assert_true(WEXITSTATUS(status) <= 2);
        total += WEXITSTATUS(status);
    }
    assert_int_equal(total, 2);
    assert_int_equal(db_int(ci, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(db_int(ci, "SELECT count(*) FROM a"), 0);

    remove_dir(dir, mig_names, 2);
    free(ci);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_params),
        cmocka_unit_test(test_field_access),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_sql_errors),
        cmocka_unit_test(test_unique_violation),
        cmocka_unit_test(test_backend_terminated),
        cmocka_unit_test(test_idle_backend_terminated),
        cmocka_unit_test(test_server_down_fails_fast),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_large_data),
        cmocka_unit_test(test_max_waiting),
        cmocka_unit_test(test_queue_timeout),
        cmocka_unit_test(test_patient_query_outlasts_the_queue_timeout),
        cmocka_unit_test(test_query_timeout),
        cmocka_unit_test(test_free_cancels),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_migrate),
        cmocka_unit_test(test_migrate_concurrent),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
