/* Workspace path resolution (include/corral/wspath.h). openat2 with
 * RESOLVE_BENEATH (Linux 5.6) makes the kernel do the containment check
 * on every step of the walk, symlinks included, with no window between a
 * check and the use of its result. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "corral/wspath.h"

const char *wspath_check(const char *rel, size_t len, char *out)
{
    if (memchr(rel, '\0', len))
        return "path may not contain NUL bytes";
    if (len > WSPATH_MAX)
        return "path is too long";
    if (len > 0 && rel[0] == '/')
        return "path must be relative to the workspace root";
    if (len > 1 && rel[len - 1] == '/')
        len--;
    if (len > 0 && rel[len - 1] == '/')
        return "path has an empty component";
    if ((len == 1 && rel[0] == '.') || len == 0) {
        out[0] = '\0';
        return NULL;
    }
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        while (i + n < len && rel[i + n] != '/')
            n++;
        if (n == 0)
            return "path has an empty component";
        if (n > WSPATH_NAME_MAX)
            return "a path component is too long";
        if ((n == 1 && rel[i] == '.') ||
            (n == 2 && rel[i] == '.' && rel[i + 1] == '.'))
            return "path may not contain . or .. components";
        i += n + 1;
    }
    memcpy(out, rel, len);
    out[len] = '\0';
    return NULL;
}

int wspath_open(int rootfd, const char *path, int flags)
{
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_CLOEXEC),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, rootfd, path[0] ? path : ".", &how,
                      sizeof(how));
    return fd < 0 ? -errno : (int)fd;
}

int wspath_open_parent(int rootfd, const char *path, char *name)
{
    const char *slash = strrchr(path, '/');
    const char *last = slash ? slash + 1 : path;
    size_t n = strlen(last);
    if (n == 0 || n > WSPATH_NAME_MAX)
        return -EINVAL;
    memcpy(name, last, n + 1);
    if (!slash)
        return wspath_open(rootfd, "", O_PATH | O_DIRECTORY);
    char parent[WSPATH_MAX + 1];
    size_t plen = (size_t)(slash - path);
    memcpy(parent, path, plen);
    parent[plen] = '\0';
    return wspath_open(rootfd, parent, O_PATH | O_DIRECTORY);
}
