/* metrics: in-process counters rendered as Prometheus text at /metrics.
 * Request counters are kept per route (the route table's index; unmatched
 * requests share one slot) and status code; latency goes into one fixed
 * bucket histogram per route. Other modules' gauges (PG pool, connections,
 * hashing queue) are read from their owners at render time. */
#ifndef CORRAL_METRICS_H
#define CORRAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

struct server;
struct metrics;

struct metrics *metrics_new(size_t nroutes);
void metrics_free(struct metrics *m);
/* route_idx -1 for requests that matched no route. */
void metrics_observe_request(struct metrics *m, int route_idx, int status,
                             uint64_t duration_us);
/* Records one loop-lag sample (how late a periodic timer fired). */
void metrics_observe_loop_lag(struct metrics *m, uint64_t lag_us);
/* Increments a named counter, created on first use (static name). */
void metrics_count(struct metrics *m, const char *name, uint64_t n);
void metrics_render(const struct metrics *m, const struct server *srv,
                    struct buf *out);

#endif
