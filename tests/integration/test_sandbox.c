/* Integration tests for src/sandbox/local.c and corral-sandbox-init: real
 * bwrap sandboxes, driven from an event loop, and the isolation DESIGN.md
 * §6 promises, each checked from inside a sandbox.
 *
 * Run as root (CI), the process first becomes the service user (as corrald
 * does; sandboxes as root are refused): CORRAL_TEST_SERVICE_USER, else
 * `corral`. Everything lives in a fresh directory owned by that user under
 * CORRAL_TEST_TMPDIR (or TMPDIR, or /tmp), the init binary included: it is
 * copied there from CORRAL_SANDBOX_INIT, else CORRAL_SANDBOX_INIT_BUILD
 * (meson sets it to this build's), as the service user may not be able to
 * read the build tree.
 *
 * Every wait runs the loop under a deadline: a broken sandbox fails its
 * test instead of hanging it. For debugging: SANDBOX_TEST_FILTER=name
 * (a cmocka pattern) runs only matching tests, SANDBOX_TEST_DEBUG=1 logs
 * at debug level. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "corral/config.h"
#include "corral/ids.h"
#include "corral/log.h"
#include "corral/child.h"
#include "corral/sandbox.h"
#include "corral/spawn.h"
#include "corral/unixaddr.h"
#include "corral/server.h"

#define WAIT_MS 20000
#define SECRET_NAME "CORRAL_SANDBOX_TEST_SECRET"
#define SECRET_VALUE "s3cret-must-not-leak"
#define GW_PORT 8377

static char tmp_root[PATH_MAX];  /* owned by the service user */
static char init_copy[PATH_MAX]; /* the init binary, copied there */
static char data_dir[PATH_MAX];
static const char *root_refusal; /* open's error while still root */
static bool was_root;

