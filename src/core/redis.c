/* redis: one hiredis 0.14.1 async context on the libevent adapter, with
 * corral's own timers and reconnection (DESIGN.md §2).
 *
 * Shape (after h2o's lib/common/redis.c and hiredis's own ownership rules):
 *   - the connection is RCONN_DOWN (no context; `retry` starts the next
 *     attempt), RCONN_CONNECTING (TCP connect, then AUTH and SELECT; the
 *     `connect_timer` covers both) or RCONN_READY (user commands go out);
 *   - each user command is a struct rconn_cmd handed to hiredis as privdata.
 *     hiredis calls rconn_on_reply exactly once per command (with the reply,
 *     or with NULL when the context dies), and only there is the struct
 *     freed. The user callback fires once, guarded by `done`: from
 *     rconn_on_reply, from the command's own timer ("timeout"), or from the
 *     deferred queue for a command that never reached hiredis;
 *   - a command that cannot be sent goes on `failq` and is failed from the
 *     zero-delay `deferred` event, so redis_command never calls back.
 *
 * hiredis owns the teardown of a context that fails on its own (read error,
 * EOF, refused connect): rconn_lost only forgets it. corral tears a context
 * down itself (timeouts, failed handshake, redis_free) through rconn_drop,
 * which forgets it first, so the callbacks hiredis then runs see a context
 * that is no longer r->ac and leave the state alone.
 *
 * Never call redisAsyncFree from the connect or disconnect callback: 0.14.1
 * keeps using the context after both return. Inside a reply callback it is
 * safe (REDIS_IN_CALLBACK defers the free).
 *
 * Re-entrancy: user callbacks run with r->in_callback raised. redis_free
 * called there only marks the handle closing and leaves the teardown to
 * the `deferred` event, after hiredis and this file have unwound. */
#include "corral/base64.h"
#include "corral/redis.h"
#include "corral/server.h"

#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "corral/log.h"
#include "corral/mem.h"

#define RCONN_URL_MAX 4096

enum rconn_state {
    RCONN_DOWN,       /* no context; `retry` may be armed */
    RCONN_CONNECTING, /* context up to the handshake; `connect_timer` armed */
    RCONN_READY,      /* handshake done: user commands are sent */
};

struct rconn_cmd {
    struct redis *r;
    redis_cb cb;
    void *arg;
    struct event timer;     /* command timeout; assigned, maybe never added */
    redisAsyncContext *ac;  /* the context it was sent on */
    bool done;              /* the user callback has fired */
    bool timed_out;         /* deliver "timeout" when hiredis lets go */
    const char *fail_err;   /* on failq: the error to deliver */
    struct rconn_cmd *next; /* on failq */
};

struct redis {
    struct event_base *base;
    struct redis_opts opts;       /* with defaults applied */
    const struct timeval *cmd_tv; /* command timeout; NULL: none */
    struct timeval cmd_tv_plain;  /* if no common timeout could be made */
    char *host;                   /* as written in the url, for logs */
    char ip[NI_MAXHOST];          /* resolved once in redis_new */
    int port;
    int db;
    char *user;     /* NULL: AUTH <password> */
    char *password; /* NULL: no AUTH; zeroized on free */
    enum rconn_state state;
    redisAsyncContext *ac; /* NULL when DOWN */
    int handshake_left;    /* AUTH/SELECT replies still expected */
    struct event connect_timer;
    struct event retry;      /* reconnect after backoff */
    int backoff_ms;          /* next reconnect delay */
    uint64_t rng;            /* xorshift state for reconnect jitter */
    bool ever_ready;         /* for stats.reconnects and log wording */
    struct event deferred;   /* zero-delay: failq delivery, deferred free */
    struct rconn_cmd *failq; /* FIFO of commands failed before sending */
    struct rconn_cmd **failq_tail;
    int in_callback;   /* user callbacks on the stack */
    bool closing;      /* redis_free was called */
    bool free_pending; /* the free waits for `deferred` */
    struct redis_stats stats;
};

struct rconn_url {
    char *host;
    int port;
    int db;
    char *user;
    char *password;
};

/* ---- small helpers ------------------------------------------------------ */

/* A zero-initialized struct gets the defaults, except command_timeout_ms,
 * where 0 means none (the header's contract). */
