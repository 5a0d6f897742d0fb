/*
 * Unit tests for backoff: exponential growth, the cap, the jitter range and
 * reset, checked against delays computed here independently.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>

#include "backoff.h"

#define EPS 1e-9

/* cmocka 1.1.5 has only a float comparison; delays are doubles. */
static void check_near(double got, double want, double eps, int line)
{
    if (fabs(got - want) > eps)
        fail_msg("line %d: got %.12g, want %.12g", line, got, want);
}
#define assert_near(got, want, eps) check_near((got), (want), (eps), __LINE__)

/* rnd = UINT32_MAX is jitter 1.0, rnd = 0 is jitter 0.5. */
#define NO_JITTER UINT32_MAX
#define HALF      0u

static void test_doubles_until_capped(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(1.0, 30.0);
    const double expected[] = {1, 2, 4, 8, 16, 30, 30, 30};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
        assert_near(backoff_next(&b, NO_JITTER), expected[i], EPS);
}

static void test_fractional_initial(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(0.25, 1.5);
    const double expected[] = {0.25, 0.5, 1.0, 1.5, 1.5};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
        assert_near(backoff_next(&b, NO_JITTER), expected[i], EPS);
}

static void test_smallest_jitter_halves(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(1.0, 8.0);
    const double expected[] = {0.5, 1, 2, 4, 4};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
        assert_near(backoff_next(&b, HALF), expected[i], EPS);
}

static void test_jitter_midpoint(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(2.0, 60.0);
    assert_near(backoff_next(&b, UINT32_MAX / 2), 1.5, 1e-6);
}

static uint32_t lcg(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

static void test_jitter_stays_in_range(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    bool below_nominal = false;
    for (int run = 0; run < 200; run++) {
        struct backoff b = BACKOFF_INIT(0.5, 20.0);
        for (int k = 0; k < 12; k++) {
            double nominal = fmin(20.0, 0.5 * pow(2, k));
            double d = backoff_next(&b, lcg(&seed));
            assert_true(d >= 0.5 * nominal - EPS);
            assert_true(d <= nominal + EPS);
            below_nominal |= d < 0.95 * nominal;
        }
    }
    assert_true(below_nominal); /* jitter is really applied */
}

static void test_reset_starts_over(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(1.0, 30.0);
    for (int i = 0; i < 4; i++)
        backoff_next(&b, NO_JITTER);
    assert_near(backoff_next(&b, NO_JITTER), 16, EPS);
    backoff_reset(&b);
    assert_int_equal(b.attempts, 0);
    assert_near(backoff_next(&b, NO_JITTER), 1, EPS);
    assert_near(backoff_next(&b, NO_JITTER), 2, EPS);
}

static void test_many_failures_stay_at_cap(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(0.001, 5.0);
    double d = 0;
    for (int i = 0; i < 100000; i++)
        d = backoff_next(&b, NO_JITTER);
    assert_true(isfinite(d));
    assert_near(d, 5.0, EPS);
    backoff_reset(&b);
    assert_near(backoff_next(&b, NO_JITTER), 0.001, EPS);
}

static void test_initial_above_cap(void **state)
{
    (void)state;
    struct backoff b = BACKOFF_INIT(10.0, 3.0);
    assert_near(backoff_next(&b, NO_JITTER), 3.0, EPS);
    assert_near(backoff_next(&b, HALF), 1.5, EPS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_until_capped),      cmocka_unit_test(test_fractional_initial),
        cmocka_unit_test(test_smallest_jitter_halves),    cmocka_unit_test(test_jitter_midpoint),
        cmocka_unit_test(test_jitter_stays_in_range),     cmocka_unit_test(test_reset_starts_over),
        cmocka_unit_test(test_many_failures_stay_at_cap), cmocka_unit_test(test_initial_above_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
