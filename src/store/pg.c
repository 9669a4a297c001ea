/* pg: a pool of non-blocking libpq connections on the libevent loop.
 *
 * Shape (after pgbouncer's server states and test/asynctest.c):
 *   - each connection is a small state machine (enum pg_conn_state) with
 *     two embedded events: `io` for socket readiness and `timer` for the
 *     connect timeout, the reconnect delay or the query timeout;
 *   - a request (struct pg_req) is WAITING in pool->waiting, RUNNING on one
 *     connection, or FAILED in pool->failed, where its own zero-delay event
 *     delivers an error from the loop;
 *   - user callbacks run in exactly three places: conn_complete() (a result
 *     arrived), req_on_timer() (queue timeout or a decided failure) and
 *     pool_cancel_all() (shutdown). Everything that can fail deep inside a
 *     call chain that may have started in pg_query() (a failed send, a lost
 *     connection) goes through req_fail_later(), so pg_query() never calls
 *     back and no callback runs while pool state is half-updated.
 *
 * Re-entrancy: each event handler brackets its work with pool_enter() and
 * pool_leave(). pg_pool_free() called from inside a callback fails and
 * closes everything at once but leaves the memory to pool_leave() of the
 * outermost handler, after the user's stack has unwound (hiredis's
 * REDIS_IN_CALLBACK/REDIS_FREEING). Handlers re-check pool->closing after
 * every callback.
 *
 * Never called here: PQexec, PQconnectdb, PQreset, PQcancel (all block).
 * PQconnectStart itself blocks in getaddrinfo() for a host name, so the
 * conninfo must carry hostaddr= or an IP literal or a socket directory;
 * pool_check_conninfo() warns otherwise. */
#include "corral/pg.h"
#include "corral/server.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "corral/log.h"
#include "corral/mem.h"

/* The protocol carries the parameter count in 16 bits. */
#define PG_MAX_PARAMS 65535

enum pg_conn_state {
    PG_CONN_DOWN,       /* no PGconn; `timer` starts the next attempt */
    PG_CONN_CONNECTING, /* PQconnectPoll in progress; `timer` = timeout */
    PG_CONN_IDLE,       /* up, no query; EV_READ notices a server close */
    PG_CONN_BUSY,       /* running `req`; `timer` = query timeout */
};

enum pg_req_state {
    PG_REQ_WAITING, /* in pool->waiting; `ev` = queue timeout */
    PG_REQ_RUNNING, /* owned by exactly one connection */
    PG_REQ_FAILED,  /* in pool->failed; `ev` fires at once to deliver */
};

struct pg_req {
    TAILQ_ENTRY(pg_req) link; /* in pool->waiting or pool->failed */
    struct pg_pool *pool;
    enum pg_req_state state;
    char *sql; /* owned copy */
    int nparams;
    char **params; /* owned copies; NULL entries are SQL NULL */
    pg_cb cb;
    void *arg;
    struct event ev;            /* queue timeout, or deferred delivery */
    uint64_t queued_us;         /* monotonic time it entered the queue */
    enum pg_status fail_status; /* PG_REQ_FAILED: what to deliver */
    char *fail_msg;             /* PG_REQ_FAILED: owned copy */
};

TAILQ_HEAD(pg_req_list, pg_req);

struct pg_conn {
    struct pg_pool *pool;
    int idx; /* position in pool->conns, for logs */
    enum pg_conn_state state;
    PGconn *pq;            /* NULL when DOWN */
    struct event io;       /* readiness of PQsocket(pq) */
    bool io_assigned;      /* `io` has been event_assign'ed */
    evutil_socket_t io_fd; /* fd and interest `io` was assigned with */
    short io_what;
    struct event timer; /* connect timeout / reconnect / query timeout */
    int backoff_ms;     /* last reconnect delay; 0 = last attempt ok */
    bool was_up;        /* has been up once (for log wording) */
    bool flushing;      /* PQflush returned 1: also wait for EV_WRITE */
    struct pg_req *req; /* BUSY: the running request */
    PGresult *res;      /* BUSY: last result collected so far */
};

