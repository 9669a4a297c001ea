/* sandbox_local: one bubblewrap sandbox per chat (DESIGN.md §6).
 *
 * A sandbox is three host directories under <data_dir>/sandboxes/<chat>
 * (workspace, home, run) plus the processes spawned into it. Each process
 * is bwrap, started with vfork+execve so that the rlimits can be set in
 * the child between the two (posix_spawn cannot) without copying corrald's
 * page tables (fork of a large ASan process costs milliseconds). bwrap
 * runs corral-sandbox-init (src/sandbox/init.c) as the sandbox's first
 * process, which sets RLIMIT_NPROC where it counts only this sandbox,
 * starts the gateway forwarder and execs the command.
 *
 * A process (struct sandbox_proc) owns five descriptors: the stdin, stdout,
 * stderr and --info-fd pipes (our ends non-blocking) and a pidfd of bwrap.
 * Its on_exit fires once, after stdout EOF, stderr EOF and the reap, from
 * the loop. Teardown is two-phase: `busy` counts user callbacks on the
 * stack; a process that must go away while busy is only marked (detached,
 * exit_fired) and the function that delivered the callback finishes the
 * work once the stack unwound.
 *
 * close detaches every process: it is killed, its pipes are closed (no
 * more output), and it lives on alone until reaped, when its on_exit
 * fires. destroy does the same and, through a `tomb` that counts the
 * detached processes, removes the tree only after the last one was reaped,
 * so no dying process writes into a directory being removed. */
#include "corral/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "corral/child.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/mem.h"
#include "corral/server.h"
#include "corral/spawn.h"


#define LOCAL_INIT_NAME "corral-sandbox-init"
#define LOCAL_INIT_TARGET "/run/corral-init" /* the init, inside */
#define LOCAL_RUN_TARGET "/run/corral"       /* the run dir, inside */
#define LOCAL_INFO_FD "3" /* --info-fd: the plan maps the info pipe to 3 */
#define LOCAL_INFO_MAX 512                   /* bwrap's info JSON */
#define LOCAL_READ_CHUNK 65536
#define LOCAL_READS_PER_EVENT 4 /* then yield to other events */
#define LOCAL_KILL_WAIT_MS 2000  /* for child-pid, before killing bwrap only */

/* Targets a ro_bind must not replace or cover: the sandbox's own mounts
 * (the trees, and the two whose contents bwrap makes up). Paths beneath
 * /tmp are fine: they are bound after the tmpfs. */
static const char *const local_reserved_trees[] = {
    "/workspace", "/home/user", "/run/corral", LOCAL_INIT_TARGET, "/proc",
    "/dev",
};
static const char *const local_reserved_exact[] = {"/", "/tmp"};

/* Where bwrap may be; the first executable one is used. */
static const char *const local_bwrap_paths[] = {
    "/usr/bin/bwrap", "/usr/local/bin/bwrap",
};

struct sandbox {
    struct server *srv;
    char chat_id[UUID_STR_LEN + 1];
    char *data_real; /* realpath of data_dir */
    char *boxes;     /* <data_real>/sandboxes */
    char *root;      /* <boxes>/<chat_id> */
    char *workspace, *home, *run, *gw_sock;
    char *init_path; /* host path of corral-sandbox-init */
    const char *bwrap_path;
    struct sandbox_proc *procs; /* live, not yet exited */
};

/* Counts the processes of a destroyed sandbox that are not reaped yet;
 * the tree is removed when the count reaches zero. */
struct local_tomb {
    struct server *srv;
    char *path; /* the tree to remove; NULL: nothing */
    int live;
};

struct sandbox_proc {
    struct sandbox *sb;       /* NULL once detached */
    struct sandbox_proc *prev, *next; /* on sb->procs */
    struct sandbox_proc_cbs cbs;
    void *arg;
    pid_t pid;                /* bwrap */
    pid_t child_pid;          /* the sandbox's pid 1, from --info-fd */
    int pidfd;                /* of bwrap; -1 once reaped */
    int child_pidfd;          /* of child_pid; -1 until known */
    int in_fd, out_fd, err_fd, info_fd; /* -1 when closed */
    struct event ev_in, ev_out, ev_err, ev_info, ev_exit, ev_defer;
    struct event ev_kill;     /* a kill waiting for child-pid */
    struct evbuffer *inq;     /* stdin bytes not yet written */
    char info[LOCAL_INFO_MAX];
    size_t info_len;
    int status;               /* wait status, once reaped */
    int busy;                 /* user callbacks on the stack */
    bool in_armed;            /* ev_in added */
    bool stdin_closing;       /* close once inq drained */
    bool out_eof, err_eof, reaped;
    bool detached;            /* the sandbox was closed */
    bool kill_wanted;         /* sandbox_proc_kill before child-pid */
    bool exit_fired;
    struct spawn_req *req;    /* until the spawner has started bwrap */
    struct local_tomb *tomb;  /* destroy waits for this process */
    /* the start gate: bwrap's plan while it waits for a slot */
    struct sandbox_proc *gate_next;
    bool gated;               /* waiting for a start slot */
    bool starting;            /* holds one until bwrap reported its child */
    struct local_argv *argv;  /* the plan's argv, owned until asked for */
    struct spawn_plan plan;   /* its fds: the child's pipe ends */
};