static void rconn_opts_init(struct redis_opts *o, const struct redis_opts *in)
{
    static const struct redis_opts defaults = {
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 2000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
    };
    *o = in ? *in : defaults;
    if (o->connect_timeout_ms <= 0)
        o->connect_timeout_ms = defaults.connect_timeout_ms;
    if (o->command_timeout_ms < 0)
        o->command_timeout_ms = 0;
    if (o->backoff_min_ms <= 0)
        o->backoff_min_ms = defaults.backoff_min_ms;
    if (o->backoff_max_ms < o->backoff_min_ms)
        o->backoff_max_ms = o->backoff_min_ms > defaults.backoff_max_ms
                                ? o->backoff_min_ms
                                : defaults.backoff_max_ms;
}

static void rconn_free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* ---- url parsing -------------------------------------------------------- */

/* Percent-decodes s[0..n) into a new string: a password may need to carry
 * '@', ':' or '/'. NULL on a bad escape or an encoded NUL (AUTH would
 * silently cut the password there). */
static char *rconn_pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_digit(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0) {
                explicit_bzero(out, n + 1);
                free(out);
                return NULL;
            }
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

/* Decimal digits only, in [lo, max]. */
static bool rconn_parse_int(const char *s, const char *e, int lo, int max,
                            int *out)
{
    long v = 0;
    if (s == e)
        return false;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (*s - '0');
        if (v > max)
            return false;
    }
    if (v < lo)
        return false;
    *out = (int)v;
    return true;
}

/* [user]:password, both percent-decoded. */
static const char *rconn_parse_userinfo(const char *p, const char *at,
                                        struct rconn_url *u)
{
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || colon + 1 == at)
        return "redis url: credentials must be [user]:password";
    if (colon > p) {
        u->user = rconn_pct_decode(p, (size_t)(colon - p));
        if (!u->user)
            return "redis url: bad percent-encoding in user";
    }
    u->password = rconn_pct_decode(colon + 1, (size_t)(at - colon - 1));
    if (!u->password)
        return "redis url: bad percent-encoding in password";
    return NULL;
}

/* host, [v6-literal], either with an optional :port. */
static const char *rconn_parse_hostport(const char *p, const char *end,
                                        struct rconn_url *u)
{
    const char *host = p, *host_end, *q;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end)
            return "redis url: unterminated [ in host";
        q = host_end + 1;
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (!host_end)
            host_end = end;
        q = host_end;
    }
    if (host_end == host)
        return "redis url: missing host";
    if (q < end &&
        (*q != ':' || !rconn_parse_int(q + 1, end, 1, 65535, &u->port)))
        return "redis url: bad port";
    u->host = xstrndup(host, (size_t)(host_end - host));
    return NULL;
}

/* redis://[[user]:password@]host[:port][/db]. Nothing is resolved here. */
static const char *rconn_parse_url(const char *url, struct rconn_url *u)
{
    static const char scheme[] = "redis://";
    memset(u, 0, sizeof(*u));
    u->port = 6379;
    size_t len = strlen(url);
    if (len > RCONN_URL_MAX)
        return "redis url: too long";
    if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0)
        return "redis url: must start with redis://";
    const char *p = url + sizeof(scheme) - 1;
    const char *end = p + strcspn(p, "/");
    const char *at = memrchr(p, '@', (size_t)(end - p));
    const char *err = NULL;
    if (at) {
        err = rconn_parse_userinfo(p, at, u);
        p = at + 1;
    }
    if (!err)
        err = rconn_parse_hostport(p, end, u);
    if (!err && *end == '/' && end[1] &&
        !rconn_parse_int(end + 1, url + len, 0, INT_MAX, &u->db))
        err = "redis url: bad database number";
    return err;
}

static void rconn_url_deinit(struct rconn_url *u)
{
    free(u->host);
    rconn_free_secret(u->user);
    rconn_free_secret(u->password);
    memset(u, 0, sizeof(*u));
}

/* The one resolver call, before the loop runs: hiredis would otherwise
 * resolve a name synchronously on every (re)connect. IPv4 first, then IPv6,
 * as hiredis itself does: "localhost" must not become ::1 when Redis
 * listens on 127.0.0.1 only. */
static const char *rconn_resolve(const char *host, char *ip, size_t iplen)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        hints.ai_family = AF_INET6;
        res = NULL;
        if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
            return "redis url: cannot resolve host";
    }
    int rc = getnameinfo(res->ai_addr, res->ai_addrlen, ip, (socklen_t)iplen,
                         NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    return rc == 0 ? NULL : "redis url: cannot resolve host";
}

/* ---- connection life cycle ---------------------------------------------- */

