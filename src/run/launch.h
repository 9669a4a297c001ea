/* Launch settings of a run (DESIGN.md §5): what argv and env fix when the
 * chat's CLI is spawned — the appended system prompt (the user's, then
 * the chat's), the user's environment variables, MCP servers and
 * disallowed tools. A warm CLI serves a run only when its launch key (a
 * digest of all of them) is the run's. Private to src/run. */
#ifndef CORRAL_RUN_LAUNCH_H
#define CORRAL_RUN_LAUNCH_H

#include <stdbool.h>
#include <stdint.h>

#include "corral/pg.h"

#define LAUNCH_KEY_LEN 64 /* hex SHA-256 */

struct launch {
    char *prompt;          /* --append-system-prompt, or NULL */
    char **env;            /* "NAME=value" of the user's settings */
    char *mcp_config;      /* --mcp-config JSON, or NULL */
    char **disallowed;     /* --disallowedTools entries */
    char key[LAUNCH_KEY_LEN + 1];
};

/* Fills l from row 0 of a store_run_load result (chat_prompt: the chat's
 * own appended prompt). false with *err when the user's variables do not
 * open under key. */
bool launch_load(struct launch *l, const PGresult *res,
                 const char *chat_prompt, const uint8_t key[32],
                 const char **err);
void launch_free(struct launch *l);

#endif
