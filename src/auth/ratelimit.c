/* Token buckets in an open-addressing hash table (linear probing, with
 * tombstone-free deletion by rehashing the cluster). Tokens are kept in
 * milli-tokens so refill is exact integer arithmetic. */
#include "corral/ratelimit.h"

#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "corral/ids.h"
#include "corral/mem.h"

#define KEY_MAX 96

struct bucket {
    bool used;
    char key[KEY_MAX + 1];
    uint64_t tokens_milli; /* 1000 per token */
    uint64_t last_ms;      /* refill bookkeeping */
    uint64_t seen_ms;      /* last take: the LRU order */
};

struct ratelimit {
    uint64_t cap_milli;  /* burst, in milli-tokens */
    uint64_t per_min;
    size_t max_keys, nkeys, nslots;
    struct bucket *slots;
};

struct ratelimit *ratelimit_new(int per_min, size_t max_keys)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));
    rl->per_min = (uint64_t)per_min;
    rl->cap_milli = (uint64_t)per_min * 1000;
    rl->max_keys = max_keys;
    rl->nslots = 16;
    while (rl->nslots < max_keys * 2)
        rl->nslots *= 2;
    rl->slots = xcalloc(rl->nslots, sizeof(*rl->slots));
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    free(rl->slots);
    free(rl);
}

size_t ratelimit_keys(const struct ratelimit *rl)
{
    return rl->nkeys;
}

static void refill(const struct ratelimit *rl, struct bucket *b,
                   uint64_t now_ms)
{
    if (now_ms <= b->last_ms)
        return;
    /* per_min tokens per 60000 ms = per_min milli-tokens per 60 ms. */
    uint64_t add = (now_ms - b->last_ms) * rl->per_min / 60;
    b->tokens_milli = b->tokens_milli + add > rl->cap_milli
                          ? rl->cap_milli
                          : b->tokens_milli + add;
    b->last_ms = now_ms;
}

static size_t find_slot(const struct ratelimit *rl, const char *key)
{
    size_t mask = rl->nslots - 1, i = (size_t)ids_hash(key) & mask;
    while (rl->slots[i].used && strcmp(rl->slots[i].key, key) != 0)
        i = (i + 1) & mask;
    return i;
}

/* Removes slot i and re-inserts the rest of its probe cluster. */
static void remove_slot(struct ratelimit *rl, size_t i)
{
    size_t mask = rl->nslots - 1;
    rl->slots[i].used = false;
    rl->nkeys--;
    for (size_t j = (i + 1) & mask; rl->slots[j].used; j = (j + 1) & mask) {
        struct bucket b = rl->slots[j];
        rl->slots[j].used = false;
        rl->slots[find_slot(rl, b.key)] = b;
    }
}

/* Makes room: drops buckets that refilled completely (their keys have
 * been idle long enough that forgetting them changes nothing), else the
 * least recently used one. */
static void evict(struct ratelimit *rl, uint64_t now_ms)
{
    size_t oldest = SIZE_MAX;
    for (size_t i = 0; i < rl->nslots; i++) {
        struct bucket *b = &rl->slots[i];
        if (!b->used)
            continue;
        refill(rl, b, now_ms);
        if (b->tokens_milli >= rl->cap_milli) {
            remove_slot(rl, i);
            if (rl->slots[i].used)
                i--; /* a moved bucket landed here: look at it again */
            continue;
        }
        if (oldest == SIZE_MAX || b->seen_ms < rl->slots[oldest].seen_ms)
            oldest = i;
    }
    if (rl->nkeys >= rl->max_keys && oldest != SIZE_MAX)
        remove_slot(rl, oldest);
}

int ratelimit_take(struct ratelimit *rl, const char *key, uint64_t now_ms,
                   int *retry_after_s)
{
    char k[KEY_MAX + 1];
    snprintf(k, sizeof(k), "%s", key); /* longer keys share a prefix */
    size_t i = find_slot(rl, k);
    struct bucket *b = &rl->slots[i];
    if (!b->used) {
        if (rl->nkeys >= rl->max_keys) {
            evict(rl, now_ms);
            i = find_slot(rl, k);
            b = &rl->slots[i];
        }
        memset(b, 0, sizeof(*b));
        b->used = true;
        memcpy(b->key, k, sizeof(k));
        b->tokens_milli = rl->cap_milli;
        b->last_ms = now_ms;
        rl->nkeys++;
    }
    refill(rl, b, now_ms);
    b->seen_ms = now_ms;
    if (b->tokens_milli >= 1000) {
        b->tokens_milli -= 1000;
        return 0;
    }
    uint64_t missing = 1000 - b->tokens_milli;
    uint64_t ms = (missing * 60 + rl->per_min - 1) / rl->per_min;
    *retry_after_s = (int)((ms + 999) / 1000);
    if (*retry_after_s < 1)
        *retry_after_s = 1;
    return -1;
}
