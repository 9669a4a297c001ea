/* keys: the server's signing and encryption keys. From config when set
 * (jwt_secret: any string of >= 32 characters, hashed to 32 bytes;
 * secret_key: 64 hex digits), otherwise generated once and kept in
 * <data_dir>/keys/ with mode 0600. Runs at start-up, before the loop. */
#ifndef CORRAL_KEYS_H
#define CORRAL_KEYS_H

#include <stdint.h>

#include "corral/config.h"

int keys_load(const struct config *cfg, uint8_t jwt_key[32],
              uint8_t secret_key[32]) __attribute__((warn_unused_result));

#endif