/* Sandboxes in their set-up at once: bwrap from its spawn until it has
 * reported its child on --info-fd (creating the namespaces, its heaviest
 * part in the kernel) or died. Beyond sandbox_starts_max a launch waits
 * here, its pipes made and its stdin queued, in arrival order: hundreds
 * of bwraps in the kernel at once took the reactor's core for seconds
 * (bench shape 7). Process-wide, as the spawner is. */
static struct {
    int max, starting, waiting;
    struct sandbox_proc *head, **tail;
} local_gate = {.tail = &local_gate.head};

static char *local_fmt(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static char *local_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static int local_pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- the bwrap command line --------------------------------------------- */

struct local_argv {
    const char **v;
    size_t n, cap;
    char **owned; /* formatted strings, freed with the argv */
    size_t nowned, owned_cap;
};

static void local_push(struct local_argv *a, const char *s)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 128;
        a->v = xrealloc(a->v, a->cap * sizeof(*a->v));
    }
    a->v[a->n++] = s;
}

static void local_push_owned(struct local_argv *a, char *s)
{
    if (a->nowned == a->owned_cap) {
        a->owned_cap = a->owned_cap ? a->owned_cap * 2 : 16;
        a->owned = xrealloc(a->owned, a->owned_cap * sizeof(*a->owned));
    }
    a->owned[a->nowned++] = s;
    local_push(a, s);
}

static void local_argv_free(struct local_argv *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->v);
}

/* The argv borrows the caller's strings (its argv, env and binds) for the
 * length of the spawn call; a launch that waits past it keeps copies. */
static void local_argv_copy_all(struct local_argv *a)
{
    char **copies = xcalloc(a->n ? a->n : 1, sizeof(*copies));
    size_t ncopies = 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i])
            a->v[i] = copies[ncopies++] = xstrdup(a->v[i]);
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    free(a->owned);
    a->owned = copies;
    a->nowned = a->owned_cap = ncopies;
}

/* DESIGN.md §6's recipe up to the per-sandbox binds. bwrap applies its
 * options in order: everything bound under /tmp must follow --tmpfs. */
