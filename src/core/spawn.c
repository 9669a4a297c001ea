/* vfork + execve from a plan; see spawn.h. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corral/buf.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/spawn.h"


#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

void spawn_lower_priority(int nice)
{
    if (nice >= SPAWN_NICE_IDLE) {
        struct sched_param none = {0};
        setpriority(PRIO_PROCESS, 0, 19);
        sched_setscheduler(0, SCHED_IDLE, &none);
    } else if (nice > 0) {
        setpriority(PRIO_PROCESS, 0, nice);
    }
}

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
    /* Last, just before the exec: under vfork the parent waits for the
     * exec, and a lowered child would make it wait longer. */
    spawn_lower_priority(pl->nice);
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
    return pid;
}

/* ---- the spawner ---------------------------------------------------- */

#define SPAWN_MSG_MAX (1u << 20) /* argv and env text: exec's own limit */

/* A request: this header, then path, argv and envp as NUL-terminated
 * strings; the plan's fds ride along (SCM_RIGHTS). */
struct spawn_wire {
    uint64_t id;
    int nfds, nlim, nice, argc, envc;
    int res[SPAWN_MAX_LIMITS];
    struct rlimit lim[SPAWN_MAX_LIMITS];
};

struct spawn_answer {
    uint64_t id;
    int pid;
    int err;
};

struct spawn_req {
    struct spawn_req *next;
    uint64_t id;
    spawn_done_fn done;
    void *arg;
    bool cancelled;
    /* in place (no spawner): answered on a fresh loop turn */
    struct event *ev;
    pid_t pid;
    int pidfd, err;
};

static struct {
    int sock;                  /* -1: no spawner */
    pid_t pid;
    struct event *ev;
    struct spawn_req *head, **tail;
    uint64_t next_id;
} svc = {.sock = -1, .tail = &svc.head};

static int pidfd_of(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void kill_and_reap(int pidfd)
{
    siginfo_t si;
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED); /* killed: at once */
    close(pidfd);
}

/* Sends fds along with a message; -1 with errno. */
static ssize_t send_with_fds(int sock, const void *msg, size_t len,
                             const int *fds, int nfds)
{
    struct iovec iov = {(void *)msg, len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * SPAWN_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
}

/* Receives a message and up to max fds (the count in *nfds). */
static ssize_t recv_with_fds(int sock, void *msg, size_t len, int *fds,
                             int max, int *nfds)
{
    struct iovec iov = {msg, len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * SPAWN_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    *nfds = 0;
    for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c;
         c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*nfds < max)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
    return n;
}

/* In the spawner: the plan a request describes (pointers into msg). */
static int plan_from_wire(char *msg, size_t len, const int *fds, int nfds,
                          struct spawn_plan *pl, char **argv, char **envp)
{
    struct spawn_wire w;
    if (len < sizeof(w))
        return -1;
    memcpy(&w, msg, sizeof(w));
    if (w.nfds != nfds || w.nlim < 0 || w.nlim > SPAWN_MAX_LIMITS ||
        w.argc < 1 || w.envc < 0 || w.argc + w.envc > 65536)
        return -1;
    char *p = msg + sizeof(w), *end = msg + len;
    const char *path = p;
    for (int i = -1; i < w.argc + w.envc; i++) {
        char *z = memchr(p, '\0', (size_t)(end - p));
        if (!z)
            return -1;
        if (i >= 0 && i < w.argc)
            argv[i] = p;
        else if (i >= w.argc)
            envp[i - w.argc] = p;
        p = z + 1;
    }
    argv[w.argc] = NULL;
    envp[w.envc] = NULL;
    memset(pl, 0, sizeof(*pl));
    pl->path = path;
    pl->argv = argv;
    pl->envp = envp;
    pl->nfds = nfds;
    memcpy(pl->fds, fds, sizeof(int) * (size_t)nfds);
    pl->nlim = w.nlim;
    memcpy(pl->res, w.res, sizeof(w.res));
    memcpy(pl->lim, w.lim, sizeof(w.lim));
    pl->nice = w.nice;
    return 0;
}

/* In the spawner: fork with CLONE_PARENT, so the process is corrald's
 * child; the pid or -errno, *pidfd set. It does not wait for the exec:
 * one slow child must not hold the ones behind it, and a failed exec
 * shows as exit status 127. */
static int start_for_parent(struct spawn_plan *pl, int *pidfd)
{
    struct clone_args ca = {.flags = CLONE_PARENT | CLONE_PIDFD,
                            .pidfd = (uint64_t)(uintptr_t)pidfd};
    long pid = syscall(SYS_clone3, &ca, sizeof(ca));
    if (pid == 0) {
        pl->max_fd = 1024;
        child_main(pl);
    }
    return pid < 0 ? -errno : (int)pid;
}

__attribute__((noreturn)) static void spawner_main(int sock)
{
    static char msg[SPAWN_MSG_MAX];
    static char *argv[65537], *envp[65537];
    signal(SIGINT, SIG_IGN);   /* a terminal's ^C is for corrald */
    signal(SIGTERM, SIG_IGN);  /* corrald ends it by closing the socket */
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) {
        int fds[SPAWN_MAX_FDS], nfds;
        ssize_t n = recv_with_fds(sock, msg, sizeof(msg) - 1, fds,
                                  SPAWN_MAX_FDS, &nfds);
        if (n <= 0)
            _exit(0);
        struct spawn_plan pl;
        struct spawn_answer a = {0};
        memcpy(&a.id, msg, n >= 8 ? sizeof(a.id) : 0);
        int pidfd = -1;
        if (plan_from_wire(msg, (size_t)n, fds, nfds, &pl, argv, envp) < 0)
            a.pid = -EINVAL;
        else
            a.pid = start_for_parent(&pl, &pidfd);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        a.err = a.pid < 0 ? -a.pid : 0;
        if (send_with_fds(sock, &a, sizeof(a), &pidfd, pidfd >= 0) < 0)
            _exit(1);
        if (pidfd >= 0)
            close(pidfd);
    }
}

