/* Starting a program from the loop: vfork + execve with a plan built in
 * the parent (the child may only make async-signal-safe calls). */
#ifndef CORRAL_SPAWN_H
#define CORRAL_SPAWN_H

#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>

/* pidfds: the syscalls by number where the headers lack them. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

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
    int nice;               /* set just before the exec */
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

/* ---- the spawner process --------------------------------------------- *
 * vfork holds the loop until the child has exec'd, which on a busy core
 * takes milliseconds to tens of them. So corrald forks, once, a small
 * spawner process at start-up; it starts what spawn_async asks for with
 * CLONE_PARENT, so every process stays corrald's own child (pidfds and
 * waitpid work as before), and answers with a pidfd. */
struct event_base;
struct spawn_req;

/* pidfd >= 0: started (an exec failure shows as exit status 127); else
 * err says why nothing runs. */
typedef void (*spawn_done_fn)(void *arg, pid_t pid, int pidfd, int err);

/* Forks the spawner (after the privilege drop: it starts processes as
 * corrald's user), at niceness nice: its forks are background work. 0, or -1 when it cannot (spawns then happen in place). */
int spawn_service_start(int nice);

/* Niceness 1-19 for this process; SPAWN_NICE_IDLE (20) puts it in the
 * idle scheduling class (SCHED_IDLE, at niceness 19): it runs only when
 * no normal process wants the CPU. 0 or less leaves it as it is. */
#define SPAWN_NICE_IDLE 20
void spawn_lower_priority(int nice);
/* Its answers are read from base. */
void spawn_service_attach(struct event_base *base);
/* Ends the spawner; processes still being started are killed and
 * reaped. */
void spawn_service_stop(void);
/* Starts pl: done runs later from base, never from inside this call. The
 * plan's fds are copied before this returns. NULL (errno) if it cannot
 * even be asked. Without the spawner, vfork here, answered a loop turn
 * later. */
struct spawn_req *spawn_async(struct event_base *base, struct spawn_plan *pl,
                              spawn_done_fn done, void *arg);
/* done will not run; a process started anyway is killed and reaped. */
void spawn_cancel(struct spawn_req *req);
