/* unixaddr: a sockaddr_un for any path. sun_path holds 108 bytes, and a
 * data_dir under a long temporary directory plus
 * sandboxes/<uuid>/run/gw.sock does not fit; such a path is reached
 * through /proc/self/fd/<dir fd>/<name>, which bind() and connect()
 * resolve like the real directory. */
#ifndef CORRAL_UNIXADDR_H
#define CORRAL_UNIXADDR_H

#include <sys/un.h>

/* Fills sa for path. *dirfd is -1, or a descriptor the caller closes
 * after its bind() or connect(). 0, or -1 (errno set) when the directory
 * cannot be opened or the file name alone is too long. */
int unixaddr_make(const char *path, struct sockaddr_un *sa, int *dirfd);

#endif
