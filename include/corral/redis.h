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
 * (hiredis cannot cancel one command) and reconnects.
 *
 * Connection: after each (re)connect, AUTH (when the url has a password) and
 * SELECT (when its db is not 0) go out before any user command; the handle
 * is connected (redis_connected) only once both succeeded, and
 * connect_timeout_ms covers the TCP connect and that handshake. A failed
 * connect, a failed handshake or a lost connection is retried after a delay
 * that doubles from backoff_min_ms to backoff_max_ms (with jitter: the
 * delay is uniform in [d/2, d]) and resets on success.
 *
 * err strings (static; reply is NULL with each): "not connected", "timeout",
 * "connection lost", "closing", "bad command" (argc <= 0 or a NULL argv
 * entry), "unsupported command". A Redis error reply (REDIS_REPLY_ERROR) is
 * a reply, with err NULL; it counts in stats.errors. Unsupported, because
 * they would break the one-reply-per-command contract or connection state
 * that a reconnect restores from the url: the (P|S)(UN)SUBSCRIBE family,
 * MONITOR, CLIENT REPLY, HELLO, SELECT, AUTH, RESET. */
#ifndef CORRAL_REDIS_H
#define CORRAL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;

typedef void (*redis_cb)(void *arg, struct redisReply *reply, const char *err);

/* opts NULL: all defaults. Otherwise a field <= 0 takes its default, except
 * command_timeout_ms, where 0 (or less) means none. */
struct redis_opts {
    int connect_timeout_ms; /* default 2000 */
    int command_timeout_ms; /* default 2000; 0 = none (e.g. XREAD BLOCK) */
    int backoff_min_ms;     /* default 100 */
    int backoff_max_ms;     /* default 5000 */
};

/* url: redis://[[user]:password@]host[:port][/db], host an IP literal
 * ([v6] in brackets) or a name (resolved once here, before the loop runs:
 * hiredis resolves names synchronously). user and password are
 * percent-decoded (write '@', ':' and '/' in a password as %40, %3A, %2F);
 * with a user, AUTH user password (Redis 6 ACL). Port default 6379, db
 * default 0. Returns NULL with *err set (static string; err may be NULL)
 * on a bad url or failed resolution. Then starts connecting: a refused
 * connect is not an error here but retried. Owner: the caller
 * (redis_free). */
struct redis *redis_new(struct event_base *base, const char *url,
                        const struct redis_opts *opts, const char **err);
/* Fails pending commands ("closing"; one already failed but not yet
 * delivered keeps its error), then disconnects and frees; the callbacks run
 * before this returns. Safe to call from inside a command callback: the
 * handle then stops at once (replies still to come are replaced by
 * "closing") and is freed from the loop after the callback stack has
 * unwound. A NULL r, or a second call from a callback, does nothing. */
void redis_free(struct redis *r);
/* True when user commands are being sent (connected, handshake done). */
bool redis_connected(const struct redis *r);
/* argc arguments with lengths (argvlen may be NULL: strlen is used); the
 * arguments are copied before this returns. cb may be NULL. */
void redis_command(struct redis *r, int argc, const char **argv,
                   const size_t *argvlen, redis_cb cb, void *arg);

struct redis_stats {
    uint64_t commands;   /* completed */
    uint64_t errors;     /* completed with an error or error reply */
    uint64_t reconnects; /* successful connects after the first */
};
void redis_get_stats(const struct redis *r, struct redis_stats *out);

#endif