struct pg_pool {
    struct event_base *base;
    char *conninfo;           /* owned copy; never logged (may hold secrets) */
    struct pg_pool_opts opts; /* with defaults applied */
    struct pg_conn *conns;    /* opts.size of them */
    struct pg_req_list waiting; /* FIFO of requests for a connection */
    int nwaiting;
    struct pg_req_list failed; /* decided failures awaiting delivery */
    int depth;                 /* handler / pg_pool_free frames on the stack */
    bool closing;              /* pg_pool_free was called */
    bool conninfo_bad;         /* unparsable: libpq's errors may quote it */
    uint64_t rng;              /* xorshift state for reconnect jitter */
    uint64_t queries;
    uint64_t errors;
    uint64_t wait_us_total;
};

static void pool_dispatch(struct pg_pool *pool);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Zero or negative fields take the defaults of corral's config
 * (DESIGN.md §9); query_timeout_ms 0 means no timeout. */
static void opts_init(struct pg_pool_opts *o, const struct pg_pool_opts *in)
{
    static const struct pg_pool_opts defaults = {
        .size = 4,
        .max_waiting = 10000,
        .connect_timeout_ms = 3000,
        .queue_timeout_ms = 5000,
        .query_timeout_ms = 0,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
    };
    *o = in ? *in : defaults;
    if (o->size <= 0)
        o->size = defaults.size;
    if (o->max_waiting <= 0)
        o->max_waiting = defaults.max_waiting;
    if (o->connect_timeout_ms <= 0)
        o->connect_timeout_ms = defaults.connect_timeout_ms;
    if (o->queue_timeout_ms <= 0)
        o->queue_timeout_ms = defaults.queue_timeout_ms;
    if (o->query_timeout_ms < 0)
        o->query_timeout_ms = 0;
    if (o->backoff_min_ms <= 0)
        o->backoff_min_ms = defaults.backoff_min_ms;
    if (o->backoff_max_ms < o->backoff_min_ms)
        o->backoff_max_ms = o->backoff_min_ms > defaults.backoff_max_ms
                                ? o->backoff_min_ms
                                : defaults.backoff_max_ms;
}

/* libpq messages end in a newline; logs want one line. */
static int msg_len(const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    return n > 4096 ? 4096 : (int)n;
}

/* ---- requests ----------------------------------------------------------- */

static void req_on_timer(evutil_socket_t fd, short what, void *arg);

static struct pg_req *req_new(struct pg_pool *pool, const char *sql,
                              int nparams, const char *const *params, pg_cb cb,
                              void *arg)
{
    struct pg_req *r = xcalloc(1, sizeof(*r));
    r->pool = pool;
    r->sql = xstrdup(sql ? sql : "");
    r->nparams = nparams > 0 ? nparams : 0;
    if (r->nparams > 0) {
        r->params = xcalloc((size_t)r->nparams, sizeof(char *));
        for (int i = 0; i < r->nparams; i++)
            r->params[i] = params && params[i] ? xstrdup(params[i]) : NULL;
    }
    r->cb = cb;
    r->arg = arg;
    event_assign(&r->ev, pool->base, -1, 0, req_on_timer, r);
    return r;
}

static void req_free(struct pg_req *r)
{
    event_del(&r->ev);
    for (int i = 0; i < r->nparams; i++)
        free(r->params[i]);
    free(r->params);
    free(r->sql);
    free(r->fail_msg);
    free(r);
}

/* The only place a user callback is called. r must already be detached
 * from every list and connection. */