static void local_argv_base(struct local_argv *a, const char *bwrap)
{
    static const char *const fixed[] = {
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", "1000", "--gid", "1000",
        "--die-with-parent", "--new-session", "--info-fd", LOCAL_INFO_FD,
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--ro-bind", "/etc", "/etc",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    };
    local_push(a, bwrap);
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        local_push(a, fixed[i]);
}

static void local_argv_env(struct local_argv *a,
                           const struct sandbox_spawn_opts *o)
{
    static const char *const fixed[] = {
        "--clearenv",
        "--setenv", "HOME", SANDBOX_HOME,
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "TERM", "dumb",
    };
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        local_push(a, fixed[i]);
    for (size_t i = 0; o->env && o->env[i]; i++) {
        const char *eq = strchr(o->env[i], '='); /* checked: present */
        local_push(a, "--setenv");
        local_push_owned(a, xstrndup(o->env[i], (size_t)(eq - o->env[i])));
        local_push(a, eq + 1);
    }
}

static void local_build_argv(const struct sandbox *sb,
                             const struct sandbox_spawn_opts *o,
                             struct local_argv *a)
{
    const struct config *cfg = sb->srv->cfg;
    local_argv_base(a, sb->bwrap_path);
    for (size_t i = 0; o->ro_binds && o->ro_binds[i]; i++) {
        local_push(a, "--ro-bind");
        local_push(a, o->ro_binds[i]);
        local_push(a, o->ro_binds[i]);
    }
    const char *binds[] = {
        "--ro-bind", sb->init_path, LOCAL_INIT_TARGET,
        "--bind", sb->workspace, SANDBOX_WORKSPACE,
        "--chdir", SANDBOX_WORKSPACE,
        "--bind", sb->home, SANDBOX_HOME,
        "--ro-bind", sb->run, LOCAL_RUN_TARGET,
        /* Last of the mounts: bwrap's root is a writable tmpfs, and
         * nothing outside /workspace, /home/user and /tmp may be. */
        "--remount-ro", "/",
    };
    for (size_t i = 0; i < ARRAY_SIZE(binds); i++)
        local_push(a, binds[i]);
    local_argv_env(a, o);
    local_push(a, "--");
    local_push(a, LOCAL_INIT_TARGET);
    local_push(a, "--nproc");
    local_push_owned(a, local_fmt("%d", cfg->sandbox_nproc));
    if (o->gateway_port > 0) {
        local_push(a, "--listen-port");
        local_push_owned(a, local_fmt("%d", o->gateway_port));
        local_push(a, "--connect");
        local_push(a, SANDBOX_GATEWAY_SOCK);
    }
    local_push(a, "--");
    for (size_t i = 0; o->argv[i]; i++)
        local_push(a, o->argv[i]);
    local_push(a, NULL);
}

/* ---- checks ------------------------------------------------------------- */

/* True when path is dir or lies beneath it (both absolute, normalized). */
static bool local_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return true;
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool local_env_name_ok(const char *s, size_t n)
{
    static const char *const fixed[] = {"HOME", "PATH", "LANG", "TERM"};
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        if (strlen(fixed[i]) == n && memcmp(s, fixed[i], n) == 0)
            return false;
    return true;
}

/* A read-only bind must not shadow the sandbox's own mounts, and must not
 * expose data_dir (secrets) or other chats' trees, whatever symlinks lead
 * there: the resolved path is checked too. */
static const char *local_check_bind(const struct sandbox *sb, const char *p)
{
    if (p[0] != '/' || strstr(p, "/../") || strstr(p, "//") ||
        (strlen(p) >= 3 && strcmp(p + strlen(p) - 3, "/..") == 0))
        return "ro_binds: not a plain absolute path";
    for (size_t i = 0; i < ARRAY_SIZE(local_reserved_trees); i++)
        if (local_under(p, local_reserved_trees[i]))
            return "ro_binds: a path the sandbox mounts itself";
    for (size_t i = 0; i < ARRAY_SIZE(local_reserved_exact); i++)
        if (strcmp(p, local_reserved_exact[i]) == 0)
            return "ro_binds: a path the sandbox mounts itself";
    char *real = realpath(p, NULL);
    if (!real)
        return "ro_binds: path does not exist";
    const char *err = NULL;
    if (local_under(sb->data_real, real))
        err = "ro_binds: would expose data_dir";
    else if (local_under(real, sb->boxes))
        err = "ro_binds: inside the sandboxes directory";
    free(real);
    return err;
}

static const char *local_check_opts(const struct sandbox *sb,
                                    const struct sandbox_spawn_opts *o)
{
    if (!o->argv || !o->argv[0] || !o->argv[0][0])
        return "sandbox: empty argv";
    if (o->gateway_port < 0 || o->gateway_port > 65535)
        return "sandbox: gateway_port out of range";
    for (size_t i = 0; o->env && o->env[i]; i++) {
        const char *eq = strchr(o->env[i], '=');
        if (!eq || !local_env_name_ok(o->env[i], (size_t)(eq - o->env[i])))
            return "sandbox: invalid or reserved environment variable";
    }
    for (size_t i = 0; o->ro_binds && o->ro_binds[i]; i++) {
        const char *err = local_check_bind(sb, o->ro_binds[i]);
        if (err)
            return err;
    }
    return NULL;
}

/* ---- process life cycle ------------------------------------------------- */

static void local_close_fd(int *fd, struct event *ev)
{
    if (*fd < 0)
        return;
    event_del(ev);
    close(*fd);
    *fd = -1;
}

static void local_unlink(struct sandbox_proc *p)
{
    if (!p->sb)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        p->sb->procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->sb = NULL;
}

static void local_tomb_release(struct local_tomb *t);
static void local_gate_release(struct sandbox_proc *p);
static void local_gate_unqueue(struct sandbox_proc *p);
static void local_drop_plan(struct sandbox_proc *p);

static void local_proc_free(struct sandbox_proc *p)
{
    if (p->gated)
        local_gate_unqueue(p);
    local_gate_release(p);
    local_drop_plan(p);
    local_close_fd(&p->in_fd, &p->ev_in);
    local_close_fd(&p->out_fd, &p->ev_out);
    local_close_fd(&p->err_fd, &p->ev_err);
    local_close_fd(&p->info_fd, &p->ev_info);
    local_close_fd(&p->pidfd, &p->ev_exit);
    if (p->child_pidfd >= 0)
        close(p->child_pidfd);
    event_del(&p->ev_defer);
    event_del(&p->ev_kill);
    if (p->req)
        spawn_cancel(p->req);
    evbuffer_free(p->inq);
    if (p->tomb)
        local_tomb_release(p->tomb);
    free(p);
}

/* Fires on_exit when everything it waits for has happened, and frees the
 * process after it; does nothing while a callback of p is on the stack
 * (the delivering function calls again once it returned). */
static void local_settle(struct sandbox_proc *p)
{
    if (p->busy || p->exit_fired || !p->reaped || !p->out_eof ||
        !p->err_eof)
        return;
    p->exit_fired = true;
    local_unlink(p); /* a close inside on_exit must not see it */
    p->busy++;
    if (p->cbs.on_exit)
        p->cbs.on_exit(p->arg, p->status);
    p->busy--;
    local_proc_free(p);
}

static void local_on_output(evutil_socket_t fd, short what, void *arg)
{
    struct sandbox_proc *p = arg;
    bool is_err = fd == p->err_fd;
    char buf[LOCAL_READ_CHUNK];
    for (int i = 0; i < LOCAL_READS_PER_EVENT && !p->detached; i++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            void (*cb)(void *, const char *, size_t) =
                is_err ? p->cbs.on_stderr : p->cbs.on_stdout;
            p->busy++;
            if (cb)
                cb(p->arg, buf, (size_t)n);
            p->busy--;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0)
            log_warn("sandbox: reading the %s of pid %d: %s",
                     is_err ? "stderr" : "stdout", (int)p->pid,
                     strerror(errno));
        if (is_err) {
            local_close_fd(&p->err_fd, &p->ev_err);
            p->err_eof = true;
        } else {
            local_close_fd(&p->out_fd, &p->ev_out);
            p->out_eof = true;
        }
        break;
    }
    local_settle(p);
}

