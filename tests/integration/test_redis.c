/* Integration tests for src/core/redis.c against a live Redis named by
 * CORRAL_TEST_REDIS_URL (tools/test starts one on loopback). An unset URL
 * is a failure, not a skip.
 *
 * Each test runs its own event_base; run_until() drives it with
 * EVLOOP_ONCE under a deadline timer so a broken wrapper fails the test
 * instead of hanging it. Every callback counts its calls: "exactly once" is
 * checked after the loop has run on for a while. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "corral/redis.h"

#define KEY_PREFIX "corral:test:redis:"

static const char *test_url;
static bool in_command; /* set around redis_command calls */

/* ---- helpers ------------------------------------------------------------ */

struct res {
    int calls;
    bool called_inside; /* fired from inside redis_command */
    int type;           /* reply type, -1 without a reply */
    long long integer;
    char str[512];
    size_t len;
    const char *err;
};

static void res_cb(void *arg, redisReply *reply, const char *err)
{
    struct res *x = arg;
    x->calls++;
    x->called_inside |= in_command;
    x->err = err;
    x->type = reply ? reply->type : -1;
    if (reply) {
        x->integer = reply->integer;
        x->len = reply->str ? reply->len : 0;
        size_t n = x->len < sizeof(x->str) - 1 ? x->len : sizeof(x->str) - 1;
        if (n)
            memcpy(x->str, reply->str, n);
        x->str[n] = '\0';
    }
}

/* arg is a struct res for res_cb, or what cb expects. */
static void cmd(struct redis *r, void *arg, redis_cb cb, int argc,
                const char **argv, const size_t *lens)
{
    in_command = true;
    redis_command(r, argc, argv, lens, cb ? cb : res_cb, arg);
    in_command = false;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) holds or ms pass; returns pred(arg). */
static bool run_until(struct event_base *base, pred_fn pred, void *arg, int ms)
{
    bool expired = false;
    struct event *t = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!(pred && pred(arg)) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return pred ? pred(arg) : true;
}

static void run_for(struct event_base *base, int ms)
{
    run_until(base, NULL, NULL, ms);
}

static bool pred_connected(void *arg)
{
    return redis_connected(arg);
}

static bool pred_called(void *arg)
{
    return ((struct res *)arg)->calls > 0;
}

struct res_set {
    struct res *x;
    int n;
};

static bool pred_all_called(void *arg)
{
    struct res_set *s = arg;
    for (int i = 0; i < s->n; i++)
        if (s->x[i].calls == 0)
            return false;
    return true;
}

static struct redis *open_url(struct event_base *base, const char *url,
                              const struct redis_opts *opts)
{
    const char *err = NULL;
    struct redis *r = redis_new(base, url, opts, &err);
    if (!r)
        fail_msg("redis_new: %s", err ? err : "(no error)");
    if (!run_until(base, pred_connected, r, 3000))
        fail_msg("redis did not connect to the test server");
    return r;
}

static struct redis *open_ok(struct event_base *base,
                             const struct redis_opts *opts)
{
    return open_url(base, test_url, opts);
}

/* Runs one command to completion and checks it fired once, from the loop. */
static void cmd_sync(struct event_base *base, struct redis *r, struct res *x,
                     int argc, const char **argv, const size_t *lens)
{
    memset(x, 0, sizeof(*x));
    cmd(r, x, NULL, argc, argv, lens);
    assert_true(run_until(base, pred_called, x, 3000));
    assert_int_equal(x->calls, 1);
    assert_false(x->called_inside);
}

static void cmd_ok(struct event_base *base, struct redis *r, struct res *x,
                   int argc, const char **argv)
{
    cmd_sync(base, r, x, argc, argv, NULL);
    if (x->err)
        fail_msg("%s: %s", argv[0], x->err);
    if (x->type == REDIS_REPLY_ERROR)
        fail_msg("%s: error reply %s", argv[0], x->str);
}

