/* Private to src/run: a user message's attachments in its run (API.md
 * "Files", DESIGN.md §5 SANDBOX_PREPARE). The files are copied from the
 * blob store into the workspace's attachments/ folder by child processes,
 * images are base64-encoded in slices on the loop, and the CLI gets the
 * message as content blocks: one image block per image, a text block
 * listing every file's path, then the user's text. */
#ifndef CORRAL_RUN_ATTACH_H
#define CORRAL_RUN_ATTACH_H

#include <stdbool.h>

struct run;
struct run_attach;
struct cli_proc;

/* Reads the message's attachment objects (JSON array text, as stored in
 * messages.attachments) into run->att; an empty list leaves it NULL.
 * false when the text is not a list of attachment objects. */
bool attach_load(struct run *run, const char *json);
/* SANDBOX_PREPARE's part: places the files and encodes the images, then
 * calls done(run) while the run is still the chat's active one and not
 * ending. A failure ends the run FAILED with code sandbox_failed. The
 * run is held (refs) until the work is over. */
void attach_prepare(struct run *run, void (*done)(struct run *run));
/* Writes the user message to the CLI as content blocks and lets the
 * image data go. As cli_proc_send_user: 0 or -1. */
int attach_send_user(struct run *run, struct cli_proc *cli);
/* NULL is fine. */
void attach_free(struct run_attach *att);

#endif
