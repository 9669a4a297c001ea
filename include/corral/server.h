/* server: the one struct that holds all of corrald's state. It is created
 * in main.c, passed explicitly to every module, and lives until exit.
 * Config is immutable after load. */
#ifndef CORRAL_SERVER_H
#define CORRAL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/config.h"

struct event_base;
struct event;
struct pg_pool;
struct redis;
struct metrics;
struct hasher;
struct ratelimit;
struct http_server;
struct bus;
struct httpc;
struct chats;

#define SERVER_KEY_LEN 32

struct server {
    struct event_base *base;
    const struct config *cfg;
    struct http_server *http;
    struct pg_pool *pg;
    struct redis *redis;          /* NULL without redis_url */
    struct bus *bus;              /* chat event streams */
    struct httpc *httpc;          /* outbound HTTP (model gateway) */
    struct chats *chats;          /* live chats: runs, CLIs, sandboxes */
    struct metrics *metrics;
    struct hasher *hasher;        /* sliced password hashing */
    struct auth_cache *auth_cache; /* credentials already checked */
    struct ratelimit *rl_ip;      /* auth endpoints, per client IP */
    struct ratelimit *rl_account; /* login attempts, per email */
    uint8_t jwt_key[SERVER_KEY_LEN];
    uint8_t secret_key[SERVER_KEY_LEN];
    char dummy_hash[160];         /* verified for unknown emails */
    bool shutting_down;
};

/* Wall clock in seconds and monotonic clock in microseconds. */
int64_t server_now(void);
uint64_t server_mono_us(void);

struct timeval;
/* A timeval of ms milliseconds (for event_add). */
struct timeval ms_to_timeval(int ms);
/* Uniform in [ms/2, ms], from the xorshift state *rng (non-zero): spreads
 * reconnects so a recovering server is not hit by all clients at once. */
int backoff_jitter(uint64_t *rng, int ms);

#endif