/* A loopback port nobody listens on (bound once, then released). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* host:port of the test url, for urls with other credentials or db. */
static void test_hostport(char *out, size_t n)
{
    const char *p = strstr(test_url, "://");
    assert_non_null(p);
    p += 3;
    size_t alen = strcspn(p, "/");
    const char *at = memrchr(p, '@', alen);
    if (at) {
        alen -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    assert_true(alen < n);
    memcpy(out, p, alen);
    out[alen] = '\0';
}

/* Blocks the whole server for about ms from a second connection: DEBUG
 * SLEEP if the server allows DEBUG, else CLIENT PAUSE. Returns once the
 * block is in effect. */
static void block_server(struct event_base *base, struct redis *helper,
                         struct res *x, int ms)
{
    char secs[32], msec[32];
    snprintf(secs, sizeof(secs), "%.3f", ms / 1000.0);
    snprintf(msec, sizeof(msec), "%d", ms);
    const char *probe[] = {"DEBUG", "SLEEP", "0"};
    cmd_sync(base, helper, x, 3, probe, NULL);
    bool have_debug = !x->err && x->type != REDIS_REPLY_ERROR;
    memset(x, 0, sizeof(*x));
    if (have_debug) {
        const char *argv[] = {"DEBUG", "SLEEP", secs};
        cmd(helper, x, NULL, 3, argv, NULL);
        run_for(base, 30); /* written and the server asleep */
    } else {
        const char *argv[] = {"CLIENT", "PAUSE", msec};
        cmd_ok(base, helper, x, 3, argv);
    }
}

static int setup(void **state)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    *state = base;
    return 0;
}

