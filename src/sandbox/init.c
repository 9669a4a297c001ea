/* corral-sandbox-init: the first process of every local sandbox
 * (DESIGN.md §6), started by bwrap as
 *
 *   /run/corral-init --nproc N [--listen-port P --connect SOCK] -- CMD ARGS...
 *
 * It sets RLIMIT_NPROC here, inside the sandbox's user namespace, where it
 * counts only this sandbox's processes (set on corrald's side it would
 * count every process of the service uid, and bwrap would fail to start).
 * Without --listen-port it then execs CMD and is gone.
 *
 * With --listen-port it is the gateway forwarder: it binds 127.0.0.1:P
 * before CMD starts (the CLI connects at once and nothing else orders the
 * two), forks CMD (which inherits stdin, stdout and stderr), lets go of its
 * own stdin and stdout (so that corrald sees stdout EOF when CMD and its
 * children are done) and relays every accepted TCP connection to a new
 * connection to the unix socket SOCK, the chat's gateway bound in from the
 * host. When CMD exits, it exits with CMD's status (128+signal when CMD
 * was killed), which takes the sandbox down.
 *
 * Plain libc and nothing of corral's: it runs inside the sandbox, under its
 * rlimits. Exit codes of its own: 125 set-up failed, 126 CMD could not be
 * executed, 127 CMD not found. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define INIT_ERR 125
#define INIT_MAX_CONNS 64        /* the CLI opens a handful */
#define INIT_BUF (64 * 1024)     /* per direction and connection */
#define INIT_NAME "corral-sandbox-init"

struct init_opts {
    long nproc;        /* 0: leave RLIMIT_NPROC alone */
    int port;          /* 0: no forwarder */
    const char *sock;
    char **cmd;
};

/* One direction of a relayed connection: bytes read from one socket and
 * not yet written to the other. */
struct dir_buf {
    char data[INIT_BUF];
    size_t off, len;   /* pending bytes: data[off..len) */
    bool eof;          /* the source reached EOF */
    bool shut;         /* ...and the sink got shutdown(SHUT_WR) */
};

struct conn {
    int tcp, unx;
    struct dir_buf up;   /* tcp -> unix (requests) */
    struct dir_buf down; /* unix -> tcp (responses) */
};

struct relay {
    int lfd;
    const char *sock;
    struct conn *c[INIT_MAX_CONNS];
    int n;
};

static void on_sigchld(int sig)
{
    /* Exists only so that SIGCHLD interrupts ppoll; the loop reaps. */
}

static int parse_num(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct init_opts *o)
{
    int i = 1;
    long port = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (i + 1 >= argc)
            return -1;
        if (strcmp(argv[i], "--nproc") == 0) {
            if (parse_num(argv[++i], 1, 1L << 30, &o->nproc) < 0)
                return -1;
        } else if (strcmp(argv[i], "--listen-port") == 0) {
            if (parse_num(argv[++i], 1, 65535, &port) < 0)
                return -1;
        } else if (strcmp(argv[i], "--connect") == 0) {
            o->sock = argv[++i];
        } else {
            return -1;
        }
    }
    o->port = (int)port;
    if (i >= argc || (o->port > 0) != (o->sock != NULL))
        return -1;
    o->cmd = &argv[i];
    return 0;
}