/* pid 1 of the sandbox first: the kernel then kills every process in its
 * pid namespace. bwrap too, so that its status says "killed". */
static void local_kill_now(struct sandbox_proc *p)
{
    event_del(&p->ev_kill);
    if (p->reaped || p->pid <= 0) /* not started: on_started kills it */
        return;
    if (p->child_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, p->child_pidfd, SIGKILL, NULL, 0);
    kill(p->pid, SIGKILL); /* unreaped child of ours: pid cannot be reused */
}

static void local_on_kill_wait(evutil_socket_t fd, short what, void *arg)
{
    struct sandbox_proc *p = arg;
    log_warn("sandbox: bwrap pid %d did not report its child; killing it "
             "alone", (int)p->pid);
    local_kill_now(p);
}

/* bwrap writes {"child-pid": N, ...} on --info-fd and closes it. The
 * text is bwrap's own fixed output, so a scan for the one member is
 * enough. A pidfd taken at once makes the later SIGKILL safe against pid
 * reuse. */
static void local_info_parse(struct sandbox_proc *p)
{
    p->info[p->info_len] = '\0';
    const char *s = strstr(p->info, "\"child-pid\"");
    if (!s || !strchr(s, '}'))
        return;
    s += strlen("\"child-pid\"");
    while (*s == ' ' || *s == ':' || *s == '\n' || *s == '\t')
        s++;
    long pid = strtol(s, NULL, 10);
    if (pid <= 1 || pid > INT_MAX)
        return;
    p->child_pid = (pid_t)pid;
    p->child_pidfd = local_pidfd_open(p->child_pid);
    log_debug("sandbox: bwrap pid %d runs the sandbox as pid %d%s",
              (int)p->pid, (int)p->child_pid,
              p->child_pidfd < 0 ? " (no pidfd)" : "");
}

static void local_on_info(evutil_socket_t fd, short what, void *arg)
{
    struct sandbox_proc *p = arg;
    size_t room = sizeof(p->info) - 1 - p->info_len;
    ssize_t n = read(fd, p->info + p->info_len, room);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        p->info_len += (size_t)n;
        if (p->child_pid == 0)
            local_info_parse(p);
    }
    if (n <= 0 || p->info_len == sizeof(p->info) - 1 || p->child_pid) {
        local_close_fd(&p->info_fd, &p->ev_info);
        if (p->kill_wanted)
            local_kill_now(p); /* with the child, or bwrap that failed */
        local_gate_release(p);
    }
}

static void local_on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct sandbox_proc *p = arg;
    int st = 0;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return; /* not yet: the persistent event stays */
    if (r < 0) {
        /* Someone else reaped it (waitpid(-1) or SIGCHLD ignored). */
        log_error("sandbox: waitpid %d: %s", (int)p->pid, strerror(errno));
        st = 255 << 8;
    }
    local_close_fd(&p->pidfd, &p->ev_exit);
    /* bwrap is gone: its pid and the child's may be reused from now on. */
    if (p->child_pidfd >= 0) {
        close(p->child_pidfd);
        p->child_pidfd = -1;
    }
    p->reaped = true;
    p->status = st;
    local_settle(p);
}

static void local_on_defer(evutil_socket_t fd, short what, void *arg)
{
    local_settle(arg);
}

/* stdin is gone (the process closed it, or we did): drop the queue. */
static void local_stdin_done(struct sandbox_proc *p)
{
    local_close_fd(&p->in_fd, &p->ev_in);
    p->in_armed = false;
    evbuffer_drain(p->inq, evbuffer_get_length(p->inq));
}

/* Writes what the pipe takes; arms EV_WRITE for the rest. -1 when the
 * process closed its stdin (EPIPE: corrald ignores SIGPIPE, main.c). */
static int local_flush(struct sandbox_proc *p)
{
    while (evbuffer_get_length(p->inq) > 0) {
        int n = evbuffer_write(p->inq, p->in_fd);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!p->in_armed && event_add(&p->ev_in, NULL) == 0)
                p->in_armed = true;
            return 0;
        }
        log_debug("sandbox: stdin of pid %d closed: %s", (int)p->pid,
                  n < 0 ? strerror(errno) : "no progress");
        local_stdin_done(p);
        return -1;
    }
    if (p->in_armed) {
        event_del(&p->ev_in);
        p->in_armed = false;
    }
    if (p->stdin_closing)
        local_stdin_done(p);
    return 0;
}

static void local_on_stdin(evutil_socket_t fd, short what, void *arg)
{
    struct sandbox_proc *p = arg;
    (void)local_flush(p); /* a failure closes stdin; writes then fail */
}

/* ---- spawn -------------------------------------------------------------- */

/* Our ends of the four pipes become non-blocking; all ends are CLOEXEC. */
static int local_pipes(int in[2], int out[2], int err[2], int info[2])
{
    int *all[4] = {in, out, err, info};
    for (int i = 0; i < 4; i++)
        all[i][0] = all[i][1] = -1;
    for (int i = 0; i < 4; i++)
        if (pipe2(all[i], O_CLOEXEC) < 0)
            return -1;
    int ours[4] = {in[1], out[0], err[0], info[0]};
    for (int i = 0; i < 4; i++)
        if (fcntl(ours[i], F_SETFL, O_NONBLOCK) < 0)
            return -1;
    return 0;
}

