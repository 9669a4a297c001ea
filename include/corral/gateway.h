/* gateway: the model gateway of one sandbox (DESIGN.md §6). Listens on the
 * sandbox's unix socket (which identifies the chat), takes each HTTP
 * request of the CLI, replaces its credential with the configured upstream
 * key (model_api_key; the sandbox only holds a placeholder) and forwards
 * it, path and query unchanged, to model_upstream_url with httpc,
 * streaming the answer back. It meters the tokens of every upstream answer
 * (message_start / message_delta usage in SSE, usage in JSON).
 *
 * HTTP/1.1 server side: keep-alive, request bodies by Content-Length or
 * chunked (up to GATEWAY_MAX_BODY), Expect: 100-continue answered by the
 * gateway. Forwarding: the upstream URL is model_upstream_url (a trailing
 * '/' dropped, so a path prefix joins cleanly) followed by the request
 * target. Request headers are copied except hop-by-hop ones (and those
 * named in Connection), Host, Content-Length, Expect, Accept-Encoding and
 * the credentials x-api-key and authorization; `x-api-key: <model_api_key>`
 * is added when a key is configured (no credential otherwise). The
 * upstream connection offers gzip/deflate/br itself and the gateway
 * decodes, so metering always sees plain text and the CLI gets an
 * identity body. The response keeps its status and headers except
 * hop-by-hop ones, Content-Length and Content-Encoding, and its body flows
 * chunk by chunk (chunked to HTTP/1.1 clients, close-delimited to 1.0),
 * with flow control: unsent output above 1 MiB pauses the upstream. An
 * upstream failure before the response head (connect refused, timeout)
 * answers 502 {"type":"error","error":{"type":"api_error",...}}; after
 * the head the client connection is closed so the CLI sees a truncated
 * answer. A client that disconnects cancels its upstream request. Each
 * forwarded request is logged at info (method, path without query,
 * status, duration, tokens), never the key. */
#ifndef CORRAL_GATEWAY_H
#define CORRAL_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

struct server;
struct gateway;

#define GATEWAY_MAX_BODY (32u << 20)        /* the Messages API's cap */
#define GATEWAY_CONNECT_TIMEOUT_MS 10000L   /* default upstream connect */
#define GATEWAY_UPSTREAM_TIMEOUT_MS 900000L /* default whole request */
#define GATEWAY_IDLE_TIMEOUT_MS 300000      /* keep-alive, partial reads */
#define GATEWAY_MAX_CONNS 64                /* per gateway */

struct gateway_usage {
    uint64_t requests;
    uint64_t input_tokens, output_tokens;
    uint64_t cache_creation_input_tokens, cache_read_input_tokens;
};

/* Starts listening on sock_path (created mode 0600, replacing a stale
 * socket; any other file there is an error). Needs srv->httpc and
 * cfg->model_upstream_url (http or https). NULL with *err (static) on
 * failure. Owner: the caller (gateway_close). */
struct gateway *gateway_open(struct server *srv, const char *chat_id,
                             const char *sock_path, const char **err);
/* Stops listening, aborts in-flight forwards (their upstream requests are
 * cancelled; each is logged), closes the client connections and removes
 * the socket file if it is still ours. Safe before or after
 * httpc_free(srv->httpc) (after it, in-flight forwards have already
 * answered 502 or been cut). */
void gateway_close(struct gateway *g);
/* Totals since open (for the usage cross-check). requests counts every
 * request forwarded upstream, failed ones included. Tokens count as they
 * arrive (cumulative SSE counts are applied as increments), so an
 * interrupted stream keeps what was metered before the interruption. */
void gateway_get_usage(const struct gateway *g, struct gateway_usage *out);
/* Budgets (DESIGN.md §5 "Usage and cost"). fn is called as tokens are
 * metered, with the increment and the model named by the answer (its
 * message_start, or the JSON body's model; "" when unknown). One call per
 * usage object seen, from inside the gateway's upstream callbacks: fn may
 * call gateway_set_refuse but must not close the gateway. */
typedef void (*gateway_meter_fn)(void *arg, const char *model,
                                 const struct gateway_usage *delta);
void gateway_set_meter(struct gateway *g, gateway_meter_fn fn, void *arg);
/* While refusing, each new request is answered 402 with an Anthropic
 * error body {"type":"error","error":{"type":"billing_error","message":
 * message}} without going upstream (the CLI does not retry 402). */
void gateway_set_refuse(struct gateway *g, bool refuse, const char *message);
/* Requests refused so far. */
uint64_t gateway_refusals(const struct gateway *g);
/* Overrides the upstream timeouts for requests started afterwards
 * (milliseconds; 0 = none for total_ms). Tests and tuning. */
void gateway_set_timeouts(struct gateway *g, long connect_ms, long total_ms);

#endif
