/* run: the phases of one turn (DESIGN.md §5) as one static transition
 * table, and what each phase means on the wire (API.md "Status values").
 * Pure functions: src/run/chats.c owns the machine and is the only caller
 * of the transition check (through its run_set_phase). */
#ifndef CORRAL_RUN_H
#define CORRAL_RUN_H

#include <stdbool.h>

enum run_phase {
    RUN_PHASE_QUEUED = 0,
    RUN_PHASE_SANDBOX_CONNECT,
    RUN_PHASE_SANDBOX_PREPARE,
    RUN_PHASE_CLI_LAUNCH,
    RUN_PHASE_STREAMING,
    RUN_PHASE_AWAITING_PERMISSION,
    RUN_PHASE_FINALIZE,
    RUN_PHASE_CHECKPOINT,
    RUN_PHASE_DONE,
    RUN_PHASE_FAILED,
    RUN_PHASE_CANCELLED,
    RUN_PHASE_COUNT
};

/* True when the table allows from -> to. */
bool run_phase_allowed(enum run_phase from, enum run_phase to);
bool run_phase_terminal(enum run_phase p);
/* Lowercase wire name ("sandbox_prepare"). */
const char *run_phase_name(enum run_phase p);
/* The reply message's status in this phase (API.md table). */
const char *run_phase_message_status(enum run_phase p);
/* The chat's status while its oldest unfinished run is in this phase. */
const char *run_phase_chat_status(enum run_phase p);
/* Parses a wire name; -1 when unknown. */
int run_phase_parse(const char *name);

#endif