static int teardown(void **state)
{
    event_base_free(*state);
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_bad_urls(void **state)
{
    struct event_base *base = *state;
    static const char *const bad[] = {
        "",
        "http://127.0.0.1",
        "redis://",
        "redis://:6379",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:12x",
        "redis://127.0.0.1/x",
        "redis://127.0.0.1/-1",
        "redis://[::1",
        "redis://pw@127.0.0.1",
        "redis://:pw%zz@127.0.0.1",
        "redis://:pw%00@127.0.0.1",
        "redis://user:@127.0.0.1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *err = NULL;
        struct redis *r = redis_new(base, bad[i], NULL, &err);
        if (r)
            fail_msg("accepted bad url '%s'", bad[i]);
        assert_non_null(err);
    }
    /* Well-formed: accepted (the connects just fail, port 1 is closed). */
    static const char *const good[] = {
        "redis://127.0.0.1:1",
        "REDIS://:p%40ss@127.0.0.1:1/",
        "redis://u%3A:p@[::1]:1/15",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *err = NULL;
        struct redis *r = redis_new(base, good[i], NULL, &err);
        if (!r)
            fail_msg("rejected '%s': %s", good[i], err);
        redis_free(r);
    }
}

static void test_set_get_binary(void **state)
{
    struct event_base *base = *state;
    struct redis *r = open_ok(base, NULL);
    static const char key[] = KEY_PREFIX "bin";
    static const char val[] = "a\0b\r\nc\xff\0";
    const size_t vlen = sizeof(val) - 1; /* keeps the trailing NUL */
    const char *set[] = {"SET", key, val};
    const size_t setlen[] = {3, strlen(key), vlen};
    const char *get[] = {"GET", key};
    struct res x;

    cmd_sync(base, r, &x, 3, set, setlen);
    assert_null(x.err);
    assert_int_equal(x.type, REDIS_REPLY_STATUS);
    cmd_sync(base, r, &x, 2, get, NULL);
    assert_null(x.err);
    assert_int_equal(x.type, REDIS_REPLY_STRING);
    assert_int_equal(x.len, vlen);
    assert_memory_equal(x.str, val, vlen);

    run_for(base, 50);
    assert_int_equal(x.calls, 1);
    struct redis_stats st;
    redis_get_stats(r, &st);
    assert_int_equal(st.commands, 2);
    assert_int_equal(st.errors, 0);
    redis_free(r);
}

struct pipe {
    int next; /* index expected next */
    int calls;
    int bad;
};

struct pipe_cmd {
    struct pipe *p;
    int idx;
};

static void pipe_cb(void *arg, redisReply *reply, const char *err)
{
    struct pipe_cmd *c = arg;
    struct pipe *p = c->p;
    p->calls++;
    if (!err && reply && reply->type == REDIS_REPLY_INTEGER &&
        reply->integer == c->idx + 1 && c->idx == p->next && !in_command)
        p->next++;
    else
        p->bad++;
}

static bool pred_pipe(void *arg)
{
    struct pipe *p = arg;
    return p->calls >= 2000;
}

static void test_pipeline_order(void **state)
{
    struct event_base *base = *state;
    struct redis *r = open_ok(base, NULL);
    enum { N = 2000 };
    static const char key[] = KEY_PREFIX "counter";
    const char *del[] = {"DEL", key};
    const char *incr[] = {"INCR", key};
    struct res x;
    cmd_ok(base, r, &x, 2, del);

    struct pipe p = {0};
    struct pipe_cmd *cmds = calloc(N, sizeof(*cmds));
    assert_non_null(cmds);
    for (int i = 0; i < N; i++) {
        cmds[i] = (struct pipe_cmd){.p = &p, .idx = i};
        in_command = true;
        redis_command(r, 2, incr, NULL, pipe_cb, &cmds[i]);
        in_command = false;
    }
    assert_int_equal(p.calls, 0);
    assert_true(run_until(base, pred_pipe, &p, 10000));
    run_for(base, 50);
    assert_int_equal(p.calls, N);
    assert_int_equal(p.bad, 0);
    assert_int_equal(p.next, N);
    free(cmds);
    redis_free(r);
}

static void test_error_reply(void **state)
{
    struct event_base *base = *state;
    struct redis *r = open_ok(base, NULL);
    static const char key[] = KEY_PREFIX "string";
    const char *set[] = {"SET", key, "x"};
    const char *lpush[] = {"LPUSH", key, "y"};
    struct res x;
    struct redis_stats before, after;

    cmd_ok(base, r, &x, 3, set);
    redis_get_stats(r, &before);
    cmd_sync(base, r, &x, 3, lpush, NULL);
    assert_null(x.err);
    assert_int_equal(x.type, REDIS_REPLY_ERROR);
    assert_true(strncmp(x.str, "WRONGTYPE", 9) == 0);
    redis_get_stats(r, &after);
    assert_int_equal(after.commands, before.commands + 1);
    assert_int_equal(after.errors, before.errors + 1);
    /* The connection is fine afterwards. */
    cmd_ok(base, r, &x, 3, set);
    redis_free(r);
}

static void test_unsupported_and_bad(void **state)
{
    struct event_base *base = *state;
    struct redis *r = open_ok(base, NULL);
    const char *sub[] = {"subscribe", "ch"};
    const char *reply_off[] = {"CLIENT", "REPLY", "OFF"};
    const char *nul[] = {"PING", NULL};
    struct res x;
    cmd_sync(base, r, &x, 2, sub, NULL);
    assert_string_equal(x.err, "unsupported command");
    cmd_sync(base, r, &x, 3, reply_off, NULL);
    assert_string_equal(x.err, "unsupported command");
    cmd_sync(base, r, &x, 0, sub, NULL);
    assert_string_equal(x.err, "bad command");
    cmd_sync(base, r, &x, 2, nul, NULL);
    assert_string_equal(x.err, "bad command");
    assert_true(redis_connected(r));
    const char *ping[] = {"PING"};
    cmd_ok(base, r, &x, 1, ping);
    assert_string_equal(x.str, "PONG");
    redis_free(r);
}

static void test_command_timeout(void **state)
{
    struct event_base *base = *state;
    const struct redis_opts opts = {
        .command_timeout_ms = 100,
        .backoff_min_ms = 20,
        .backoff_max_ms = 200,
    };
    struct redis *r = open_ok(base, &opts);
    struct redis *helper = open_ok(base, NULL);
    struct res blk, x[2];
    const char *ping[] = {"PING"};

    block_server(base, helper, &blk, 500);
    memset(x, 0, sizeof(x));
    int64_t t0 = now_ms();
    cmd(r, &x[0], NULL, 1, ping, NULL);
    cmd(r, &x[1], NULL, 1, ping, NULL);
    struct res_set all = {x, 2};
    assert_true(run_until(base, pred_all_called, &all, 2000));
    int64_t took = now_ms() - t0;
    assert_int_equal(x[0].calls, 1);
    assert_string_equal(x[0].err, "timeout");
    assert_int_equal(x[0].type, -1);
    assert_true(took >= 90 && took < 450);
    assert_int_equal(x[1].calls, 1);
    assert_string_equal(x[1].err, "connection lost");

    /* Let the block end; the wrapper reconnects on its own. */
    run_for(base, 600);
    assert_true(run_until(base, pred_connected, r, 3000));
    struct res y;
    cmd_ok(base, r, &y, 1, ping);
    assert_string_equal(y.str, "PONG");
    assert_int_equal(x[0].calls, 1);
    assert_int_equal(x[1].calls, 1);
    struct redis_stats st;
    redis_get_stats(r, &st);
    assert_true(st.reconnects >= 1);
    assert_true(st.errors >= 2);
    redis_free(helper);
    redis_free(r);
}

static bool pred_reconnected(void *arg)
{
    struct redis *r = arg;
    struct redis_stats st;
    redis_get_stats(r, &st);
    return st.reconnects >= 1 && redis_connected(r);
}

/* The wrapper's own connection is killed by id from a second connection
 * (not TYPE normal: that would also cut other clients of a shared test
 * server). */
static void test_killed_reconnects(void **state)
{
    struct event_base *base = *state;
    const struct redis_opts opts = {
        .backoff_min_ms = 20,
        .backoff_max_ms = 200,
        .command_timeout_ms = 2000,
    };
    struct redis *r = open_ok(base, &opts);
    struct redis *killer = open_ok(base, NULL);
    struct res x;
    const char *client_id[] = {"CLIENT", "ID"};
    cmd_ok(base, r, &x, 2, client_id);
    assert_int_equal(x.type, REDIS_REPLY_INTEGER);
    long long old_id = x.integer;
    char id[32];
    snprintf(id, sizeof(id), "%lld", old_id);

    /* A command in flight when the connection dies fails once. */
    static const char list[] = KEY_PREFIX "empty-list";
    const char *blpop[] = {"BLPOP", list, "5"};
    struct res blocked = {0};
    cmd(r, &blocked, NULL, 3, blpop, NULL);
    run_for(base, 20);
    assert_int_equal(blocked.calls, 0);

    const char *kill[] = {"CLIENT", "KILL", "ID", id};
    cmd_ok(base, killer, &x, 4, kill);
    assert_int_equal(x.integer, 1);
    assert_true(run_until(base, pred_called, &blocked, 1000));
    assert_string_equal(blocked.err, "connection lost");
    assert_true(run_until(base, pred_reconnected, r, 3000));

    static const char key[] = KEY_PREFIX "after-kill";
    const char *set[] = {"SET", key, "v"};
    const char *get[] = {"GET", key};
    cmd_ok(base, r, &x, 3, set);
    cmd_ok(base, r, &x, 2, get);
    assert_string_equal(x.str, "v");
    cmd_ok(base, r, &x, 2, client_id);
    assert_true(x.integer != old_id);
    assert_int_equal(blocked.calls, 1);
    struct redis_stats st;
    redis_get_stats(r, &st);
    assert_int_equal(st.reconnects, 1);
    redis_free(killer);
    redis_free(r);
}

static void test_closed_port(void **state)
{
    struct event_base *base = *state;
    const struct redis_opts opts = {
        .connect_timeout_ms = 500,
        .backoff_min_ms = 20,
        .backoff_max_ms = 100,
    };
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed_port());
    const char *err = NULL;
    struct redis *r = redis_new(base, url, &opts, &err);
    assert_non_null(r);
    assert_false(redis_connected(r));

    const char *ping[] = {"PING"};
    struct res x = {0};
    int64_t t0 = now_ms();
    cmd(r, &x, NULL, 1, ping, NULL);
    assert_int_equal(x.calls, 0); /* never from inside redis_command */
    assert_true(run_until(base, pred_called, &x, 1000));
    assert_true(now_ms() - t0 < 100);
    assert_false(x.called_inside);
    assert_string_equal(x.err, "not connected");

    run_for(base, 300); /* several failed attempts with backoff */
    assert_false(redis_connected(r));
    cmd_sync(base, r, &x, 1, ping, NULL);
    assert_string_equal(x.err, "not connected");
    run_for(base, 30);
    assert_int_equal(x.calls, 1);
    struct redis_stats st;
    redis_get_stats(r, &st);
    assert_int_equal(st.commands, 2);
    assert_int_equal(st.errors, 2);
    assert_int_equal(st.reconnects, 0);
    redis_free(r);
}