/* Arms the reconnect after a failed attempt or a lost connection. The delay
 * doubles per failure and resets once a handshake completes. */
static void rconn_schedule(struct redis *r, const char *what,
                           const char *detail)
{
    if (r->closing)
        return;
    int delay = backoff_jitter(&r->rng, r->backoff_ms);
    r->backoff_ms = r->backoff_ms > r->opts.backoff_max_ms / 2
                        ? r->opts.backoff_max_ms
                        : r->backoff_ms * 2;
    log_warn("redis %s:%d: %s%s%s; reconnecting in %d ms", r->host, r->port,
             what, detail ? ": " : "", detail ? detail : "", delay);
    struct timeval tv = ms_to_timeval(delay);
    evtimer_add(&r->retry, &tv);
}

/* hiredis is tearing the context down itself (or has refused the connect):
 * forget it and plan the next attempt. hiredis frees it. */
static void rconn_lost(struct redis *r, const char *what, const char *detail)
{
    r->ac = NULL;
    r->state = RCONN_DOWN;
    r->handshake_left = 0;
    evtimer_del(&r->connect_timer);
    rconn_schedule(r, what, detail);
}

/* corral ends the context (timeout, failed handshake, redis_free). It is
 * forgotten before redisAsyncFree so that the callbacks hiredis runs from
 * there see r->ac != ac: pending commands fail, the state stays DOWN. */
static void rconn_drop(struct redis *r, const char *why, const char *detail)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    rconn_lost(r, why, detail);
    redisAsyncFree(ac);
}

static void rconn_ready(struct redis *r)
{
    evtimer_del(&r->connect_timer);
    r->state = RCONN_READY;
    r->backoff_ms = r->opts.backoff_min_ms;
    if (r->ever_ready) {
        r->stats.reconnects++;
        log_info("redis %s:%d: reconnected (db %d)", r->host, r->port, r->db);
    } else {
        log_info("redis %s:%d: connected (db %d)", r->host, r->port, r->db);
    }
    r->ever_ready = true;
}

static void rconn_on_handshake(redisAsyncContext *ac, void *reply,
                               void *privdata)
{
    struct redis *r = privdata;
    redisReply *rep = reply;
    if (ac != r->ac)
        return; /* a context already dropped */
    if (!rep) {
        rconn_lost(r, "connection lost during handshake",
                   ac->errstr ? ac->errstr : "closed");
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Inside a reply callback, so redisAsyncFree is deferred by hiredis
         * until this returns. */
        rconn_drop(r, "AUTH/SELECT failed", rep->str);
        return;
    }
    if (--r->handshake_left == 0)
        rconn_ready(r);
}

/* AUTH and SELECT go out first on every new connection, ahead of any user
 * command (which waits for READY). If one cannot even be queued, the
 * connect timer drops the context: never free it from onConnect. */
static void rconn_handshake(struct redis *r)
{
    char db[16];
    const char *argv[3];
    int argc = 0;
    r->handshake_left = 0;
    if (r->password) {
        argv[argc++] = "AUTH";
        if (r->user)
            argv[argc++] = r->user;
        argv[argc++] = r->password;
        if (redisAsyncCommandArgv(r->ac, rconn_on_handshake, r, argc, argv,
                                  NULL) != REDIS_OK)
            return;
        r->handshake_left++;
    }
    if (r->db != 0) {
        snprintf(db, sizeof(db), "%d", r->db);
        argv[0] = "SELECT";
        argv[1] = db;
        if (redisAsyncCommandArgv(r->ac, rconn_on_handshake, r, 2, argv,
                                  NULL) != REDIS_OK)
            return;
        r->handshake_left++;
    }
    if (r->handshake_left == 0)
        rconn_ready(r);
}

static void rconn_on_connect(const redisAsyncContext *cac, int status)
{
    struct redis *r = cac->data;
    if (cac != r->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context once this returns. */
        rconn_lost(r, "connect failed", cac->c.errstr);
        return;
    }
    rconn_handshake(r);
}

static void rconn_on_disconnect(const redisAsyncContext *cac, int status)
{
    struct redis *r = cac->data;
    if (cac == r->ac)
        rconn_lost(r, "connection lost",
                   status == REDIS_OK ? "closed" : cac->errstr);
}