static void req_deliver(struct pg_pool *pool, struct pg_req *r,
                        enum pg_status status, PGresult *res,
                        const char *sqlstate, const char *errmsg)
{
    struct pg_reply reply = {
        .status = status,
        .res = status == PG_OK ? res : NULL,
        .sqlstate = sqlstate ? sqlstate : "",
        .errmsg = errmsg ? errmsg : "",
    };
    pool->queries++;
    if (status != PG_OK)
        pool->errors++;
    event_del(&r->ev);
    if (r->cb)
        r->cb(r->arg, &reply);
    req_free(r);
}

/* Decides r's outcome now and delivers it from the loop. Used wherever the
 * caller may be inside pg_query() or halfway through a state change. While
 * closing, no event is armed: pool_cancel_all() drains pool->failed. */
static void req_fail_later(struct pg_pool *pool, struct pg_req *r,
                           enum pg_status status, const char *msg)
{
    r->state = PG_REQ_FAILED;
    r->fail_status = status;
    free(r->fail_msg);
    r->fail_msg = xstrndup(msg, (size_t)msg_len(msg));
    TAILQ_INSERT_TAIL(&pool->failed, r, link);
    if (!pool->closing) {
        struct timeval zero = {0, 0};
        event_add(&r->ev, &zero);
    }
}

static void pool_unqueue(struct pg_pool *pool, struct pg_req *r)
{
    TAILQ_REMOVE(&pool->waiting, r, link);
    pool->nwaiting--;
    pool->wait_us_total += now_us() - r->queued_us;
    event_del(&r->ev);
}

/* ---- re-entrancy -------------------------------------------------------- */

static void pool_destroy(struct pg_pool *pool);

static void pool_enter(struct pg_pool *pool)
{
    pool->depth++;
}

/* Last statement of every handler: the pool may be gone afterwards. */
static void pool_leave(struct pg_pool *pool)
{
    if (--pool->depth == 0 && pool->closing)
        pool_destroy(pool);
}

static void req_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_req *r = arg;
    struct pg_pool *pool = r->pool;

    pool_enter(pool);
    switch (r->state) {
    case PG_REQ_WAITING:
        pool_unqueue(pool, r);
        req_deliver(pool, r, PG_E_TIMEOUT, NULL, "",
                    "timed out waiting for a database connection");
        break;
    case PG_REQ_FAILED:
        TAILQ_REMOVE(&pool->failed, r, link);
        req_deliver(pool, r, r->fail_status, NULL, "", r->fail_msg);
        break;
    case PG_REQ_RUNNING:
        /* Running requests never arm `ev`: their timeout is conn->timer. */
        break;
    }
    pool_leave(pool);
}

/* ---- connections: events ------------------------------------------------ */

