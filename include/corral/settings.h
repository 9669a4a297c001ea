/* settings: a user's settings (API.md "Settings, usage, models"), the
 * sealing of their environment variables and the checks PUT /settings
 * applies. src/api/settings.c serves them; the run reads them at launch. */
#ifndef CORRAL_SETTINGS_H
#define CORRAL_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

#define SETTINGS_ENV_MAX 64          /* variables per user */
#define SETTINGS_ENV_NAME_MAX 128    /* bytes of a name */
#define SETTINGS_ENV_VALUE_MAX 8192  /* bytes of a value */

/* Opens every value of user_settings.env_enc (JSON object text) sealed
 * for user_id under key into a NULL-terminated array of "NAME=value"
 * strings (settings_env_free). NULL when an entry does not open (wrong
 * key, tampering): the caller fails the run rather than launch without
 * the user's variables. "{}" gives an empty array. */
char **settings_env_open(const uint8_t key[32], const char *user_id,
                         const char *env_enc_json);
void settings_env_free(char **env);

/* Whether name may not be set by a user (ANTHROPIC_*, CLAUDE_*, LD_*,
 * HOME, PATH, LANG, TERM and the names the sandbox sets itself). */
bool settings_env_name_reserved(const char *name);

/* Whether name has the form [A-Za-z_][A-Za-z0-9_]* and at most
 * SETTINGS_ENV_NAME_MAX bytes. */
bool settings_env_name_valid(const char *name);

/* Seals value (n bytes) for user_id and name under key, appending
 * base64(nonce | ciphertext | tag) to out: the form stored in env_enc.
 * 0, or -1 when no randomness is available. */
int settings_env_seal(const uint8_t key[32], const char *user_id,
                      const char *name, const char *value, size_t n,
                      struct buf *out) __attribute__((warn_unused_result));

/* Whether s (n bytes) is a tool rule of allowed_tools/disallowed_tools:
 * a tool name ([A-Za-z][A-Za-z0-9_-]*, e.g. Bash or mcp__srv__tool),
 * optionally followed by a non-empty "(content)" without control
 * characters, e.g. "Bash(npm test:*)"; at most 512 bytes. */
bool settings_tool_rule_valid(const char *s, size_t n);

/* Checks the command of an MCP stdio server against what the sandbox
 * sees: a bare name must be an executable of the sandbox's PATH
 * (/usr/bin:/bin), an absolute path one under the read-only system binds
 * (/usr, /bin, /lib, /lib64, /etc). NULL when it is, else a static
 * reason. Looks at the host's files (stat): they are the ones bound. */
const char *settings_mcp_command_check(const char *cmd);

/* Whether id is a model id of the models table: [a-z0-9][a-z0-9._:-]*,
 * at most 100 bytes. */
bool settings_model_id_valid(const char *id);

#endif
