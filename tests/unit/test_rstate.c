/*
 * Unit tests for rstate: the runner's transition table. The rules that
 * keep the machine sane: nothing leaves DONE; a runner without its
 * connection (DOWN) or its lock (STANDBY) never steps on (IDLE); a window
 * is opened only between steps; a rollback follows only a replay's
 * statements; every state can be reached, and every state can stop. And
 * the jobs' own machines: a rebuild swaps only with the live runner held
 * and never leaves giving up; a replay's steps come in their order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rstate.h"

static void test_nothing_leaves_done(void **state)
{
    (void)state;
    for (int to = R_DOWN; to < R_DONE; to++)
        assert_false(rstate_allowed(R_DONE, (enum rstate)to));
    assert_true(rstate_allowed(R_DONE, R_DONE));
}

static void test_every_state_can_stop_and_lose_its_connection(void **state)
{
    (void)state;
    for (int from = R_DOWN; from < R_DONE; from++) {
        assert_true(rstate_allowed((enum rstate)from, R_DONE));
        assert_true(rstate_allowed((enum rstate)from, R_DOWN));
    }
}

static void test_no_step_without_connection_or_lock(void **state)
{
    (void)state;
    assert_false(rstate_allowed(R_DOWN, R_IDLE));
    assert_false(rstate_allowed(R_STANDBY, R_IDLE));
    assert_false(rstate_allowed(R_DOWN, R_OPEN));
    assert_false(rstate_allowed(R_STANDBY, R_REGISTER));
    assert_true(rstate_allowed(R_DOWN, R_SETUP));
    assert_true(rstate_allowed(R_STANDBY, R_CLAIM));
}

static void test_requests_start_between_steps(void **state)
{
    (void)state;
    for (int from = R_DOWN; from <= R_DONE; from++) {
        bool ok = rstate_allowed((enum rstate)from, R_OPEN);
        assert_int_equal(ok, from == R_IDLE || from == R_OPEN);
    }
    assert_true(rstate_allowed(R_OPEN, R_FETCH));
    assert_false(rstate_allowed(R_COMMIT, R_OPEN));
    assert_false(rstate_allowed(R_JOB, R_FETCH));
}

static void test_rollback_only_after_a_replays_statements(void **state)
{
    (void)state;
    for (int from = R_DOWN; from <= R_DONE; from++)
        if (from != R_APPLY && from != R_ROLLBACK)
            assert_false(rstate_allowed((enum rstate)from, R_ROLLBACK));
    assert_true(rstate_allowed(R_APPLY, R_ROLLBACK));
}

static void test_every_state_is_reachable_and_named(void **state)
{
    (void)state;
    for (int to = R_DOWN; to <= R_DONE; to++) {
        bool reachable = false;
        for (int from = R_DOWN; from <= R_DONE; from++)
            reachable |= from != to && rstate_allowed((enum rstate)from, (enum rstate)to);
        assert_true(reachable);
        assert_non_null(rstate_name((enum rstate)to));
        for (int other = R_DOWN; other < to; other++)
            assert_string_not_equal(rstate_name((enum rstate)other), rstate_name((enum rstate)to));
    }
    assert_string_equal(rstate_name((enum rstate)99), "?");
    assert_false(rstate_allowed((enum rstate)99, R_IDLE));
}

/*
 * A job's request goes out between steps, after its batch's statements,
 * after a fetch, or when its setup failed for good (a rebuild's abandon:
 * refused before, the rebuild ended as if lost).
 */
static void test_job_requests(void **state)
{
    (void)state;
    for (int from = R_DOWN; from <= R_DONE; from++) {
        bool ok = rstate_allowed((enum rstate)from, R_JOB);
        assert_int_equal(ok, from == R_IDLE || from == R_APPLY || from == R_OPEN ||
                                 from == R_FETCH || from == R_SETUP || from == R_JOB);
    }
    assert_true(rstate_allowed(R_JOB, R_IDLE));
    assert_true(rstate_allowed(R_JOB, R_WAIT));
    assert_true(rstate_allowed(R_JOB, R_NOTE));
    assert_false(rstate_allowed(R_JOB, R_COMMIT));
}

static void check_job_table(const struct job_states *t)
{
    for (int to = 0; to < t->count; to++) {
        assert_non_null(job_state_name(t, to));
        assert_true(job_state_allowed(t, to, to));
        bool reachable = to == 0; /* where the job begins */
        for (int from = 0; from < t->count; from++)
            reachable |= from != to && job_state_allowed(t, from, to);
        assert_true(reachable);
        for (int other = 0; other < to; other++)
            assert_string_not_equal(job_state_name(t, other), job_state_name(t, to));
    }
    assert_string_equal(job_state_name(t, t->count), "?");
    assert_string_equal(job_state_name(t, -1), "?");
    assert_false(job_state_allowed(t, t->count, 0));
    assert_false(job_state_allowed(t, 0, -1));
}

static void test_rebuild_swaps_only_when_held(void **state)
{
    (void)state;
    check_job_table(&rebuild_states);
    assert_string_equal(rebuild_states.job, "rebuild");
    for (int from = 0; from < RB_COUNT; from++) {
        assert_int_equal(job_state_allowed(&rebuild_states, from, RB_SWAP),
                         from == RB_HELD || from == RB_SWAP);
        /* Giving up is possible from anywhere, and final. */
        assert_true(job_state_allowed(&rebuild_states, from, RB_ABANDON));
        assert_int_equal(job_state_allowed(&rebuild_states, RB_ABANDON, from), from == RB_ABANDON);
    }
    /* The hold lasts: no way back to catching up with the live runner going on. */
    assert_false(job_state_allowed(&rebuild_states, RB_HELD, RB_CATCH_UP));
    assert_false(job_state_allowed(&rebuild_states, RB_SWAP, RB_CATCH_UP));
    assert_true(job_state_allowed(&rebuild_states, RB_SWAP, RB_HELD));
}

static void test_replay_steps_in_order(void **state)
{
    (void)state;
    check_job_table(&replay_states);
    assert_string_equal(replay_states.job, "replay");
    /* Every step may list again (the next batch, or a retry). */
    for (int from = 0; from < RP_COUNT; from++)
        assert_true(job_state_allowed(&replay_states, from, RP_LIST));
    assert_false(job_state_allowed(&replay_states, RP_LIST, RP_REPLAYED));
    assert_false(job_state_allowed(&replay_states, RP_REPLAYED, RP_APPLY));
    assert_false(job_state_allowed(&replay_states, RP_REPLAYED, RP_DONE));
    assert_false(job_state_allowed(&replay_states, RP_DONE, RP_APPLY));
    assert_true(job_state_allowed(&replay_states, RP_LIST, RP_APPLY));
    assert_true(job_state_allowed(&replay_states, RP_APPLY, RP_REPLAYED));
    assert_true(job_state_allowed(&replay_states, RP_APPLY, RP_DONE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_leaves_done),
        cmocka_unit_test(test_every_state_can_stop_and_lose_its_connection),
        cmocka_unit_test(test_no_step_without_connection_or_lock),
        cmocka_unit_test(test_requests_start_between_steps),
        cmocka_unit_test(test_rollback_only_after_a_replays_statements),
        cmocka_unit_test(test_every_state_is_reachable_and_named),
        cmocka_unit_test(test_job_requests),
        cmocka_unit_test(test_rebuild_swaps_only_when_held),
        cmocka_unit_test(test_replay_steps_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