static void conn_on_io(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(evutil_socket_t fd, short what, void *arg);

static void conn_unwatch(struct pg_conn *c)
{
    if (c->io_assigned)
        event_del(&c->io);
    c->io_assigned = false;
}

/* (Re-)arms `io` for what on the current socket. While connecting, libpq
 * may close its socket and open another (next host or address, SSL
 * fallback) that can even reuse the same fd number, so every step
 * re-creates the event; once up, the socket is stable and the event is
 * only rebuilt when the interest changes. Returns false if there is no
 * socket. */
static bool conn_watch(struct pg_conn *c, short what)
{
    evutil_socket_t fd = PQsocket(c->pq);
    if (fd < 0)
        return false;
    if (c->io_assigned && c->state != PG_CONN_CONNECTING && fd == c->io_fd &&
        what == c->io_what)
        return true;
    conn_unwatch(c);
    event_assign(&c->io, c->pool->base, fd, (short)(what | EV_PERSIST),
                 conn_on_io, c);
    c->io_assigned = true;
    c->io_fd = fd;
    c->io_what = what;
    event_add(&c->io, NULL);
    return true;
}

static void conn_arm_timer(struct pg_conn *c, int ms)
{
    struct timeval tv = ms_to_timeval(ms);
    event_del(&c->timer);
    event_add(&c->timer, &tv);
}

/* Releases the PGconn. The event goes first: libevent must forget the fd
 * before PQfinish closes it. */
static void conn_close(struct pg_conn *c)
{
    conn_unwatch(c);
    event_del(&c->timer);
    PQclear(c->res);
    c->res = NULL;
    if (c->pq)
        PQfinish(c->pq);
    c->pq = NULL;
    c->flushing = false;
    c->state = PG_CONN_DOWN;
}

/* ---- connections: pool-level views -------------------------------------- */

static bool conn_is_up(const struct pg_conn *c)
{
    return c->state == PG_CONN_IDLE || c->state == PG_CONN_BUSY;
}

static int pool_connected(const struct pg_pool *pool)
{
    int n = 0;
    for (int i = 0; i < pool->opts.size; i++)
        n += conn_is_up(&pool->conns[i]);
    return n;
}

/* The pool is "down" when no connection is up and none has a first
 * attempt in flight that has not failed yet (backoff_ms is 0 until an
 * attempt fails). At start-up and just after a lost connection, queries
 * therefore queue for the reconnect that is likely to succeed within
 * milliseconds; once attempts fail, they fail fast instead. */
static bool pool_down(const struct pg_pool *pool)
{
    for (int i = 0; i < pool->opts.size; i++) {
        const struct pg_conn *c = &pool->conns[i];
        if (conn_is_up(c) || c->backoff_ms == 0)
            return false;
    }
    return true;
}

/* When the server is known unreachable, the queue would only time out:
 * fail it now so callers can answer 503 at once. */
static void pool_fail_waiting(struct pg_pool *pool, const char *why)
{
    struct pg_req *r;
    while ((r = TAILQ_FIRST(&pool->waiting)) != NULL) {
        pool_unqueue(pool, r);
        req_fail_later(pool, r, PG_E_UNAVAILABLE, why);
    }
}

/* ---- connections: life cycle -------------------------------------------- */

/* Routes server notices (and a FATAL sent to an idle connection, which
 * libpq reports as a notice) to the log instead of libpq's stderr. */
static void conn_on_notice(void *arg, const char *msg)
{
    struct pg_conn *c = arg;
    log_info("pg: connection %d: server notice: %.*s", c->idx, msg_len(msg),
             msg);
}

/* A connection attempt failed: retry after a doubling, jittered delay. */
static void conn_attempt_failed(struct pg_conn *c, const char *why)
{
    struct pg_pool *pool = c->pool;
    int delay = pool->opts.backoff_min_ms;
    if (c->backoff_ms > 0)
        delay = c->backoff_ms >= pool->opts.backoff_max_ms / 2
                    ? pool->opts.backoff_max_ms
                    : c->backoff_ms * 2;
    if (pool->conninfo_bad)
        why = "the database conninfo does not parse";
    log_warn("pg: connection %d: connect failed: %.*s (retry in %d ms)", c->idx,
             msg_len(why), why, delay);
    conn_close(c);
    c->backoff_ms = delay;
    conn_arm_timer(c, backoff_jitter(&pool->rng, delay));
    if (pool_down(pool))
        pool_fail_waiting(pool, "database unavailable");
}

/* An established connection is given up: it died, a query overran, or it
 * is in a state the pool cannot use. The running request, if any, fails
 * with status and is not retried, since it may have executed. The server
 * was reachable a moment ago, so the reconnect starts at once; if it
 * fails, conn_attempt_failed() backs off. */
static void conn_drop(struct pg_conn *c, enum pg_status status, const char *why)
{
    struct pg_pool *pool = c->pool;
    struct pg_req *r = c->req;

    c->req = NULL;
    log_warn("pg: connection %d: dropped: %.*s", c->idx, msg_len(why), why);
    if (r)
        req_fail_later(pool, r, status, why); /* copies why */
    conn_close(c);
    c->backoff_ms = 0;
    conn_arm_timer(c, 0);
}

static void conn_up(struct pg_conn *c)
{
    if (PQsetnonblocking(c->pq, 1) != 0) {
        conn_attempt_failed(c, PQerrorMessage(c->pq));
        return;
    }
    event_del(&c->timer);
    c->state = PG_CONN_IDLE;
    c->backoff_ms = 0;
    if (!conn_watch(c, EV_READ)) {
        conn_drop(c, PG_E_UNAVAILABLE, "connection has no socket");
        return;
    }
    if (c->was_up)
        log_info("pg: connection %d: reconnected", c->idx);
    else
        log_debug("pg: connection %d: up", c->idx);
    c->was_up = true;
    pool_dispatch(c->pool);
}

static void conn_start(struct pg_conn *c)
{
    struct pg_pool *pool = c->pool;

    c->pq = PQconnectStart(pool->conninfo);
    if (!c->pq) {
        conn_attempt_failed(c, "out of memory");
        return;
    }
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        conn_attempt_failed(c, PQerrorMessage(c->pq));
        return;
    }
    PQsetNoticeProcessor(c->pq, conn_on_notice, c);
    c->state = PG_CONN_CONNECTING;
    conn_arm_timer(c, pool->opts.connect_timeout_ms);
    /* libpq: before the first PQconnectPoll, wait until writable. */
    if (!conn_watch(c, EV_WRITE))
        conn_attempt_failed(c, "connection has no socket");
}

