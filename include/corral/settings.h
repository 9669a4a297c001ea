/* settings: a user's settings (API.md "Settings, usage, models"), the
 * sealing of their environment variables and the checks PUT /settings
 * applies. src/api/settings.c serves them; the run reads them at launch. */
#ifndef CORRAL_SETTINGS_H
#define CORRAL_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
