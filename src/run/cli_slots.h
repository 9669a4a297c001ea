/* Private to src/run: the global cap on live CLIs (cli_slots.c). */
#ifndef CORRAL_RUN_CLI_SLOTS_H
#define CORRAL_RUN_CLI_SLOTS_H

#include <stdbool.h>

#include "chats_int.h"

void cli_slots_init(struct chats *c);
void cli_slots_free(struct chats *c);
/* Before rt starts a run: true when rt holds a slot (now or already);
 * false when every slot is held: rt waits and is kicked later, and an
 * idle CLI elsewhere may be closed for it. Marks rt's CLI as used now. */
bool cli_slot_acquire(struct chat_rt *rt);
/* rt has neither a run nor a CLI any more: its slot goes to a waiter. */
void cli_slot_maybe_release(struct chat_rt *rt);
/* rt's CLI just became idle: a waiter may have it closed. */
void cli_slots_idle(struct chat_rt *rt);
/* rt is being freed: off the wait list, its slot released. */
void cli_slot_forget(struct chat_rt *rt);
void cli_slots_render_metrics(const struct chats *c, struct buf *out);

#endif
