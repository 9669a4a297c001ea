/* mem: allocation helpers that abort on out-of-memory, and container_of.
 * Input sizes are bounded by explicit limits elsewhere, so an allocation
 * failure means the process is out of memory and cannot do anything useful. */
#ifndef CORRAL_MEM_H
#define CORRAL_MEM_H

#include <stddef.h>

#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Copies n bytes and appends a NUL. */
char *xstrndup(const char *s, size_t n);

#endif
