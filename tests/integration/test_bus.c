/* Integration tests of the event bus (src/bus) and the SSE connections
 * (src/http/sse.c) against a live PostgreSQL (CORRAL_TEST_PG_URL: a
 * superuser or CREATEDB URI) and a live Redis (CORRAL_TEST_REDIS_URL).
 * Both must be set: unset is a failure, not a skip.
 *
 * The run creates a fresh database, applies the repository's migrations
 * (migrate_run on the schema directory meson passes) and inserts a user
 * and chats directly. Every case runs twice, against the memory and the
 * redis implementation; each builds its own event_base, pool, Redis
 * connection and bus, and drives the loop with EVLOOP_ONCE under a
 * deadline, so a broken bus fails instead of hanging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "bus_int.h"
#include "corral/bus.h"
#include "corral/config.h"
#include "corral/ids.h"
#include "corral/migrate.h"
#include "corral/pg.h"
#include "corral/redis.h"
#include "corral/server.h"
#include "corral/sse.h"

#ifndef TEST_SCHEMA_DIR
#error "meson passes TEST_SCHEMA_DIR"
#endif

#define ID_LEN 36

/* ---- the database -------------------------------------------------------- */

struct env {
    const char *pg_url, *redis_url;
    char dbname[64];
    char *conninfo;
    char user_id[ID_LEN + 1];
    PGconn *db; /* blocking, for setup and checks (fine in a test) */
};
static struct env E;

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

static char *conninfo_for(const char *url, const char *dbname)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    if (!opts)
        return NULL;
    size_t cap = 4096;
    char *out = calloc(1, cap);
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "dbname") != 0)
            ci_append(out, cap, o->keyword, o->val);
    ci_append(out, cap, "dbname", dbname);
    PQconninfoFree(opts);
    return out;
}

static void quiet_notice(void *arg, const char *msg)
{
}

static int exec_on(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PQsetNoticeProcessor(c, quiet_notice, NULL);
        PGresult *res = PQexec(c, sql);
        rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
        if (rc)
            fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
    } else {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return rc;
}

