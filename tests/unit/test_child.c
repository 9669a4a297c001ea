#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>
#include <event2/event.h>

#include "corral/child.h"
#include "corral/spawn.h"

struct seen {
    int calls;
    struct child_result res;
    char out[CHILD_OUT_MAX + 1];
};

static void on_done(void *arg, const struct child_result *res)
{
    struct seen *s = arg;
    s->calls++;
    s->res = *res;
    memcpy(s->out, res->out, res->out_len + 1);
}

static struct seen run(const char *const *argv, int timeout_ms, int fd3)
{
    struct event_base *base = event_base_new();
    struct seen s = {0};
    struct child_spec spec = {argv, -1, fd3, timeout_ms, false, 0};
    struct child *c = child_start(base, &spec, on_done, &s);
    assert_non_null(c);
    event_base_dispatch(base);
    event_base_free(base);
    return s;
}

static void test_captures_output_and_status(void **state)
{
    const char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3",
                          NULL};
    struct seen s = run(argv, 0, -1);
    assert_int_equal(s.calls, 1);
    assert_true(WIFEXITED(s.res.status));
    assert_int_equal(WEXITSTATUS(s.res.status), 3);
    assert_string_equal(s.out, "out\nerr\n");
    assert_false(s.res.timed_out || s.res.killed || s.res.out_truncated);
}

static void test_keeps_the_tail_of_long_output(void **state)
{
    const char *argv[] = {"/bin/sh", "-c",
                          "head -c 10000 /dev/zero | tr '\\0' a; echo END",
                          NULL};
    struct seen s = run(argv, 0, -1);
    assert_true(s.res.out_truncated);
    assert_int_equal(s.res.out_len, CHILD_OUT_MAX);
    assert_string_equal(s.out + CHILD_OUT_MAX - 4, "END\n");
}

static void test_deadline_kills(void **state)
{
    const char *argv[] = {"/bin/sleep", "30", NULL};
    struct seen s = run(argv, 100, -1);
    assert_int_equal(s.calls, 1);
    assert_true(s.res.timed_out);
    assert_false(WIFEXITED(s.res.status));
}

static void test_fd3_and_nothing_else_inherited(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0); /* not CLOEXEC: must not leak anyway */
    int fd = open("/dev/null", O_RDONLY);
    const char *argv[] = {"/bin/sh", "-c",
                          "ls /proc/self/fd | sort -n | tr '\\n' ' '", NULL};
    struct seen s = run(argv, 0, fd);
    /* 0, 1, 2, 3 and the fd ls itself opens for the listing */
    assert_true(strncmp(s.out, "0 1 2 3 ", 8) == 0);
    assert_null(strstr(s.out + 8, " 5 "));
    close(fd);
    close(p[0]);
    close(p[1]);
}

static void test_finish_now_calls_back_before_returning(void **state)
{
    struct event_base *base = event_base_new();
    struct seen s = {0};
    const char *argv[] = {"/bin/sleep", "30", NULL};
    struct child_spec spec = {argv, -1, -1, 0, false, 0};
    struct child *c = child_start(base, &spec, on_done, &s);
    assert_non_null(c);
    child_finish_now(c);
    assert_int_equal(s.calls, 1);
    assert_true(s.res.killed);
    event_base_free(base);
}

static void test_runs_at_the_given_niceness(void **state)
{
    struct event_base *base = event_base_new();
    struct seen s = {0};
    const char *argv[] = {"/usr/bin/nice", NULL}; /* prints its niceness */
    struct child_spec spec = {argv, -1, -1, 0, false, 7};
    assert_non_null(child_start(base, &spec, on_done, &s));
    event_base_dispatch(base);
    event_base_free(base);
    assert_int_equal(s.calls, 1);
    if (getpriority(PRIO_PROCESS, 0) <= 7) /* else we may not lower it */
        assert_string_equal(s.out, "7\n");
}

/* child_nice 20: the idle scheduling class at niceness 19 (policy 5 is
 * SCHED_IDLE in /proc/self/stat's 41st field). */
static void test_idle_class_at_nice_20(void **state)
{
    struct event_base *base = event_base_new();
    struct seen s = {0};
    const char *argv[] = {"/bin/sh", "-c", "cut -d' ' -f19,41 /proc/self/stat",
                          NULL};
    struct child_spec spec = {argv, -1, -1, 0, false, SPAWN_NICE_IDLE};
    assert_non_null(child_start(base, &spec, on_done, &s));
    event_base_dispatch(base);
    event_base_free(base);
    assert_int_equal(s.calls, 1);
    assert_string_equal(s.out, "19 5\n");
}

static void test_missing_program_fails_to_start(void **state)
{
    const char *argv[] = {"/nonexistent/program", NULL};
    struct seen s = run(argv, 0, -1);
    assert_int_equal(s.calls, 1);
    assert_true(WIFEXITED(s.res.status));
    assert_int_equal(WEXITSTATUS(s.res.status), 127);
}

/* The spawner's answer event keeps a loop busy: turn it until seen. */
static void loop_until(struct event_base *base, const struct seen *s)
{
    for (int i = 0; i < 10000 && s->calls == 0; i++)
        event_base_loop(base, EVLOOP_ONCE);
}

/* Through the spawner process: the same outcomes, and the processes are
 * ours (reaped through their pidfds). */
static void test_through_the_spawner(void **state)
{
    assert_int_equal(spawn_service_start(5), 0);
    const char *argv[] = {"/bin/sh", "-c", "echo out; exit 3", NULL};
    struct event_base *base = event_base_new();
    spawn_service_attach(base);
    struct seen s = {0};
    struct child_spec spec = {argv, -1, -1, 0, false, 0};
    assert_non_null(child_start(base, &spec, on_done, &s));
    loop_until(base, &s);
    assert_int_equal(s.calls, 1);
    assert_int_equal(WEXITSTATUS(s.res.status), 3);
    assert_string_equal(s.out, "out\n");
    /* Killed before the spawner answered: still killed and reaped. */
    const char *sleeper[] = {"/bin/sleep", "30", NULL};
    struct seen k = {0};
    struct child_spec ks = {sleeper, -1, -1, 0, false, 0};
    struct child *c = child_start(base, &ks, on_done, &k);
    assert_non_null(c);
    child_kill(c);
    loop_until(base, &k);
    assert_int_equal(k.calls, 1);
    assert_true(k.res.killed);
    /* Finished at shutdown before it started. */
    struct seen f = {0};
    c = child_start(base, &ks, on_done, &f);
    child_finish_now(c);
    assert_int_equal(f.calls, 1);
    spawn_service_stop();
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* nothing left */
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_captures_output_and_status),
        cmocka_unit_test(test_keeps_the_tail_of_long_output),
        cmocka_unit_test(test_deadline_kills),
        cmocka_unit_test(test_fd3_and_nothing_else_inherited),
        cmocka_unit_test(test_finish_now_calls_back_before_returning),
        cmocka_unit_test(test_missing_program_fails_to_start),
        cmocka_unit_test(test_runs_at_the_given_niceness),
        cmocka_unit_test(test_idle_class_at_nice_20),
        cmocka_unit_test(test_through_the_spawner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
