/* vfork + execve from a plan; see spawn.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corral/spawn.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Lifts every source above the targets first, so that no dup2 overwrites
 * a source still needed. */
static int map_fds(struct spawn_plan *pl)
{
    int fd[SPAWN_MAX_FDS];
    for (int i = 0; i < pl->nfds; i++) {
        fd[i] = pl->fds[i];
        if (fd[i] < pl->nfds && (fd[i] = fcntl(fd[i], F_DUPFD, pl->nfds)) < 0)
            return -1;
    }
    for (int i = 0; i < pl->nfds; i++)
        if (dup2(fd[i], i) < 0) /* the copy has FD_CLOEXEC cleared */
            return -1;
    /* Not every library in corrald sets FD_CLOEXEC (sockets, the log). */
    if (close_range((unsigned)pl->nfds, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        for (int f = pl->nfds; f < pl->max_fd; f++)
            close(f);
    return 0;
}

__attribute__((noreturn)) static void child_main(struct spawn_plan *pl)
{
    if (map_fds(pl) < 0)
        goto fail;
    for (int i = 0; i < pl->nlim; i++)
        if (setrlimit(pl->res[i], &pl->lim[i]) < 0)
            goto fail;
    /* Dispositions survive exec when ignored (corrald ignores SIGPIPE) and
     * the mask always does: start from defaults. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL); /* EINVAL for libc's own: fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid(); /* out of corrald's process group: no terminal signals */
    execve(pl->path, pl->argv, pl->envp);
fail:
    pl->child_errno = errno ? errno : EINVAL;
    _exit(127);
}

pid_t spawn_exec(struct spawn_plan *pl)
{
    struct rlimit nofile;
    pl->max_fd = 65536;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 65536)
        pl->max_fd = (int)nofile.rlim_cur;
    pl->child_errno = 0;
    /* All signals blocked across vfork: a handler must never run in the
     * child, which shares our memory until it execs. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0)
        child_main(pl);
    int saved = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    if (pl->child_errno) {
        /* vfork resumed us after the child's _exit: this does not wait. */
        int st;
        waitpid(pid, &st, 0);
        errno = pl->child_errno;
        return -1;
    }
    /* Lowered from here, not in the child: while the child runs, vfork
     * holds us, and a child at low priority would hold the loop with it.
     * What it forks later inherits the value. A failure only leaves it
     * at our priority. */
    if (pl->nice > 0)
        setpriority(PRIO_PROCESS, (id_t)pid, pl->nice);
    return pid;
}
