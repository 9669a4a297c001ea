#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "corral/run.h"

/* The paths of DESIGN.md §5, each step allowed. */
static const enum run_phase paths[][8] = {
    {RUN_PHASE_QUEUED, RUN_PHASE_SANDBOX_CONNECT, RUN_PHASE_SANDBOX_PREPARE,
     RUN_PHASE_CLI_LAUNCH, RUN_PHASE_STREAMING, RUN_PHASE_FINALIZE,
     RUN_PHASE_CHECKPOINT, RUN_PHASE_DONE},
    {RUN_PHASE_QUEUED, RUN_PHASE_SANDBOX_PREPARE, RUN_PHASE_CLI_LAUNCH,
     RUN_PHASE_STREAMING, RUN_PHASE_AWAITING_PERMISSION, RUN_PHASE_STREAMING,
     RUN_PHASE_FINALIZE, RUN_PHASE_DONE},
    {RUN_PHASE_QUEUED, RUN_PHASE_SANDBOX_PREPARE, RUN_PHASE_STREAMING,
     RUN_PHASE_FINALIZE, RUN_PHASE_DONE, RUN_PHASE_DONE, RUN_PHASE_DONE,
     RUN_PHASE_DONE},
};

static void test_design_paths(void **state)
{
    (void)state;
    for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++)
        for (int i = 0; i + 1 < 8 && !run_phase_terminal(paths[p][i]); i++)
            assert_true(run_phase_allowed(paths[p][i], paths[p][i + 1]));
}

static void test_failure_and_cancel(void **state)
{
    (void)state;
    for (int p = RUN_PHASE_QUEUED; p < RUN_PHASE_CHECKPOINT; p++) {
        assert_true(run_phase_allowed(p, RUN_PHASE_FAILED));
        assert_true(run_phase_allowed(p, RUN_PHASE_CANCELLED));
    }
    /* CHECKPOINT always ends in DONE. */
    assert_false(run_phase_allowed(RUN_PHASE_CHECKPOINT, RUN_PHASE_FAILED));
    assert_false(run_phase_allowed(RUN_PHASE_CHECKPOINT,
                                   RUN_PHASE_CANCELLED));
}

static void test_refused(void **state)
{
    (void)state;
    for (int t = 0; t < RUN_PHASE_COUNT; t++) {
        assert_false(run_phase_allowed(RUN_PHASE_DONE, t));
        assert_false(run_phase_allowed(RUN_PHASE_FAILED, t));
        assert_false(run_phase_allowed(RUN_PHASE_CANCELLED, t));
        assert_false(run_phase_allowed(t, RUN_PHASE_QUEUED));
    }
    assert_false(run_phase_allowed(RUN_PHASE_QUEUED, RUN_PHASE_DONE));
    assert_false(run_phase_allowed(RUN_PHASE_CLI_LAUNCH,
                                   RUN_PHASE_FINALIZE));
    assert_false(run_phase_allowed(RUN_PHASE_QUEUED, RUN_PHASE_CLI_LAUNCH));
    assert_false(run_phase_allowed(RUN_PHASE_COUNT, RUN_PHASE_DONE));
}

static void test_wire_names(void **state)
{
    (void)state;
    for (int p = 0; p < RUN_PHASE_COUNT; p++)
        assert_int_equal(run_phase_parse(run_phase_name(p)), p);
    assert_int_equal(run_phase_parse("nope"), -1);
    assert_string_equal(run_phase_message_status(RUN_PHASE_CHECKPOINT),
                        "completed");
    assert_string_equal(run_phase_chat_status(RUN_PHASE_CHECKPOINT),
                        "running");
    assert_string_equal(run_phase_message_status(RUN_PHASE_FINALIZE),
                        "running");
    assert_string_equal(run_phase_chat_status(RUN_PHASE_QUEUED), "queued");
    assert_string_equal(run_phase_chat_status(RUN_PHASE_DONE), "idle");
    assert_string_equal(
        run_phase_message_status(RUN_PHASE_AWAITING_PERMISSION),
        "awaiting_permission");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_paths),
        cmocka_unit_test(test_failure_and_cancel),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_wire_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
