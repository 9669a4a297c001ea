/* quota: the soft disk quota of a chat's workspace (DESIGN.md §6,
 * config workspace_quota_mb; 0 turns it off). Usage is measured off the
 * loop by a `du` child over the chat's writable trees (workspace and
 * home: the CLI's session files count too), in apparent bytes. Each file
 * is capped by RLIMIT_FSIZE (sandbox_fsize_mb) inside the sandbox; the
 * quota itself is checked before each turn, every quota_check_interval_s
 * during a turn, after each turn, and by uploads and PUTs through
 * workspace_quota_check. */
#ifndef CORRAL_QUOTA_H
#define CORRAL_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;

/* Measures the chat's usage now and calls cb once, from the loop (never
 * from inside this call): over is true when the usage exceeds the quota;
 * used_bytes is the usage, or -1 when it could not be measured (then
 * over is false: the quota is soft) or the quota is off. A chat that
 * never ran has no tree: 0 bytes. The result also refreshes what
 * workspace_quota_over answers. chat_id must be a chat the caller has
 * checked (owner); cb may be called after the chat was deleted. */
void workspace_quota_check(struct server *srv, const char *chat_id,
                           void (*cb)(void *arg, bool over,
                                      int64_t used_bytes),
                           void *arg);

/* Whether the chat's last measurement in this process, taken less than
 * quota_check_interval_s ago, found it over the quota (POST .../messages
 * answers 507 then). An older or missing measurement says false: the
 * turn measures again before the CLI gets the message. */
bool workspace_quota_over(struct server *srv, const char *chat_id);

/* Sums the sizes of du's output lines ("<bytes>\t<path>\n"). False when
 * no line parses or one is malformed. */
bool quota_parse_du(const char *out, size_t len, int64_t *used);

#endif