__attribute__((noreturn)) static void exec_cmd(char **cmd)
{
    execvp(cmd[0], cmd);
    int e = errno;
    fprintf(stderr, INIT_NAME ": %s: %s\n", cmd[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0) {
        fprintf(stderr, INIT_NAME ": listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        return -1;
    }
    return fd;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a.sun_path))
        return -1;
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* A unix connect completes at once, or fails with EAGAIN when the
     * gateway's backlog is full: then this connection is refused and the
     * client retries. */
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 &&
        errno != EINPROGRESS) {
        fprintf(stderr, INIT_NAME ": gateway %s: %s\n", path,
                strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- relaying ----------------------------------------------------------- */

static short want_read(const struct dir_buf *b)
{
    return !b->eof && b->len < INIT_BUF ? POLLIN : 0;
}

static short want_write(const struct dir_buf *b)
{
    return b->len > b->off ? POLLOUT : 0;
}

/* Reads what fits. -1 on a socket error (the connection is dropped). */
static int fill_from(int fd, struct dir_buf *b)
{
    if (!want_read(b))
        return 0;
    ssize_t n = read(fd, b->data + b->len, INIT_BUF - b->len);
    if (n > 0)
        b->len += (size_t)n;
    else if (n == 0)
        b->eof = true;
    else if (errno != EAGAIN && errno != EINTR)
        return -1;
    return 0;
}

/* Writes what the socket takes, then half-closes the sink once the source
 * is at EOF and nothing is pending. -1 on a socket error. */
static int drain_to(int fd, struct dir_buf *b)
{
    while (want_write(b)) {
        ssize_t n = send(fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
        if (n > 0)
            b->off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            break;
        else
            return -1;
    }
    if (b->off == b->len) {
        b->off = b->len = 0;
    } else if (b->len == INIT_BUF && b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->eof && !want_write(b) && !b->shut) {
        shutdown(fd, SHUT_WR);
        b->shut = true;
    }
    return 0;
}

/* One poll round for c. false when the connection is finished: both
 * directions shut down, or an error. */
static bool conn_step(struct conn *c, short tcp_rev, short unx_rev)
{
    if ((tcp_rev | unx_rev) & POLLNVAL)
        return false;
    if ((tcp_rev & (POLLIN | POLLHUP | POLLERR)) && fill_from(c->tcp, &c->up))
        return false;
    if ((unx_rev & (POLLIN | POLLHUP | POLLERR)) && fill_from(c->unx, &c->down))
        return false;
    /* Write whatever is pending without waiting for POLLOUT: a socket that
     * is not ready answers EAGAIN, and fresh data goes out a round early. */
    if (drain_to(c->unx, &c->up) < 0 || drain_to(c->tcp, &c->down) < 0)
        return false;
    return !(c->up.shut && c->down.shut);
}

static void conn_free(struct conn *c)
{
    close(c->tcp);
    close(c->unx);
    free(c);
}

/* Sockets without anything to wait for are left out (fd -1): poll would
 * report POLLHUP on them over and over. */
static int fill_pollfds(const struct relay *r, struct pollfd *pfd)
{
    pfd[0].fd = r->n < INIT_MAX_CONNS ? r->lfd : -1;
    pfd[0].events = POLLIN;
    for (int i = 0; i < r->n; i++) {
        const struct conn *c = r->c[i];
        struct pollfd *t = &pfd[1 + 2 * i], *u = &pfd[2 + 2 * i];
        t->events = (short)(want_read(&c->up) | want_write(&c->down));
        u->events = (short)(want_read(&c->down) | want_write(&c->up));
        t->fd = t->events ? c->tcp : -1;
        u->fd = u->events ? c->unx : -1;
        t->revents = u->revents = 0;
    }
    return 1 + 2 * r->n;
}

static void service_all(struct relay *r, const struct pollfd *pfd)
{
    int kept = 0;
    for (int i = 0; i < r->n; i++) {
        struct conn *c = r->c[i];
        if (conn_step(c, pfd[1 + 2 * i].revents, pfd[2 + 2 * i].revents))
            r->c[kept++] = c;
        else
            conn_free(c);
    }
    r->n = kept;
}

static void accept_all(struct relay *r)
{
    while (r->n < INIT_MAX_CONNS) {
        int t = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (t < 0 && errno == EINTR)
            continue;
        if (t < 0)
            return; /* EAGAIN, or out of descriptors: try next round */
        int one = 1; /* small streamed chunks must not wait for Nagle */
        setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int u = connect_unix(r->sock);
        struct conn *c = u >= 0 ? calloc(1, sizeof(*c)) : NULL;
        if (!c) {
            close(t);
            if (u >= 0)
                close(u);
            continue;
        }
        c->tcp = t;
        c->unx = u;
        r->c[r->n++] = c;
    }
}

/* Reaps every child that exited; true once `child` is among them. */
static bool reap(pid_t child, int *status)
{
    bool done = false;
    int st;
    pid_t w;
    while ((w = waitpid(-1, &st, WNOHANG)) > 0)
        if (w == child) {
            *status = st;
            done = true;
        }
    return done;
}

/* SIGCHLD is blocked except inside ppoll, so an exit is never missed
 * between the reap and the wait. */
static int relay_until_exit(int lfd, const char *sock, pid_t child)
{
    static struct pollfd pfd[1 + 2 * INIT_MAX_CONNS];
    struct relay r = {.lfd = lfd, .sock = sock};
    sigset_t none;
    sigemptyset(&none);
    for (;;) {
        int st;
        if (reap(child, &st))
            return WIFEXITED(st)     ? WEXITSTATUS(st)
                   : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
                                     : INIT_ERR;
        int k = fill_pollfds(&r, pfd);
        if (ppoll(pfd, (nfds_t)k, NULL, &none) < 0) {
            if (errno != EINTR)
                fprintf(stderr, INIT_NAME ": ppoll: %s\n", strerror(errno));
            continue;
        }
        service_all(&r, pfd);
        if (pfd[0].revents & POLLIN)
            accept_all(&r);
    }
}

/* stdin and stdout go to /dev/null: the pipes stay with CMD alone. */
static void let_go_of_stdio(void)
{
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0 || dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0)
        fprintf(stderr, INIT_NAME ": /dev/null: %s\n", strerror(errno));
    if (fd > STDERR_FILENO)
        close(fd);
}

static pid_t start_cmd(char **cmd, const sigset_t *old_mask)
{
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGCHLD, SIG_DFL);
        sigprocmask(SIG_SETMASK, old_mask, NULL);
        exec_cmd(cmd);
    }
    if (pid < 0)
        fprintf(stderr, INIT_NAME ": fork: %s\n", strerror(errno));
    return pid;
}

int main(int argc, char **argv)
{
    struct init_opts o = {0};
    if (parse_args(argc, argv, &o) < 0) {
        fprintf(stderr, "usage: " INIT_NAME " [--nproc N] [--listen-port P "
                        "--connect SOCK] -- CMD [ARGS...]\n");
        return INIT_ERR;
    }
    if (o.nproc > 0) {
        struct rlimit rl = {(rlim_t)o.nproc, (rlim_t)o.nproc};
        if (setrlimit(RLIMIT_NPROC, &rl) < 0) {
            fprintf(stderr, INIT_NAME ": RLIMIT_NPROC: %s\n", strerror(errno));
            return INIT_ERR;
        }
    }
    if (o.port == 0)
        exec_cmd(o.cmd);
    int lfd = listen_on(o.port);
    if (lfd < 0)
        return INIT_ERR;
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    pid_t pid = start_cmd(o.cmd, &old);
    if (pid < 0)
        return INIT_ERR;
    let_go_of_stdio();
    return relay_until_exit(lfd, o.sock, pid);
}
