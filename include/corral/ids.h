/* ids: UUIDv7 identifiers (RFC 9562): 48-bit Unix milliseconds, then
 * random bits, so ids sort by creation time (lists use them as the final
 * tie-breaker and in cursors). */
#ifndef CORRAL_IDS_H
#define CORRAL_IDS_H

#include <stdbool.h>
#include <stdint.h>

#define UUID_STR_LEN 36

/* Writes a new UUIDv7 as 36 lowercase characters plus NUL. 0 or -1. */
int ids_uuid7(char out[UUID_STR_LEN + 1]) __attribute__((warn_unused_result));
/* Same, for a given time and 10 random bytes (for tests). */
void ids_uuid7_from(uint64_t unix_ms, const uint8_t rnd[10],
                    char out[UUID_STR_LEN + 1]);
/* True when s is a canonical UUID string (any version, lowercase or
 * uppercase hex, with dashes). */
bool ids_is_uuid(const char *s);
/* FNV-1a of a string: the bucket of an id or key in a hash table. */
uint64_t ids_hash(const char *s);

#endif