static void rconn_connect(struct redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->ip, r->port);
    if (!ac) {
        rconn_schedule(r, "connect failed", "out of memory");
        return;
    }
    if (ac->err) {
        rconn_schedule(r, "connect failed", ac->errstr);
        redisAsyncFree(ac);
        return;
    }
    ac->data = r;
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, rconn_on_connect);
    redisAsyncSetDisconnectCallback(ac, rconn_on_disconnect);
    r->ac = ac;
    r->state = RCONN_CONNECTING;
    struct timeval tv = ms_to_timeval(r->opts.connect_timeout_ms);
    evtimer_add(&r->connect_timer, &tv);
}

static void rconn_on_retry(evutil_socket_t fd, short what, void *arg)
{
    rconn_connect(arg);
}

static void rconn_on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    rconn_drop(arg, "connect timed out", NULL);
}

/* ---- commands ----------------------------------------------------------- */

/* The one place a user callback runs. */
static void rconn_complete(struct rconn_cmd *c, redisReply *reply,
                           const char *err)
{
    struct redis *r = c->r;
    c->done = true;
    event_del(&c->timer);
    r->stats.commands++;
    if (err || reply->type == REDIS_REPLY_ERROR)
        r->stats.errors++;
    if (c->cb) {
        r->in_callback++;
        c->cb(c->arg, reply, err);
        r->in_callback--;
    }
}

/* hiredis calls this exactly once per sent command, so the command is
 * freed here and nowhere else once it has reached hiredis. */
static void rconn_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rconn_cmd *c = privdata;
    struct redis *r = c->r;
    if (!reply && ac == r->ac)
        rconn_lost(r, "connection lost", ac->errstr ? ac->errstr : "closed");
    if (!c->done) {
        if (c->timed_out)
            rconn_complete(c, NULL, "timeout");
        else if (r->closing)
            rconn_complete(c, NULL, "closing");
        else if (!reply)
            rconn_complete(c, NULL, "connection lost");
        else
            rconn_complete(c, reply, NULL);
    }
    free(c);
}

/* hiredis cannot take one command back, so the connection goes. Commands
 * complete in send order, and their timers (one common-timeout queue)
 * expire in send order, so this one is the oldest pending: hiredis fails it
 * first ("timeout", via timed_out) and the ones behind it next
 * ("connection lost"), while r is already DOWN. */
static void rconn_cmd_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct rconn_cmd *c = arg;
    struct redis *r = c->r;
    if (c->done)
        return;
    if (c->ac != r->ac || !r->ac) {
        rconn_complete(c, NULL, "timeout"); /* not reached: see above */
        return;
    }
    c->timed_out = true;
    rconn_drop(r, "command timed out", NULL);
}

static void rconn_fail_later(struct redis *r, struct rconn_cmd *c,
                             const char *err)
{
    c->fail_err = err;
    c->next = NULL;
    *r->failq_tail = c;
    r->failq_tail = &c->next;
    event_active(&r->deferred, EV_TIMEOUT, 1);
}

static bool rconn_arg_is(const char **argv, const size_t *argvlen, int i,
                         const char *name)
{
    size_t n = argvlen ? argvlen[i] : strlen(argv[i]);
    return n == strlen(name) && strncasecmp(argv[i], name, n) == 0;
}

/* Commands that break the wrapper: the pub/sub family, MONITOR and CLIENT
 * REPLY make replies stop pairing one-to-one with commands (and 0.14.1
 * would call a subscribe callback many times); HELLO can switch to RESP3,
 * which 0.14.1 cannot parse; SELECT, AUTH and RESET change connection state
 * that a reconnect would silently undo (the url sets db and user). */
static bool rconn_unsupported(int argc, const char **argv,
                              const size_t *argvlen)
{
    static const char *const names[] = {
        "subscribe",    "psubscribe",   "ssubscribe", "unsubscribe",
        "punsubscribe", "sunsubscribe", "monitor",    "hello",
        "select",       "auth",         "reset",
    };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (rconn_arg_is(argv, argvlen, 0, names[i]))
            return true;
    return argc >= 2 && rconn_arg_is(argv, argvlen, 0, "client") &&
           rconn_arg_is(argv, argvlen, 1, "reply");
}

static const char *rconn_check(const struct redis *r, int argc,
                               const char **argv, const size_t *argvlen)
{
    if (r->closing)
        return "closing";
    if (argc <= 0 || !argv)
        return "bad command";
    for (int i = 0; i < argc; i++)
        if (!argv[i])
            return "bad command";
    if (rconn_unsupported(argc, argv, argvlen))
        return "unsupported command";
    if (r->state != RCONN_READY)
        return "not connected";
    return NULL;
}

