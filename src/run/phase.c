/* The transition table of a run. Rows: from; columns: to. Everything not
 * listed is refused, and run_set_phase logs the refusal as a bug. */
#include "corral/run.h"

#include <string.h>

#include "corral/mem.h"

#define T(to) (1u << (to))

static const unsigned allowed[RUN_PHASE_COUNT] = {
    [RUN_PHASE_QUEUED] = T(RUN_PHASE_SANDBOX_CONNECT) |
                         T(RUN_PHASE_SANDBOX_PREPARE) |
                         T(RUN_PHASE_STREAMING) | /* a task turn */
                         T(RUN_PHASE_FAILED) | T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_SANDBOX_CONNECT] = T(RUN_PHASE_SANDBOX_PREPARE) |
                                  T(RUN_PHASE_FAILED) |
                                  T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_SANDBOX_PREPARE] = T(RUN_PHASE_CLI_LAUNCH) |
                                  T(RUN_PHASE_STREAMING) | /* warm CLI */
                                  T(RUN_PHASE_FAILED) |
                                  T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_CLI_LAUNCH] = T(RUN_PHASE_STREAMING) | T(RUN_PHASE_FAILED) |
                             T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_STREAMING] = T(RUN_PHASE_AWAITING_PERMISSION) |
                            T(RUN_PHASE_FINALIZE) | T(RUN_PHASE_FAILED) |
                            T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_AWAITING_PERMISSION] = T(RUN_PHASE_STREAMING) |
                                      T(RUN_PHASE_FINALIZE) |
                                      T(RUN_PHASE_FAILED) |
                                      T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_FINALIZE] = T(RUN_PHASE_CHECKPOINT) | T(RUN_PHASE_DONE) |
                           T(RUN_PHASE_FAILED) | T(RUN_PHASE_CANCELLED),
    [RUN_PHASE_CHECKPOINT] = T(RUN_PHASE_DONE),
    [RUN_PHASE_DONE] = 0,
    [RUN_PHASE_FAILED] = 0,
    [RUN_PHASE_CANCELLED] = 0,
};

static const char *const names[RUN_PHASE_COUNT] = {
    [RUN_PHASE_QUEUED] = "queued",
    [RUN_PHASE_SANDBOX_CONNECT] = "sandbox_connect",
    [RUN_PHASE_SANDBOX_PREPARE] = "sandbox_prepare",
    [RUN_PHASE_CLI_LAUNCH] = "cli_launch",
    [RUN_PHASE_STREAMING] = "streaming",
    [RUN_PHASE_AWAITING_PERMISSION] = "awaiting_permission",
    [RUN_PHASE_FINALIZE] = "finalize",
    [RUN_PHASE_CHECKPOINT] = "checkpoint",
    [RUN_PHASE_DONE] = "done",
    [RUN_PHASE_FAILED] = "failed",
    [RUN_PHASE_CANCELLED] = "cancelled",
};

bool run_phase_allowed(enum run_phase from, enum run_phase to)
{
    if ((unsigned)from >= RUN_PHASE_COUNT || (unsigned)to >= RUN_PHASE_COUNT)
        return false;
    return (allowed[from] & T(to)) != 0;
}

bool run_phase_terminal(enum run_phase p)
{
    return p == RUN_PHASE_DONE || p == RUN_PHASE_FAILED ||
           p == RUN_PHASE_CANCELLED;
}

const char *run_phase_name(enum run_phase p)
{
    return (unsigned)p < RUN_PHASE_COUNT ? names[p] : "unknown";
}

int run_phase_parse(const char *name)
{
    for (int p = 0; p < RUN_PHASE_COUNT; p++)
        if (strcmp(names[p], name) == 0)
            return p;
    return -1;
}

const char *run_phase_message_status(enum run_phase p)
{
    switch (p) {
    case RUN_PHASE_QUEUED: return "queued";
    case RUN_PHASE_SANDBOX_CONNECT:
    case RUN_PHASE_SANDBOX_PREPARE:
    case RUN_PHASE_CLI_LAUNCH:
    case RUN_PHASE_STREAMING:
    case RUN_PHASE_FINALIZE: return "running";
    case RUN_PHASE_AWAITING_PERMISSION: return "awaiting_permission";
    case RUN_PHASE_CHECKPOINT:
    case RUN_PHASE_DONE: return "completed";
    case RUN_PHASE_FAILED: return "failed";
    case RUN_PHASE_CANCELLED: return "cancelled";
    case RUN_PHASE_COUNT: break;
    }
    return "failed";
}

const char *run_phase_chat_status(enum run_phase p)
{
    switch (p) {
    case RUN_PHASE_QUEUED: return "queued";
    case RUN_PHASE_AWAITING_PERMISSION: return "awaiting_permission";
    case RUN_PHASE_SANDBOX_CONNECT:
    case RUN_PHASE_SANDBOX_PREPARE:
    case RUN_PHASE_CLI_LAUNCH:
    case RUN_PHASE_STREAMING:
    case RUN_PHASE_FINALIZE:
    case RUN_PHASE_CHECKPOINT: return "running";
    case RUN_PHASE_DONE:
    case RUN_PHASE_FAILED:
    case RUN_PHASE_CANCELLED:
    case RUN_PHASE_COUNT: break;
    }
    return "idle";
}