static void local_close_pair(int fd[2])
{
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0)
            close(fd[i]);
}

static void local_plan_limits(struct spawn_plan *pl, const struct config *c)
{
    struct {
        int res;
        rlim_t v;
    } l[] = {
        {RLIMIT_AS, (rlim_t)c->sandbox_mem_mb << 20},
        {RLIMIT_FSIZE, (rlim_t)c->sandbox_fsize_mb << 20},
        {RLIMIT_CORE, 0},
        {RLIMIT_CPU, (rlim_t)c->sandbox_cpu_s},
    };
    pl->nice = c->child_nice;
    pl->nlim = 0;
    for (size_t i = 0; i < ARRAY_SIZE(l); i++) {
        if (l[i].res == RLIMIT_CPU && c->sandbox_cpu_s <= 0)
            continue;
        pl->res[pl->nlim] = l[i].res;
        pl->lim[pl->nlim].rlim_cur = pl->lim[pl->nlim].rlim_max = l[i].v;
        pl->nlim++;
    }
}

static struct sandbox_proc *local_proc_new(struct sandbox *sb, pid_t pid,
                                           int pidfd, int in, int out,
                                           int err, int info)
{
    struct sandbox_proc *p = xcalloc(1, sizeof(*p));
    struct event_base *base = sb->srv->base;
    p->pid = pid;
    p->pidfd = pidfd;
    p->child_pidfd = -1;
    p->in_fd = in;
    p->out_fd = out;
    p->err_fd = err;
    p->info_fd = info;
    p->inq = evbuffer_new();
    if (!p->inq)
        abort(); /* out of memory, as xmalloc */
    event_assign(&p->ev_in, base, in, EV_WRITE | EV_PERSIST,
                 local_on_stdin, p);
    event_assign(&p->ev_out, base, out, EV_READ | EV_PERSIST,
                 local_on_output, p);
    event_assign(&p->ev_err, base, err, EV_READ | EV_PERSIST,
                 local_on_output, p);
    event_assign(&p->ev_info, base, info, EV_READ | EV_PERSIST,
                 local_on_info, p);
    event_assign(&p->ev_exit, base, pidfd, EV_READ | EV_PERSIST,
                 local_on_reap, p);
    event_assign(&p->ev_defer, base, -1, 0, local_on_defer, p);
    evtimer_assign(&p->ev_kill, base, local_on_kill_wait, p);
    event_add(&p->ev_out, NULL);
    event_add(&p->ev_err, NULL);
    event_add(&p->ev_info, NULL);
    if (pidfd >= 0)
        event_add(&p->ev_exit, NULL);
    return p;
}

/* The spawner's answer for bwrap: watch it, or settle as exit 127. A
 * kill asked for meanwhile waits for the sandbox's pid 1, as always. */
static void local_on_started(void *arg, pid_t pid, int pidfd, int err)
{
    struct sandbox_proc *p = arg;
    p->req = NULL;
    if (pidfd < 0) {
        log_error("sandbox: cannot start bwrap: %s", strerror(err));
        p->reaped = true;
        p->status = W_EXITCODE(127, 0);
        local_gate_release(p);
        local_settle(p);
        return;
    }
    p->pid = pid;
    p->pidfd = pidfd;
    event_assign(&p->ev_exit, event_get_base(&p->ev_defer), pidfd,
                 EV_READ | EV_PERSIST, local_on_reap, p);
    event_add(&p->ev_exit, NULL);
    if (p->kill_wanted) {
        p->kill_wanted = false;
        sandbox_proc_kill(p);
    }
}

/* ---- the start gate ----------------------------------------------------- */

static void local_drop_plan(struct sandbox_proc *p)
{
    for (int i = 0; i < p->plan.nfds; i++)
        close(p->plan.fds[i]);
    p->plan.nfds = 0;
    if (p->argv) {
        local_argv_free(p->argv);
        free(p->argv);
        p->argv = NULL;
    }
}

/* Asks the spawner for bwrap; the child's pipe ends go with the request
 * (the spawner has its own copies once this returns). */
static bool local_begin(struct sandbox_proc *p)
{
    p->req = spawn_async(event_get_base(&p->ev_defer), &p->plan,
                         local_on_started, p);
    int saved = errno;
    local_drop_plan(p);
    if (!p->req) {
        log_error("sandbox: cannot start bwrap: %s", strerror(saved));
        return false;
    }
    p->starting = true;
    local_gate.starting++;
    return true;
}

static void local_gate_enqueue(struct sandbox_proc *p)
{
    local_argv_copy_all(p->argv);
    p->gated = true;
    *local_gate.tail = p;
    local_gate.tail = &p->gate_next;
    local_gate.waiting++;
}

static void local_gate_unqueue(struct sandbox_proc *p)
{
    struct sandbox_proc **pp = &local_gate.head;
    while (*pp != p)
        pp = &(*pp)->gate_next;
    *pp = p->gate_next;
    if (local_gate.tail == &p->gate_next)
        local_gate.tail = pp;
    p->gate_next = NULL;
    p->gated = false;
    local_gate.waiting--;
}

