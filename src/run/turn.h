/* Private to src/run: the functions chats.c and turn.c share. */
#ifndef CORRAL_RUN_TURN_H
#define CORRAL_RUN_TURN_H

#include "chats_int.h"
#include "corral/buf.h"

/* chats.c */
bool run_set_phase(struct run *run, enum run_phase to);
/* Ends run in final (DONE, FAILED or CANCELLED): stores the reply,
 * publishes error/usage/status, frees the chat's run slot. code/detail
 * for FAILED and CANCELLED (may be NULL). Idempotent. */
void end_run(struct run *run, enum run_phase final, const char *code,
             const char *detail);
void run_release(struct run *run);
/* Whether work done for run in the background should go on: it is still
 * its chat's turn, not ending, and the server is not shutting down. */
bool run_is_current(const struct run *run);
void chat_publish(struct run *run, const char *type, const struct buf *data,
                  bool durable);
void chat_publish_error(struct run *run, const char *code,
                        const char *detail);

/* Frees rt (closing its gateway and sandbox) when nothing holds it: no
 * run of the chat allocated, no CLI. The chat's next message makes a new
 * runtime. Not during shutdown (chats_free frees everything). */
void chat_rt_release_idle(struct chat_rt *rt);

/* Ends the CHECKPOINT phase (or FINALIZE's bookkeeping): the run goes
 * to its final phase, lets the chat's run slot go and the next run
 * start. Called once per run. */
void run_leave_slot(struct run *run);
/* The chat's runtime (created when missing) and the queue's next run
 * started when the slot is free. */
struct chat_rt *chat_rt_get(struct chats *c, const char *chat_id);
void chat_rt_kick(struct chat_rt *rt);

/* checkpoint.c */
/* FINALIZE is stored: takes the checkpoint (run goes CHECKPOINT, then
 * DONE through run_leave_slot). */
void checkpoint_run(struct run *run);
/* An interrupt during CHECKPOINT: the snapshot is abandoned. */
void checkpoint_interrupt(struct run *run);
/* The chat was deleted: its checkpoint store goes. */
void checkpoint_chat_deleted(struct chat_rt *rt);
/* Shutdown: kills every checkpoint child (their callbacks still run). */
void checkpoint_shutdown(struct chats *c);

/* turn.c */
/* Starts the active run after it was loaded (SANDBOX_PREPARE onwards). */
void turn_start(struct run *run);
/* Interrupts the active run (after the user message was written). */
void turn_interrupt(struct run *run);
/* The CLI of rt is no longer needed (idle expiry, deletion, shutdown). */
void turn_close_cli(struct chat_rt *rt, bool kill);
/* Arms or clears the idle timer of rt's CLI. */
void turn_idle_check(struct chat_rt *rt);

#endif