/* snprintf that must not truncate (and tells gcc the result is used). */
#define FMT(buf, ...) \
    assert_true(snprintf(buf, sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

/* ---- loop helpers ------------------------------------------------------- */

struct ctx {
    struct event_base *base;
    struct config cfg;
    struct server srv;
};

static void ctx_init(struct ctx *c, int fsize_mb, int nproc)
{
    char err[256], num[32];
    memset(c, 0, sizeof(*c));
    c->base = event_base_new();
    assert_non_null(c->base);
    config_defaults(&c->cfg);
    assert_int_equal(config_set(&c->cfg, "data_dir", data_dir, err,
                                sizeof(err)), 0);
    assert_int_equal(config_set(&c->cfg, "sandbox_init_path", init_copy, err,
                                sizeof(err)), 0);
    snprintf(num, sizeof(num), "%d", fsize_mb);
    assert_int_equal(config_set(&c->cfg, "sandbox_fsize_mb", num, err,
                                sizeof(err)), 0);
    snprintf(num, sizeof(num), "%d", nproc);
    assert_int_equal(config_set(&c->cfg, "sandbox_nproc", num, err,
                                sizeof(err)), 0);
    c->srv.base = c->base;
    c->srv.cfg = &c->cfg;
}

static void ctx_deinit(struct ctx *c)
{
    /* An rm still running is killed and reaped before the base goes. */
    event_base_loop(c->base, EVLOOP_NONBLOCK);
    child_finish_all();
    event_base_free(c->base);
    config_deinit(&c->cfg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until pred(arg) holds or ms pass; returns pred(arg). A
 * 10 ms tick re-checks predicates that no event of the loop changes (the
 * host's process list). */
static bool run_until(struct event_base *base, pred_fn pred, void *arg,
                      int ms)
{
    bool expired = false;
    struct event *t = evtimer_new(base, on_deadline, &expired);
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    struct timeval tick_tv = {0, 10000};
    evtimer_add(t, &tv);
    evtimer_add(tick, &tick_tv);
    while (!(pred && pred(arg)) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    event_free(t);
    return pred ? pred(arg) : true;
}

static void run_for(struct event_base *base, int ms)
{
    run_until(base, NULL, NULL, ms);
}

static struct sandbox *open_new(struct ctx *c, char id[UUID_STR_LEN + 1])
{
    const char *err = NULL;
    assert_int_equal(ids_uuid7(id), 0);
    struct sandbox *sb = sandbox_local.open(&c->srv, id, &err);
    if (!sb)
        fail_msg("open: %s", err ? err : "(no error)");
    return sb;
}

/* ---- one process's results ---------------------------------------------- */

struct res {
    char *out, *err;
    size_t out_len, err_len;
    size_t out_zero;          /* bytes of stdout that were 0 */
    bool count_only;          /* do not keep stdout, only count it */
    int exits, status;
    int out_after_exit;       /* output callbacks after on_exit: must be 0 */
    bool *inside;             /* when set: true while a call is running */
    bool exit_inside;         /* on_exit fired from inside such a call */
    struct sandbox *close_on_out; /* close it from the first stdout */
    int out_after_close;
    bool closed;
};

static void append(char **s, size_t *len, const char *data, size_t n)
{
    *s = realloc(*s, *len + n + 1);
    assert_non_null(*s);
    memcpy(*s + *len, data, n);
    *len += n;
    (*s)[*len] = '\0';
}

static void res_stdout(void *arg, const char *data, size_t len)
{
    struct res *r = arg;
    r->out_after_exit += r->exits;
    r->out_after_close += r->closed;
    if (r->count_only) {
        for (size_t i = 0; i < len; i++)
            r->out_zero += data[i] == 0;
        r->out_len += len;
    } else {
        append(&r->out, &r->out_len, data, len);
    }
    if (r->close_on_out && !r->closed) {
        r->closed = true;
        sandbox_local.close(r->close_on_out);
    }
}

static void res_stderr(void *arg, const char *data, size_t len)
{
    struct res *r = arg;
    r->out_after_exit += r->exits;
    append(&r->err, &r->err_len, data, len);
}

static void res_exit(void *arg, int status)
{
    struct res *r = arg;
    r->exits++;
    r->status = status;
    if (r->inside && *r->inside)
        r->exit_inside = true;
}

static const struct sandbox_proc_cbs res_cbs = {res_stdout, res_stderr,
                                                res_exit};

static void res_free(struct res *r)
{
    free(r->out);
    free(r->err);
}

static bool pred_exited(void *arg)
{
    return ((struct res *)arg)->exits > 0;
}

struct spawn_args {
    const char *const *env;
    const char *const *binds;
    int port;
};

static struct sandbox_proc *start(struct sandbox *sb,
                                  const char *const *argv,
                                  const struct spawn_args *sa, struct res *r)
{
    struct sandbox_spawn_opts o = {.argv = argv};
    if (sa) {
        o.env = sa->env;
        o.ro_binds = sa->binds;
        o.gateway_port = sa->port;
    }
    const char *err = NULL;
    struct sandbox_proc *p = sandbox_local.spawn(sb, &o, &res_cbs, r, &err);
    if (!p)
        fail_msg("spawn %s: %s", argv[0], err ? err : "(no error)");
    assert_int_equal(r->exits, 0); /* never from inside spawn */
    return p;
}

/* Waits for on_exit, then runs on a little: it must not fire twice. */
static void wait_exit(struct ctx *c, struct res *r)
{
    if (!run_until(c->base, pred_exited, r, WAIT_MS))
        fail_msg("the sandboxed process did not exit in %d ms", WAIT_MS);
    run_for(c->base, 20);
    assert_int_equal(r->exits, 1);
    assert_int_equal(r->out_after_exit, 0);
}

/* Runs argv with optional stdin to completion. */
static void run_argv(struct ctx *c, struct sandbox *sb,
                     const char *const *argv, const struct spawn_args *sa,
                     const char *in, struct res *r)
{
    struct sandbox_proc *p = start(sb, argv, sa, r);
    if (in)
        assert_int_equal(sandbox_proc_write(p, in, strlen(in)), 0);
    sandbox_proc_close_stdin(p);
    wait_exit(c, r);
}

static void run_sh(struct ctx *c, struct sandbox *sb, const char *script,
                   struct res *r)
{
    const char *argv[] = {"sh", "-c", script, NULL};
    run_argv(c, sb, argv, NULL, NULL, r);
}

static void assert_exit_code(int status, int code)
{
    if (!WIFEXITED(status) || WEXITSTATUS(status) != code)
        fail_msg("wait status 0x%x, expected exit %d", status, code);
}

/* Processes on this machine whose command line contains needle. */
static int count_procs(const char *needle)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[64], buf[4096];
        FMT(path, "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < len; i++)
            if (buf[i] == '\0')
                buf[i] = ' ';
        buf[len > 0 ? len : 0] = '\0';
        n += strstr(buf, needle) != NULL;
    }
    closedir(d);
    return n;
}

static bool pred_no_procs(void *arg)
{
    return count_procs(arg) == 0;
}

static void assert_no_procs(struct ctx *c, const char *needle)
{
    if (!run_until(c->base, pred_no_procs, (void *)needle, 5000))
        fail_msg("processes matching '%s' survived", needle);
}

/* ---- basics ------------------------------------------------------------- */

static void test_refuses_root(void **state)
{
    (void)state;
    /* Checked in main while still root (CI always is). */
    if (was_root) {
        assert_non_null(root_refusal);
        assert_non_null(strstr(root_refusal, "root"));
    }
    assert_true(geteuid() != 0);
}

static void test_echo_stdin(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    const char *argv[] = {
        "sh", "-c", "read x; echo \"got:$x\"; echo oops >&2", NULL};
    run_argv(&c, sb, argv, NULL, "hello\n", &r);
    assert_string_equal(r.out, "got:hello\n");
    assert_string_equal(r.err, "oops\n");
    assert_exit_code(r.status, 0);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

static void test_exit_status(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r1 = {0}, r2 = {0}, r3 = {0};
    run_sh(&c, sb, "exit 3", &r1);
    assert_exit_code(r1.status, 3);
    /* A signal inside the sandbox comes back as bwrap's 128+n. */
    run_sh(&c, sb, "kill -9 $$", &r2);
    assert_exit_code(r2.status, 128 + SIGKILL);
    const char *argv[] = {"/no/such/program", NULL};
    run_argv(&c, sb, argv, NULL, NULL, &r3);
    assert_exit_code(r3.status, 127);
    assert_non_null(strstr(r3.err, "/no/such/program"));
    sandbox_local.close(sb);
    res_free(&r1);
    res_free(&r2);
    res_free(&r3);
    ctx_deinit(&c);
}

static void test_large_stdout(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {.count_only = true};
    const char *argv[] = {"head", "-c", "20000000", "/dev/zero", NULL};
    run_argv(&c, sb, argv, NULL, NULL, &r);
    assert_exit_code(r.status, 0);
    assert_int_equal(r.out_len, 20000000);
    assert_int_equal(r.out_zero, 20000000);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* 8 MiB through stdin in one write, echoed back by cat. */
static void test_large_stdin(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    size_t n = 8u << 20;
    char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    struct res r = {0};
    const char *argv[] = {"cat", NULL};
    struct sandbox_proc *p = start(sb, argv, NULL, &r);
    assert_int_equal(sandbox_proc_write(p, data, n), 0);
    sandbox_proc_close_stdin(p);
    assert_int_equal(sandbox_proc_write(p, "x", 1), -1);
    wait_exit(&c, &r);
    assert_exit_code(r.status, 0);
    assert_int_equal(r.out_len, n);
    assert_memory_equal(r.out, data, n);
    free(data);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* A process that does not read: the queue refuses past its cap. */
static void test_stdin_cap(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    size_t n = 40u << 20;
    char *data = calloc(1, n);
    assert_non_null(data);
    struct res r = {0};
    const char *argv[] = {"sleep", "987650", NULL};
    struct sandbox_proc *p = start(sb, argv, NULL, &r);
    assert_int_equal(sandbox_proc_write(p, data, n), 0);
    assert_int_equal(sandbox_proc_write(p, data, n), -1);
    free(data);
    sandbox_proc_kill(p);
    wait_exit(&c, &r);
    sandbox_local.close(sb);
    assert_no_procs(&c, "987650");
    res_free(&r);
    ctx_deinit(&c);
}

static void test_close_stdin(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    const char *argv[] = {"cat", NULL};
    struct sandbox_proc *p = start(sb, argv, NULL, &r);
    assert_int_equal(sandbox_proc_write(p, "abc", 3), 0);
    run_for(c.base, 200);
    assert_int_equal(r.exits, 0); /* cat waits for more */
    sandbox_proc_close_stdin(p);
    wait_exit(&c, &r);
    assert_string_equal(r.out, "abc");
    assert_exit_code(r.status, 0);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* ---- the file system ---------------------------------------------------- */

static void test_workspace_bind(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], path[PATH_MAX];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb, "echo data > /workspace/f.txt && mkdir -p sub && "
                   "echo y > sub/y && pwd", &r);
    assert_exit_code(r.status, 0);
    assert_string_equal(r.out, "/workspace\n");
    FMT(path, "%s/f.txt", sandbox_workspace_dir(sb));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_uid, getuid());
    assert_int_equal(st.st_size, 5);
    FMT(path, "%s/sub/y", sandbox_workspace_dir(sb));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(stat(sandbox_workspace_dir(sb), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, getuid());
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

static void test_fs_permissions(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], path[PATH_MAX];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb,
           "touch /home/user/h && echo home-ok; "
           "touch /tmp/t && echo tmp-ok; "
           "touch /x 2>/dev/null && echo root-writable; "
           "touch /usr/x 2>/dev/null && echo usr-writable; "
           "touch /etc/x 2>/dev/null && echo etc-writable; "
           "touch /run/corral/x 2>/dev/null && echo run-writable; "
           "cat /etc/shadow >/dev/null 2>&1 && echo shadow-readable; "
           "echo done", &r);
    assert_string_equal(r.out, "home-ok\ntmp-ok\ndone\n");
    FMT(path, "%s/h", sandbox_home_dir(sb));
    assert_int_equal(access(path, F_OK), 0);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* Another chat's files are neither in the sandbox nor reachable by their
 * host paths; nor is data_dir. */
static void test_cross_chat(void **state)
{
    (void)state;
    struct ctx c;
    char id1[UUID_STR_LEN + 1], id2[UUID_STR_LEN + 1], script[3 * PATH_MAX];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb1 = open_new(&c, id1);
    struct sandbox *sb2 = open_new(&c, id2);
    struct res r2 = {0}, r1 = {0};
    run_sh(&c, sb2, "echo secret2 > /workspace/other.txt", &r2);
    assert_exit_code(r2.status, 0);
    /* With a bind of data_dir's sibling, as the CLI's directory is in
     * tools/run's layout (var/cli next to the sandboxes). */
    char sibling[PATH_MAX];
    FMT(sibling, "%s/sibling", tmp_root);
    assert_int_equal(mkdir(sibling, 0755), 0);
    FMT(script,
             "test -e /workspace/other.txt && echo leak-ws; "
             "test -e '%s/other.txt' && echo leak-host; "
             "test -e '%s' && echo leak-data; "
             "test -d '%s' || echo no-sibling; "
             "ls -A /workspace; ls /home; echo done",
             sandbox_workspace_dir(sb2), data_dir, sibling);
    const char *binds[] = {sibling, NULL};
    struct spawn_args sa = {.binds = binds};
    const char *argv[] = {"sh", "-c", script, NULL};
    run_argv(&c, sb1, argv, &sa, NULL, &r1);
    assert_string_equal(r1.out, "user\ndone\n");
    sandbox_local.close(sb1);
    sandbox_local.close(sb2);
    res_free(&r1);
    res_free(&r2);
    ctx_deinit(&c);
}

/* A read-only bind of a host directory (the CLI's, in production). */
static void test_ro_binds(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], dir[PATH_MAX], file[PATH_MAX + 8],
        script[3 * PATH_MAX];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    FMT(dir, "%s/cli", tmp_root);
    assert_int_equal(mkdir(dir, 0755), 0);
    FMT(file, "%s/tool", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho tool-ran \"$@\"\n", f);
    fclose(f);
    assert_int_equal(chmod(file, 0755), 0);
    FMT(script,
             "'%s' a b; touch '%s/new' 2>/dev/null && echo writable; "
             "echo done", file, dir);
    const char *binds[] = {dir, NULL};
    struct spawn_args sa = {.binds = binds};
    const char *argv[] = {"sh", "-c", script, NULL};
    struct res r = {0};
    run_argv(&c, sb, argv, &sa, NULL, &r);
    assert_string_equal(r.out, "tool-ran a b\ndone\n");
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], upper[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    const char *err = NULL;
    assert_null(sandbox_local.open(&c.srv, "../../etc", &err));
    assert_non_null(err);
    assert_null(sandbox_local.open(&c.srv, "", &err));
    struct sandbox *sb = open_new(&c, id);
    for (size_t i = 0; i <= UUID_STR_LEN; i++)
        upper[i] = (char)(id[i] >= 'a' && id[i] <= 'f' ? id[i] - 32 : id[i]);
    if (strcmp(upper, id) != 0)
        assert_null(sandbox_local.open(&c.srv, upper, &err));
    const char *argv[] = {"true", NULL};
    const char *bad_binds[][2] = {
        {"/", NULL}, {"relative/dir", NULL}, {data_dir, NULL},
        {tmp_root, NULL}, {sandbox_workspace_dir(sb), NULL},
        {"/workspace", NULL}, {"/proc", NULL}, {"/no/such/dir", NULL},
        {"/usr/../etc", NULL},
    };
    for (size_t i = 0; i < sizeof(bad_binds) / sizeof(bad_binds[0]); i++) {
        struct sandbox_spawn_opts o = {.argv = argv,
                                       .ro_binds = bad_binds[i]};
        err = NULL;
        if (sandbox_local.spawn(sb, &o, &res_cbs, NULL, &err))
            fail_msg("ro_bind %s was accepted", bad_binds[i][0]);
        assert_non_null(err);
    }
    const char *bad_env[][2] = {
        {"HOME=/tmp", NULL}, {"PATH=/x", NULL}, {"NOEQUALS", NULL},
        {"BAD NAME=1", NULL}, {"=x", NULL}, {"1X=1", NULL},
    };
    for (size_t i = 0; i < sizeof(bad_env) / sizeof(bad_env[0]); i++) {
        struct sandbox_spawn_opts o = {.argv = argv, .env = bad_env[i]};
        if (sandbox_local.spawn(sb, &o, &res_cbs, NULL, &err))
            fail_msg("env %s was accepted", bad_env[i][0]);
    }
    struct sandbox_spawn_opts none = {.argv = (const char *[]){NULL}};
    assert_null(sandbox_local.spawn(sb, &none, &res_cbs, NULL, &err));
    sandbox_local.close(sb);
    ctx_deinit(&c);
}

/* ---- identity, environment, processes ----------------------------------- */

static void test_env_allowlist(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    assert_string_equal(getenv(SECRET_NAME), SECRET_VALUE);
    const char *env[] = {"FOO=bar baz", "CLAUDE_CODE_MAX_RETRIES=0", NULL};
    struct spawn_args sa = {.env = env};
    const char *argv[] = {"env", NULL};
    struct res r = {0};
    run_argv(&c, sb, argv, &sa, NULL, &r);
    assert_exit_code(r.status, 0);
    assert_null(strstr(r.out, SECRET_VALUE));
    assert_null(strstr(r.out, SECRET_NAME));
    static const char *const want[] = {
        "HOME=/home/user", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
        "TERM=dumb", "FOO=bar baz", "CLAUDE_CODE_MAX_RETRIES=0",
        "PWD=/workspace", /* bwrap's --chdir sets it */
    };
    size_t lines = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n")) {
        bool known = false;
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
            known |= strcmp(line, want[i]) == 0;
        if (!known)
            fail_msg("unexpected variable in the sandbox: %s", line);
        lines++;
    }
    assert_true(lines >= 6); /* PWD is bwrap's choice */
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

static void test_identity(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb, "id -u; id -g; grep -E '^(CapEff|NoNewPrivs)' "
                   "/proc/self/status", &r);
    assert_exit_code(r.status, 0);
    assert_non_null(strstr(r.out, "1000\n1000\n"));
    assert_non_null(strstr(r.out, "CapEff:\t0000000000000000"));
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* The sandbox runs below the reactor's priority (child_nice). */
static void test_niceness(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    c.cfg.child_nice = 12;
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb, "nice", &r);
    assert_exit_code(r.status, 0);
    assert_string_equal(r.out, "12\n");
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* Only the sandbox's own processes: bwrap's pid 1, the shell, ls. */
static void test_pid_namespace(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb, "ls /proc | grep -E '^[0-9]+$'", &r);
    assert_exit_code(r.status, 0);
    int n = 0, max = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n")) {
        int pid = atoi(line);
        n++;
        max = pid > max ? pid : max;
        assert_int_not_equal(pid, getpid() > 16 ? getpid() : -1);
    }
    assert_true(n >= 2 && n <= 5);
    assert_true(max < 16);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

static void test_nested_userns(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb, "unshare -U true 2>/dev/null && echo nested-U; "
                   "unshare -Ur true 2>/dev/null && echo nested-Ur; "
                   "unshare -n true 2>/dev/null && echo nested-n; echo done",
           &r);
    assert_string_equal(r.out, "done\n");
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* Port of a redis://[user:pass@]host:port[/db] URL, or 0. */
static int url_port(const char *url)
{
    if (!url)
        return 0;
    const char *host = strrchr(url, '@');
    host = host ? host + 1 : strstr(url, "//") ? strstr(url, "//") + 2 : url;
    const char *colon = strchr(host, ':');
    return colon ? atoi(colon + 1) : 0;
}

static int tcp_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_network(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], script[2048];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    int port;
    int lfd = tcp_listener(&port);
    const char *pg = getenv("CORRAL_TEST_PG_PORT");
    int pg_port = pg ? atoi(pg) : 0;
    int redis_port = url_port(getenv("CORRAL_TEST_REDIS_URL"));
    FMT(script,
             "for p in %d %d %d; do [ $p -gt 0 ] || continue; "
             "if (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null; "
             "then echo open:$p; else echo closed:$p; fi; done; "
             "(echo > /dev/tcp/10.0.0.1/80) 2>/dev/null && echo egress; "
             "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
             "tail -n +2 /proc/net/route | wc -l",
             port, pg_port, redis_port);
    const char *argv[] = {"bash", "-c", script, NULL};
    struct res r = {0};
    run_argv(&c, sb, argv, NULL, NULL, &r);
    char want[256];
    int off = snprintf(want, sizeof(want), "closed:%d\n", port);
    if (pg_port > 0)
        off += snprintf(want + off, sizeof(want) - (size_t)off,
                        "closed:%d\n", pg_port);
    if (redis_port > 0)
        off += snprintf(want + off, sizeof(want) - (size_t)off,
                        "closed:%d\n", redis_port);
    snprintf(want + off, sizeof(want) - (size_t)off, "lo\n0\n");
    assert_string_equal(r.out, want);
    int got = accept(lfd, NULL, NULL);
    assert_int_equal(got, -1); /* nothing ever connected */
    close(lfd);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* ---- rlimits ------------------------------------------------------------ */

static void test_nproc_limit(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 16);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    /* dash gives up at the first failed fork; all sleeps die with the
     * sandbox when the shell exits. */
    run_sh(&c, sb, "i=0; while [ $i -lt 60 ]; do sleep 987649 & "
                   "i=$((i+1)); echo $i; done", &r);
    int started = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"))
        started = atoi(line);
    assert_true(started > 0 && started < 16);
    assert_true(WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0);
    assert_non_null(strstr(r.err, "fork"));
    sandbox_local.close(sb);
    assert_no_procs(&c, "987649");
    res_free(&r);
    ctx_deinit(&c);
}

static void test_fsize_limit(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], path[PATH_MAX];
    ctx_init(&c, 1, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    run_sh(&c, sb, "head -c 2000000 /dev/zero > big; echo rc=$?", &r);
    assert_non_null(strstr(r.out, "rc="));
    assert_null(strstr(r.out, "rc=0\n"));
    FMT(path, "%s/big", sandbox_workspace_dir(sb));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size <= (1 << 20));
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* ---- the gateway forwarder ---------------------------------------------- */

/* A unix-socket server on the sandbox's gw.sock: "pong" mode answers the
 * first 4 bytes "ping" with "pong"; echo mode sends everything back and
 * closes after the client's EOF. */
struct gw {
    struct evconnlistener *l;
    bool echo;
    int conns;
};

struct gw_conn {
    struct gw *gw;
    bool eof;
    bool answered;
};

static void gw_free_conn(struct bufferevent *bev, struct gw_conn *gc)
{
    bufferevent_free(bev);
    free(gc);
}

static void gw_on_read(struct bufferevent *bev, void *arg)
{
    struct gw_conn *gc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (gc->gw->echo) {
        bufferevent_write_buffer(bev, in);
        return;
    }
    if (!gc->answered && evbuffer_get_length(in) >= 4) {
        char buf[4];
        evbuffer_remove(in, buf, 4);
        if (memcmp(buf, "ping", 4) == 0)
            bufferevent_write(bev, "pong", 4);
        gc->answered = true;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void gw_on_write(struct bufferevent *bev, void *arg)
{
    struct gw_conn *gc = arg;
    if (gc->eof)
        gw_free_conn(bev, gc);
}

static void gw_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct gw_conn *gc = arg;
    if ((what & BEV_EVENT_EOF) && gc->gw->echo &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        gc->eof = true; /* close once the echo is out */
        return;
    }
    gw_free_conn(bev, gc);
}

static void gw_on_accept(struct evconnlistener *l, evutil_socket_t fd,
                         struct sockaddr *sa, int len, void *arg)
{
    struct gw *gw = arg;
    gw->conns++;
    struct gw_conn *gc = calloc(1, sizeof(*gc));
    assert_non_null(gc);
    gc->gw = gw;
    struct bufferevent *bev = bufferevent_socket_new(
        evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(bev);
    bufferevent_setcb(bev, gw_on_read, gw_on_write, gw_on_event, gc);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void gw_start(struct ctx *c, struct sandbox *sb, struct gw *gw)
{
    struct sockaddr_un a;
    int dirfd;
    const char *path = sandbox_gateway_socket(sb);
    assert_int_equal(unixaddr_make(path, &a, &dirfd), 0);
    unlink(path);
    gw->l = evconnlistener_new_bind(c->base, gw_on_accept, gw,
                                    LEV_OPT_CLOSE_ON_FREE |
                                        LEV_OPT_CLOSE_ON_EXEC,
                                    16, (struct sockaddr *)&a, sizeof(a));
    if (dirfd >= 0)
        close(dirfd);
    assert_non_null(gw->l);
    assert_int_equal(chmod(path, 0600), 0);
}

static void gw_stop(struct gw *gw, struct sandbox *sb)
{
    evconnlistener_free(gw->l);
    unlink(sandbox_gateway_socket(sb));
}

static void test_gateway_ping(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], script[512];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct gw gw = {0};
    gw_start(&c, sb, &gw);
    FMT(script,
             "exec 3<>/dev/tcp/127.0.0.1/%d; printf ping >&3; "
             "read -n 4 x <&3; echo $x", GW_PORT);
    const char *argv[] = {"bash", "-c", script, NULL};
    struct spawn_args sa = {.port = GW_PORT};
    struct res r = {0};
    run_argv(&c, sb, argv, &sa, NULL, &r);
    assert_string_equal(r.out, "pong\n");
    assert_exit_code(r.status, 0);
    assert_int_equal(gw.conns, 1);
    /* The forwarder passes the command's status through. */
    struct res r2 = {0};
    const char *argv2[] = {"sh", "-c", "exit 5", NULL};
    run_argv(&c, sb, argv2, &sa, NULL, &r2);
    assert_exit_code(r2.status, 5);
    gw_stop(&gw, sb);
    sandbox_local.close(sb);
    res_free(&r);
    res_free(&r2);
    ctx_deinit(&c);
}

/* 4 MB each way through the forwarder, on 3 connections at once, with
 * half-close: the client shuts its write side and reads the echo to EOF. */
static void test_gateway_bulk(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], script[1024];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct gw gw = {.echo = true};
    gw_start(&c, sb, &gw);
    FMT(script,
             "import socket, hashlib\n"
             "data = bytes((i * 7 + i // 4096) %% 251 for i in range(4000000))\n"
             "socks = [socket.create_connection(('127.0.0.1', %d)) "
             "for _ in range(3)]\n"
             "for s in socks:\n"
             "    s.sendall(data)\n"
             "    s.shutdown(socket.SHUT_WR)\n"
             "for s in socks:\n"
             "    got = bytearray()\n"
             "    while True:\n"
             "        b = s.recv(65536)\n"
             "        if not b: break\n"
             "        got += b\n"
             "    print('ok' if got == data else 'bad %%d' %% len(got))\n",
             GW_PORT);
    const char *argv[] = {"python3", "-c", script, NULL};
    struct spawn_args sa = {.port = GW_PORT};
    struct res r = {0};
    run_argv(&c, sb, argv, &sa, NULL, &r);
    if (!r.out || strcmp(r.out, "ok\nok\nok\n") != 0)
        fail_msg("forwarder: out '%s' err '%s'", r.out ? r.out : "",
                 r.err ? r.err : "");
    assert_int_equal(gw.conns, 3);
    gw_stop(&gw, sb);
    sandbox_local.close(sb);
    res_free(&r);
    ctx_deinit(&c);
}

/* ---- kill, close, destroy ----------------------------------------------- */

static void test_kill(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0}, r2 = {0};
    bool inside = false;
    r.inside = &inside;
    const char *argv[] = {"sleep", "987654", NULL};
    struct sandbox_proc *p = start(sb, argv, NULL, &r);
    run_for(c.base, 300); /* child-pid known by now */
    assert_true(count_procs("987654") >= 1); /* bwrap x2, the sleep */
    inside = true;
    sandbox_proc_kill(p);
    inside = false;
    wait_exit(&c, &r);
    assert_false(r.exit_inside);
    assert_true(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGKILL);
    assert_no_procs(&c, "987654");
    /* Killed at once, before bwrap reported its child. */
    const char *argv2[] = {"sleep", "987653", NULL};
    p = start(sb, argv2, NULL, &r2);
    sandbox_proc_kill(p);
    sandbox_proc_kill(p);
    wait_exit(&c, &r2);
    assert_true(WIFSIGNALED(r2.status) && WTERMSIG(r2.status) == SIGKILL);
    assert_no_procs(&c, "987653");
    sandbox_local.close(sb);
    res_free(&r);
    res_free(&r2);
    ctx_deinit(&c);
}

/* Killed or closed right after spawn, many times: bwrap's child must never
 * survive as an orphan. */
static void test_kill_at_once(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    const char *argv[] = {"sleep", "987647", NULL};
    for (int i = 0; i < 25; i++) {
        struct sandbox *sb = open_new(&c, id);
        struct res r1 = {0}, r2 = {0};
        struct sandbox_proc *p = start(sb, argv, NULL, &r1);
        sandbox_proc_kill(p);
        start(sb, argv, NULL, &r2);
        if (i % 2)
            sandbox_local.close(sb);
        wait_exit(&c, &r1);
        assert_true(WIFSIGNALED(r1.status) && WTERMSIG(r1.status) == SIGKILL);
        if (i % 2 == 0) {
            assert_int_equal(r2.exits, 0);
            sandbox_local.destroy(sb);
        }
        wait_exit(&c, &r2);
        assert_true(WIFSIGNALED(r2.status) && WTERMSIG(r2.status) == SIGKILL);
        res_free(&r1);
        res_free(&r2);
    }
    assert_no_procs(&c, "987647");
    ctx_deinit(&c);
}

/* close from inside on_stdout: no more output, on_exit later, once. */
static void test_close_from_callback(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    r.close_on_out = sb;
    const char *argv[] = {
        "sh", "-c", "echo hi; sleep 0.2; echo more; exec sleep 987652", NULL};
    start(sb, argv, NULL, &r);
    wait_exit(&c, &r);
    assert_true(r.closed);
    assert_int_equal(r.out_after_close, 0);
    assert_string_equal(r.out, "hi\n");
    assert_true(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGKILL);
    assert_no_procs(&c, "987652");
    res_free(&r);
    ctx_deinit(&c);
}

/* close with running processes: each still gets on_exit, later. */
static void test_close_running(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    struct res r1 = {0}, r2 = {0};
    bool inside = false;
    r1.inside = r2.inside = &inside;
    const char *argv[] = {"sleep", "987648", NULL};
    start(sb, argv, NULL, &r1);
    start(sb, argv, NULL, &r2);
    run_for(c.base, 100);
    inside = true;
    sandbox_local.close(sb);
    inside = false;
    assert_int_equal(r1.exits + r2.exits, 0);
    /* As corrald's shutdown does: everything reaped, every on_exit out. */
    assert_int_equal(sandbox_local_drain(&c.srv, WAIT_MS), 0);
    assert_int_equal(r1.exits, 1);
    assert_int_equal(r2.exits, 1);
    assert_false(r1.exit_inside || r2.exit_inside);
    assert_true(WIFSIGNALED(r1.status) && WTERMSIG(r1.status) == SIGKILL);
    assert_no_procs(&c, "987648");
    res_free(&r1);
    res_free(&r2);
    ctx_deinit(&c);
}

/* close before the spawner answered (corrald stopped right after a
 * launch): the drain still waits for that process, which is killed once
 * started and reported through on_exit, so nothing is left or leaked. */
static void test_close_while_starting(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    ctx_init(&c, 1024, 256);
    assert_int_equal(spawn_service_start(0), 0); /* as corrald runs */
    spawn_service_attach(c.base);
    struct sandbox *sb = open_new(&c, id);
    struct res r = {0};
    const char *argv[] = {"sleep", "987647", NULL};
    start(sb, argv, NULL, &r);
    sandbox_local.close(sb); /* no loop turn: the spawner has not answered */
    assert_int_equal(r.exits, 0);
    assert_int_equal(sandbox_local_drain(&c.srv, WAIT_MS), 0);
    assert_int_equal(r.exits, 1);
    spawn_service_stop();
    assert_no_procs(&c, "987647");
    res_free(&r);
    ctx_deinit(&c);
}

/* A sandbox of a context whose start gate has one slot. */
static struct sandbox *open_gated(struct ctx *c, char id[UUID_STR_LEN + 1])
{
    char err[128];
    ctx_init(c, 1024, 256);
    assert_int_equal(config_set(&c->cfg, "sandbox_starts_max", "1", err,
                                sizeof(err)), 0);
    return open_new(c, id);
}

static void assert_starts(int want_starting, int want_waiting)
{
    int starting, waiting;
    sandbox_local_starts(&starting, &waiting);
    assert_int_equal(starting, want_starting);
    assert_int_equal(waiting, want_waiting);
}

/* sandbox_starts_max 1: one bwrap in its set-up at a time; the others
 * wait with their stdin queued, then run in order, each to its end. The
 * caller's strings are gone once spawn returned (ASan would see a use). */
static void test_start_gate_queues_launches(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    struct sandbox *sb = open_gated(&c, id);
    struct res r[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        char *cmd = strdup("cat");
        assert_non_null(cmd);
        const char *argv[] = {cmd, NULL};
        struct sandbox_proc *p = start(sb, argv, NULL, &r[i]);
        free(cmd);
        char line[16];
        snprintf(line, sizeof(line), "run %d\n", i);
        assert_int_equal(sandbox_proc_write(p, line, strlen(line)), 0);
        sandbox_proc_close_stdin(p);
    }
    assert_starts(1, 2);
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof(want), "run %d\n", i);
        wait_exit(&c, &r[i]);
        assert_exit_code(r[i].status, 0);
        assert_string_equal(r[i].out, want);
        res_free(&r[i]);
    }
    assert_starts(0, 0);
    sandbox_local.close(sb);
    ctx_deinit(&c);
}

/* Closed while launches wait for a slot: those end at once as killed,
 * the one starting is killed as usual, nothing is left. */
static void test_start_gate_close_while_waiting(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1];
    struct sandbox *sb = open_gated(&c, id);
    struct res r[3] = {{0}};
    const char *argv[] = {"sleep", "987645", NULL};
    for (int i = 0; i < 3; i++)
        start(sb, argv, NULL, &r[i]);
    assert_starts(1, 2);
    sandbox_local.close(sb);
    assert_starts(1, 0);
    assert_int_equal(sandbox_local_drain(&c.srv, WAIT_MS), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].exits, 1);
        assert_true(WIFSIGNALED(r[i].status) &&
                    WTERMSIG(r[i].status) == SIGKILL);
        res_free(&r[i]);
    }
    assert_starts(0, 0);
    assert_no_procs(&c, "987645");
    ctx_deinit(&c);
}