/* First value of a query on E.db as an integer (-1: no row or NULL). */
static int64_t db_int(const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(E.db, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    int64_t v = -1;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

static void db_exec(const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(E.db, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK &&
        PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
}

static void new_id(char out[ID_LEN + 1])
{
    assert_int_equal(ids_uuid7(out), 0);
}

static void new_chat(char out[ID_LEN + 1])
{
    char sess[ID_LEN + 1];
    new_id(out);
    new_id(sess);
    const char *p[] = {out, E.user_id, sess};
    db_exec("INSERT INTO chats (id, owner_id, model, session_id) "
            "VALUES ($1, $2, 'test-model', $3)", 3, p);
}

static int group_setup(void **state)
{
    E.pg_url = getenv("CORRAL_TEST_PG_URL");
    E.redis_url = getenv("CORRAL_TEST_REDIS_URL");
    if (!E.pg_url || !*E.pg_url || !E.redis_url || !*E.redis_url) {
        fprintf(stderr, "CORRAL_TEST_PG_URL and CORRAL_TEST_REDIS_URL must "
                        "both be set: the bus tests need live servers\n");
        return -1;
    }
    snprintf(E.dbname, sizeof(E.dbname), "corral_t_bus_%ld", (long)getpid());
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", E.dbname);
    if (exec_on(E.pg_url, sql) < 0)
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", E.dbname);
    if (exec_on(E.pg_url, sql) < 0)
        return -1;
    E.conninfo = conninfo_for(E.pg_url, E.dbname);
    if (!E.conninfo || migrate_run(E.conninfo, TEST_SCHEMA_DIR) < 0)
        return -1;
    E.db = PQconnectdb(E.conninfo);
    if (PQstatus(E.db) != CONNECTION_OK)
        return -1;
    PQsetNoticeProcessor(E.db, quiet_notice, NULL);
    new_id(E.user_id);
    const char *p[] = {E.user_id};
    db_exec("INSERT INTO users (id, email, password_hash) "
            "VALUES ($1::uuid, $1::text || '@bus.test', 'x')", 1, p);
    return 0;
}

static int group_teardown(void **state)
{
    if (E.db)
        PQfinish(E.db);
    if (E.conninfo) {
        char sql[256];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)",
                 E.dbname);
        exec_on(E.pg_url, sql);
        free(E.conninfo);
    }
    return 0;
}

/* ---- the loop ------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static bool run_until(struct event_base *base, bool (*pred)(void *),
                      void *arg, int timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 2000};
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

#define WAIT(f, cond, ms)                                                   \
    do {                                                                    \
        uint64_t end_ = now_ms() + (ms);                                    \
        struct event *t_ = event_new((f)->base, -1, EV_PERSIST, on_tick,    \
                                     NULL);                                 \
        struct timeval tv_ = {0, 2000};                                     \
        event_add(t_, &tv_);                                                \
        while (!(cond) && now_ms() < end_)                                  \
            event_base_loop((f)->base, EVLOOP_ONCE);                        \
        event_free(t_);                                                     \
        if (!(cond))                                                        \
            fail_msg("timed out waiting for %s", #cond);                    \
    } while (0)

/* ---- fixture: one bus of either implementation --------------------------- */

struct fx {
    bool redis;
    struct event_base *base;
    struct config cfg;
    struct server srv;
    struct bus *bus;
};

static bool pool_up(void *arg)
{
    return pg_pool_ready(arg);
}

static bool redis_up(void *arg)
{
    return redis_connected(arg);
}

static void fx_open(struct fx *f, bool redis, void (*tweak)(struct config *))
{
    memset(f, 0, sizeof(*f));
    f->redis = redis;
    f->base = event_base_new();
    config_defaults(&f->cfg);
    if (redis)
        f->cfg.redis_url = strdup(E.redis_url);
    if (tweak)
        tweak(&f->cfg);
    f->srv.base = f->base;
    f->srv.cfg = &f->cfg;
    f->srv.pg = pg_pool_new(f->base, E.conninfo, NULL);
    assert_true(run_until(f->base, pool_up, f->srv.pg, 5000));
    if (redis) {
        const char *err = NULL;
        f->srv.redis = redis_new(f->base, E.redis_url, NULL, &err);
        assert_non_null(f->srv.redis);
        assert_true(run_until(f->base, redis_up, f->srv.redis, 5000));
    }
    f->bus = bus_new(&f->srv);
    f->srv.bus = f->bus;
}

static void fx_close(struct fx *f)
{
    bus_free(f->bus);
    run_for(f->base, 20);
    redis_free(f->srv.redis);
    pg_pool_free(f->srv.pg);
    config_deinit(&f->cfg);
    event_base_free(f->base);
}

static struct bus_stats stats(struct fx *f)
{
    struct bus_stats s;
    bus_get_stats(f->bus, &s);
    return s;
}

/* ---- recording publishes and subscriptions ------------------------------- */

struct done_ent {
    int tag;
    int64_t seq;
    char err[32];
};

struct done_log {
    int n;
    struct done_ent e[8192];
};

struct pub_arg {
    struct done_log *log;
    int tag;
};

static void on_done(void *arg, int64_t seq, const char *err)
{
    struct pub_arg *a = arg;
    struct done_ent *d = &a->log->e[a->log->n++];
    d->tag = a->tag;
    d->seq = seq;
    snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
    free(a);
}

static void publish(struct fx *f, const char *chat, const char *type,
                    const char *json, bool durable, struct done_log *log,
                    int tag)
{
    struct pub_arg *a = malloc(sizeof(*a));
    a->log = log;
    a->tag = tag;
    bus_publish(f->bus, chat, NULL, type, json, strlen(json), durable,
                on_done, a);
}

static const struct done_ent *done_of(const struct done_log *log, int tag)
{
    const struct done_ent *found = NULL;
    for (int i = 0; i < log->n; i++) {
        if (log->e[i].tag != tag)
            continue;
        assert_null(found); /* done fires exactly once */
        found = &log->e[i];
    }
    return found;
}

struct rec {
    struct fx *f;
    struct bus_sub *sub;
    int nev, cap;
    int64_t *seq;     /* 0 for ephemeral */
    char (*type)[32];
    int ready_calls, ready_at;
    int64_t ready_id;
    int end_calls;
    char end_code[32], end_detail[64];
    int late;         /* callbacks after unsubscribe or end */
    bool gone;        /* unsubscribed or ended */
    int unsub_self_at;             /* unsubscribe self at this count */
    struct rec *victim;            /* unsubscribe victim at ... */
    int victim_at;
    bool unsub_on_ready;
    bool check_db;
    int db_missing;
};

static void rec_event(void *arg, struct bus_event *ev)
{
    struct rec *r = arg;
    if (r->gone)
        r->late++;
    if (r->nev == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->seq = realloc(r->seq, (size_t)r->cap * sizeof(*r->seq));
        r->type = realloc(r->type, (size_t)r->cap * sizeof(*r->type));
    }
    r->seq[r->nev] = ev->seq;
    snprintf(r->type[r->nev], 32, "%s", ev->type);
    r->nev++;
    if (r->check_db && ev->seq > 0) {
        char s[24];
        snprintf(s, sizeof(s), "%" PRId64, ev->seq);
        const char *p[] = {ev->chat_id, s};
        if (db_int("SELECT count(*) FROM events WHERE chat_id = $1 AND "
                   "seq = $2", 2, p) != 1)
            r->db_missing++;
    }
    if (r->unsub_self_at && r->nev == r->unsub_self_at) {
        bus_unsubscribe(r->sub);
        r->gone = true;
    }
    if (r->victim && r->nev == r->victim_at) {
        bus_unsubscribe(r->victim->sub);
        r->victim->gone = true;
    }
}

static void rec_ready(void *arg, int64_t id)
{
    struct rec *r = arg;
    if (r->gone)
        r->late++;
    r->ready_calls++;
    r->ready_id = id;
    r->ready_at = r->nev;
    if (r->unsub_on_ready) {
        bus_unsubscribe(r->sub);
        r->gone = true;
    }
}

static void rec_end(void *arg, const char *code, const char *detail)
{
    struct rec *r = arg;
    if (r->gone)
        r->late++;
    r->gone = true;
    r->end_calls++;
    snprintf(r->end_code, sizeof(r->end_code), "%s", code);
    snprintf(r->end_detail, sizeof(r->end_detail), "%s", detail);
}

static const struct bus_sub_cbs rec_cbs = {rec_event, rec_ready, rec_end};

static void rec_sub(struct fx *f, struct rec *r, const char *chat,
                    int64_t after)
{
    r->f = f;
    r->sub = bus_subscribe(f->bus, chat, after, &rec_cbs, r);
    assert_non_null(r->sub);
}

static void rec_free(struct rec *r)
{
    free(r->seq);
    free(r->type);
}

/* Durable seqs received. */
static int rec_durable(const struct rec *r)
{
    int n = 0;
    for (int i = 0; i < r->nev; i++)
        n += r->seq[i] > 0;
    return n;
}

static int64_t rec_last(const struct rec *r)
{
    for (int i = r->nev - 1; i >= 0; i--)
        if (r->seq[i] > 0)
            return r->seq[i];
    return 0;
}

/* Durable events are exactly from+1 .. to, each once, in order; ready came
 * once, right after the last one at or before its id; ephemeral events
 * only after ready. */
static void rec_check(const struct rec *r, int64_t from, int64_t to)
{
    int64_t want = from + 1;
    assert_int_equal(r->ready_calls, 1);
    for (int i = 0; i < r->nev; i++) {
        if (r->seq[i] == 0) {
            assert_true(i >= r->ready_at);
            continue;
        }
        assert_int_equal(r->seq[i], want);
        if (i < r->ready_at)
            assert_true(r->seq[i] <= r->ready_id);
        else
            assert_true(r->seq[i] > r->ready_id);
        want++;
    }
    assert_int_equal(want - 1, to);
    assert_int_equal(r->late, 0);
}

static void publish_n(struct fx *f, const char *chat, int n,
                      struct done_log *log, int tag0)
{
    for (int i = 0; i < n; i++)
        publish(f, chat, "bench", "{\"n\":1}", true, log, tag0 + i);
}

/* ---- cases ----------------------------------------------------------------- */

#define NCHATS 4
#define PER_CHAT 100

static void case_seq_contiguity(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec subs[NCHATS] = {{0}};
    char chats[NCHATS][ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    for (int c = 0; c < NCHATS; c++) {
        new_chat(chats[c]);
        rec_sub(&f, &subs[c], chats[c], -1);
    }
    WAIT(&f, subs[0].ready_calls && subs[1].ready_calls &&
             subs[2].ready_calls && subs[3].ready_calls, 5000);
    /* Interleaved across chats, in a few loop turns, with ephemerals. */
    for (int i = 0; i < PER_CHAT; i++) {
        for (int c = 0; c < NCHATS; c++) {
            publish(&f, chats[c], "bench", "{\"n\":1}", true, &log,
                    c * 1000 + i);
            if (i % 10 == 0)
                publish(&f, chats[c], "delta", "{}", false, &log,
                        50000 + c * 1000 + i);
        }
        if (i % 25 == 0)
            run_for(f.base, 1);
    }
    int total = NCHATS * PER_CHAT + NCHATS * (PER_CHAT / 10);
    WAIT(&f, log.n == total, 10000);
    for (int c = 0; c < NCHATS; c++) {
        for (int i = 0; i < PER_CHAT; i++) {
            const struct done_ent *d = done_of(&log, c * 1000 + i);
            assert_non_null(d);
            assert_string_equal(d->err, "");
            assert_int_equal(d->seq, i + 1);
        }
        const char *p[] = {chats[c]};
        assert_int_equal(db_int("SELECT count(*) FROM events WHERE "
                                "chat_id = $1", 1, p), PER_CHAT);
        assert_int_equal(db_int("SELECT max(seq) - min(seq) + 1 FROM events "
                                "WHERE chat_id = $1", 1, p), PER_CHAT);
    }
    /* done fires in each chat's publish order. */
    int64_t last[NCHATS] = {0};
    for (int i = 0; i < log.n; i++) {
        int tag = log.e[i].tag;
        if (tag >= 50000)
            continue;
        assert_int_equal(log.e[i].seq, last[tag / 1000] + 1);
        last[tag / 1000] = log.e[i].seq;
    }
    /* Group commit: far fewer statements than events. */
    assert_true(stats(&f).committed_batches <= NCHATS * PER_CHAT / 10);
    for (int c = 0; c < NCHATS; c++) {
        WAIT(&f, rec_last(&subs[c]) == PER_CHAT, 5000);
        rec_check(&subs[c], 0, PER_CHAT);
        assert_int_equal(subs[c].nev, PER_CHAT + PER_CHAT / 10);
        bus_unsubscribe(subs[c].sub);
        rec_free(&subs[c]);
    }
    fx_close(&f);
}

static void case_delivery_after_commit(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    r.check_db = true;
    rec_sub(&f, &r, chat, -1);
    WAIT(&f, r.ready_calls == 1, 5000);
    for (int round = 0; round < 5; round++) {
        publish_n(&f, chat, 10, &log, round * 10);
        run_for(f.base, 3);
    }
    WAIT(&f, rec_durable(&r) == 50, 5000);
    assert_int_equal(r.db_missing, 0);
    rec_check(&r, 0, 50);
    bus_unsubscribe(r.sub);
    rec_free(&r);
    fx_close(&f);
}

static void case_ephemeral_order(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    static const char *const types[] = {"d_one", "e_one", "d_two", "e_two",
                                        "e_three", "d_three"};
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    rec_sub(&f, &r, chat, -1);
    WAIT(&f, r.ready_calls == 1, 5000);
    for (int i = 0; i < 6; i++)
        publish(&f, chat, types[i], "{}", types[i][0] == 'd', &log, i);
    WAIT(&f, r.nev == 6 && log.n == 6, 5000);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(r.type[i], types[i]);
        assert_int_equal(log.e[i].tag, i); /* done in publish order too */
    }
    assert_int_equal(done_of(&log, 1)->seq, 0);
    assert_int_equal(done_of(&log, 5)->seq, 3);
    bus_unsubscribe(r.sub);
    rec_free(&r);
    fx_close(&f);
}

static void case_last_seq(bool redis)
{
    struct fx f;
    static struct done_log log;
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    struct pub_arg *a = malloc(sizeof(*a));
    *a = (struct pub_arg){&log, 100};
    bus_last_seq(f.bus, chat, on_done, a);
    WAIT(&f, log.n == 1, 5000);
    assert_int_equal(done_of(&log, 100)->seq, 0);
    /* Waits for what was published before it, ignores what comes after. */
    publish_n(&f, chat, 3, &log, 0);
    a = malloc(sizeof(*a));
    *a = (struct pub_arg){&log, 101};
    bus_last_seq(f.bus, chat, on_done, a);
    publish_n(&f, chat, 2, &log, 10);
    WAIT(&f, log.n == 7, 5000);
    assert_int_equal(done_of(&log, 101)->seq, 3);
    assert_int_equal(done_of(&log, 11)->seq, 5);
    fx_close(&f);
}

/* The continuous publisher of the boundary case. */
struct feeder {
    struct fx *f;
    const char *chat;
    struct done_log *log;
    int next_tag, published;
    struct event *ev;
};

static void feeder_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct feeder *p = arg;
    publish(p->f, p->chat, "bench", "{\"n\":2}", true, p->log, p->next_tag++);
    publish(p->f, p->chat, "delta", "{}", false, p->log, p->next_tag++);
    p->published += 2;
}

