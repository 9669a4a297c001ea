/* Starting a program from the loop: vfork + execve with a plan built in
 * the parent (the child may only make async-signal-safe calls). */
#ifndef CORRAL_SPAWN_H
#define CORRAL_SPAWN_H

#include <sys/resource.h>
#include <sys/types.h>

#define SPAWN_MAX_FDS 4
#define SPAWN_MAX_LIMITS 4

struct spawn_plan {
    const char *path;
    char *const *argv;
    char *const *envp;
    int fds[SPAWN_MAX_FDS]; /* become the child's 0 .. nfds-1 */
    int nfds;
    int res[SPAWN_MAX_LIMITS]; /* RLIMIT_* set in the child */
    struct rlimit lim[SPAWN_MAX_LIMITS];
    int nlim;
    int nice;               /* set by the parent once it runs */
    /* internal */
    int max_fd;
    volatile int child_errno;
};

/* Starts pl in a new session with default signal dispositions, an empty
 * mask and only the plan's fds; the pid, or -1 with errno (exec failures
 * included). Our other fds are marked close-on-exec rather than closed
 * in the child: with thousands open, closing them there would hold the
 * loop, which vfork suspends until the exec. */
pid_t spawn_exec(struct spawn_plan *pl);

#endif
