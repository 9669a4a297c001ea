/* The authentication cache; see auth_cache.h. A chained hash table with a
 * fixed number of buckets; entries expire by age, and all go on a clear. */
#include <stdlib.h>
#include <string.h>

#include "corral/auth_cache.h"
#include "corral/ids.h"
#include "corral/mem.h"

#define NBUCKETS 4096
#define KEY_MAX 72

struct node {
    struct node *next;
    char key[KEY_MAX];
    uint64_t at_ms;
    struct auth_entry e;
};

struct auth_cache {
    struct node *buckets[NBUCKETS];
    int count;
    uint64_t ttl_ms;
    uint64_t gen;              /* bumped by every clear */
};

static unsigned bucket_of(const char *key)
{
    return (unsigned)(ids_hash(key) % NBUCKETS);
}

struct auth_cache *auth_cache_new(int ttl_ms)
{
    struct auth_cache *c = xcalloc(1, sizeof(*c));
    c->ttl_ms = ttl_ms > 0 ? (uint64_t)ttl_ms : 0;
    return c;
}

void auth_cache_clear(struct auth_cache *c)
{
    for (int i = 0; i < NBUCKETS; i++) {
        while (c->buckets[i]) {
            struct node *n = c->buckets[i];
            c->buckets[i] = n->next;
            free(n);
        }
    }
    c->count = 0;
    c->gen++;
}

void auth_cache_free(struct auth_cache *c)
{
    if (!c)
        return;
    auth_cache_clear(c);
    free(c);
}

uint64_t auth_cache_generation(const struct auth_cache *c)
{
    return c->gen;
}

static struct node **find(struct auth_cache *c, const char *key)
{
    struct node **pp = &c->buckets[bucket_of(key)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

bool auth_cache_get(struct auth_cache *c, const char *key, uint64_t now_ms,
                    struct auth_entry *out)
{
    if (c->ttl_ms == 0 || strlen(key) >= KEY_MAX)
        return false;
    struct node **pp = find(c, key);
    struct node *n = *pp;
    if (!n)
        return false;
    if (now_ms - n->at_ms >= c->ttl_ms) { /* expired: let it go */
        *pp = n->next;
        free(n);
        c->count--;
        return false;
    }
    *out = n->e;
    return true;
}

void auth_cache_put(struct auth_cache *c, const char *key, uint64_t gen,
                    uint64_t now_ms, const struct auth_entry *e)
{
    if (c->ttl_ms == 0 || gen != c->gen || strlen(key) >= KEY_MAX)
        return;
    if (c->count >= AUTH_CACHE_MAX)
        auth_cache_clear(c);
    struct node **pp = find(c, key);
    struct node *n = *pp;
    if (!n) {
        n = xcalloc(1, sizeof(*n));
        memcpy(n->key, key, strlen(key) + 1);
        *pp = n;
        c->count++;
    }
    n->at_ms = now_ms;
    n->e = *e;
}
