/* sse: Server-Sent Events framing and the subscriber connections of
 * GET /chats/{id}/stream (DESIGN.md §4, API.md "Stream (SSE)").
 *
 * After req_take_connection the stream handler hands the socket to
 * sse_serve. The hub then owns it as a small struct with ONE event on the
 * raw fd (no bufferevent): it reads only to notice EOF, and writes the
 * bus's shared, refcounted frames with sendmsg (an iovec per frame), all
 * frames queued during a loop turn in one call. Per connection the
 * unsent output is capped (sse_max_pending_bytes): a consumer that falls
 * further behind is disconnected and resumes with Last-Event-ID. During
 * replay the bus is held (bus_sub_hold) while the output is backed up, so
 * a long replay never trips the cap. One hub timer sends the `: ping`
 * heartbeats: each connection sits in one of sse_heartbeat_s one-second
 * slots, so a tick touches only its slot.
 *
 * Frames: `id:` for durable events only; the `ready` frame between replay
 * and live; on the bus's on_end the stream ends with an `error` frame
 * without id (chat_deleted, user_disabled, shutting_down, ...) and the
 * connection closes once it is written (or at its next heartbeat slot if
 * the client does not read).
 *
 * The socket must be a plain TCP (or unix) socket: corral terminates no
 * TLS itself. */
#ifndef CORRAL_SSE_H
#define CORRAL_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

struct bus;
struct server;
struct bufferevent;
struct sse_hub;

/* Appends one SSE frame to out: `id: <id>` when id > 0, `event: <type>`,
 * one `data: ` line per line of data (split at CR LF, CR and LF, so data
 * with line breaks stays one event and reads back joined by LF), then the
 * blank line. type must not contain CR or LF (the bus checks). */
void sse_frame(struct buf *out, int64_t id, const char *type,
               const char *data, size_t len);

/* Created and freed by the bus (bus_sse_hub). sse_hub_free writes what it
 * can of each connection's pending output without blocking, then closes
 * them all. */
struct sse_hub *sse_hub_new(struct server *srv, struct bus *bus);
void sse_hub_free(struct sse_hub *h);

/* Takes over bev (from req_take_connection: response head in its output,
 * no callbacks) and streams chat_id from `after` (< 0: live only) to it.
 * user_id (may be NULL) is kept for sse_end_user. 0, or -1 when the
 * connection could not be taken over (bev freed, socket closed). */
int sse_serve(struct sse_hub *h, struct bufferevent *bev,
              const char *chat_id, const char *user_id, int64_t after);

/* Ends every stream of user_id with `error {code, detail}` (a disabled
 * user: API.md "Auth"). */
void sse_end_user(struct sse_hub *h, const char *user_id, const char *code,
                  const char *detail);

struct sse_stats {
    int conns;             /* open connections */
    uint64_t dropped_slow; /* closed for exceeding the output cap */
    uint64_t bytes_out;
};
void sse_get_stats(const struct sse_hub *h, struct sse_stats *out);

#endif
