/* Operations endpoints: liveness, readiness (a real round trip to
 * PostgreSQL and, when configured, Redis), Prometheus metrics, and the
 * OpenAPI document embedded at build time. */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "corral/api.h"
#include "corral/metrics.h"
#include "corral/pg.h"
#include "corral/redis.h"
#include "corral/server.h"
#include "corral/mem.h"

extern const unsigned char openapi_json[];
extern const size_t openapi_json_len;

void api_healthz(struct req *r)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    req_reply(r, 200, "application/json", ok, sizeof(ok) - 1);
}

struct ready_state {
    const char *pg;
    const char *redis;
};

static void ready_answer(struct req *r)
{
    struct ready_state *st = r->state;
    bool ok = strcmp(st->pg, "ok") == 0 &&
              (strcmp(st->redis, "ok") == 0 ||
               strcmp(st->redis, "disabled") == 0);
    struct buf body;
    buf_init(&body);
    struct json_w w;
    json_w_init(&w, &body);
    json_w_obj_begin(&w);
    json_w_kstr(&w, "status", ok ? "ready" : "unavailable");
    json_w_kstr(&w, "postgres", st->pg);
    json_w_kstr(&w, "redis", st->redis);
    json_w_obj_end(&w);
    if (!ok)
        req_add_header(r, "Retry-After", "1");
    req_reply(r, ok ? 200 : 503, "application/json", body.data, body.len);
    buf_deinit(&body);
}

static void ready_on_redis(void *arg, struct redisReply *reply,
                           const char *err)
{
    struct req *r = arg;
    struct ready_state *st = r->state;
    st->redis = reply && reply->type != REDIS_REPLY_ERROR ? "ok"
                                                          : "unavailable";
    ready_answer(r);
}

static void ready_on_pg(void *arg, const struct pg_reply *reply)
{
    struct req *r = arg;
    struct ready_state *st = r->state;
    st->pg = reply->status == PG_OK ? "ok" : "unavailable";
    if (!r->srv->redis) {
        st->redis = "disabled";
        ready_answer(r);
        return;
    }
    const char *argv[] = {"PING"};
    redis_command(r->srv->redis, 1, argv, NULL, ready_on_redis, r);
}

void api_readyz(struct req *r)
{
    r->state = xcalloc(1, sizeof(struct ready_state));
    pg_query(r->srv->pg, "SELECT 1", 0, NULL, ready_on_pg, r);
}

void api_metrics(struct req *r)
{
    struct buf out;
    buf_init(&out);
    metrics_render(r->srv->metrics, r->srv, &out);
    req_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.data,
              out.len);
    buf_deinit(&out);
}

void api_openapi(struct req *r)
{
    req_reply(r, 200, "application/json", openapi_json, openapi_json_len);
}
