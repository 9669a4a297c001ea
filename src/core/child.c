/* Helper processes watched from the loop; see child.h. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "corral/child.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/spawn.h"


struct child {
    struct child *next, **pprev; /* every live child (child_finish_all) */
    struct event_base *base;
    struct spawn_req *req;      /* until the spawner answers */
    char what[64];              /* argv[0], for logs */
    pid_t pid;                  /* 0 until started */
    int pidfd, out_rd;          /* -1 once closed */
    struct event *ev_out, *ev_exit, *ev_timer;
    struct child_result res;
    char out[CHILD_OUT_MAX + 1];
    bool exited;
    child_done_fn done;
    void *arg;
};

static struct child *live_children;

static void child_free(struct child *c)
{
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    if (c->ev_out)
        event_free(c->ev_out);
    if (c->ev_exit)
        event_free(c->ev_exit);
    if (c->ev_timer)
        event_free(c->ev_timer);
    if (c->out_rd >= 0)
        close(c->out_rd);
    if (c->pidfd >= 0)
        close(c->pidfd);
    free(c);
}

static void settle(struct child *c)
{
    if (!c->exited || c->out_rd >= 0)
        return;
    c->out[c->res.out_len] = '\0';
    c->res.out = c->out;
    c->done(c->arg, &c->res);
    child_free(c);
}

static void close_output(struct child *c)
{
    if (c->out_rd < 0)
        return;
    if (c->ev_out)
        event_del(c->ev_out);
    close(c->out_rd);
    c->out_rd = -1;
}

/* Keeps the tail: a helper's last line says how it went. */
static void on_output(evutil_socket_t fd, short what, void *arg)
{
    struct child *c = arg;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_output(c);
        settle(c);
        return;
    }
    size_t k = (size_t)n > CHILD_OUT_MAX ? CHILD_OUT_MAX : (size_t)n;
    size_t *len = &c->res.out_len;
    if (*len + k > CHILD_OUT_MAX) {
        size_t drop = *len + k - CHILD_OUT_MAX;
        memmove(c->out, c->out + drop, *len - drop);
        *len -= drop;
        c->res.out_truncated = true;
    }
    c->res.out_truncated |= (size_t)n > k;
    memcpy(c->out + *len, buf + (size_t)n - k, k);
    *len += k;
}

static bool reap(struct child *c, int flags)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | flags) < 0 ||
        si.si_pid == 0)
        return false;
    c->exited = true;
    c->res.status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status, 0)
                                             : si.si_status; /* signal */
    if (c->ev_exit)
        event_del(c->ev_exit);
    if (c->ev_timer)
        event_del(c->ev_timer);
    return true;
}

static void on_exit_ready(evutil_socket_t fd, short what, void *arg)
{
    struct child *c = arg;
    if (reap(c, WNOHANG))
        settle(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct child *c = arg;
    c->res.timed_out = true;
    child_kill(c);
}

/* The spawner's answer: watch the process, or settle as exit 127 when
 * it could not start. */
static void on_spawned(void *arg, pid_t pid, int pidfd, int err)
{
    struct child *c = arg;
    c->req = NULL;
    if (pidfd < 0) {
        log_warn("cannot start %s: %s", c->what, strerror(err));
        c->exited = true;
        c->res.status = W_EXITCODE(127, 0);
        if (c->ev_timer)
            event_del(c->ev_timer);
        close_output(c);
        settle(c);
        return;
    }
    c->pid = pid;
    c->pidfd = pidfd;
    c->ev_exit = event_new(c->base, pidfd, EV_READ | EV_PERSIST,
                           on_exit_ready, c);
    event_add(c->ev_exit, NULL);
    if (c->res.killed)
        kill(pid, SIGKILL); /* asked before it had started */
}

static struct spawn_req *spawn(struct child *c, const struct child_spec *spec,
                               int out_w)
{
    static char *const envp[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", NULL};
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        return NULL;
    bool err_null = spec->stderr_null || spec->out_fd >= 0;
    struct spawn_plan pl = {
        .path = spec->argv[0],
        .argv = (char *const *)spec->argv,
        .envp = envp,
        .fds = {null, out_w, err_null ? null : out_w, spec->fd3},
        .nfds = spec->fd3 >= 0 ? 4 : 3,
        .nice = spec->nice,
    };
    struct spawn_req *req = spawn_async(c->base, &pl, on_spawned, c);
    int saved = errno;
    close(null);
    errno = saved;
    return req;
}

struct child *child_start(struct event_base *base,
                          const struct child_spec *spec, child_done_fn done,
                          void *arg)
{
    int p[2] = {-1, -1};
    if (spec->out_fd < 0 && pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return NULL;
    struct child *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->pidfd = -1;
    c->done = done;
    c->arg = arg;
    snprintf(c->what, sizeof(c->what), "%s", spec->argv[0]);
    c->req = spawn(c, spec, spec->out_fd >= 0 ? spec->out_fd : p[1]);
    int saved = errno;
    if (p[1] >= 0)
        close(p[1]);
    if (!c->req) {
        if (p[0] >= 0)
            close(p[0]);
        free(c);
        errno = saved;
        return NULL;
    }
    c->out_rd = p[0];
    c->next = live_children;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &live_children;
    live_children = c;
    if (c->out_rd >= 0) {
        c->ev_out = event_new(base, c->out_rd, EV_READ | EV_PERSIST,
                              on_output, c);
        event_add(c->ev_out, NULL);
    }
    if (spec->timeout_ms > 0) {
        struct timeval tv = ms_to_timeval(spec->timeout_ms);
        c->ev_timer = evtimer_new(base, on_deadline, c);
        evtimer_add(c->ev_timer, &tv);
    }
    return c;
}

void child_kill(struct child *c)
{
    if (c->exited)
        return;
    c->res.killed = true;
    if (c->pid > 0) /* else killed once it has started (on_spawned) */
        kill(c->pid, SIGKILL);
}

void child_finish_now(struct child *c)
{
    child_kill(c);
    if (c->req) { /* not started yet: the spawner's process is killed */
        spawn_cancel(c->req);
        c->req = NULL;
        c->exited = true;
    }
    if (!c->exited)
        reap(c, 0); /* SIGKILLed: returns at once */
    close_output(c);
    settle(c);
}

void child_finish_all(void)
{
    struct child *c;
    while ((c = live_children)) {
        child_finish_now(c);
        if (live_children == c)
            break; /* not reaped (it cannot be): it stays */
    }
}

char *child_find_helper(const char *configured, const char *name)
{
    if (configured && configured[0])
        return access(configured, X_OK) == 0 ? realpath(configured, NULL)
                                             : NULL;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    static const char *const rel[] = {"", "/sandbox", "/../libexec"};
    for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s%s/%s", exe, rel[i], name);
        if (access(path, X_OK) == 0)
            return realpath(path, NULL);
    }
    return NULL;
}

int child_pid(const struct child *c)
{
    return (int)c->pid;
}
