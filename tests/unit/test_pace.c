/*
 * Unit tests for pace: the read interval follows the event rate the opens
 * saw, from min_read_interval_ms at 1,000 events/s and below to ten times
 * it, and drops back after a quiet spell.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>

#include "pace.h"

static void check_near(double got, double want, double eps, int line)
{
    if (fabs(got - want) > eps)
        fail_msg("line %d: got %.12g, want %.12g", line, got, want);
}
#define assert_near(got, want, eps) check_near((got), (want), (eps), __LINE__)

/* Opens every `step` seconds for `seconds`, the head moving at `rate` events/s. */
static double steady(struct pace *p, double t, double seconds, double step, double rate)
{
    for (double end = t + seconds; t < end; t += step)
        pace_note(p, t, p->head + (int64_t)llround(rate * step));
    return t;
}

static void test_never_opened_waits_nothing(void **state)
{
    (void)state;
    struct pace p = {0};
    assert_near(pace_interval(&p, 2), 0, 1e-12);
    pace_note(&p, 100, 5000); /* the first open: nothing to compare with */
    assert_near(pace_interval(&p, 2), 0, 1e-12);
}

/*
 * An open that found nothing new (the wake-up as the daemon connects, say)
 * must not hold back the next event: that one is the first after a quiet
 * spell. (CI: the listener's first wake-up right after the first open made
 * the first event wait ~0.75 s of a 1 s interval.)
 */
static void test_an_open_that_found_nothing_new_waits_nothing(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    pace_note(&p, 100.01, 1);
    assert_near(pace_interval(&p, 2), 0.002, 1e-12);
    pace_note(&p, 100.02, 1);
    assert_near(pace_interval(&p, 2), 0, 1e-12);
    pace_note(&p, 100.02, 2); /* found more in the same moment: moving again */
    assert_near(pace_interval(&p, 2), 0.002, 1e-12);
    pace_note(&p, 100.02, 2);
    assert_near(pace_interval(&p, 2), 0.002, 1e-12);
    assert_near(pace_interval(&p, 0), 0, 1e-12);
}

static void test_up_to_the_base_rate_is_the_minimum(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 5000);
    steady(&p, 100.005, 5, 0.005, 800);
    assert_true(p.moving);
    assert_near(p.rate, 800, 20);
    assert_near(pace_interval(&p, 2), 0.002, 1e-12);
}

static void test_grows_with_the_rate(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    steady(&p, 100.005, 5, 0.005, 5000);
    assert_near(p.rate, 5000, 50);
    assert_near(pace_interval(&p, 2), 0.010, 0.0002);
}

static void test_capped_at_ten_times(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    steady(&p, 100.02, 5, 0.02, 50000);
    assert_near(pace_interval(&p, 2), 0.002 * PACE_MAX_FACTOR, 1e-12);
}

static void test_a_quiet_spell_brings_it_back(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    double t = steady(&p, 100.01, 5, 0.01, 5000);
    int64_t head = p.head;
    pace_note(&p, t + 10, head + 1); /* one event in ten seconds */
    assert_true(p.rate < PACE_BASE_RATE);
    assert_near(pace_interval(&p, 2), 0.002, 1e-12);
}

static void test_opens_at_the_same_moment_count_together(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    pace_note(&p, 101, 3000);
    double before = p.rate;
    pace_note(&p, 101, 3000); /* a second open in the same loop iteration */
    assert_near(p.rate, before, 1e-9);
    pace_note(&p, 101, 3500); /* found more in the same moment: counted with the next */
    pace_note(&p, 101.1, 4000);
    struct pace q = {0};
    pace_note(&q, 100, 0);
    pace_note(&q, 101, 3000);
    pace_note(&q, 101.1, 4000);
    assert_near(p.rate, q.rate, 1e-9);
}

static void test_a_head_going_back_starts_over(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    steady(&p, 100.01, 2, 0.01, 5000);
    pace_note(&p, 103, 10); /* the table was emptied and filled again */
    assert_near(p.rate, 0, 1e-12);
    assert_near(pace_interval(&p, 2), 0, 1e-12); /* like a first open */
    pace_note(&p, 103.01, 11);
    assert_near(pace_interval(&p, 2), 0.002, 1e-12);
}

static void test_a_clock_stepped_back_keeps_the_rate(void **state)
{
    (void)state;
    struct pace p = {0};
    pace_note(&p, 100, 0);
    double t = steady(&p, 100.01, 2, 0.01, 3000);
    double before = p.rate;
    pace_note(&p, t - 3600, p.head + 30);
    assert_near(p.rate, before, 1e-9);
    pace_note(&p, t - 3600 + 0.01, p.head + 30); /* and goes on from there */
    assert_near(p.rate, 3000, 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_opened_waits_nothing),
        cmocka_unit_test(test_an_open_that_found_nothing_new_waits_nothing),
        cmocka_unit_test(test_up_to_the_base_rate_is_the_minimum),
        cmocka_unit_test(test_grows_with_the_rate),
        cmocka_unit_test(test_capped_at_ten_times),
        cmocka_unit_test(test_a_quiet_spell_brings_it_back),
        cmocka_unit_test(test_opens_at_the_same_moment_count_together),
        cmocka_unit_test(test_a_head_going_back_starts_over),
        cmocka_unit_test(test_a_clock_stepped_back_keeps_the_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
