#include "corral/unixaddr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int unixaddr_make(const char *path, struct sockaddr_un *sa, int *dirfd)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    *dirfd = -1;
    size_t n = strlen(path);
    if (n < sizeof(sa->sun_path)) {
        memcpy(sa->sun_path, path, n + 1);
        return 0;
    }
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash || slash == path || (size_t)(slash - path) >= sizeof(dir)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int w = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s",
                     fd, slash + 1);
    if (w < 0 || (size_t)w >= sizeof(sa->sun_path)) {
        close(fd);
        errno = ENAMETOOLONG;
        return -1;
    }
    *dirfd = fd;
    return 0;
}