/* A launch that never ran ends with status, on a later loop turn (its
 * plan is dropped: the child's pipe ends close, ours see EOF). */
static void local_end_unstarted(struct sandbox_proc *p, int status)
{
    local_drop_plan(p);
    local_close_fd(&p->info_fd, &p->ev_info);
    p->reaped = true;
    p->status = status;
    event_active(&p->ev_defer, 0, 0);
}

/* Starts waiting launches while slots are free. One that cannot be
 * started ends as exit 127. */
static void local_gate_kick(void)
{
    while (local_gate.head && local_gate.starting < local_gate.max) {
        struct sandbox_proc *p = local_gate.head;
        local_gate_unqueue(p);
        if (!local_begin(p))
            local_end_unstarted(p, W_EXITCODE(127, 0));
    }
}

static void local_gate_release(struct sandbox_proc *p)
{
    if (!p->starting)
        return;
    p->starting = false;
    local_gate.starting--;
    local_gate_kick();
}

/* Killed or closed while waiting: nothing was started, so it ends at once
 * as killed. */
static void local_gate_drop(struct sandbox_proc *p)
{
    local_gate_unqueue(p);
    local_end_unstarted(p, SIGKILL); /* as wait reports a SIGKILLed one */
}

void sandbox_local_starts(int *starting, int *waiting)
{
    *starting = local_gate.starting;
    *waiting = local_gate.waiting;
}

/* bwrap with argv (taken over): the process, or NULL with *err. It starts
 * now, or when a start slot frees up. */
static struct sandbox_proc *local_launch(struct sandbox *sb,
                                         struct local_argv *a,
                                         const char **err)
{
    int in[2], out[2], errp[2], info[2];
    if (local_pipes(in, out, errp, info) < 0) {
        log_error("sandbox: pipe: %s", strerror(errno));
        *err = "sandbox: cannot create pipes";
        local_close_pair(in);
        local_close_pair(out);
        local_close_pair(errp);
        local_close_pair(info);
        return NULL;
    }
    static char *const no_env[] = {NULL}; /* bwrap gets nothing of ours */
    struct sandbox_proc *p = local_proc_new(sb, 0, -1, in[1], out[0],
                                            errp[0], info[0]);
    p->argv = xmalloc(sizeof(*p->argv));
    *p->argv = *a;
    memset(a, 0, sizeof(*a));
    p->plan = (struct spawn_plan){
        .path = sb->bwrap_path,
        .argv = (char *const *)p->argv->v,
        .envp = no_env,
        .fds = {in[0], out[1], errp[1], info[1]},
        .nfds = 4,
    };
    local_plan_limits(&p->plan, sb->srv->cfg);
    local_gate.max = sb->srv->cfg->sandbox_starts_max;
    if (local_gate.head || local_gate.starting >= local_gate.max) {
        local_gate_enqueue(p);
        return p;
    }
    if (!local_begin(p)) {
        *err = "sandbox: cannot start bwrap";
        local_proc_free(p);
        return NULL;
    }
    return p;
}

static struct sandbox_proc *local_spawn(struct sandbox *sb,
                                        const struct sandbox_spawn_opts *o,
                                        const struct sandbox_proc_cbs *cbs,
                                        void *arg, const char **err)
{
    if (geteuid() == 0) {
        *err = "sandbox: refusing to spawn as root";
        return NULL;
    }
    if ((*err = local_check_opts(sb, o)))
        return NULL;
    struct local_argv a = {0};
    local_build_argv(sb, o, &a);
    struct sandbox_proc *p = local_launch(sb, &a, err);
    local_argv_free(&a); /* emptied when launch took it over */
    if (!p)
        return NULL;
    p->cbs = *cbs;
    p->arg = arg;
    p->sb = sb;
    p->next = sb->procs;
    if (sb->procs)
        sb->procs->prev = p;
    sb->procs = p;
    log_debug("sandbox %s: started %s as pid %d", sb->chat_id, o->argv[0],
              (int)p->pid);
    return p;
}

/* ---- process API -------------------------------------------------------- */

int sandbox_proc_write(struct sandbox_proc *p, const void *data, size_t len)
{
    if (p->detached || p->in_fd < 0 || p->stdin_closing)
        return -1;
    size_t queued = evbuffer_get_length(p->inq);
    if (len > SANDBOX_STDIN_MAX - queued)
        return -1;
    if (len == 0)
        return 0;
    if (evbuffer_add(p->inq, data, len) < 0)
        return -1;
    return p->in_armed ? 0 : local_flush(p);
}

void sandbox_proc_close_stdin(struct sandbox_proc *p)
{
    if (p->in_fd < 0 || p->stdin_closing)
        return;
    p->stdin_closing = true;
    if (evbuffer_get_length(p->inq) == 0)
        local_stdin_done(p);
}

