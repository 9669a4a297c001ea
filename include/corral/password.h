/* password: PBKDF2-HMAC-SHA256 password hashes computed in slices on the
 * loop under a CPU-share cap (DESIGN.md §7).
 *
 * The hasher runs one job at a time, FIFO: a slice of iterations lasting
 * about slice_us, then a pause so that hashing takes at most cpu_share of
 * the loop's time. Jobs that cannot start yet wait in an admission queue of
 * at most queue_max jobs and at most max_wait_ms of expected wait (the
 * iterations queued ahead at the measured rate times cpu_share); a job that
 * does not fit fails at once (the caller answers 429 with Retry-After). An
 * empty queue admits any one job. Stored form:
 *   pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>
 * Each callback fires exactly once: with the result, or with ok=false when
 * the hasher is freed. */
#ifndef CORRAL_PASSWORD_H
#define CORRAL_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct hasher;

/* ok: the job ran. For hashing, encoded is the stored form (borrowed, valid
 * during the callback). For verifying, match tells the outcome. */
typedef void (*hasher_cb)(void *arg, bool ok, bool match, const char *encoded);

struct hasher *hasher_new(struct event_base *base, double cpu_share,
                          int queue_max, int max_wait_ms);
void hasher_free(struct hasher *h);
/* Jobs queued or running. */
int hasher_pending(const struct hasher *h);
/* Seconds until a new job would be admitted, roughly (Retry-After). */
int hasher_retry_after(const struct hasher *h);
/* Expected ms until every queued job is done (metrics, tests). */
int hasher_wait_ms(const struct hasher *h);

/* Hashes pw with a fresh salt. -1 when the queue is full. */
int hasher_hash(struct hasher *h, const char *pw, size_t pwlen,
                uint32_t iterations, hasher_cb cb, void *arg)
    __attribute__((warn_unused_result));
/* Verifies pw against a stored hash (any iteration count). A malformed
 * stored hash verifies as no match after the same work as a real one.
 * -1 when the queue is full. */
int hasher_verify(struct hasher *h, const char *pw, size_t pwlen,
                  const char *stored, hasher_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* Synchronous hashing for the command line (--create-admin), never on the
 * loop. Returns a heap string (caller frees) or NULL. */
char *password_hash_now(const char *pw, size_t pwlen, uint32_t iterations);

#endif
