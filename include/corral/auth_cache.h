/* auth_cache: what authentication learned about a credential, kept for
 * auth_cache_ttl_ms so that a request does not read the user row every
 * time (DESIGN.md §7, the user-status cache). Keys: "u:<user id>" (an
 * access token's subject) and "k:<sha256 hex>" (an API key). Whatever
 * revokes or demotes through the API (a user disabled or re-roled, an API
 * key deleted) clears the whole cache at once, so it applies from the
 * next request; a change made in the database by hand applies within the
 * TTL. One process: other instances would need the clear sent over the
 * bus or PostgreSQL NOTIFY. */
#ifndef CORRAL_AUTH_CACHE_H
#define CORRAL_AUTH_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#define AUTH_CACHE_MAX 16384 /* entries; when full it is cleared */

struct auth_cache;

struct auth_entry {
    char user_id[37];
    bool admin;
    bool disabled;
};

struct auth_cache *auth_cache_new(int ttl_ms);
void auth_cache_free(struct auth_cache *c);
/* true and *out when key is cached and younger than the TTL (now_ms: a
 * monotonic clock). */
bool auth_cache_get(struct auth_cache *c, const char *key, uint64_t now_ms,
                    struct auth_entry *out);
/* Stores e unless the cache was cleared since generation gen was read
 * (a lookup that began before a revocation must not store its answer). */
void auth_cache_put(struct auth_cache *c, const char *key, uint64_t gen,
                    uint64_t now_ms, const struct auth_entry *e);
uint64_t auth_cache_generation(const struct auth_cache *c);
void auth_cache_clear(struct auth_cache *c);

#endif