void sandbox_proc_kill(struct sandbox_proc *p)
{
    if (p->gated) {
        local_gate_drop(p);
        return;
    }
    if (p->reaped || p->kill_wanted)
        return;
    p->kill_wanted = true;
    /* Until bwrap reported the sandbox's pid 1, killing bwrap alone is not
     * enough: the new child sets its parent-death signal itself, after the
     * clone, so a bwrap killed in between leaves an orphaned sandbox. The
     * info arrives within milliseconds of the spawn; the timer only covers
     * a bwrap that never writes it. */
    if (p->child_pid == 0 && p->info_fd >= 0) {
        struct timeval tv = {LOCAL_KILL_WAIT_MS / 1000,
                             (LOCAL_KILL_WAIT_MS % 1000) * 1000};
        evtimer_add(&p->ev_kill, &tv);
        return;
    }
    local_kill_now(p);
}

int sandbox_proc_pid(const struct sandbox_proc *p)
{
    return (int)p->pid;
}

/* ---- open --------------------------------------------------------------- */

/* Only a canonical lowercase UUID names a directory: one chat, one path. */
static bool local_valid_id(const char *id)
{
    if (!id || !ids_is_uuid(id) || strlen(id) != UUID_STR_LEN)
        return false;
    for (const char *s = id; *s; s++)
        if (*s >= 'A' && *s <= 'F')
            return false;
    return true;
}

/* The workspace, home and socket must be owned by the service uid, or
 * tools in the sandbox fail silently (DESIGN.md §6). */
static int local_mkdir_owned(const char *path)
{
    struct stat st;
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        goto fail;
    if (lstat(path, &st) < 0)
        goto fail;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        log_error("sandbox: %s is not a directory owned by uid %u", path,
                  (unsigned)geteuid());
        return -1;
    }
    if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) < 0)
        goto fail;
    return 0;
fail:
    log_error("sandbox: %s: %s", path, strerror(errno));
    return -1;
}

static const char *local_make_dirs(struct sandbox *sb)
{
    const char *data = sb->srv->cfg->data_dir;
    if (mkdir(data, 0700) < 0 && errno != EEXIST)
        log_warn("sandbox: mkdir %s: %s", data, strerror(errno));
    sb->data_real = realpath(data, NULL);
    if (!sb->data_real) {
        log_error("sandbox: data_dir %s: %s", data, strerror(errno));
        return "sandbox: data_dir is not usable";
    }
    sb->boxes = local_fmt("%s/sandboxes", sb->data_real);
    sb->root = local_fmt("%s/%s", sb->boxes, sb->chat_id);
    sb->workspace = local_fmt("%s/workspace", sb->root);
    sb->home = local_fmt("%s/home", sb->root);
    sb->run = local_fmt("%s/run", sb->root);
    sb->gw_sock = local_fmt("%s/gw.sock", sb->run);
    const char *dirs[] = {sb->boxes, sb->root, sb->workspace, sb->home,
                          sb->run};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        if (local_mkdir_owned(dirs[i]) < 0)
            return "sandbox: cannot create its directories";
    return NULL;
}

/* The init binary: sandbox_init_path, else beside corrald, in the build
 * tree or in libexecdir (child_find_helper). */
static const char *local_find_tools(struct sandbox *sb)
{
    sb->init_path = child_find_helper(sb->srv->cfg->sandbox_init_path,
                                      LOCAL_INIT_NAME);
    if (!sb->init_path) {
        log_error("sandbox: %s not found (set sandbox_init_path)",
                  LOCAL_INIT_NAME);
        return "sandbox: the init binary is missing";
    }
    for (size_t i = 0; i < ARRAY_SIZE(local_bwrap_paths); i++)
        if (access(local_bwrap_paths[i], X_OK) == 0) {
            sb->bwrap_path = local_bwrap_paths[i];
            return NULL;
        }
    log_error("sandbox: bwrap not found (install bubblewrap)");
    return "sandbox: bwrap is missing";
}

static void local_free(struct sandbox *sb)
{
    free(sb->data_real);
    free(sb->boxes);
    free(sb->root);
    free(sb->workspace);
    free(sb->home);
    free(sb->run);
    free(sb->gw_sock);
    free(sb->init_path);
    free(sb);
}

static struct sandbox *local_open(struct server *srv, const char *chat_id,
                                  const char **err)
{
    if (geteuid() == 0) {
        *err = "sandbox: refusing to run sandboxes as root";
        return NULL;
    }
    if (!local_valid_id(chat_id)) {
        *err = "sandbox: chat id is not a canonical lowercase UUID";
        return NULL;
    }
    struct sandbox *sb = xcalloc(1, sizeof(*sb));
    sb->srv = srv;
    memcpy(sb->chat_id, chat_id, UUID_STR_LEN + 1);
    if ((*err = local_make_dirs(sb)) || (*err = local_find_tools(sb))) {
        local_free(sb);
        return NULL;
    }
    return sb;
}

const char *sandbox_workspace_dir(const struct sandbox *sb)
{
    return sb->workspace;
}

const char *sandbox_home_dir(const struct sandbox *sb)
{
    return sb->home;
}

const char *sandbox_gateway_socket(const struct sandbox *sb)
{
    return sb->gw_sock;
}

/* ---- close and destroy -------------------------------------------------- */

/* The process outlives its sandbox until reaped: killed, its pipes closed
 * (no output after close), its on_exit delivered from the loop. */