struct gone {
    const char *root;
    const char *base;
};

static bool pred_gone(void *arg)
{
    struct gone *g = arg;
    if (access(g->root, F_OK) == 0)
        return false;
    DIR *d = opendir(g->base);
    assert_non_null(d);
    struct dirent *e;
    bool trash = false;
    while ((e = readdir(d)))
        trash |= strncmp(e->d_name, ".trash-", 7) == 0;
    closedir(d);
    return !trash;
}

static void test_destroy(void **state)
{
    (void)state;
    struct ctx c;
    char id[UUID_STR_LEN + 1], root[PATH_MAX], base[PATH_MAX];
    ctx_init(&c, 1024, 256);
    struct sandbox *sb = open_new(&c, id);
    FMT(root, "%s", sandbox_workspace_dir(sb));
    *strrchr(root, '/') = '\0';
    FMT(base, "%s", root);
    *strrchr(base, '/') = '\0';
    struct res r = {0}, r2 = {0};
    /* A tree the owner cannot simply rm -rf. */
    run_sh(&c, sb, "mkdir -p d/e && echo x > d/e/f && chmod 000 d", &r);
    assert_exit_code(r.status, 0);
    const char *argv[] = {"sleep", "987651", NULL};
    start(sb, argv, NULL, &r2);
    run_for(c.base, 100);
    sandbox_local.destroy(sb);
    wait_exit(&c, &r2);
    struct gone g = {root, base};
    if (!run_until(c.base, pred_gone, &g, WAIT_MS))
        fail_msg("%s was not removed", root);
    assert_no_procs(&c, "987651");
    /* The chat can be opened again, empty. */
    const char *err = NULL;
    sb = sandbox_local.open(&c.srv, id, &err);
    assert_non_null(sb);
    DIR *d = opendir(sandbox_workspace_dir(sb));
    assert_non_null(d);
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        entries += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(entries, 0);
    sandbox_local.destroy(sb);
    assert_true(run_until(c.base, pred_gone, &g, WAIT_MS));
    res_free(&r);
    res_free(&r2);
    ctx_deinit(&c);
}