static void case_replay_boundary(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec subs[4] = {{0}};
    static const int64_t afters[4] = {10, 0, -1, 25};
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    publish_n(&f, chat, 30, &log, 0);
    WAIT(&f, log.n == 30, 5000);
    struct feeder p = {&f, chat, &log, 1000, 30, NULL};
    p.ev = event_new(f.base, -1, EV_PERSIST, feeder_on_tick, &p);
    struct timeval ms1 = {0, 1000};
    event_add(p.ev, &ms1);
    run_for(f.base, 30);
    for (int i = 0; i < 4; i++) {
        rec_sub(&f, &subs[i], chat, afters[i]);
        run_for(f.base, 7); /* staggered, while events keep coming */
    }
    for (int i = 0; i < 4; i++)
        WAIT(&f, subs[i].ready_calls == 1 &&
                 rec_durable(&subs[i]) - subs[i].ready_at > 40, 10000);
    event_free(p.ev);
    WAIT(&f, log.n == p.published, 5000);
    int64_t last = 0;
    for (int i = 0; i < log.n; i++) {
        assert_string_equal(log.e[i].err, "");
        if (log.e[i].seq > last)
            last = log.e[i].seq;
    }
    assert_int_equal(last, 30 + (p.published - 30) / 2);
    for (int i = 0; i < 4; i++) {
        WAIT(&f, rec_last(&subs[i]) == last, 5000);
        int64_t from = afters[i] >= 0 ? afters[i] : subs[i].ready_id;
        assert_true(afters[i] >= 0 || subs[i].ready_id >= 30);
        rec_check(&subs[i], from, last);
        bus_unsubscribe(subs[i].sub);
        rec_free(&subs[i]);
    }
    fx_close(&f);
}

