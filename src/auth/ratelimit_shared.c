/* Rate limits shared through Redis (DESIGN.md §7): one counter per scope,
 * key and minute, incremented and given its expiry by one script, so two
 * instances behind a load balancer enforce one limit between them. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/log.h"
#include "corral/mem.h"
#include "corral/ratelimit.h"
#include "corral/redis.h"
#include "corral/server.h"

#define WINDOW_MS "60000"

static const char window_script[] =
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
    "return {n, redis.call('PTTL', KEYS[1])}";

struct rl_check {
    struct ratelimit *local;
    char *key;
    int per_min;
    ratelimit_cb cb;
    void *arg;
};

static void check_local(struct ratelimit *rl, const char *key,
                        ratelimit_cb cb, void *arg)
{
    int retry = 0;
    bool ok = ratelimit_take(rl, key, server_mono_us() / 1000, &retry) == 0;
    cb(arg, ok, retry);
}

static void on_window(void *arg, struct redisReply *reply, const char *err)
{
    struct rl_check *c = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER) {
        log_warn("rate limit: redis answer unusable (%s); using the local "
                 "limit", err ? err : "unexpected reply");
        check_local(c->local, c->key, c->cb, c->arg);
    } else {
        long long n = reply->element[0]->integer;
        long long ttl = reply->element[1]->integer;
        int retry = ttl > 0 ? (int)((ttl + 999) / 1000) : 1;
        c->cb(c->arg, n <= c->per_min, retry);
    }
    free(c->key);
    free(c);
}

void ratelimit_check(struct server *srv, struct ratelimit *rl,
                     const char *scope, const char *key, int per_min,
                     ratelimit_cb cb, void *arg)
{
    if (!srv->redis || !redis_connected(srv->redis)) {
        check_local(rl, key, cb, arg);
        return;
    }
    struct rl_check *c = xcalloc(1, sizeof(*c));
    size_t n = strlen(scope) + strlen(key) + 16;
    c->key = xmalloc(n);
    snprintf(c->key, n, "corral:rl:%s:%s", scope, key);
    c->local = rl;
    c->per_min = per_min;
    c->cb = cb;
    c->arg = arg;
    const char *argv[] = {"EVAL", window_script, "1", c->key, WINDOW_MS};
    redis_command(srv->redis, 5, argv, NULL, on_window, c);
}