static void test_free_with_pending(void **state)
{
    struct event_base *base = *state;
    struct redis *r = open_ok(base, NULL);
    enum { N = 10 };
    struct res x[N + 1];
    memset(x, 0, sizeof(x));
    const char *ping[] = {"PING"};
    for (int i = 0; i < N; i++)
        cmd(r, &x[i], NULL, 1, ping, NULL);
    cmd(r, &x[N], NULL, 0, ping, NULL); /* queued for deferred failure */
    redis_free(r);
    for (int i = 0; i < N; i++) {
        assert_int_equal(x[i].calls, 1);
        assert_string_equal(x[i].err, "closing");
    }
    assert_int_equal(x[N].calls, 1);
    assert_string_equal(x[N].err, "bad command");

    /* Still connecting: the command was failed fast and is freed too. */
    const char *err = NULL;
    struct redis *r2 = redis_new(base, test_url, NULL, &err);
    assert_non_null(r2);
    struct res y = {0};
    cmd(r2, &y, NULL, 1, ping, NULL);
    redis_free(r2);
    assert_int_equal(y.calls, 1);
    assert_non_null(y.err);

    run_for(base, 50);
    for (int i = 0; i <= N; i++)
        assert_int_equal(x[i].calls, 1);
    assert_int_equal(y.calls, 1);
}