static void tweak_small_stream(struct config *cfg)
{
    cfg->bus_stream_maxlen = 100;
}

/* A blocking connection for checks from the test (not the loop):
 * redis://[[user]:password@]host[:port][/db], AUTH sent when a password
 * is given. */
static redisContext *test_redis_connect(void)
{
    char host[64] = "127.0.0.1", pass[128] = "";
    int port = 6379;
    const char *p = E.redis_url + strlen("redis://");
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon)
            snprintf(pass, sizeof(pass), "%.*s", (int)(at - colon - 1),
                     colon + 1);
        p = at + 1;
    }
    sscanf(p, "%63[^:/]:%d", host, &port);
    redisContext *rc = redisConnect(host, port);
    assert_true(rc && !rc->err);
    if (pass[0]) {
        redisReply *a = redisCommand(rc, "AUTH %s", pass);
        assert_true(a && a->type != REDIS_REPLY_ERROR);
        freeReplyObject(a);
    }
    return rc;
}

static long long redis_xlen(const char *chat)
{
    redisContext *rc = test_redis_connect();
    redisReply *r = redisCommand(rc, "XLEN corral:events:%s", chat);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    redisFree(rc);
    return n;
}

static void sub_and_check(struct fx *f, const char *chat, int64_t after,
                          int64_t last)
{
    struct rec r = {0};
    rec_sub(f, &r, chat, after);
    WAIT(f, r.ready_calls == 1, 10000);
    rec_check(&r, after, last);
    bus_unsubscribe(r.sub);
    rec_free(&r);
}

static void case_replay_from_log(bool redis)
{
    struct fx f;
    static struct done_log log;
    char chat[ID_LEN + 1];
    fx_open(&f, redis, tweak_small_stream);
    log.n = 0;
    new_chat(chat);
    publish_n(&f, chat, 600, &log, 0);
    WAIT(&f, log.n == 600, 10000);
    if (redis) /* trimmed well below what was written */
        assert_true(redis_xlen(chat) < 600);
    /* From 0: the bus holds only the tail, the log has the rest. */
    struct bus_stats s0 = stats(&f);
    sub_and_check(&f, chat, 0, 600);
    assert_true(stats(&f).replay_log > s0.replay_log);
    /* A recent id: served by the bus alone (ring / XRANGE). */
    s0 = stats(&f);
    sub_and_check(&f, chat, 590, 600);
    assert_int_equal(stats(&f).replay_log, s0.replay_log);
    assert_true(stats(&f).replay_bus > s0.replay_bus);
    /* The chat's state dropped (idle): the memory bus no longer holds
     * anything and reads the log; seq restarts from the log's max. */
    run_for(f.base, 20);
    bus_debug_drop_idle(f.bus);
    assert_int_equal(stats(&f).chats, 0);
    s0 = stats(&f);
    sub_and_check(&f, chat, 590, 600);
    if (redis)
        assert_int_equal(stats(&f).replay_log, s0.replay_log);
    else
        assert_true(stats(&f).replay_log > s0.replay_log);
    run_for(f.base, 20);
    bus_debug_drop_idle(f.bus);
    publish(&f, chat, "bench", "{}", true, &log, 9999);
    WAIT(&f, log.n == 601, 5000);
    assert_int_equal(done_of(&log, 9999)->seq, 601);
    fx_close(&f);
}

static void tweak_small_rings(struct config *cfg)
{
    cfg->bus_ring_total_bytes = 4096;
}

/* bus_ring_total_bytes caps all memory rings together: the ring pushed to
 * longest ago loses its oldest events first, and a resume from an evicted
 * id reads the log, still every event in order. */
static void case_ring_total_cap(bool redis)
{
    struct fx f;
    static struct done_log log;
    char a[ID_LEN + 1], b[ID_LEN + 1];
    fx_open(&f, redis, tweak_small_rings);
    log.n = 0;
    new_chat(a);
    new_chat(b);
    publish_n(&f, a, 100, &log, 0);
    WAIT(&f, log.n == 100, 10000);
    publish_n(&f, b, 100, &log, 100);
    WAIT(&f, log.n == 200, 10000);
    struct bus_stats s0 = stats(&f);
    if (redis) {
        assert_int_equal(s0.ring_bytes, 0);
        assert_int_equal(s0.ring_evictions, 0);
    } else {
        /* 200 events of a few hundred bytes each: far over the cap. */
        assert_true(s0.ring_bytes > 0 && s0.ring_bytes <= 4096);
        assert_true(s0.ring_evictions > 100);
    }
    /* a's events went first: a recent id of a now comes from the log. */
    sub_and_check(&f, a, 95, 100);
    if (!redis)
        assert_true(stats(&f).replay_log > s0.replay_log);
    /* b, pushed to last, still holds its tail. */
    s0 = stats(&f);
    sub_and_check(&f, b, 98, 100);
    assert_int_equal(stats(&f).replay_log, s0.replay_log);
    assert_true(stats(&f).replay_bus > s0.replay_bus);
    /* From an evicted id of b, and from the start of a: all, in order. */
    sub_and_check(&f, b, 10, 100);
    sub_and_check(&f, a, 0, 100);
    run_for(f.base, 20);
    bus_debug_drop_idle(f.bus);
    assert_int_equal(stats(&f).ring_bytes, 0);
    fx_close(&f);
}