static void conn_connect_step(struct pg_conn *c)
{
    bool ok = true;

    switch (PQconnectPoll(c->pq)) {
    case PGRES_POLLING_READING: ok = conn_watch(c, EV_READ); break;
    case PGRES_POLLING_WRITING:
    case PGRES_POLLING_ACTIVE: /* unused by libpq since 7.4 */
        ok = conn_watch(c, EV_WRITE);
        break;
    case PGRES_POLLING_OK: conn_up(c); break;
    case PGRES_POLLING_FAILED:
        conn_attempt_failed(c, PQerrorMessage(c->pq));
        break;
    }
    if (!ok)
        conn_attempt_failed(c, "connection has no socket");
}

/* ---- connections: queries ----------------------------------------------- */

/* Sends what libpq has buffered; false if the connection was dropped. */
static bool conn_flush(struct pg_conn *c)
{
    int r = PQflush(c->pq);
    if (r < 0) {
        conn_drop(c, PG_E_UNAVAILABLE, PQerrorMessage(c->pq));
        return false;
    }
    c->flushing = r == 1;
    if (!conn_watch(c, c->flushing ? EV_READ | EV_WRITE : EV_READ)) {
        conn_drop(c, PG_E_UNAVAILABLE, "connection has no socket");
        return false;
    }
    return true;
}

/* May run inside pg_query(): every failure goes through req_fail_later. */
static void conn_send(struct pg_conn *c, struct pg_req *r)
{
    struct pg_pool *pool = c->pool;

    c->req = r;
    r->state = PG_REQ_RUNNING;
    c->state = PG_CONN_BUSY;
    if (!PQsendQueryParams(c->pq, r->sql, r->nparams, NULL,
                           (const char *const *)r->params, NULL, NULL, 0)) {
        if (PQstatus(c->pq) == CONNECTION_BAD) {
            conn_drop(c, PG_E_UNAVAILABLE, PQerrorMessage(c->pq));
            return;
        }
        /* Refused before anything was sent: the connection is still idle. */
        c->req = NULL;
        c->state = PG_CONN_IDLE;
        req_fail_later(pool, r, PG_E_QUERY, PQerrorMessage(c->pq));
        return;
    }
    if (pool->opts.query_timeout_ms > 0)
        conn_arm_timer(c, pool->opts.query_timeout_ms);
    conn_flush(c);
}

/* Maps the request's last result to a reply. COMMAND_OK, TUPLES_OK and
 * EMPTY_QUERY succeed; FATAL_ERROR is the server rejecting the query. */