struct freer {
    struct redis *r;
    struct res x;
    struct res inner; /* a command issued from inside the callback */
};

static void freer_cb(void *arg, redisReply *reply, const char *err)
{
    struct freer *f = arg;
    res_cb(&f->x, reply, err);
    const char *ping[] = {"PING"};
    redis_command(f->r, 1, ping, NULL, res_cb, &f->inner);
    redis_free(f->r);
    redis_free(f->r); /* a second call is harmless */
}

static bool pred_freer(void *arg)
{
    struct freer *f = arg;
    return f->x.calls > 0 && f->inner.calls > 0;
}

static void test_free_in_reply_callback(void **state)
{
    struct event_base *base = *state;
    struct freer f = {0};
    f.r = open_ok(base, NULL);
    enum { N = 5 };
    struct res x[N];
    memset(x, 0, sizeof(x));
    const char *ping[] = {"PING"};
    cmd(f.r, &f, freer_cb, 1, ping, NULL);
    for (int i = 0; i < N; i++)
        cmd(f.r, &x[i], NULL, 1, ping, NULL);
    struct res_set all = {x, N};
    assert_true(run_until(base, pred_freer, &f, 3000));
    assert_true(run_until(base, pred_all_called, &all, 3000));
    run_for(base, 50);
    assert_int_equal(f.x.calls, 1);
    assert_null(f.x.err);
    assert_string_equal(f.x.str, "PONG");
    assert_int_equal(f.inner.calls, 1);
    assert_string_equal(f.inner.err, "closing");
    for (int i = 0; i < N; i++) {
        assert_int_equal(x[i].calls, 1);
        assert_string_equal(x[i].err, "closing");
    }
}

