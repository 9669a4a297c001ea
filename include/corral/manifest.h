/* manifest: one line per entry of a checkpoint (src/sandbox/snapshot.c).
 * A checkpoint's manifest lists the workspace and the CLI's session tree
 * (root `w` and `h`) in pre-order, parents before children:
 *
 *   corral-manifest 1
 *   <kind> <root> <mode> <size> <mtime_ns> <ino> <sha256|-> <path> [<target>]
 *
 * kind f (file), d (directory), l (symlink); mode octal permission bits;
 * path relative to the root; target a symlink's. path and target are
 * percent-encoded (%XX for bytes up to space, '%' and DEL), so a line
 * always splits on spaces. Pure functions: the unit tests link them. */
#ifndef CORRAL_MANIFEST_H
#define CORRAL_MANIFEST_H

#include <stdbool.h>
#include <stdint.h>

#define MANIFEST_HEADER "corral-manifest 1"
#define MANIFEST_SHA_LEN 64

struct mf_entry {
    char kind;                     /* 'f', 'd', 'l' */
    char root;                     /* 'w' workspace, 'h' session tree */
    unsigned mode;                 /* permission bits (07777) */
    int64_t size;                  /* bytes of a file; 0 otherwise */
    int64_t mtime_ns;              /* modification time */
    uint64_t ino;                  /* inode when taken: reuse check only */
    char sha[MANIFEST_SHA_LEN + 1]; /* lowercase hex of a file's bytes */
    char *path;                    /* decoded, owned */
    char *target;                  /* a symlink's, decoded, owned; or NULL */
};

/* The entry as one line (no newline), malloc'd. */
char *mf_format(const struct mf_entry *e);
/* Parses one line (without its newline) into out (owning path/target).
 * false on any malformed field, an unsafe path (mf_path_ok) or a missing
 * target/sha; out is then left empty. */
bool mf_parse(const char *line, struct mf_entry *out);
void mf_entry_free(struct mf_entry *e);
/* A relative path without empty, "." or ".." components. */
bool mf_path_ok(const char *path);
/* Orders entries by (root, path): for lookups with bsearch. */
int mf_cmp(const void *a, const void *b);

#endif
