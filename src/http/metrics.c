/* Prometheus text exposition of corrald's counters. Per-route slots are
 * preallocated from the route table; statuses are few per route, so each
 * route keeps a short array of (status, count) pairs. */
#include "corral/metrics.h"

#include <stdlib.h>
#include <string.h>

#include "corral/bus.h"
#include "corral/chats.h"
#include "corral/http.h"
#include "corral/mem.h"
#include "corral/password.h"
#include "corral/pg.h"
#include "corral/server.h"

#define STATUS_SLOTS 16
#define NAMED_SLOTS 32

static const double bucket_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,   0.25,   0.5,   1,    2.5,   5};
#define NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

struct route_stats {
    struct {
        int status;
        uint64_t count;
    } by_status[STATUS_SLOTS];
    uint64_t buckets[NBUCKETS]; /* cumulative at render, raw here */
    uint64_t count;
    double sum_seconds;
};

struct metrics {
    size_t nroutes;
    struct route_stats *routes; /* nroutes + 1: the last is "unmatched" */
    struct {
        const char *name;
        uint64_t value;
    } named[NAMED_SLOTS];
    uint64_t lag_last_us, lag_max_us, lag_samples;
};

struct metrics *metrics_new(size_t nroutes)
{
    struct metrics *m = xcalloc(1, sizeof(*m));
    m->nroutes = nroutes;
    m->routes = xcalloc(nroutes + 1, sizeof(*m->routes));
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    free(m->routes);
    free(m);
}

static void count_status(struct route_stats *rs, int status)
{
    for (int i = 0; i < STATUS_SLOTS; i++) {
        if (rs->by_status[i].status == status || !rs->by_status[i].status) {
            rs->by_status[i].status = status;
            rs->by_status[i].count++;
            return;
        }
    }
    /* More distinct statuses than slots: fold into the last one. */
    rs->by_status[STATUS_SLOTS - 1].count++;
}

void metrics_observe_request(struct metrics *m, int route_idx, int status,
                             uint64_t duration_us)
{
    size_t i = route_idx < 0 ? m->nroutes : (size_t)route_idx;
    struct route_stats *rs = &m->routes[i];
    double s = (double)duration_us / 1e6;
    count_status(rs, status);
    rs->count++;
    rs->sum_seconds += s;
    for (size_t b = 0; b < NBUCKETS; b++) {
        if (s <= bucket_le[b]) {
            rs->buckets[b]++;
            break;
        }
    }
}

void metrics_observe_loop_lag(struct metrics *m, uint64_t lag_us)
{
    m->lag_last_us = lag_us;
    if (lag_us > m->lag_max_us)
        m->lag_max_us = lag_us;
    m->lag_samples++;
}

void metrics_count(struct metrics *m, const char *name, uint64_t n)
{
    for (int i = 0; i < NAMED_SLOTS; i++) {
        if (!m->named[i].name || strcmp(m->named[i].name, name) == 0) {
            m->named[i].name = name;
            m->named[i].value += n;
            return;
        }
    }
}

static const char *route_label(size_t i, size_t nroutes)
{
    return i < nroutes ? http_routes[i].name : "unmatched";
}

static void render_requests(const struct metrics *m, struct buf *out)
{
    buf_puts(out, "# HELP corral_http_requests_total HTTP requests answered."
                  "\n# TYPE corral_http_requests_total counter\n");
    for (size_t i = 0; i <= m->nroutes; i++) {
        const struct route_stats *rs = &m->routes[i];
        for (int s = 0; s < STATUS_SLOTS && rs->by_status[s].status; s++)
            buf_printf(out,
                       "corral_http_requests_total{route=\"%s\",status=\"%d\"}"
                       " %llu\n",
                       route_label(i, m->nroutes), rs->by_status[s].status,
                       (unsigned long long)rs->by_status[s].count);
    }
}

