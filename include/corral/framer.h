/* framer: splits a byte stream into '\n'-terminated lines of any length up
 * to a cap (the CLI's stdout: docs/claude-cli-protocol.md §2). A longer
 * line is dropped whole and reported once; framing resumes after its
 * newline. Pure: unit-tested without processes. */
#ifndef CORRAL_FRAMER_H
#define CORRAL_FRAMER_H

#include <stdbool.h>
#include <stddef.h>

#include "corral/buf.h"

struct framer {
    struct buf pending;  /* the unfinished line */
    size_t max_line;
    bool discarding;     /* inside an overlong line */
};

/* on_line gets each complete line without its '\n' (and without a
 * trailing '\r'); on_overlong once per dropped line. */
struct framer_cbs {
    void (*on_line)(void *arg, const char *line, size_t len);
    void (*on_overlong)(void *arg, size_t seen);
};

void framer_init(struct framer *f, size_t max_line);
void framer_deinit(struct framer *f);
/* Feeds bytes. Callbacks may not free the framer (stop via a flag). */
void framer_feed(struct framer *f, const char *data, size_t len,
                 const struct framer_cbs *cbs, void *arg);

#endif