static void case_end_chat(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec subs[3] = {{0}};
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    publish_n(&f, chat, 5, &log, 0);
    WAIT(&f, log.n == 5, 5000);
    rec_sub(&f, &subs[0], chat, -1);
    rec_sub(&f, &subs[1], chat, 0);
    rec_sub(&f, &subs[2], chat, 3);
    WAIT(&f, subs[0].ready_calls && subs[1].ready_calls &&
             subs[2].ready_calls, 5000);
    bus_end_chat(f.bus, chat, "chat_deleted", "gone");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(subs[i].end_calls, 1);
        assert_string_equal(subs[i].end_code, "chat_deleted");
        assert_string_equal(subs[i].end_detail, "gone");
    }
    publish_n(&f, chat, 2, &log, 10);
    WAIT(&f, log.n == 7, 5000);
    run_for(f.base, 50);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(subs[i].late, 0);
        assert_int_equal(subs[i].end_calls, 1);
        rec_free(&subs[i]);
    }
    assert_int_equal(stats(&f).subscribers, 0);
    assert_int_equal(stats(&f).upstream, 0);
    fx_close(&f);
}

/* redis: another instance's subscribers end too (the stream's marker). */
static void test_end_chat_other_instance(void **state)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    (void)state;
    fx_open(&f, true, NULL);
    log.n = 0;
    new_chat(chat);
    struct server srv2 = f.srv;
    struct bus *other = bus_new(&srv2);
    srv2.bus = other;
    r.f = &f;
    r.sub = bus_subscribe(other, chat, -1, &rec_cbs, &r);
    WAIT(&f, r.ready_calls == 1, 5000);
    publish_n(&f, chat, 2, &log, 0);
    WAIT(&f, rec_durable(&r) == 2, 5000);
    bus_end_chat(f.bus, chat, "chat_deleted", "elsewhere");
    WAIT(&f, r.end_calls == 1, 5000);
    assert_string_equal(r.end_code, "chat_deleted");
    assert_string_equal(r.end_detail, "elsewhere");
    bus_free(other);
    rec_free(&r);
    fx_close(&f);
}

/* A Redis-bus fixture with one subscriber on a new chat that has seen
 * n events published live. */
static void open_with_events(struct fx *f, struct rec *r, char *chat,
                             struct done_log *log, int n)
{
    fx_open(f, true, NULL);
    log->n = 0;
    new_chat(chat);
    rec_sub(f, r, chat, -1);
    WAIT(f, r->ready_calls == 1, 5000);
    publish_n(f, chat, n, log, 0);
    WAIT(f, rec_durable(r) == n, 5000);
}

static uint64_t reconnects(const struct redis *rd)
{
    struct redis_stats rs;
    redis_get_stats(rd, &rs);
    return rs.reconnects;
}

/* An entry XADDed as another instance would, with its wake or not. */
static void raw_xadd(const char *chat, int seq, bool wake)
{
    redisContext *rc = test_redis_connect();
    redisReply *x = redisCommand(rc, "XADD corral:events:%s %d-0 t bench "
                                 "d {\"n\":%d}", chat, seq, seq);
    assert_true(x && x->type == REDIS_REPLY_STRING);
    freeReplyObject(x);
    if (wake) {
        x = redisCommand(rc, "XADD corral:wake * c %s", chat);
        assert_true(x && x->type == REDIS_REPLY_STRING);
        freeReplyObject(x);
    }
    redisFree(rc);
}

/* redis: an entry missing from the stream (a failed XADD, or trimmed
 * before it was read) shows as a gap at the next entry; the live
 * subscriber replays it from the log, in order, without a second ready. */
static void test_gap_filled_from_log(void **state)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    (void)state;
    open_with_events(&f, &r, chat, &log, 3);
    /* 4 and 5 committed by "someone", only 5 reaches the stream. */
    const char *p[] = {chat};
    db_exec("INSERT INTO events (chat_id, seq, type, payload) VALUES "
            "($1, 4, 'bench', '{\"n\":4}'), ($1, 5, 'bench', '{\"n\":5}')",
            1, p);
    raw_xadd(chat, 5, true);
    WAIT(&f, rec_durable(&r) == 5, 5000);
    rec_check(&r, 0, 5);
    bus_unsubscribe(r.sub);
    rec_free(&r);
    fx_close(&f);
}

/* redis: an entry whose wake was lost (XADDed with no corral:wake entry)
 * still arrives: the reader reads every watched stream every few
 * seconds. */
static void test_lost_wake_swept(void **state)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    (void)state;
    open_with_events(&f, &r, chat, &log, 1);
    run_for(f.base, 300); /* reads the join and the wake asked for: done */
    const char *p[] = {chat};
    db_exec("INSERT INTO events (chat_id, seq, type, payload) VALUES "
            "($1, 2, 'bench', '{\"n\":2}')", 1, p);
    raw_xadd(chat, 2, false); /* only the backstop reads it (within 5 s) */
    WAIT(&f, rec_durable(&r) == 2, 8000);
    rec_check(&r, 0, 2);
    bus_unsubscribe(r.sub);
    rec_free(&r);
    fx_close(&f);
}

/* redis: the reader's connection killed (and the command connection with
 * it): both reconnect, the wake position is taken again, and events
 * published after (and while) it was down arrive in order, once. */
