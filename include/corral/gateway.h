/* gateway: the model gateway of one sandbox (DESIGN.md §6). Listens on the
 * sandbox's unix socket (which identifies the chat), takes each HTTP
 * request of the CLI, replaces its credential with the configured upstream
 * key (model_api_key; the sandbox only holds a placeholder) and forwards
 * it, path and query unchanged, to model_upstream_url with httpc,
 * streaming the answer back. It meters the tokens of every upstream answer
 * (message_start / message_delta usage in SSE, usage in JSON). */
#ifndef CORRAL_GATEWAY_H
#define CORRAL_GATEWAY_H

#include <stdint.h>

struct server;
struct gateway;

struct gateway_usage {
    uint64_t requests;
    uint64_t input_tokens, output_tokens;
    uint64_t cache_creation_input_tokens, cache_read_input_tokens;
};

/* Starts listening on sock_path (created mode 0600, replacing a stale
 * one). NULL with *err (static) on failure. Owner: the caller. */
struct gateway *gateway_open(struct server *srv, const char *chat_id,
                             const char *sock_path, const char **err);
/* Stops listening, aborts in-flight forwards, removes the socket. */
void gateway_close(struct gateway *g);
/* Totals since open (for the usage cross-check). */
void gateway_get_usage(const struct gateway *g, struct gateway_usage *out);

#endif