static void req_deliver_result(struct pg_pool *pool, struct pg_req *r,
                               PGresult *res)
{
    if (!res) {
        req_deliver(pool, r, PG_E_UNAVAILABLE, NULL, "",
                    "no result from the server");
        return;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
        st == PGRES_EMPTY_QUERY) {
        req_deliver(pool, r, PG_OK, res, "", "");
    } else if (st == PGRES_FATAL_ERROR) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        req_deliver(pool, r, PG_E_QUERY, NULL, state ? state : "",
                    msg ? msg : PQresultErrorMessage(res));
    } else {
        req_deliver(pool, r, PG_E_QUERY, NULL, "", PQresStatus(st));
    }
}

/* PQgetResult returned NULL: the query is over. The connection is made
 * idle before the callback runs, so a pg_query() from inside it sees a
 * consistent pool: the new request queues behind the waiting ones and the
 * head of the queue may be dispatched right there; whatever is left is
 * dispatched after the callback. Nothing is dispatched twice because only
 * pool_dispatch() takes requests off the queue. */
static void conn_complete(struct pg_conn *c)
{
    struct pg_pool *pool = c->pool;
    struct pg_req *r = c->req;
    PGresult *res = c->res;

    /* A result followed by EOF (e.g. a FATAL error before the server
     * closed) is a lost connection, not a query error. */
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        conn_drop(c, PG_E_UNAVAILABLE, PQerrorMessage(c->pq));
        return;
    }
    c->req = NULL;
    c->res = NULL;
    event_del(&c->timer);
    c->state = PG_CONN_IDLE;
    req_deliver_result(pool, r, res);
    PQclear(res);
    if (!pool->closing)
        pool_dispatch(pool);
}

/* Reads results while libpq has complete ones. Keeps the last non-NULL
 * result; a COPY result would make PQgetResult return COPY forever, so
 * such a connection is given up. */
static void conn_collect(struct pg_conn *c)
{
    while (!PQisBusy(c->pq)) {
        PGresult *res = PQgetResult(c->pq);
        if (!res) {
            conn_complete(c);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
            st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_drop(c, PG_E_QUERY, "COPY is not supported by pg_query");
            return;
        }
        PQclear(c->res);
        c->res = res;
    }
}

static void conn_busy_io(struct pg_conn *c, short what)
{
    if ((what & EV_READ) && !PQconsumeInput(c->pq)) {
        conn_drop(c, PG_E_UNAVAILABLE, PQerrorMessage(c->pq));
        return;
    }
    if (c->flushing && !conn_flush(c))
        return;
    conn_collect(c);
}

/* An idle connection should receive nothing but notices, notifications
 * and, when the backend is terminated, a FATAL error and EOF. */
static void conn_idle_read(struct pg_conn *c)
{
    if (!PQconsumeInput(c->pq) || PQstatus(c->pq) == CONNECTION_BAD) {
        conn_drop(c, PG_E_UNAVAILABLE, PQerrorMessage(c->pq));
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pq)) != NULL)
        PQfreemem(n);
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    struct pg_pool *pool = c->pool;

    pool_enter(pool);
    switch (c->state) {
    case PG_CONN_CONNECTING: conn_connect_step(c); break;
    case PG_CONN_IDLE: conn_idle_read(c); break;
    case PG_CONN_BUSY: conn_busy_io(c, what); break;
    case PG_CONN_DOWN: break;
    }
    pool_leave(pool);
}

/* A query timeout cannot cancel the query without PQcancel (blocking), so
 * the connection is dropped and replaced. The server notices the closed
 * socket only when it next writes (or with client_connection_check_interval
 * set), so a server-side statement_timeout slightly below query_timeout_ms
 * is the better first line; this timer is the backstop. */
static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    struct pg_pool *pool = c->pool;

    pool_enter(pool);
    switch (c->state) {
    case PG_CONN_DOWN: conn_start(c); break;
    case PG_CONN_CONNECTING: conn_attempt_failed(c, "connect timed out"); break;
    case PG_CONN_BUSY: conn_drop(c, PG_E_TIMEOUT, "query timed out"); break;
    case PG_CONN_IDLE: break;
    }
    pool_leave(pool);
}