static void render_latency(const struct metrics *m, struct buf *out)
{
    buf_puts(out, "# HELP corral_http_request_duration_seconds Time from "
                  "request to answer.\n# TYPE "
                  "corral_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i <= m->nroutes; i++) {
        const struct route_stats *rs = &m->routes[i];
        if (!rs->count)
            continue;
        const char *name = route_label(i, m->nroutes);
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += rs->buckets[b];
            buf_printf(out,
                       "corral_http_request_duration_seconds_bucket{route=\""
                       "%s\",le=\"%g\"} %llu\n",
                       name, bucket_le[b], (unsigned long long)cum);
        }
        buf_printf(out,
                   "corral_http_request_duration_seconds_bucket{route=\"%s\","
                   "le=\"+Inf\"} %llu\n"
                   "corral_http_request_duration_seconds_sum{route=\"%s\"} "
                   "%.6f\n"
                   "corral_http_request_duration_seconds_count{route=\"%s\"}"
                   " %llu\n",
                   name, (unsigned long long)rs->count, name, rs->sum_seconds,
                   name, (unsigned long long)rs->count);
    }
}

static void gauge(struct buf *out, const char *name, const char *help,
                  double v)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.6g\n", name, help,
               name, name, v);
}

static void render_pg(const struct server *srv, struct buf *out)
{
    struct pg_pool_stats st;
    pg_pool_get_stats(srv->pg, &st);
    gauge(out, "corral_pg_pool_size", "Configured PostgreSQL connections.",
          st.size);
    gauge(out, "corral_pg_pool_connected", "PostgreSQL connections up.",
          st.connected);
    gauge(out, "corral_pg_pool_busy", "PostgreSQL connections running a "
          "query.", st.busy);
    gauge(out, "corral_pg_pool_waiting", "Queries waiting for a connection.",
          st.waiting);
    buf_printf(out,
               "# HELP corral_pg_queries_total Queries completed.\n"
               "# TYPE corral_pg_queries_total counter\n"
               "corral_pg_queries_total %llu\n"
               "# HELP corral_pg_query_errors_total Queries that failed.\n"
               "# TYPE corral_pg_query_errors_total counter\n"
               "corral_pg_query_errors_total %llu\n"
               "# HELP corral_pg_pool_wait_seconds_total Time queries "
               "waited for a connection.\n"
               "# TYPE corral_pg_pool_wait_seconds_total counter\n"
               "corral_pg_pool_wait_seconds_total %.6f\n",
               (unsigned long long)st.queries, (unsigned long long)st.errors,
               (double)st.wait_us_total / 1e6);
}

static void render_bus(const struct bus *b, struct buf *out)
{
    struct bus_stats st;
    bus_get_stats(b, &st);
    gauge(out, "corral_bus_ring_bytes", "Memory bus: bytes held by all "
          "chats' replay rings.", (double)st.ring_bytes);
    buf_printf(out,
               "# HELP corral_bus_ring_evictions_total Memory bus: events "
               "dropped from replay rings for bus_ring_total_bytes.\n"
               "# TYPE corral_bus_ring_evictions_total counter\n"
               "corral_bus_ring_evictions_total %llu\n",
               (unsigned long long)st.ring_evictions);
}

void metrics_render(const struct metrics *m, const struct server *srv,
                    struct buf *out)
{
    render_requests(m, out);
    render_latency(m, out);
    gauge(out, "corral_http_connections_open", "Open HTTP connections.",
          http_server_connections(srv->http));
    gauge(out, "corral_http_requests_in_flight", "Requests being handled.",
          http_server_inflight(srv->http));
    gauge(out, "corral_loop_lag_seconds", "Last measured event-loop lag.",
          (double)m->lag_last_us / 1e6);
    gauge(out, "corral_loop_lag_max_seconds", "Largest event-loop lag seen.",
          (double)m->lag_max_us / 1e6);
    render_pg(srv, out);
    if (srv->hasher) {
        gauge(out, "corral_hash_queue_pending", "Password hashes queued or "
              "running.", hasher_pending(srv->hasher));
        gauge(out, "corral_hash_queue_wait_seconds", "Expected time until "
              "the queued password hashes are done.",
              hasher_wait_ms(srv->hasher) / 1e3);
    }
    if (srv->bus)
        render_bus(srv->bus, out);
    if (srv->chats)
        chats_render_metrics(srv->chats, out);
    for (int i = 0; i < NAMED_SLOTS && m->named[i].name; i++)
        buf_printf(out, "# TYPE corral_%s_total counter\ncorral_%s_total "
                        "%llu\n", m->named[i].name, m->named[i].name,
                   (unsigned long long)m->named[i].value);
}