void redis_command(struct redis *r, int argc, const char **argv,
                   const size_t *argvlen, redis_cb cb, void *arg)
{
    struct rconn_cmd *c = xcalloc(1, sizeof(*c));
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    evtimer_assign(&c->timer, r->base, rconn_cmd_on_timeout, c);
    const char *err = rconn_check(r, argc, argv, argvlen);
    if (!err && redisAsyncCommandArgv(r->ac, rconn_on_reply, c, argc, argv,
                                      argvlen) != REDIS_OK)
        err = "not connected";
    if (err) {
        rconn_fail_later(r, c, err);
        return;
    }
    c->ac = r->ac;
    if (r->cmd_tv)
        evtimer_add(&c->timer, r->cmd_tv);
}

/* ---- life cycle of the handle ------------------------------------------- */

static void rconn_destroy(struct redis *r)
{
    r->closing = true;
    r->free_pending = false;
    evtimer_del(&r->retry);
    evtimer_del(&r->connect_timer);
    bool was_up = r->state == RCONN_READY;
    rconn_drop(r, "closing", NULL); /* pending commands fail: "closing" */
    /* Callbacks may have queued more commands; they fail here as well. */
    while (r->failq) {
        struct rconn_cmd *c = r->failq;
        r->failq = c->next;
        if (!r->failq)
            r->failq_tail = &r->failq;
        rconn_complete(c, NULL, c->fail_err);
        free(c);
    }
    event_del(&r->deferred);
    if (was_up)
        log_info("redis %s:%d: closed", r->host, r->port);
    free(r->host);
    rconn_free_secret(r->user);
    rconn_free_secret(r->password);
    free(r);
}

/* Delivers the failures queued by redis_command, or runs a free that was
 * requested from inside a callback. Only the commands queued before this
 * run are delivered: a callback that retries at once waits one turn. */
static void rconn_on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct redis *r = arg;
    if (r->free_pending) {
        rconn_destroy(r);
        return;
    }
    struct rconn_cmd *c = r->failq;
    r->failq = NULL;
    r->failq_tail = &r->failq;
    while (c) {
        struct rconn_cmd *next = c->next;
        rconn_complete(c, NULL, c->fail_err);
        free(c);
        c = next;
    }
}

struct redis *redis_new(struct event_base *base, const char *url,
                        const struct redis_opts *opts, const char **err)
{
    struct rconn_url u;
    const char *e = base && url ? rconn_parse_url(url, &u) : "bad arguments";
    char ip[NI_MAXHOST];
    if (!e)
        e = rconn_resolve(u.host, ip, sizeof(ip));
    if (e) {
        if (base && url)
            rconn_url_deinit(&u);
        if (err)
            *err = e;
        return NULL;
    }
    struct redis *r = xcalloc(1, sizeof(*r));
    r->base = base;
    rconn_opts_init(&r->opts, opts);
    memcpy(r->ip, ip, sizeof(ip));
    r->host = u.host;
    r->port = u.port;
    r->db = u.db;
    r->user = u.user;
    r->password = u.password;
    r->backoff_ms = r->opts.backoff_min_ms;
    r->rng = ((uint64_t)time(NULL) << 20 ^ (uint64_t)(uintptr_t)r) | 1;
    r->failq_tail = &r->failq;
    if (r->opts.command_timeout_ms > 0) {
        /* One FIFO queue instead of a heap entry per command: cheaper with
         * many commands in flight, and timers expire in send order. */
        r->cmd_tv_plain = ms_to_timeval(r->opts.command_timeout_ms);
        r->cmd_tv = event_base_init_common_timeout(base, &r->cmd_tv_plain);
        if (!r->cmd_tv)
            r->cmd_tv = &r->cmd_tv_plain;
    }
    evtimer_assign(&r->connect_timer, base, rconn_on_connect_timeout, r);
    evtimer_assign(&r->retry, base, rconn_on_retry, r);
    event_assign(&r->deferred, base, -1, 0, rconn_on_deferred, r);
    rconn_connect(r);
    return r;
}

void redis_free(struct redis *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    if (r->in_callback > 0) {
        /* Inside a user callback, possibly deep inside hiredis: tear down
         * from the loop once the stack has unwound. */
        r->free_pending = true;
        event_active(&r->deferred, EV_TIMEOUT, 1);
        return;
    }
    rconn_destroy(r);
}

bool redis_connected(const struct redis *r)
{
    return r->state == RCONN_READY && !r->closing;
}

void redis_get_stats(const struct redis *r, struct redis_stats *out)
{
    *out = r->stats;
}
