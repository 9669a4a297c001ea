#include "corral/ids.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "corral/crypto.h"

void ids_uuid7_from(uint64_t unix_ms, const uint8_t rnd[10],
                    char out[UUID_STR_LEN + 1])
{
    uint8_t b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(unix_ms >> (40 - 8 * i));
    memcpy(b + 6, rnd, 10);
    b[6] = (uint8_t)(0x70 | (b[6] & 0x0f)); /* version 7 */
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f)); /* variant 10 */
    snprintf(out, UUID_STR_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
}

int ids_uuid7(char out[UUID_STR_LEN + 1])
{
    uint8_t rnd[10];
    struct timespec ts;
    if (crypto_random(rnd, sizeof(rnd)) < 0)
        return -1;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    ids_uuid7_from(ms, rnd, out);
    return 0;
}

bool ids_is_uuid(const char *s)
{
    if (strlen(s) != UUID_STR_LEN)
        return false;
    for (int i = 0; i < UUID_STR_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

uint64_t ids_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