int spawn_service_start(int nice)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    int big = (int)SPAWN_MSG_MAX * 2;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        if (sv[1] != 3) {
            dup2(sv[1], 3);
            close(sv[1]);
        }
        close_range(4, ~0U, 0); /* nothing of corrald's stays open */
        /* Niceness only: in the idle class its forks would wait for any
         * busy process, and every run waits for its fork. */
        spawn_lower_priority(nice < SPAWN_NICE_IDLE ? nice : 19);
        spawner_main(3);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    svc.sock = sv[0];
    svc.pid = pid;
    return 0;
}

static void answer(struct spawn_req *r, pid_t pid, int pidfd, int err)
{
    if (r->cancelled) {
        if (pidfd >= 0)
            kill_and_reap(pidfd);
    } else {
        r->done(r->arg, pid, pidfd, err);
    }
    if (r->ev)
        event_free(r->ev);
    free(r);
}

static void end_spawner(bool notify);

static void on_answers(evutil_socket_t fd, short what, void *arg)
{
    for (;;) {
        struct spawn_answer a;
        int pidfd = -1, nfds;
        ssize_t n = recv_with_fds(svc.sock, &a, sizeof(a), &pidfd, 1, &nfds);
        if (n < 0 && errno == EAGAIN)
            return;
        struct spawn_req *r = svc.head;
        if (n != (ssize_t)sizeof(a) || !r || r->id != a.id) {
            /* The spawner died or spoke nonsense: what is asked from now
             * on starts in place, and what waits is failed. */
            log_error("spawner: %s; starting processes in place",
                      n == 0 ? "it exited" : "bad answer");
            if (nfds)
                close(pidfd);
            end_spawner(true);
            return;
        }
        svc.head = r->next;
        if (!svc.head)
            svc.tail = &svc.head;
        answer(r, a.pid, nfds ? pidfd : -1, a.err);
    }
}

void spawn_service_attach(struct event_base *base)
{
    if (svc.sock >= 0 && !svc.ev) {
        svc.ev = event_new(base, svc.sock, EV_READ | EV_PERSIST, on_answers,
                           NULL);
        event_add(svc.ev, NULL);
    }
}