static void test_reader_reconnects(void **state)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    (void)state;
    open_with_events(&f, &r, chat, &log, 2);
    redisContext *rc = test_redis_connect();
    redisReply *x = redisCommand(rc, "CLIENT KILL TYPE normal SKIPME yes");
    assert_true(x && x->type == REDIS_REPLY_INTEGER && x->integer >= 2);
    freeReplyObject(x);
    redisFree(rc);
    /* Published only once the command connection is back: an XADD that
     * fails leaves its event to the next one's gap (rd_on_xadd). */
    WAIT(&f, reconnects(f.srv.redis) >= 1 && redis_connected(f.srv.redis),
         5000);
    publish_n(&f, chat, 3, &log, 2);
    WAIT(&f, rec_durable(&r) == 5, 8000);
    rec_check(&r, 0, 5);
    assert_int_equal(r.ready_calls, 1);
    bus_unsubscribe(r.sub);
    rec_free(&r);
    fx_close(&f);
}

static void case_unsubscribe_in_callback(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec a = {0}, b = {0}, c = {0}, d = {0};
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    a.unsub_self_at = 3;
    b.victim = &c;
    b.victim_at = 2;
    d.unsub_on_ready = true;
    rec_sub(&f, &a, chat, -1);
    rec_sub(&f, &b, chat, -1);
    rec_sub(&f, &c, chat, -1);
    rec_sub(&f, &d, chat, -1);
    WAIT(&f, a.ready_calls && b.ready_calls && c.ready_calls &&
             d.ready_calls, 5000);
    publish_n(&f, chat, 10, &log, 0);
    WAIT(&f, b.nev == 10, 5000);
    run_for(f.base, 30);
    assert_int_equal(a.nev, 3);
    assert_int_equal(c.nev, 1); /* b (before c) dropped it at event 2 */
    assert_int_equal(d.nev, 0);
    assert_int_equal(a.late + b.late + c.late + d.late, 0);
    bus_unsubscribe(b.sub);
    /* Unsubscribing while the replay read is in flight. */
    char big[ID_LEN + 1];
    new_chat(big);
    const char *p[] = {big};
    db_exec("INSERT INTO events (chat_id, seq, type, payload) "
            "SELECT $1, g, 'bench', '{}' FROM generate_series(1, 700) g",
            1, p);
    struct rec e = {0};
    uint64_t before = stats(&f).replay_log;
    rec_sub(&f, &e, big, 0);
    WAIT(&f, stats(&f).replay_log > before, 5000);
    bus_unsubscribe(e.sub);
    e.gone = true;
    run_for(f.base, 100);
    assert_int_equal(e.late, 0);
    assert_int_equal(e.nev, 0);
    assert_int_equal(stats(&f).subscribers, 0);
    rec_free(&a);
    rec_free(&b);
    rec_free(&c);
    rec_free(&d);
    rec_free(&e);
    fx_close(&f);
}

static void case_db_failure(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec r = {0};
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat);
    rec_sub(&f, &r, chat, -1);
    WAIT(&f, r.ready_calls == 1, 5000);
    publish_n(&f, chat, 3, &log, 0);
    WAIT(&f, log.n == 3, 5000);
    db_exec("CREATE OR REPLACE FUNCTION bus_test_fail() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN IF NEW.payload->>'fail' = 'yes' "
            "THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END $$", 0, NULL);
    db_exec("CREATE TRIGGER bus_test_fail BEFORE INSERT ON events "
            "FOR EACH ROW EXECUTE FUNCTION bus_test_fail()", 0, NULL);
    uint64_t failed = stats(&f).failed;
    publish(&f, chat, "bench", "{\"fail\":\"yes\"}", true, &log, 10);
    publish(&f, chat, "delta", "{}", false, &log, 11);
    WAIT(&f, log.n == 5, 5000);
    db_exec("DROP TRIGGER bus_test_fail ON events", 0, NULL);
    assert_int_equal(done_of(&log, 10)->seq, -1);
    assert_string_equal(done_of(&log, 10)->err, "db_error");
    assert_int_equal(done_of(&log, 11)->seq, 0);
    assert_int_equal(stats(&f).failed, failed + 1);
    /* No gap: the next event takes the failed one's seq. */
    publish(&f, chat, "bench", "{}", true, &log, 12);
    WAIT(&f, log.n == 6 && rec_durable(&r) == 4, 5000);
    assert_int_equal(done_of(&log, 12)->seq, 4);
    run_for(f.base, 30);
    assert_int_equal(r.nev, 5); /* 1, 2, 3, the delta, 4 */
    assert_int_equal(r.seq[3], 0);
    assert_int_equal(r.seq[4], 4);
    const char *p[] = {chat};
    assert_int_equal(db_int("SELECT count(*) FROM events WHERE chat_id = $1",
                            1, p), 4);
    /* Bad input fails without touching the log. */
    publish(&f, chat, "Bad Type", "{}", true, &log, 13);
    publish(&f, chat, "bench", "{not json", true, &log, 14);
    publish(&f, "not-a-uuid", "bench", "{}", true, &log, 15);
    WAIT(&f, log.n == 9, 5000);
    assert_string_equal(done_of(&log, 13)->err, "bad_type");
    assert_string_equal(done_of(&log, 14)->err, "invalid_json");
    assert_string_equal(done_of(&log, 15)->err, "bad_chat_id");
    bus_unsubscribe(r.sub);
    rec_free(&r);
    fx_close(&f);
}

