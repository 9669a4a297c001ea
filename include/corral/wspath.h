/* wspath: client paths resolved strictly beneath a chat's workspace root
 * (API.md "Files": `..`, absolute paths, NUL bytes and symlinks that leave
 * the root get 422 `bad_path`).
 *
 * Two steps. wspath_check is pure syntax: relative, components neither
 * empty nor "." nor "..", no NUL, bounded length. wspath_open then resolves
 * with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) against an fd of
 * the root: the kernel refuses (EXDEV) any step out of it, including
 * through a symlink (relative or absolute) planted inside. A symlink whose
 * target stays inside is followed. Operations that act on a name itself
 * (delete, mkdir, the rename of an upload) open the parent that way and
 * use the *at calls on the last component, so a symlink there is removed
 * or replaced, never followed. */
#ifndef CORRAL_WSPATH_H
#define CORRAL_WSPATH_H

#include <stdbool.h>
#include <stddef.h>

#define WSPATH_MAX 4096
#define WSPATH_NAME_MAX 255

/* Checks rel (len bytes, which may hold a NUL) and normalises it into out
 * (size WSPATH_MAX + 1): one trailing '/' is dropped; "" and "." mean the
 * root. NULL when valid, else a static reason for the 422 detail. */
const char *wspath_check(const char *rel, size_t len, char *out);

/* Opens the normalised path beneath rootfd with flags (O_RDONLY,
 * O_DIRECTORY ...; O_CLOEXEC is added). "" opens the root itself. An fd,
 * or -errno: -EXDEV for an escape (a symlink leaving the root), -ENOENT,
 * -ENOTDIR, -ELOOP ... */
int wspath_open(int rootfd, const char *path, int flags);

/* Splits the normalised, non-root path into its parent directory (opened
 * beneath rootfd, O_PATH | O_DIRECTORY) and last component (copied into
 * name, size WSPATH_NAME_MAX + 1). The fd or -errno as above. */
int wspath_open_parent(int rootfd, const char *path, char *name);

#endif