static void local_detach(struct sandbox_proc *p, struct local_tomb *tomb)
{
    local_unlink(p);
    p->detached = true;
    if (tomb) {
        p->tomb = tomb;
        tomb->live++;
    }
    sandbox_proc_kill(p); /* keeps the info pipe while it waits on it */
    local_stdin_done(p);
    local_close_fd(&p->out_fd, &p->ev_out);
    local_close_fd(&p->err_fd, &p->ev_err);
    p->out_eof = p->err_eof = true;
    event_active(&p->ev_defer, 0, 0); /* on_exit never from inside close */
}

static void local_close_with(struct sandbox *sb, struct local_tomb *tomb)
{
    while (sb->procs)
        local_detach(sb->procs, tomb);
    log_debug("sandbox %s: closed", sb->chat_id);
    local_free(sb);
}

static void local_close(struct sandbox *sb)
{
    local_close_with(sb, NULL);
}

static void local_on_rm_done(void *arg, const struct child_result *res)
{
    if (res->status != 0 && !res->killed)
        log_warn("sandbox: removing a destroyed sandbox failed (status %d): "
                 "%s", res->status, res->out);
}

/* rm -rf in a child. chmod first: a process in the sandbox may have left
 * directories without permissions, which rm alone cannot empty. chmod -R
 * does not follow symlinks met during the walk. One cut short by a
 * shutdown is finished by the next start-up (sandbox_local_sweep). */
static void local_start_rm(struct server *srv, const char *path)
{
    static const char script[] =
        "chmod -R u+rwx -- \"$1\" 2>/dev/null; "
        "exec rm -rf --one-file-system -- \"$1\"";
    const char *argv[] = {"/bin/sh", "-c", script, "corral-rm", path, NULL};
    struct child_spec spec = {argv, -1, -1, 0, false, srv->cfg->child_nice};
    if (!child_start(srv->base, &spec, local_on_rm_done, NULL))
        log_error("sandbox: cannot remove %s: %s", path, strerror(errno));
}

static void local_tomb_release(struct local_tomb *t)
{
    if (--t->live > 0)
        return;
    if (t->path)
        local_start_rm(t->srv, t->path);
    free(t->path);
    free(t);
}

/* Renames the tree aside, so that the chat can be opened again at once
 * while the old tree is being removed; the path to remove, or NULL. */
static char *local_trash(const struct sandbox *sb)
{
    char *trash = local_fmt("%s/.trash-%s-%llu", sb->boxes, sb->chat_id,
                            (unsigned long long)server_mono_us());
    if (rename(sb->root, trash) == 0)
        return trash;
    free(trash);
    if (errno == ENOENT)
        return NULL;
    log_warn("sandbox: rename %s: %s", sb->root, strerror(errno));
    return xstrdup(sb->root);
}

static void local_destroy(struct sandbox *sb)
{
    struct local_tomb *t = xcalloc(1, sizeof(*t));
    t->srv = sb->srv;
    t->path = local_trash(sb);
    t->live = 1; /* ours, so that no process completes it during close */
    local_close_with(sb, t);
    local_tomb_release(t);
}

/* Trees renamed aside by a destroy that a crash or restart interrupted:
 * removed off the loop at start-up, like a destroy's own. */
void sandbox_local_sweep(struct server *srv)
{
    char *boxes = local_fmt("%s/sandboxes", srv->cfg->data_dir);
    DIR *d = opendir(boxes);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".trash-", 7) != 0)
            continue;
        char *path = local_fmt("%s/%s", boxes, e->d_name);
        log_info("sandbox: removing %s left by an earlier run", path);
        local_start_rm(srv, path);
        free(path);
    }
    if (d)
        closedir(d);
    free(boxes);
}

/* ---- shutdown ----------------------------------------------------------- */

/* The processes still to finish are found through their events, so that
 * no registry (a mutable global) is needed: a live process has its pidfd
 * event, its output events or its deferred settle on the base. One the
 * spawner has not started yet has none of them, only its info pipe, which
 * stays open until bwrap reported or died. */
static int local_count_event(const struct event_base *base,
                             const struct event *ev, void *arg)
{
    event_callback_fn cb = event_get_callback(ev);
    if (cb == local_on_reap || cb == local_on_output ||
        cb == local_on_defer || cb == local_on_info)
        ++*(int *)arg;
    return 0;
}

static int local_pending(struct event_base *base)
{
    int n = 0;
    event_base_foreach_event(base, local_count_event, &n);
    return n;
}

static void local_on_drain_deadline(evutil_socket_t fd, short what,
                                    void *arg)
{
    *(bool *)arg = true;
}

int sandbox_local_drain(struct server *srv, int ms)
{
    bool expired = false;
    struct event deadline;
    struct timeval tv = ms_to_timeval(ms);
    evtimer_assign(&deadline, srv->base, local_on_drain_deadline, &expired);
    evtimer_add(&deadline, &tv);
    int n;
    while ((n = local_pending(srv->base)) > 0 && !expired)
        event_base_loop(srv->base, EVLOOP_ONCE);
    event_del(&deadline);
    if (n > 0)
        log_warn("sandbox: %d process events still pending at shutdown", n);
    return n;
}

const struct sandbox_provider sandbox_local = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .destroy = local_destroy,
    .spawn = local_spawn,
};