/* ---- set-up ------------------------------------------------------------- */

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    char buf[65536];
    ssize_t n = -1;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return n == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    if (flag == FTW_DNR)
        chmod(path, 0700);
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* While root: refuse-as-root check, then the private directory, then
 * become the service user. */
static int setup_as_root(const char *user)
{
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        fprintf(stderr, "test_sandbox: no user %s\n", user);
        return -1;
    }
    struct ctx c;
    ctx_init(&c, 1024, 256);
    char id[UUID_STR_LEN + 1];
    if (ids_uuid7(id) < 0 || sandbox_local.open(&c.srv, id, &root_refusal))
        return -1;
    ctx_deinit(&c);
    if (chown(tmp_root, pw->pw_uid, pw->pw_gid) < 0 ||
        chown(init_copy, pw->pw_uid, pw->pw_gid) < 0 ||
        setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        perror("test_sandbox: dropping privileges");
        return -1;
    }
    /* setuid made the process undumpable; LeakSanitizer needs it. */
    prctl(PR_SET_DUMPABLE, 1);
    return 0;
}

/* The private directory, with the init binary copied in. */
static int setup_dir(void)
{
    const char *init = getenv("CORRAL_SANDBOX_INIT");
    if (!init || !*init)
        init = getenv("CORRAL_SANDBOX_INIT_BUILD");
    const char *tmp = getenv("CORRAL_TEST_TMPDIR");
    if (!tmp || !*tmp)
        tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    if (!init || !*init) {
        fprintf(stderr, "test_sandbox: CORRAL_SANDBOX_INIT is not set\n");
        return -1;
    }
    if (strlen(tmp) > 512) {
        fprintf(stderr, "test_sandbox: temporary directory path too long\n");
        return -1;
    }
    if (snprintf(tmp_root, sizeof(tmp_root), "%s/corral-sandbox-test-XXXXXX",
                 tmp) < 0 || !mkdtemp(tmp_root)) {
        perror("test_sandbox: mkdtemp");
        return -1;
    }
    if (snprintf(init_copy, sizeof(init_copy), "%s/corral-sandbox-init",
                 tmp_root) < 0 ||
        snprintf(data_dir, sizeof(data_dir), "%s/data", tmp_root) < 0 ||
        copy_file(init, init_copy) < 0 || chmod(init_copy, 0755) < 0) {
        fprintf(stderr, "test_sandbox: cannot copy %s\n", init);
        return -1;
    }
    return 0;
}

