/* redis: a hiredis (0.14.1) async connection on the libevent adapter, with
 * corral's own connect and command timers (0.14.1 has none) and automatic
 * reconnection with backoff.
 *
 * Commands are argv only (redisAsyncCommandArgv): no format strings. Every
 * command callback fires exactly once: with the reply, or with reply NULL
 * and an error string (not connected, timed out, connection lost, closing).
 * The reply is borrowed: valid only during the callback. A command issued
 * while disconnected fails at once (delivered from the loop, never from
 * inside redis_command itself). A command timeout drops the connection
 * (hiredis cannot cancel one command) and reconnects. */
#ifndef CORRAL_REDIS_H
#define CORRAL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;

typedef void (*redis_cb)(void *arg, struct redisReply *reply,
                         const char *err);

struct redis_opts {
    int connect_timeout_ms; /* default 2000 */
    int command_timeout_ms; /* default 2000; 0 = none (e.g. XREAD BLOCK) */
    int backoff_min_ms;     /* default 100 */
    int backoff_max_ms;     /* default 5000 */
};

/* url: redis://[:password@]host[:port][/db], host an IP literal or a name
 * (resolved once here, before the loop runs: hiredis resolves names
 * synchronously). Returns NULL with *err set (static string) on a bad url
 * or failed resolution. Connects at once. Owner: the caller (redis_free). */
struct redis *redis_new(struct event_base *base, const char *url,
                        const struct redis_opts *opts, const char **err);
/* Fails pending commands ("closing"), then disconnects and frees. Safe to
 * call from inside a command callback (the free is deferred). */
void redis_free(struct redis *r);
bool redis_connected(const struct redis *r);
/* argc arguments with lengths (argvlen may be NULL: strlen is used). */
void redis_command(struct redis *r, int argc, const char **argv,
                   const size_t *argvlen, redis_cb cb, void *arg);

struct redis_stats {
    uint64_t commands;   /* completed */
    uint64_t errors;     /* completed with an error or error reply */
    uint64_t reconnects; /* successful connects after the first */
};
void redis_get_stats(const struct redis *r, struct redis_stats *out);

#endif
