/* pg: a pool of non-blocking libpq connections driven by the event loop.
 *
 * Each connection is PQconnectStart/PQconnectPoll'ed, PQsetnonblocking'ed,
 * and runs one query at a time with PQsendQueryParams (text parameters;
 * SQL is never built from strings), driving PQflush/PQconsumeInput from
 * socket events. When every connection is busy, queries wait in a FIFO
 * (bounded: pg_pool_opts.max_waiting). A lost connection is reconnected
 * with exponential backoff; while no connection is up, new queries fail at
 * once with PG_E_UNAVAILABLE (callers answer 503) and queued ones fail
 * after opts.queue_timeout_ms.
 *
 * Every query's callback fires exactly once: with the result, with an
 * error, or with PG_E_CANCELLED when the pool is freed. It is never called
 * from inside pg_query() itself (an immediate failure is delivered from
 * the loop), so callers may do their own bookkeeping after pg_query.
 * Callbacks may call pg_query() (chained queries queue behind the ones
 * already waiting) and pg_pool_free().
 *
 * "No connection is up" is refined at start-up and right after a lost
 * connection: while a first (re)connect attempt is still in flight, new
 * queries queue for it; once attempts fail and none is up, new and queued
 * queries fail with PG_E_UNAVAILABLE at once.
 *
 * A query that overruns opts.query_timeout_ms fails with PG_E_TIMEOUT and
 * its connection is closed and replaced (PQcancel would block); set a
 * server-side statement_timeout below it so the server stops the query. */
#ifndef CORRAL_PG_H
#define CORRAL_PG_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

struct event_base;

enum pg_status {
    PG_OK = 0,
    PG_E_QUERY = -1,       /* the server rejected the query; see sqlstate */
    PG_E_UNAVAILABLE = -2, /* no connection to the server / lost mid-query */
    PG_E_TIMEOUT = -3,     /* waited too long in the queue or running */
    PG_E_CANCELLED = -4,   /* the pool is shutting down */
};

struct pg_reply {
    enum pg_status status;
    PGresult *res;        /* borrowed: valid only during the callback; NULL
                             unless status is PG_OK */
    const char *sqlstate; /* five-char SQLSTATE for PG_E_QUERY, else "" */
    const char *errmsg;   /* human-readable, never NULL */
};

typedef void (*pg_cb)(void *arg, const struct pg_reply *reply);

struct pg_pool_opts {
    int size;                 /* connections (default 4) */
    int max_waiting;          /* queued queries before PG_E_UNAVAILABLE */
    int connect_timeout_ms;   /* per attempt */
    int queue_timeout_ms;     /* max wait for a connection */
    int query_timeout_ms;     /* max run time of one query (0: none) */
    int backoff_min_ms;       /* first reconnect delay */
    int backoff_max_ms;       /* cap of the doubling delay */
};

struct pg_pool_stats {
    int size;           /* configured connections */
    int connected;      /* connections up (idle + busy) */
    int busy;           /* running a query */
    int waiting;        /* queries queued for a connection */
    uint64_t queries;   /* completed (any status) */
    uint64_t errors;    /* completed with status != PG_OK */
    uint64_t wait_us_total; /* time queries spent queued, summed */
};

/* conninfo is a libpq connection string or URI. It must name the server
 * by hostaddr=, an IP literal or a socket directory: PQconnectStart looks
 * a host name up with a blocking getaddrinfo() (a warning is logged).
 * opts may be NULL; zero or negative fields take the defaults of corral's
 * config (size 4, max_waiting 10000, connect 3000 ms, queue 5000 ms,
 * backoff 100..5000 ms; query_timeout_ms 0 = none). The pool starts
 * connecting at once. Owner: the caller (pg_pool_free), before the
 * event_base is freed. */
struct pg_pool *pg_pool_new(struct event_base *base, const char *conninfo,
                            const struct pg_pool_opts *opts);
/* Fails every queued and running query with PG_E_CANCELLED (callbacks run
 * before this returns) and closes the connections. Safe to call from
 * inside a pg callback of this pool: everything is cancelled and closed at
 * once, but the memory is released only when the pool's event handler
 * returns; until then further pg_pool_free() calls are no-ops and
 * pg_query() still completes once (PG_E_CANCELLED). NULL is ignored. */
void pg_pool_free(struct pg_pool *pool);

/* Queues sql with nparams text parameters (params[i] NULL = SQL NULL).
 * sql and the parameters are copied. cb may be NULL (fire and forget).
 * Results of COPY are not supported (the query fails, the connection is
 * replaced). */
void pg_query(struct pg_pool *pool, const char *sql, int nparams,
              const char *const *params, pg_cb cb, void *arg);

/* As pg_query, without the queue deadline (queue_timeout_ms): for the
 * server's own writes, which a burst must delay but not lose (a run's
 * load, phases and result, the event log, sandbox states). They still
 * fail at once when the database is down or max_waiting queries wait,
 * and a running query still has query_timeout_ms. */
void pg_query_patient(struct pg_pool *pool, const char *sql, int nparams,
                      const char *const *params, pg_cb cb, void *arg);

/* True when at least one connection is up. */
bool pg_pool_ready(const struct pg_pool *pool);
void pg_pool_get_stats(const struct pg_pool *pool, struct pg_pool_stats *out);

/* Convenience accessors for a PGresult row/column: the text value, or
 * NULL when the field is SQL NULL or out of range. */
const char *pg_val(const PGresult *res, int row, int col);
/* Column by name; NULL when absent or NULL. */
const char *pg_field(const PGresult *res, int row, const char *name);

#endif
