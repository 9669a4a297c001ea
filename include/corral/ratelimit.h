/* ratelimit: token buckets keyed by string (client IP, account email).
 * Each key may take `per_min` requests a minute, refilled continuously,
 * with a burst of the same size. The table holds at most max_keys; when
 * full, buckets that are full again (idle keys) are dropped first, then
 * the oldest. Pure logic over a caller-given clock, so it is unit-tested
 * without a server. Process-local; ratelimit_check below shares limits
 * through Redis when it is configured (DESIGN.md §7). */
#ifndef CORRAL_RATELIMIT_H
#define CORRAL_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit;

struct ratelimit *ratelimit_new(int per_min, size_t max_keys);
void ratelimit_free(struct ratelimit *rl);
/* Takes one token for key at now_ms. 0 when allowed; -1 when limited, with
 * *retry_after_s (>= 1) set to the seconds until a token is back. */
int ratelimit_take(struct ratelimit *rl, const char *key, uint64_t now_ms,
                   int *retry_after_s);
size_t ratelimit_keys(const struct ratelimit *rl);

struct server;
typedef void (*ratelimit_cb)(void *arg, bool allowed, int retry_after_s);

/* The auth endpoints' limiter (src/auth/ratelimit_shared.c). With Redis,
 * one fixed one-minute window per scope and key, counted in Redis and so
 * shared by every instance; without Redis, or when a Redis call fails,
 * the process-local bucket rl. cb fires exactly once: at once on the
 * local path, from the loop on the Redis path. */
void ratelimit_check(struct server *srv, struct ratelimit *rl,
                     const char *scope, const char *key, int per_min,
                     ratelimit_cb cb, void *arg);

#endif
