/* child: a helper process of corrald watched from the event loop, for
 * work that must not run on it (hashing or measuring a tree, copying,
 * archiving, removing). Spawned with posix_spawn in a session of its own:
 * stdin /dev/null, the environment PATH=/usr/bin:/bin LC_ALL=C, default
 * signal dispositions, no descriptor above 2 inherited except an optional
 * fd 3. Its exit is seen through a pidfd. stdout goes to a descriptor of
 * the caller or is captured (with stderr, unless told otherwise), keeping
 * the last CHILD_OUT_MAX bytes; a deadline kills it. The done callback
 * fires exactly once, from the loop (or from child_finish_now). */
#ifndef CORRAL_CHILD_H
#define CORRAL_CHILD_H

#include <stdbool.h>
#include <stddef.h>

#define CHILD_OUT_MAX 2048

struct event_base;
struct child;

struct child_spec {
    const char *const *argv; /* argv[0]: an absolute path */
    int out_fd;              /* its stdout; -1: captured */
    int fd3;                 /* passed as its fd 3; -1: none */
    int timeout_ms;          /* killed after this; 0: no deadline */
    bool stderr_null;        /* captured output leaves stderr out */
    int nice;                /* niceness to run at (config child_nice) */
};

struct child_result {
    int status;          /* wait status (WIFEXITED, WEXITSTATUS, ...) */
    bool timed_out;      /* killed at the deadline */
    bool killed;         /* by child_kill or child_finish_now */
    char *out;           /* captured output's tail, NUL-terminated */
    size_t out_len;
    bool out_truncated;  /* more than CHILD_OUT_MAX bytes came */
};

typedef void (*child_done_fn)(void *arg, const struct child_result *res);

/* NULL with errno set when it cannot be started or watched (done is not
 * called then; nothing is left running). */
struct child *child_start(struct event_base *base,
                          const struct child_spec *spec, child_done_fn done,
                          void *arg);
/* SIGKILL; done still fires from the loop, with killed set. */
void child_kill(struct child *c);
/* Shutdown: kills and reaps it now and calls done before returning. */
void child_finish_now(struct child *c);
/* Shutdown: child_finish_now on every child still running (those no
 * module keeps track of: tar, rm). */
void child_finish_all(void);
/* The path of one of corral's helper binaries (realpath, free()d by the
 * caller): configured when set (NULL if it is not executable), else
 * beside corrald, in sandbox/ below it (the build tree) or in ../libexec
 * (an install). NULL when none is found. */
char *child_find_helper(const char *configured, const char *name);
/* Its process id (logs). */
int child_pid(const struct child *c);

#endif