int main(void)
{
    if (setup_dir() < 0)
        return 1;
    log_open(NULL, getenv("SANDBOX_TEST_DEBUG") ? LOG_DEBUG : LOG_WARN);
    if (getenv("SANDBOX_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SANDBOX_TEST_FILTER"));
    was_root = geteuid() == 0;
    const char *user = getenv("CORRAL_TEST_SERVICE_USER");
    if (was_root && setup_as_root(user && *user ? user : "corral") < 0)
        return 1;
    setenv(SECRET_NAME, SECRET_VALUE, 1);
    signal(SIGPIPE, SIG_IGN); /* as corrald */

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refuses_root),
        cmocka_unit_test(test_echo_stdin),
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_large_stdout),
        cmocka_unit_test(test_large_stdin),
        cmocka_unit_test(test_stdin_cap),
        cmocka_unit_test(test_close_stdin),
        cmocka_unit_test(test_workspace_bind),
        cmocka_unit_test(test_fs_permissions),
        cmocka_unit_test(test_cross_chat),
        cmocka_unit_test(test_ro_binds),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_env_allowlist),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_niceness),
        cmocka_unit_test(test_pid_namespace),
        cmocka_unit_test(test_nested_userns),
        cmocka_unit_test(test_network),
        cmocka_unit_test(test_nproc_limit),
        cmocka_unit_test(test_fsize_limit),
        cmocka_unit_test(test_gateway_ping),
        cmocka_unit_test(test_gateway_bulk),
        cmocka_unit_test(test_kill),
        cmocka_unit_test(test_kill_at_once),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_close_running),
        cmocka_unit_test(test_close_while_starting),
        cmocka_unit_test(test_start_gate_queues_launches),
        cmocka_unit_test(test_start_gate_close_while_waiting),
        cmocka_unit_test(test_destroy),
    };
    int failed = cmocka_run_group_tests_name("sandbox", tests, NULL, NULL);
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed;
}
