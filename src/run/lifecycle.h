/* Private to src/run: the sandbox's lifecycle (lifecycle.c) and the
 * workspace quota's part in runs (quota.c). */
#ifndef CORRAL_RUN_LIFECYCLE_H
#define CORRAL_RUN_LIFECYCLE_H

#include "chats_int.h"

/* lifecycle.c */
/* The chat's sandbox is now in state (API.md sandbox.state, a static
 * string): shown live while rt exists, and stored, asynchronously, in
 * the order of the calls per chat. */
void sandbox_set_state(struct chat_rt *rt, const char *state);
/* Arms the idle stop when the chat has a sandbox and no run, clears it
 * when a run is there; a newly idle chat also gets its usage measured. */
void sandbox_idle_check(struct chat_rt *rt);
/* True while rt must stay although nothing runs: its sandbox waits for
 * the idle stop (chat_rt_release_idle asks). */
bool sandbox_hold(const struct chat_rt *rt);
/* rt is about to be freed with its sandbox closed: records `stopped`
 * (unless deleted) and frees the lifecycle's and quota's timers. */
void sandbox_on_release(struct chat_rt *rt);
/* Frees rt's timers only (chats_free). */
void sandbox_rt_deinit(struct chat_rt *rt);
/* Start-up: states left by an earlier process, and the counts. */
void sandbox_lifecycle_start(struct chats *c);
void sandbox_lifecycle_free(struct chats *c);

/* quota.c */
/* Before the CLI gets the run's message: next(run) when the workspace is
 * within its quota (or the quota is off), else the run fails with
 * quota_exceeded. Uses a measurement younger than quota_check_interval_s
 * when there is one, else measures first. Arms the periodic check. */
void quota_before_turn(struct run *run, void (*next)(struct run *run));
/* Measures rt's usage in the background (after a run). */
void quota_measure_idle(struct chat_rt *rt);
/* Kills the measurements in flight (shutdown). */
void quota_free(struct chats *c);
/* Ends an interrupted run: CANCELLED, or FAILED with run->stop_code when
 * corral interrupted it itself (chats.c). */
void end_interrupted(struct run *run);

#endif
