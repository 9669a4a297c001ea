/* Host child processes for file work (include/corral/files.h). */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corral/files.h"
#include "corral/log.h"
#include "corral/mem.h"

extern char **environ;

struct child {
    void (*on_exit)(void *arg, int status);
    void *arg;
    struct event_base *base;
};

static void on_child_exit(evutil_socket_t fd, short what, void *arg)
{
    struct child *c = arg;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG) == 0 &&
        si.si_pid == 0 &&
        event_base_once(c->base, fd, EV_READ, on_child_exit, c, NULL) == 0)
        return; /* spurious wake-up: not exited yet */
    int status = -1;
    if (si.si_pid != 0)
        status = si.si_code == CLD_EXITED ? si.si_status << 8
                                          : si.si_status & 0x7f;
    close(fd);
    if (c->on_exit)
        c->on_exit(c->arg, status);
    free(c);
}

int child_run(struct event_base *base, const char *const argv[], int out_fd,
              int fd3, void (*on_exit)(void *arg, int status), void *arg)
{
    static char *const envp[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (fd3 >= 0)
        posix_spawn_file_actions_adddup2(&fa, fd3, 3);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv,
                         envp);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        log_error("files: cannot start %s: %s", argv[0], strerror(rc));
        return -1;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct child *c = xcalloc(1, sizeof(*c));
    c->on_exit = on_exit;
    c->arg = arg;
    c->base = base;
    if (pidfd < 0 ||
        event_base_once(base, pidfd, EV_READ, on_child_exit, c, NULL) < 0) {
        log_error("files: cannot watch %s (pid %d)", argv[0], (int)pid);
        kill(pid, SIGKILL);
        if (pidfd >= 0)
            close(pidfd);
        free(c);
        return -1; /* reaped by nobody: a zombie until corrald exits */
    }
    return 0;
}
