/*
 * Unit tests for bulk: which statements hold events, the key set that
 * decides when held events must go first (also past its first growth),
 * and the array literals a held statement is sent with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "bulk.h"

enum { ST_SINGLE, ST_BULK, ST_BULK_NO_PARAMS, ST_BULK_KEY2, NSTMTS };

static const struct pj_statement statements[] = {
    [ST_SINGLE] = {"UPDATE t SET x = $2 WHERE id = $1", 2, .key = 1},
    [ST_BULK] = {"UPDATE t SET x = e.x FROM unnest($1::text[], $2::text[]) e(id, x)", 2,
                 PJ_BULK | PJ_COUNT_IGNORED, .key = 1},
    [ST_BULK_NO_PARAMS] = {"UPDATE t SET x = 0", 0, PJ_BULK},
    [ST_BULK_KEY2] = {"UPDATE t SET x = e.x FROM unnest($1::text[], $2::text[]) e(x, id)", 2,
                      PJ_BULK, .key = 2},
    PJ_STATEMENTS_END,
};

static const struct projection proj = {.name = "t", .statements = statements};

static int setup(void **state)
{
    static struct bulk b;
    if (bulk_init(&b, &proj, NSTMTS) < 0)
        return -1;
    *state = &b;
    return 0;
}

static int teardown(void **state)
{
    bulk_free(*state);
    return 0;
}

static void test_only_bulk_statements_with_a_key_hold(void **state)
{
    struct bulk *b = *state;
    assert_null(b->stmts[ST_SINGLE].cols);
    assert_non_null(b->stmts[ST_BULK].cols);
    assert_null(b->stmts[ST_BULK_NO_PARAMS].cols); /* no key to hold it by: sent alone */
    assert_non_null(b->stmts[ST_BULK_KEY2].cols);
}

/* The statement says which parameter is its key: the held key is $2's value. */
static void test_the_declared_key_is_held(void **state)
{
    struct bulk *b = *state;
    const char *row[] = {"value", "k"};
    assert_int_equal(bulk_hold(b, ST_BULK_KEY2, 3, row), 0);
    assert_true(bulk_conflicts(b, "k"));
    assert_false(bulk_conflicts(b, "value"));
    assert_int_equal(b->stmts[ST_BULK_KEY2].flags, PJ_BULK);
}

static void test_a_held_key_conflicts_and_others_do_not(void **state)
{
    struct bulk *b = *state;
    assert_false(bulk_conflicts(b, "a"));
    assert_false(bulk_conflicts(b, NULL)); /* nothing held: nothing to send first */
    const char *row[] = {"a", "1"};
    assert_int_equal(bulk_hold(b, ST_BULK, 7, row), 0);
    assert_true(bulk_conflicts(b, "a"));
    assert_false(bulk_conflicts(b, "b"));
    assert_true(bulk_conflicts(b, NULL)); /* about no one row: everything goes first */
    assert_int_equal(b->held, 1);
    assert_int_equal(b->stmts[ST_BULK].event, 7);
    assert_int_equal(b->stmts[ST_BULK].flags, PJ_BULK | PJ_COUNT_IGNORED); /* the statement's */
    bulk_clear(b);
    assert_false(bulk_conflicts(b, "a"));
    assert_int_equal(b->held, 0);
}

static void test_parameters_become_array_literals(void **state)
{
    struct bulk *b = *state;
    const char *r1[] = {"k1", "plain"};
    const char *r2[] = {"k2", NULL};
    const char *r3[] = {"k3", "NULL"};
    const char *r4[] = {"k4", "say \"hi\", \\o/ {x}"};
    assert_int_equal(bulk_hold(b, ST_BULK, 0, r1), 0);
    assert_int_equal(bulk_hold(b, ST_BULK, 1, r2), 0);
    assert_int_equal(bulk_hold(b, ST_BULK, 2, r3), 0);
    assert_int_equal(bulk_hold(b, ST_BULK, 3, r4), 0);
    assert_string_equal(bulk_param(b, ST_BULK, 0), "{\"k1\",\"k2\",\"k3\",\"k4\"}");
    assert_string_equal(bulk_param(b, ST_BULK, 1),
                        "{\"plain\",NULL,\"NULL\",\"say \\\"hi\\\", \\\\o/ {x}\"}");
    assert_int_equal(b->stmts[ST_BULK].n, 4);
    assert_int_equal(b->stmts[ST_BULK].event, 0); /* the first held event's */
    bulk_clear(b);
    const char *r5[] = {"k5", "again"};
    assert_int_equal(bulk_hold(b, ST_BULK, 5, r5), 0);
    assert_string_equal(bulk_param(b, ST_BULK, 1), "{\"again\"}");
    bulk_clear(b);
}

static void test_many_keys_grow_the_set_and_stay_found(void **state)
{
    struct bulk *b = *state;
    enum { N = 5000 };
    static char keys[N][40];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "00000000-0000-4000-8000-%012d", i);
        const char *row[] = {keys[i], "v"};
        assert_int_equal(bulk_hold(b, ST_BULK, i, row), 0);
    }
    assert_int_equal(b->nkeys, N);
    assert_true(b->keycap >= 2 * N);
    for (int i = 0; i < N; i++)
        assert_true(bulk_conflicts(b, keys[i]));
    assert_false(bulk_conflicts(b, "00000000-0000-4000-8000-999999999999"));
    /* The same key twice is one key. */
    const char *again[] = {keys[0], "w"};
    assert_int_equal(bulk_hold(b, ST_BULK, N, again), 0);
    assert_int_equal(b->nkeys, N);
    assert_int_equal(b->held, N + 1);
    bulk_clear(b);
    for (int i = 0; i < N; i += 97)
        assert_false(bulk_conflicts(b, keys[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_only_bulk_statements_with_a_key_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_declared_key_is_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_held_key_conflicts_and_others_do_not, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_parameters_become_array_literals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_keys_grow_the_set_and_stay_found, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
