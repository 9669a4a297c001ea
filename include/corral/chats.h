/* chats: the live side of chats (src/run/): each chat with work gets a
 * runtime holding its FIFO of runs, the active run's phase machine
 * (DESIGN.md §5), its CLI process, sandbox and model gateway. The HTTP
 * handlers store rows first, then tell this module. */
#ifndef CORRAL_CHATS_H
#define CORRAL_CHATS_H

#include <stdbool.h>
#include <stdint.h>

struct server;
struct chats;

#define CHATS_ID_LEN 36

/* A stored, queued turn (rows in messages and runs exist). */
struct run_spec {
    char run_id[CHATS_ID_LEN + 1];
    char chat_id[CHATS_ID_LEN + 1];
    char owner_id[CHATS_ID_LEN + 1];
    char user_message_id[CHATS_ID_LEN + 1];
    char reply_id[CHATS_ID_LEN + 1];
};

struct chats *chats_new(struct server *srv);
/* Shutdown, first step (before the pool and bus go): kills every CLI and
 * stops reacting to completions. Unfinished runs stay unfinished in the
 * database and are marked failed by the next start (chats_recover). */
void chats_shutdown(struct chats *c);
/* Second step, after the pool's callbacks have all fired. */
void chats_free(struct chats *c);

/* Marks runs left unfinished by a previous process as failed
 * (instance_lost). Start-up only; cb fires once (err NULL on success). */
void chats_recover(struct chats *c, void (*cb)(void *arg, const char *err),
                   void *arg);

/* Queues the turn behind the chat's active run (or starts it). */
void chats_enqueue(struct chats *c, const struct run_spec *spec);

/* Interrupts the active run (it ends cancelled); with drop_queue the
 * queued runs end cancelled too. Returns the number of runs affected. */
int chats_interrupt(struct chats *c, const char *chat_id, bool drop_queue);

/* The chat was deleted: cancel and drop everything, end its streams with
 * `chat_deleted`, close the CLI, destroy the sandbox and workspace. */
void chats_delete(struct chats *c, const char *chat_id);

/* Settings that fix the CLI at launch (system prompt) changed: the next
 * turn relaunches it with --resume. */
void chats_settings_changed(struct chats *c, const char *chat_id);

/* A user's answer to a pending permission request (API.md
 * "Permissions"). JSON members are object text, already validated. */
struct perm_answer {
    const char *request_id;
    const char *user_id;       /* who decided (audit) */
    bool allow;
    bool remember;             /* store a rule for the chat */
    const char *message;       /* sent to the CLI with a deny, or NULL */
    const char *updated_input; /* replaces the input of an allow, or NULL */
    const char *answers;       /* AskUserQuestion answers, or NULL */
};
/* Answers a request that is pending in one of this process's runs: the
 * CLI gets its control_response, permission_resolved is published and
 * cb receives the UPDATE's reply (one row: the request JSON). -1 when no
 * such request is pending here (cb is not called): decided, expired,
 * withdrawn, or its run is gone. */
struct pg_reply;
int chats_permission_answer(struct chats *c, const char *chat_id,
                            const struct perm_answer *a,
                            void (*cb)(void *arg, const struct pg_reply *r),
                            void *arg);

/* Restores checkpoint cid of the chat (its row checked by the caller):
 * -1 when the chat has a run, active or queued (nothing changes then).
 * Else the restore holds the chat's run slot (messages sent meanwhile
 * queue behind it), closes the chat's CLI (the next turn resumes the
 * restored session), restores the workspace and the session files in a
 * child process, and calls cb once with err NULL on success. The slot
 * stays held until chats_restore_done. */
int chats_restore(struct chats *c, const char *chat_id, const char *cid,
                  void (*cb)(void *arg, const char *err), void *arg);
/* Ends a restore: keep (the checkpoint ids left, space-separated) lets the
 * blobs of the others go first; NULL skips that. Then the queue moves. */
void chats_restore_done(struct chats *c, const char *chat_id,
                        const char *keep);

struct chat_live {
    const char *status;       /* idle, queued, running, awaiting_permission */
    bool has_run;
    char message_id[CHATS_ID_LEN + 1]; /* the active run's reply */
    const char *phase;        /* lowercase run phase */
    int64_t started_unix_ms;  /* wall clock, when the run left the queue */
    int queued;               /* runs waiting behind the active one */
    char owner_id[CHATS_ID_LEN + 1]; /* of its runs; "" without any */
    const char *sandbox_state; /* none, starting, running, stopped, error */
};
/* Fills out for a chat this process is running; false when it has no
 * runtime (then: idle, nothing queued, sandbox as stored). */
bool chats_live(struct chats *c, const char *chat_id, struct chat_live *out);

/* Appends the sandbox gauges (corral_sandboxes{state}) to /metrics. */
struct buf;
void chats_render_metrics(struct chats *c, struct buf *out);

#endif
