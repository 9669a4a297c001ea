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
 * never from inside the call that caused it. */
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
                                 adds HOME, PATH, LANG, TERM itself */
    int gateway_port;         /* > 0: the init forwards 127.0.0.1:port */
    const char *const *ro_binds; /* extra host paths bound read-only at
                                    the same path (the CLI's directory) */
};

struct sandbox_provider {
    const char *name;
    /* Creates or re-opens the chat's sandbox (directories, no process).
     * NULL with *err (static) on failure. */
    struct sandbox *(*open)(struct server *srv, const char *chat_id,
                            const char **err);
    /* Kills its processes and releases memory; files stay. */
    void (*close)(struct sandbox *sb);
    /* close, then removes the workspace and home (off the loop). */
    void (*destroy)(struct sandbox *sb);
    struct sandbox_proc *(*spawn)(struct sandbox *sb,
                                  const struct sandbox_spawn_opts *opts,
                                  const struct sandbox_proc_cbs *cbs,
                                  void *arg, const char **err);
};

extern const struct sandbox_provider sandbox_local;

/* Host paths of the sandbox's trees (valid while the sandbox is open). */
const char *sandbox_workspace_dir(const struct sandbox *sb);
const char *sandbox_home_dir(const struct sandbox *sb);
/* The unix socket the gateway must listen on for this sandbox. */
const char *sandbox_gateway_socket(const struct sandbox *sb);

/* Queues bytes for the process's stdin. -1 when stdin is closed or the
 * queue is over its cap (the process is not reading). */
int sandbox_proc_write(struct sandbox_proc *p, const void *data, size_t len);
/* Closes stdin once the queue drained. */
void sandbox_proc_close_stdin(struct sandbox_proc *p);
/* SIGKILL to the sandbox's pid 1 (every process in it dies). on_exit still
 * fires. */
void sandbox_proc_kill(struct sandbox_proc *p);
int sandbox_proc_pid(const struct sandbox_proc *p);

#endif
