/* Budget guard and metering cross-check of a turn; see budget.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "corral/gateway.h"
#include "corral/log.h"
#include "corral/metrics.h"
#include "corral/server.h"
#include "corral/store_runs.h"

static double num(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0.0 : strtod(pg_val(res, 0, col), NULL);
}

bool budget_load(struct run *run, const PGresult *res)
{
    static const int price_cols[4] = {
        RUNLOAD_PRICE_INPUT, RUNLOAD_PRICE_OUTPUT, RUNLOAD_PRICE_CACHE_WRITE,
        RUNLOAD_PRICE_CACHE_READ,
    };
    for (int i = 0; i < 4; i++)
        run->price_per_token[i] = num(res, price_cols[i]) / 1e6;
    run->budget_left = -1.0;
    if (PQgetisnull(res, 0, RUNLOAD_BUDGET_LIMIT))
        return true;
    run->budget_left = num(res, RUNLOAD_BUDGET_LIMIT) -
                       num(res, RUNLOAD_BUDGET_SPENT);
    return run->budget_left > 0.0;
}

static double usage_cost(const struct run *run, const struct gateway_usage *u)
{
    return (double)u->input_tokens * run->price_per_token[0] +
           (double)u->output_tokens * run->price_per_token[1] +
           (double)u->cache_creation_input_tokens * run->price_per_token[2] +
           (double)u->cache_read_input_tokens * run->price_per_token[3];
}

static void on_metered(void *arg, const char *model,
                       const struct gateway_usage *delta)
{
    struct chat_rt *rt = arg;
    struct run *run = rt->active;
    if (!run || run->ending || run->budget_left < 0.0)
        return;
    run->metered_usd += usage_cost(run, delta);
    if (run->metered_usd >= run->budget_left) {
        log_info("run %s: monthly budget reached (%.6f USD this turn); "
                 "refusing further model calls", run->spec.run_id,
                 run->metered_usd);
        gateway_set_refuse(rt->gw, true, "The monthly budget of this "
                                         "account is used up.");
        metrics_count(rt->reg->srv->metrics, "budget_stops", 1);
    }
}

void budget_begin_turn(struct run *run)
{
    struct chat_rt *rt = run->chat;
    run->metered_usd = 0.0;
    run->metering = true;
    gateway_set_refuse(rt->gw, false, NULL);
    gateway_set_meter(rt->gw, on_metered, rt);
    run->refusals_before = gateway_refusals(rt->gw);
    gateway_get_usage(rt->gw, &run->metered_before);
}

bool budget_refused(const struct run *run)
{
    const struct chat_rt *rt = run->chat;
    return rt->gw && gateway_refusals(rt->gw) > run->refusals_before;
}

/* What the gateway metered since the turn began. */
static bool metered_since(const struct run *run, struct gateway_usage *d)
{
    const struct chat_rt *rt = run->chat;
    const struct gateway_usage *b = &run->metered_before;
    if (!run->metering || !rt->gw)
        return false;
    gateway_get_usage(rt->gw, d);
    d->input_tokens -= b->input_tokens;
    d->output_tokens -= b->output_tokens;
    d->cache_creation_input_tokens -= b->cache_creation_input_tokens;
    d->cache_read_input_tokens -= b->cache_read_input_tokens;
    return true;
}

bool budget_metered_usage(const struct run *run, struct turn_usage *out)
{
    struct gateway_usage d;
    if (!metered_since(run, &d) ||
        d.input_tokens + d.output_tokens + d.cache_creation_input_tokens +
                d.cache_read_input_tokens == 0)
        return false;
    memset(out, 0, sizeof(*out));
    snprintf(out->model, sizeof(out->model), "%s", run->model);
    out->input_tokens = (int64_t)d.input_tokens;
    out->output_tokens = (int64_t)d.output_tokens;
    out->cache_creation_input_tokens = (int64_t)d.cache_creation_input_tokens;
    out->cache_read_input_tokens = (int64_t)d.cache_read_input_tokens;
    return true;
}

void budget_cross_check(const struct run *run)
{
    const struct chat_rt *rt = run->chat;
    struct gateway_usage gw;
    if (!run->have_result || !run->result.usage_per_model ||
        !metered_since(run, &gw))
        return;
    uint64_t in = 0, out = 0;
    for (int i = 0; i < run->result.nusage; i++) {
        in += (uint64_t)run->result.usage[i].input_tokens;
        out += (uint64_t)run->result.usage[i].output_tokens;
    }
    uint64_t gw_in = gw.input_tokens, gw_out = gw.output_tokens;
    if (in == gw_in && out == gw_out)
        return;
    log_warn("run %s: the CLI reports %llu/%llu input/output tokens, the "
             "gateway metered %llu/%llu", run->spec.run_id,
             (unsigned long long)in, (unsigned long long)out,
             (unsigned long long)gw_in, (unsigned long long)gw_out);
    metrics_count(rt->reg->srv->metrics, "usage_mismatch", 1);
}
