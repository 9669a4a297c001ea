/* ratelimit: token buckets keyed by string (client IP, account email).
 * Each key may take `per_min` requests a minute, refilled continuously,
 * with a burst of the same size. The table holds at most max_keys; when
 * full, buckets that are full again (idle keys) are dropped first, then
 * the oldest. Pure logic over a caller-given clock, so it is unit-tested
 * without a server. Process-local: with several instances each enforces
 * its own share (DESIGN.md §7 wants them shared through Redis; see
 * docs/notes). */
#ifndef CORRAL_RATELIMIT_H
#define CORRAL_RATELIMIT_H

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

#endif
