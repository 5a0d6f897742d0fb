/*
 * Unit tests for rstate: the runner's transition table. The rules that
 * keep the machine sane: nothing leaves DONE; a runner without its
 * connection (DOWN) or its lock (STANDBY) never steps on (IDLE); a window
 * is opened only between steps; a rollback follows only a replay's
 * statements; every state can be reached, and every state can stop.
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
    assert_false(rstate_allowed(R_SWAP, R_FETCH));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_leaves_done),
        cmocka_unit_test(test_every_state_can_stop_and_lose_its_connection),
        cmocka_unit_test(test_no_step_without_connection_or_lock),
        cmocka_unit_test(test_requests_start_between_steps),
        cmocka_unit_test(test_rollback_only_after_a_replays_statements),
        cmocka_unit_test(test_every_state_is_reachable_and_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