/* Ends the spawner and settles what waits: at shutdown (notify false)
 * nobody takes the processes, which are killed; when the spawner died,
 * callers learn so through done. */
static void end_spawner(bool notify)
{
    if (svc.sock < 0)
        return;
    if (svc.ev)
        event_free(svc.ev);
    svc.ev = NULL;
    /* The spawner answers what it has, then sees the end. */
    shutdown(svc.sock, SHUT_WR);
    fcntl(svc.sock, F_SETFL, 0);
    struct timeval tv = {2, 0};
    setsockopt(svc.sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (svc.head) {
        struct spawn_answer a;
        int pidfd = -1, nfds = 0;
        ssize_t n = recv_with_fds(svc.sock, &a, sizeof(a), &pidfd, 1, &nfds);
        bool got = n == (ssize_t)sizeof(a) && a.id == svc.head->id;
        struct spawn_req *r = svc.head;
        svc.head = r->next;
        if (!notify)
            r->cancelled = true;
        if (nfds && !got)
            close(pidfd);
        answer(r, got ? a.pid : 0, got && nfds ? pidfd : -1,
               got ? a.err : EPIPE);
    }
    svc.tail = &svc.head;
    close(svc.sock);
    svc.sock = -1;
    waitpid(svc.pid, NULL, 0);
}

void spawn_service_stop(void)
{
    end_spawner(false);
}

/* Without the spawner: vfork here, answered on a fresh loop turn. */
static void on_in_place(evutil_socket_t fd, short what, void *arg)
{
    struct spawn_req *r = arg;
    answer(r, r->pid, r->pidfd, r->err);
}

static struct spawn_req *start_in_place(struct event_base *base,
                                        struct spawn_plan *pl,
                                        struct spawn_req *r)
{
    r->pid = spawn_exec(pl);
    r->err = r->pid < 0 ? errno : 0;
    r->pidfd = r->pid > 0 ? pidfd_of(r->pid) : -1;
    if (r->pid > 0 && r->pidfd < 0) {
        r->err = errno;
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
    }
    r->ev = event_new(base, -1, 0, on_in_place, r);
    event_active(r->ev, 0, 0);
    return r;
}

/* The request's text; false when it is over SPAWN_MSG_MAX. */
static bool wire_build(const struct spawn_plan *pl, uint64_t id,
                       struct buf *b)
{
    struct spawn_wire w = {.id = id, .nfds = pl->nfds, .nlim = pl->nlim,
                           .nice = pl->nice};
    memcpy(w.res, pl->res, sizeof(w.res));
    memcpy(w.lim, pl->lim, sizeof(w.lim));
    while (pl->argv[w.argc])
        w.argc++;
    while (pl->envp[w.envc])
        w.envc++;
    buf_append(b, &w, sizeof(w));
    buf_append(b, pl->path, strlen(pl->path) + 1);
    for (int i = 0; i < w.argc; i++)
        buf_append(b, pl->argv[i], strlen(pl->argv[i]) + 1);
    for (int i = 0; i < w.envc; i++)
        buf_append(b, pl->envp[i], strlen(pl->envp[i]) + 1);
    return b->len < SPAWN_MSG_MAX;
}

struct spawn_req *spawn_async(struct event_base *base, struct spawn_plan *pl,
                              spawn_done_fn done, void *arg)
{
    struct spawn_req *r = xcalloc(1, sizeof(*r));
    r->done = done;
    r->arg = arg;
    if (svc.sock < 0)
        return start_in_place(base, pl, r);
    r->id = ++svc.next_id;
    struct buf b;
    buf_init(&b);
    bool fits = wire_build(pl, r->id, &b);
    ssize_t n = fits ? send_with_fds(svc.sock, b.data, b.len, pl->fds,
                                     pl->nfds)
                     : -1;
    buf_deinit(&b);
    if (n < 0) /* too big, or the spawner is behind or gone */
        return start_in_place(base, pl, r);
    *svc.tail = r;
    svc.tail = &r->next;
    return r;
}

void spawn_cancel(struct spawn_req *req)
{
    req->cancelled = true;
    if (req->ev) /* started in place: settled now, not a turn later */
        answer(req, req->pid, req->pidfd, req->err);
}