/* ---- the pool ----------------------------------------------------------- */

static struct pg_conn *pool_idle_conn(struct pg_pool *pool)
{
    for (int i = 0; i < pool->opts.size; i++)
        if (pool->conns[i].state == PG_CONN_IDLE)
            return &pool->conns[i];
    return NULL;
}

/* Hands queued requests, oldest first, to idle connections. Calls no user
 * callback (conn_send fails through req_fail_later), so it is safe from
 * pg_query() and from inside a callback. */
static void pool_dispatch(struct pg_pool *pool)
{
    struct pg_req *r;
    while ((r = TAILQ_FIRST(&pool->waiting)) != NULL) {
        struct pg_conn *c = pool_idle_conn(pool);
        if (!c)
            break;
        pool_unqueue(pool, r);
        conn_send(c, r);
    }
}

/* Delivers every outstanding request: running ones and queued ones with
 * PG_E_CANCELLED, decided failures with their own status. A callback may
 * call pg_query() (it lands on pool->failed as cancelled and is drained
 * here) or pg_pool_free() (a no-op while closing). */
static void pool_cancel_all(struct pg_pool *pool)
{
    static const char msg[] = "the database pool is shutting down";
    struct pg_req *r;

    for (int i = 0; i < pool->opts.size; i++) {
        struct pg_conn *c = &pool->conns[i];
        r = c->req;
        c->req = NULL;
        conn_close(c);
        if (r)
            req_deliver(pool, r, PG_E_CANCELLED, NULL, "", msg);
    }
    while ((r = TAILQ_FIRST(&pool->waiting)) != NULL) {
        pool_unqueue(pool, r);
        req_deliver(pool, r, PG_E_CANCELLED, NULL, "", msg);
    }
    while ((r = TAILQ_FIRST(&pool->failed)) != NULL) {
        TAILQ_REMOVE(&pool->failed, r, link);
        req_deliver(pool, r, r->fail_status, NULL, "", r->fail_msg);
    }
}

/* Runs when no handler of this pool is on the stack any more. */
static void pool_destroy(struct pg_pool *pool)
{
    pool->depth++;         /* callbacks below must not re-enter pool_destroy */
    pool_cancel_all(pool); /* also closes every connection again */
    free(pool->conns);
    free(pool->conninfo);
    free(pool);
}

/* PQconnectStart resolves a host name with a blocking getaddrinfo() on
 * every attempt. DESIGN.md §2 resolves names once at start-up and passes
 * hostaddr; until the caller does, say so loudly. The conninfo may hold a
 * password, so neither it nor libpq's parse error (which can quote it) is
 * logged. Returns false when it does not parse. */
static bool pool_check_conninfo(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        log_error("pg: the database conninfo does not parse");
        PQfreemem(err);
        return false;
    }
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    if (host && *host && !(hostaddr && *hostaddr)) {
        char *list = xstrdup(host), *save = NULL;
        for (char *h = strtok_r(list, ",", &save); h;
             h = strtok_r(NULL, ",", &save)) {
            unsigned char addr[sizeof(struct in6_addr)];
            if (h[0] == '/' || h[0] == '@' || inet_pton(AF_INET, h, addr) ||
                inet_pton(AF_INET6, h, addr))
                continue;
            log_warn("pg: database host \"%s\" is a name: libpq resolves it "
                     "with a blocking lookup on every connect; pass hostaddr",
                     h);
        }
        free(list);
    }
    PQconninfoFree(opts);
    return true;
}

