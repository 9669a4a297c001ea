/* sandbox: one isolated environment per chat, behind a provider vtable
 * (DESIGN.md §6). `local` uses bubblewrap: the chat's workspace is the only
 * writable tree (plus a private home for the CLI's session files), new
 * user/pid/ipc/uts/net/cgroup namespaces, no nested user namespaces, the
 * service uid mapped to 1000, rlimits, no network at all: the in-sandbox
 * init (corral-sandbox-init) listens on 127.0.0.1:gateway_port inside and
 * forwards each connection to the chat's gateway unix socket, bound
 * read-only at /run/corral/gw.sock.
 *
 * Processes are spawned without blocking the loop; stdin is written from
 * a bounded queue, stdout/stderr are read through non-blocking pipes, exit
 * is observed with a pidfd. Each callback of a process fires on the loop,
 * never from inside the call that caused it.
 *
 * Inside, / is read-only (bwrap's root remounted after the binds), /tmp a
 * private tmpfs, /usr and /etc the host's read-only.
 *
 * Host layout (local): <data_dir>/sandboxes/<chat_id>/{workspace,home,run},
 * each mode 0700 and owned by the service uid. The provider refuses to
 * open or spawn while the effective uid is 0 (DESIGN.md §6: as host root
 * the sandbox uid would map to 0). Needs Linux >= 5.4 (pidfd) and bwrap.
 *
 * Wait status of a local process: the sandbox reports what bwrap reports,
 * an exit code. A command killed by a signal inside the sandbox shows as
 * exit 128+signal; WIFSIGNALED appears only when bwrap itself was killed
 * (sandbox_proc_kill, or from outside). The init exits 125 when it cannot
 * set itself up, 127 when the command is not found, 126 when it cannot be
 * executed.
 *
 * Reaping uses pidfds on the exact pids spawned here: nothing else in
 * corrald may call waitpid(-1) or ignore SIGCHLD, or exits are lost. */
#ifndef CORRAL_SANDBOX_H
#define CORRAL_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct sandbox;
struct sandbox_proc;

#define SANDBOX_WORKSPACE "/workspace"
#define SANDBOX_HOME "/home/user"
#define SANDBOX_GATEWAY_SOCK "/run/corral/gw.sock"

struct sandbox_proc_cbs {
    void (*on_stdout)(void *arg, const char *data, size_t len);
    void (*on_stderr)(void *arg, const char *data, size_t len);
    /* Once, after stdout and stderr reached EOF and the process was
     * reaped; wait_status as from waitpid. The proc is freed after this
     * returns. */
    void (*on_exit)(void *arg, int wait_status);
};

struct sandbox_spawn_opts {
    const char *const *argv;  /* argv[0]: a path inside the sandbox */
    const char *const *env;   /* NULL-terminated NAME=VALUE; the sandbox
                                 adds HOME, PATH, LANG, TERM itself and
                                 refuses those names here, and names that
                                 are not [A-Za-z_][A-Za-z0-9_]* */
    int gateway_port;         /* > 0: the init forwards 127.0.0.1:port */
    const char *const *ro_binds; /* extra host paths bound read-only at
                                    the same path (the CLI's directory);
                                    absolute, no "..", not a sandbox path
                                    (/workspace, /home/user, /run/corral,
                                    /proc, /dev), not an ancestor of
                                    data_dir, not inside its sandboxes */
};

struct sandbox_provider {
    const char *name;
    /* Creates or re-opens the chat's sandbox (directories, no process).
     * NULL with *err (static) on failure. */
    struct sandbox *(*open)(struct server *srv, const char *chat_id,
                            const char **err);
    /* Kills its processes and releases the sandbox; files stay. May be
     * called from a process callback. Each process still gets its on_exit,
     * once, on a later loop turn (normally WIFSIGNALED / SIGKILL); no
     * on_stdout/on_stderr after close. Until then the proc handle stays
     * valid (write fails, kill is harmless), but sandbox_proc_* must not
     * be called after its on_exit returned. */
    void (*close)(struct sandbox *sb);
    /* close, then removes the chat's whole directory (off the loop: the
     * tree is renamed aside at once, so a new open of the same chat starts
     * empty, and removed by a child process after the killed processes
     * were reaped). */
    void (*destroy)(struct sandbox *sb);
    /* Starts argv in the sandbox (through bwrap and the init). The proc
     * is owned by this module and freed after its on_exit returns. NULL
     * with *err (static) when nothing was started; no callback fires
     * then. */
    struct sandbox_proc *(*spawn)(struct sandbox *sb,
                                  const struct sandbox_spawn_opts *opts,
                                  const struct sandbox_proc_cbs *cbs,
                                  void *arg, const char **err);
};

extern const struct sandbox_provider sandbox_local;

/* For shutdown, after every sandbox was closed and before the event_base
 * is freed: runs srv->base until each process of this provider has been
 * reaped and got its on_exit (killed bwrap goes in a few ms), or ms pass.
 * Other events on the base run meanwhile. Returns how many are still
 * pending (0: nothing of the sandboxes is left to free). */
int sandbox_local_drain(struct server *srv, int ms);
/* Start-up: removes (off the loop) the trees of destroys that an earlier
 * process did not finish. */
void sandbox_local_sweep(struct server *srv);
/* Sandboxes in their set-up now, and launches waiting for a start slot
 * (sandbox_starts_max). */
void sandbox_local_starts(int *starting, int *waiting);

/* Host paths of the sandbox's trees (valid while the sandbox is open). */
const char *sandbox_workspace_dir(const struct sandbox *sb);
const char *sandbox_home_dir(const struct sandbox *sb);
/* The unix socket the gateway must listen on for this sandbox. */
const char *sandbox_gateway_socket(const struct sandbox *sb);

/* The stdin queue's cap: a process that stops reading is not buffered
 * for without bound. */
#define SANDBOX_STDIN_MAX ((size_t)64 << 20)

/* Queues bytes for the process's stdin (copied; written as the pipe takes
 * them). -1 when stdin is closed or closing, the process closed its end,
 * or the queue would exceed SANDBOX_STDIN_MAX (the process is not
 * reading); nothing is queued then. */
int sandbox_proc_write(struct sandbox_proc *p, const void *data, size_t len);
/* Closes stdin once the queue drained; later writes fail. */
void sandbox_proc_close_stdin(struct sandbox_proc *p);
/* SIGKILL to the sandbox's pid 1 (every process in it dies) and to bwrap.
 * Right after spawn it waits (a few ms) until bwrap has reported that pid:
 * bwrap killed alone could leave the sandbox running. on_exit still fires,
 * once, normally with WIFSIGNALED / SIGKILL. */
void sandbox_proc_kill(struct sandbox_proc *p);
/* The host pid of the process corral spawned (bwrap), for logs. */
int sandbox_proc_pid(const struct sandbox_proc *p);

#endif