static void case_upstream_per_chat(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct rec subs[8] = {{0}};
    char chat_a[ID_LEN + 1], chat_b[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    log.n = 0;
    new_chat(chat_a);
    new_chat(chat_b);
    for (int i = 0; i < 8; i++)
        rec_sub(&f, &subs[i], i < 5 ? chat_a : chat_b, i % 2 ? 0 : -1);
    for (int i = 0; i < 8; i++)
        WAIT(&f, subs[i].ready_calls == 1, 5000);
    struct bus_stats s = stats(&f);
    assert_int_equal(s.upstream, 2); /* one per chat, not per subscriber */
    assert_int_equal(s.subscribers, 8);
    publish_n(&f, chat_a, 5, &log, 0);
    publish_n(&f, chat_b, 5, &log, 100);
    for (int i = 0; i < 8; i++) {
        WAIT(&f, rec_last(&subs[i]) == 5, 5000);
        rec_check(&subs[i], subs[i].ready_id, 5);
    }
    for (int i = 0; i < 5; i++)
        bus_unsubscribe(subs[i].sub);
    run_for(f.base, 10);
    assert_int_equal(stats(&f).upstream, 1);
    for (int i = 5; i < 8; i++)
        bus_unsubscribe(subs[i].sub);
    run_for(f.base, 10);
    assert_int_equal(stats(&f).upstream, 0);
    for (int i = 0; i < 8; i++)
        rec_free(&subs[i]);
    fx_close(&f);
}

/* ---- SSE connections -------------------------------------------------------- */

struct client {
    int fd;        /* our end of the socketpair */
    struct buf in;
    bool eof;
};

static void client_read(struct client *c)
{
    char tmp[65536];
    for (;;) {
        ssize_t n = read(c->fd, tmp, sizeof(tmp));
        if (n > 0) {
            buf_append(&c->in, tmp, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            c->eof = true;
        return;
    }
}

static bool client_has(struct client *c, const char *s)
{
    client_read(c);
    return c->in.data && strstr(c->in.data, s);
}

static bool client_eof(struct client *c)
{
    client_read(c);
    return c->eof;
}

/* A socket handed over as req_take_connection hands it: a bufferevent
 * with the response head in its output. */
static int serve(struct fx *f, struct client *cl, const char *chat,
                 int64_t after, int sndbuf)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
                     0);
    if (sndbuf) {
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
    }
    struct bufferevent *bev = bufferevent_socket_new(f->base, sv[0],
                                                     BEV_OPT_CLOSE_ON_FREE);
    evbuffer_add_printf(bufferevent_get_output(bev),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"
                        "\r\n\r\n");
    memset(cl, 0, sizeof(*cl));
    cl->fd = sv[1];
    buf_init(&cl->in);
    return sse_serve(bus_sse_hub(f->bus), bev, chat, E.user_id, after);
}

static struct sse_stats sse_stats_of(struct fx *f)
{
    struct sse_stats s;
    sse_get_stats(bus_sse_hub(f->bus), &s);
    return s;
}

static void tweak_fast_heartbeat(struct config *cfg)
{
    cfg->sse_heartbeat_s = 1;
}

static void case_sse_stream(bool redis)
{
    struct fx f;
    static struct done_log log;
    struct client cl;
    char chat[ID_LEN + 1];
    fx_open(&f, redis, tweak_fast_heartbeat);
    log.n = 0;
    new_chat(chat);
    /* Data with a line break (JSON whitespace) becomes two data lines. */
    publish(&f, chat, "user_message", "{\"a\":1,\n\"b\":2}", true, &log, 0);
    publish_n(&f, chat, 4, &log, 1);
    WAIT(&f, log.n == 5, 5000);
    assert_int_equal(serve(&f, &cl, chat, 0, 0), 0);
    WAIT(&f, client_has(&cl, "event: ready\n"), 5000);
    const char *want =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
        "id: 1\nevent: user_message\ndata: {\"a\":1,\ndata: \"b\":2}\n\n"
        "id: 2\nevent: bench\ndata: {\"n\":1}\n\n"
        "id: 3\nevent: bench\ndata: {\"n\":1}\n\n"
        "id: 4\nevent: bench\ndata: {\"n\":1}\n\n"
        "id: 5\nevent: bench\ndata: {\"n\":1}\n\n"
        "event: ready\ndata: {\"last_event_id\":5}\n\n";
    assert_string_equal(cl.in.data, want);
    buf_reset(&cl.in);
    publish(&f, chat, "bench", "{\"n\":6}", true, &log, 10);
    publish(&f, chat, "assistant_text_delta", "{\"text\":\"x\"}", false, &log,
            11);
    WAIT(&f, client_has(&cl, "assistant_text_delta"), 5000);
    assert_string_equal(cl.in.data,
                        "id: 6\nevent: bench\ndata: {\"n\":6}\n\n"
                        "event: assistant_text_delta\n"
                        "data: {\"text\":\"x\"}\n\n");
    buf_reset(&cl.in);
    WAIT(&f, client_has(&cl, ": ping\n\n"), 3500);
    assert_int_equal(sse_stats_of(&f).conns, 1);
    bus_end_chat(f.bus, chat, "chat_deleted", "the chat was deleted");
    WAIT(&f, client_eof(&cl), 3000);
    const char *end = "event: error\ndata: {\"code\":\"chat_deleted\","
                      "\"detail\":\"the chat was deleted\"}\n\n";
    assert_non_null(cl.in.data);
    assert_true(cl.in.len >= strlen(end));
    assert_string_equal(cl.in.data + cl.in.len - strlen(end), end);
    assert_int_equal(sse_stats_of(&f).conns, 0);
    close(cl.fd);
    buf_deinit(&cl.in);
    fx_close(&f);
}

static void case_sse_client_eof(bool redis)
{
    struct fx f;
    struct client cl;
    char chat[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    new_chat(chat);
    assert_int_equal(serve(&f, &cl, chat, -1, 0), 0);
    WAIT(&f, client_has(&cl, "event: ready\n"), 5000);
    assert_int_equal(stats(&f).subscribers, 1);
    close(cl.fd);
    WAIT(&f, sse_stats_of(&f).conns == 0 && stats(&f).subscribers == 0, 2000);
    buf_deinit(&cl.in);
    fx_close(&f);
}

/* A disabled user's streams end with `error`; others stay. */
static void case_sse_end_user(bool redis)
{
    struct fx f;
    struct client mine, other;
    char chat[ID_LEN + 1], someone[ID_LEN + 1];
    fx_open(&f, redis, NULL);
    new_chat(chat);
    new_id(someone);
    assert_int_equal(serve(&f, &mine, chat, -1, 0), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv),
                     0);
    struct bufferevent *bev = bufferevent_socket_new(f.base, sv[0],
                                                     BEV_OPT_CLOSE_ON_FREE);
    memset(&other, 0, sizeof(other));
    other.fd = sv[1];
    buf_init(&other.in);
    assert_int_equal(sse_serve(bus_sse_hub(f.bus), bev, chat, someone, -1),
                     0);
    WAIT(&f, client_has(&mine, "event: ready\n") &&
             client_has(&other, "event: ready\n"), 5000);
    sse_end_user(bus_sse_hub(f.bus), E.user_id, "user_disabled",
                 "the account was disabled");
    WAIT(&f, client_eof(&mine), 2000);
    assert_non_null(strstr(mine.in.data, "event: error\ndata: {\"code\":"
                                         "\"user_disabled\""));
    run_for(f.base, 20);
    assert_false(client_eof(&other));
    assert_int_equal(sse_stats_of(&f).conns, 1);
    assert_int_equal(stats(&f).subscribers, 1);
    close(mine.fd);
    close(other.fd);
    WAIT(&f, sse_stats_of(&f).conns == 0, 2000);
    buf_deinit(&mine.in);
    buf_deinit(&other.in);
    fx_close(&f);
}

static void tweak_small_cap(struct config *cfg)
{
    cfg->sse_max_pending_bytes = 65536;
}

static void pad_json(char *out, size_t n)
{
    memcpy(out, "{\"pad\":\"", 8);
    memset(out + 8, 'x', n - 11);
    memcpy(out + n - 3, "\"}", 3);
}

static void case_sse_slow_consumer(bool redis)
{
    struct fx f;
    static struct done_log log;
    static char json[2048];
    struct client cl;
    char chat[ID_LEN + 1];
    fx_open(&f, redis, tweak_small_cap);
    log.n = 0;
    new_chat(chat);
    pad_json(json, sizeof(json));
    assert_int_equal(serve(&f, &cl, chat, -1, 4096), 0);
    WAIT(&f, client_has(&cl, "event: ready\n"), 5000);
    /* Live output far beyond the cap, never read. */
    for (int i = 0; i < 200; i++)
        publish(&f, chat, "bench", json, true, &log, i);
    WAIT(&f, sse_stats_of(&f).dropped_slow == 1, 5000);
    WAIT(&f, sse_stats_of(&f).conns == 0 && stats(&f).subscribers == 0, 2000);
    WAIT(&f, client_eof(&cl), 2000);
    close(cl.fd);
    buf_deinit(&cl.in);
    fx_close(&f);
}

/* A replay much larger than the cap is paced (bus_sub_hold), not dropped. */
static void case_sse_large_replay(bool redis)
{
    struct fx f;
    static struct done_log log;
    static char json[1024];
    struct client cl;
    char chat[ID_LEN + 1];
    fx_open(&f, redis, tweak_small_cap);
    log.n = 0;
    new_chat(chat);
    pad_json(json, sizeof(json));
    for (int i = 0; i < 1500; i++)
        publish(&f, chat, "bench", json, true, &log, i);
    WAIT(&f, log.n == 1500, 10000);
    assert_int_equal(serve(&f, &cl, chat, 0, 0), 0);
    WAIT(&f, client_has(&cl, "event: ready\ndata: {\"last_event_id\":1500}"),
         10000);
    assert_int_equal(sse_stats_of(&f).dropped_slow, 0);
    /* Every id once, in order. */
    const char *p = cl.in.data;
    for (int i = 1; i <= 1500; i++) {
        char id[32];
        snprintf(id, sizeof(id), "\nid: %d\n", i);
        const char *q = strstr(p, id);
        assert_non_null(q);
        p = q + 1;
    }
    close(cl.fd);
    buf_deinit(&cl.in);
    fx_close(&f);
}

/* ---- registration ------------------------------------------------------------ */

#define BOTH(name)                                                          \
    static void test_##name##_memory(void **state)                          \
    {                                                                       \
        (void)state;                                                        \
        case_##name(false);                                                 \
    }                                                                       \
    static void test_##name##_redis(void **state)                           \
    {                                                                       \
        (void)state;                                                        \
        case_##name(true);                                                  \
    }

BOTH(seq_contiguity)
BOTH(delivery_after_commit)
BOTH(ephemeral_order)
BOTH(last_seq)
BOTH(replay_boundary)
BOTH(replay_from_log)
BOTH(ring_total_cap)
BOTH(end_chat)
BOTH(unsubscribe_in_callback)
BOTH(db_failure)
BOTH(upstream_per_chat)
BOTH(sse_stream)
BOTH(sse_client_eof)
BOTH(sse_end_user)
BOTH(sse_slow_consumer)
BOTH(sse_large_replay)

#define BOTH_TESTS(name)                                                    \
    cmocka_unit_test(test_##name##_memory),                                 \
        cmocka_unit_test(test_##name##_redis)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH_TESTS(seq_contiguity),
        BOTH_TESTS(delivery_after_commit),
        BOTH_TESTS(ephemeral_order),
        BOTH_TESTS(last_seq),
        BOTH_TESTS(replay_boundary),
        BOTH_TESTS(replay_from_log),
        BOTH_TESTS(ring_total_cap),
        BOTH_TESTS(end_chat),
        cmocka_unit_test(test_end_chat_other_instance),
        cmocka_unit_test(test_gap_filled_from_log),
        cmocka_unit_test(test_lost_wake_swept),
        cmocka_unit_test(test_reader_reconnects),
        BOTH_TESTS(unsubscribe_in_callback),
        BOTH_TESTS(db_failure),
        BOTH_TESTS(upstream_per_chat),
        BOTH_TESTS(sse_stream),
        BOTH_TESTS(sse_client_eof),
        BOTH_TESTS(sse_end_user),
        BOTH_TESTS(sse_slow_consumer),
        BOTH_TESTS(sse_large_replay),
    };
    return cmocka_run_group_tests_name("bus", tests, group_setup,
                                       group_teardown);
}