static void test_free_in_failfast_callback(void **state)
{
    struct event_base *base = *state;
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed_port());
    struct freer f = {0};
    const char *err = NULL;
    f.r = redis_new(base, url, NULL, &err);
    assert_non_null(f.r);
    struct res x = {0};
    const char *ping[] = {"PING"};
    cmd(f.r, &f, freer_cb, 1, ping, NULL);
    cmd(f.r, &x, NULL, 1, ping, NULL);
    assert_true(run_until(base, pred_freer, &f, 1000));
    assert_true(run_until(base, pred_called, &x, 1000));
    run_for(base, 50);
    assert_int_equal(f.x.calls, 1);
    assert_string_equal(f.x.err, "not connected");
    assert_int_equal(x.calls, 1);
    assert_string_equal(x.err, "not connected");
    assert_int_equal(f.inner.calls, 1);
    assert_non_null(f.inner.err);
}

static void test_free_in_timeout_callback(void **state)
{
    struct event_base *base = *state;
    const struct redis_opts opts = {.command_timeout_ms = 100};
    struct freer f = {0};
    f.r = open_ok(base, &opts);
    struct redis *helper = open_ok(base, NULL);
    struct res blk, x = {0};
    const char *ping[] = {"PING"};
    block_server(base, helper, &blk, 300);
    cmd(f.r, &f, freer_cb, 1, ping, NULL);
    cmd(f.r, &x, NULL, 1, ping, NULL);
    assert_true(run_until(base, pred_freer, &f, 2000));
    assert_true(run_until(base, pred_called, &x, 2000));
    run_for(base, 400);
    assert_int_equal(f.x.calls, 1);
    assert_string_equal(f.x.err, "timeout");
    assert_int_equal(f.inner.calls, 1);
    assert_non_null(f.inner.err);
    assert_int_equal(x.calls, 1);
    assert_string_equal(x.err, "closing");
    redis_free(helper);
}

/* AUTH user password and SELECT, through an ACL user made for the test
 * (the password carries percent-encoded '@', ':' and '/'). */
static void test_auth_select(void **state)
{
    struct event_base *base = *state;
    struct redis *admin = open_ok(base, NULL);
    struct res x;
    const char *setuser[] = {"ACL",   "SETUSER", "corral_test_redis",
                             "reset", "on",      ">p@ss:w/rd",
                             "~*",    "&*",      "+@all"};
    cmd_ok(base, admin, &x, 9, setuser);

    char hostport[256], url[512];
    test_hostport(hostport, sizeof(hostport));
    snprintf(url, sizeof(url),
             "redis://corral_test_redis:p%%40ss%%3Aw%%2Frd@%s/2", hostport);
    struct redis *r = open_url(base, url, NULL);
    const char *info[] = {"CLIENT", "INFO"};
    cmd_ok(base, r, &x, 2, info);
    assert_non_null(strstr(x.str, " db=2 "));
    assert_non_null(strstr(x.str, " user=corral_test_redis "));
    redis_free(r);

    /* A wrong password never gets to READY; commands fail fast. */
    snprintf(url, sizeof(url), "redis://corral_test_redis:wrong@%s/2",
             hostport);
    const struct redis_opts opts = {.backoff_min_ms = 20, .backoff_max_ms = 50};
    const char *err = NULL;
    r = redis_new(base, url, &opts, &err);
    assert_non_null(r);
    run_for(base, 300);
    assert_false(redis_connected(r));
    const char *ping[] = {"PING"};
    cmd_sync(base, r, &x, 1, ping, NULL);
    assert_string_equal(x.err, "not connected");
    redis_free(r);

    const char *deluser[] = {"ACL", "DELUSER", "corral_test_redis"};
    cmd_ok(base, admin, &x, 3, deluser);
    redis_free(admin);
}

int main(void)
{
    test_url = getenv("CORRAL_TEST_REDIS_URL");
    if (!test_url || !*test_url) {
        fprintf(stderr, "CORRAL_TEST_REDIS_URL is not set: the redis "
                        "integration tests need a live server\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_get_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsupported_and_bad, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_reconnects, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_closed_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_free_in_reply_callback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_free_in_failfast_callback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_free_in_timeout_callback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_auth_select, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
