/* turn_map: turns the CLI's stream-json stdout lines of one turn into the
 * events of API.md "Stream" and the assistant message's content blocks.
 *
 * corral numbers the blocks of one assistant message itself (index 0, 1,
 * 2 ... across all the CLI's assistant lines of the turn). stream_event
 * deltas become ephemeral assistant_text_delta / assistant_thinking_delta
 * with the index their block will have; the complete `assistant` line's
 * block becomes assistant_text / assistant_thinking / tool_started with
 * the same index; tool results (user lines) become tool_completed or
 * tool_failed with the index of their tool_use. The `result` line ends the
 * turn: its facts are returned to the caller, which publishes usage and
 * the final status. Strings over TURN_MAP_EVENT_CAP are cut in events
 * (marked "truncated": true); the blocks keep everything.
 *
 * Pure: fed parsed lines, emits through a callback; unit-tested. */
#ifndef CORRAL_TURN_MAP_H
#define CORRAL_TURN_MAP_H

#include <stdbool.h>
#include <stdint.h>

#include "corral/buf.h"
#include "corral/json.h"

#define TURN_MAP_EVENT_CAP (200 * 1024)
#define TURN_MAP_MAX_USAGE 8

struct turn_block;
struct turn_msg;

struct turn_map {
    char message_id[40];      /* the reply's id, in every event */
    int nblocks, cap_blocks;
    struct turn_block *blocks;
    int nmsgs, cap_msgs;
    struct turn_msg *msgs;    /* API message id -> first block index */
    char stream_msg[72];      /* the API message being streamed */
};

struct turn_usage {
    char model[104];
    int64_t input_tokens, output_tokens;
    int64_t cache_creation_input_tokens, cache_read_input_tokens;
};

/* What a line meant for the turn. */
struct turn_line {
    bool is_result;
    bool is_error;             /* result.is_error */
    bool is_init;              /* system/init */
    char session_id[72];       /* from init or result */
    char terminal_reason[40];
    char error_text[512];      /* result text or errors[] of a failure */
    int nusage;
    struct turn_usage usage[TURN_MAP_MAX_USAGE];
    bool usage_per_model;      /* from model_usage_since_last_result */
};

/* Called for each event: type, the data object (borrowed), durable. */
typedef void (*turn_emit_fn)(void *arg, const char *type,
                             const struct buf *data, bool durable);

void turn_map_init(struct turn_map *t, const char *message_id);
void turn_map_deinit(struct turn_map *t);
/* Maps one parsed stdout line (root object token 0). Control traffic is
 * not this module's: the caller handles control_* types before. */
void turn_map_line(struct turn_map *t, const struct json_doc *doc,
                   turn_emit_fn emit, void *arg, struct turn_line *out);
/* Writes the assistant message's content: [{type, index, ...}, ...]. */
void turn_map_content(const struct turn_map *t, struct buf *out);

#endif