struct pg_pool *pg_pool_new(struct event_base *base, const char *conninfo,
                            const struct pg_pool_opts *opts)
{
    struct pg_pool *pool = xcalloc(1, sizeof(*pool));

    pool->base = base;
    pool->conninfo = xstrdup(conninfo ? conninfo : "");
    opts_init(&pool->opts, opts);
    TAILQ_INIT(&pool->waiting);
    TAILQ_INIT(&pool->failed);
    pool->rng = (now_us() ^ (uint64_t)(uintptr_t)pool) | 1;
    pool->conninfo_bad = !pool_check_conninfo(pool->conninfo);
    pool->conns = xcalloc((size_t)pool->opts.size, sizeof(*pool->conns));
    for (int i = 0; i < pool->opts.size; i++) {
        struct pg_conn *c = &pool->conns[i];
        c->pool = pool;
        c->idx = i;
        c->state = PG_CONN_DOWN;
        event_assign(&c->timer, base, -1, 0, conn_on_timer, c);
    }
    /* Connecting calls no user callback, so it can start right here. */
    for (int i = 0; i < pool->opts.size; i++)
        conn_start(&pool->conns[i]);
    return pool;
}

void pg_pool_free(struct pg_pool *pool)
{
    if (!pool || pool->closing)
        return;
    pool->closing = true;
    pool_enter(pool);
    pool_cancel_all(pool);
    pool_leave(pool); /* frees now, or when the outermost handler returns */
}

static void pool_queue(struct pg_pool *pool, const char *sql, int nparams,
                       const char *const *params, pg_cb cb, void *arg,
                       bool deadline)
{
    struct pg_req *r = req_new(pool, sql, nparams, params, cb, arg);

    if (pool->closing) {
        req_fail_later(pool, r, PG_E_CANCELLED,
                       "the database pool is shutting down");
        return;
    }
    if (nparams > PG_MAX_PARAMS) {
        req_fail_later(pool, r, PG_E_QUERY, "too many query parameters");
        return;
    }
    if (!pool_idle_conn(pool)) {
        if (pool_down(pool)) {
            req_fail_later(pool, r, PG_E_UNAVAILABLE, "database unavailable");
            return;
        }
        if (pool->nwaiting >= pool->opts.max_waiting) {
            req_fail_later(pool, r, PG_E_UNAVAILABLE,
                           "too many queries waiting for the database");
            return;
        }
    }
    struct timeval tv = ms_to_timeval(pool->opts.queue_timeout_ms);
    r->state = PG_REQ_WAITING;
    r->queued_us = now_us();
    TAILQ_INSERT_TAIL(&pool->waiting, r, link);
    pool->nwaiting++;
    if (deadline)
        event_add(&r->ev, &tv);
    pool_dispatch(pool);
}

void pg_query(struct pg_pool *pool, const char *sql, int nparams,
              const char *const *params, pg_cb cb, void *arg)
{
    pool_queue(pool, sql, nparams, params, cb, arg, true);
}

void pg_query_patient(struct pg_pool *pool, const char *sql, int nparams,
                      const char *const *params, pg_cb cb, void *arg)
{
    pool_queue(pool, sql, nparams, params, cb, arg, false);
}

bool pg_pool_ready(const struct pg_pool *pool)
{
    return pool_connected(pool) > 0;
}

void pg_pool_get_stats(const struct pg_pool *pool, struct pg_pool_stats *out)
{
    int busy = 0;
    for (int i = 0; i < pool->opts.size; i++)
        busy += pool->conns[i].state == PG_CONN_BUSY;
    *out = (struct pg_pool_stats){
        .size = pool->opts.size,
        .connected = pool_connected(pool),
        .busy = busy,
        .waiting = pool->nwaiting,
        .queries = pool->queries,
        .errors = pool->errors,
        .wait_us_total = pool->wait_us_total,
    };
}

const char *pg_val(const PGresult *res, int row, int col)
{
    if (!res || row < 0 || row >= PQntuples(res) || col < 0 ||
        col >= PQnfields(res) || PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}

const char *pg_field(const PGresult *res, int row, const char *name)
{
    if (!res || !name)
        return NULL;
    return pg_val(res, row, PQfnumber(res, name));
}
