/*
 * Unit tests for checkpoint: the checkpoint a batch commits. Each rule of
 * the snapshot window (docs/design.md) is one test: a window read to its
 * end closes and counts as applied up to its last position; a full fetch
 * keeps it open at the batch's end; a bad event cuts it before itself
 * (stop) or after its dead letter (skip); last_position never moves back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "checkpoint.h"

static char LO[] = "100:105:", HI[] = "100:120:";

/* An open window (lo, hi] with events at positions 11..40, applied up to pos. */
static struct checkpoint open_at(int64_t pos)
{
    return (struct checkpoint){.lo = LO,
                               .hi = HI,
                               .window_pos = pos,
                               .window_max = 40,
                               .last_position = 10,
                               .seq = 7,
                               .window_open = true};
}

static void after(const struct checkpoint *cur, const struct cp_batch *b, struct checkpoint *next,
                  enum cp_status *st, bool *stops)
{
    checkpoint_after(cur, b, next, st, stops);
    assert_int_equal(next->seq, cur->seq); /* the database moves it, not us */
    assert_ptr_equal(next->lo, cur->lo);
    assert_ptr_equal(next->hi, cur->hi);
}

static void test_a_window_read_to_its_end_closes(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(10), next;
    struct cp_batch b = {.fetched = true, .nevents = 5, .cut = 5, .batch_end = 40, .last_read = 35};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_false(next.window_open);
    assert_int_equal(next.window_pos, 0);
    /* the window's max, not the last event this projection read (ignored ones count too) */
    assert_int_equal(next.last_position, 40);
    assert_int_equal(st, CP_LIVE);
    assert_false(stops);
}

static void test_a_full_fetch_keeps_the_window_open_at_its_end(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(10), next;
    struct cp_batch b = {
        .fetched = true, .nevents = 5, .cut = 5, .more = true, .batch_end = 22, .last_read = 20};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_true(next.window_open);
    assert_int_equal(next.window_pos, 22); /* the read's end, past events of other types */
    assert_int_equal(next.window_max, 40);
    assert_int_equal(next.last_position, 22);
    assert_int_equal(st, CP_CATCHING_UP);
}

static void test_a_bad_event_under_stop_ends_the_batch_before_it(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(10), next;
    struct cp_batch b = {.fetched = true,
                         .nevents = 5,
                         .cut = 2,
                         .stop_on_error = true,
                         .batch_end = 40,
                         .cut_position = 13,
                         .last_read = 35};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_true(stops);
    assert_int_equal(st, CP_FAILED);
    assert_true(next.window_open);
    assert_int_equal(next.window_pos, 13); /* the bad event (the third) is still to come */
    assert_int_equal(next.last_position, 13);
}

static void test_a_bad_first_event_under_stop_moves_nothing(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(10), next;
    struct cp_batch b = {.fetched = true,
                         .nevents = 5,
                         .cut = 0,
                         .stop_on_error = true,
                         .batch_end = 40,
                         .last_read = 35};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_true(stops);
    assert_true(next.window_open);
    assert_int_equal(next.window_pos, 10);
    assert_int_equal(next.last_position, 10);
}

static void test_a_cut_under_skip_goes_on_after_the_dead_letter(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(10), next;
    /* the statement of event 3 failed: its dead letter is in, the batch ends after it */
    struct cp_batch b = {.fetched = true,
                         .nevents = 5,
                         .cut = 3,
                         .batch_end = 40,
                         .cut_position = 14,
                         .last_read = 35};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_false(stops);
    assert_int_equal(st, CP_CATCHING_UP);
    assert_true(next.window_open);
    assert_int_equal(next.window_pos, 14);
}

static void test_progress_in_memory_keeps_the_window(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(25), next;
    struct cp_batch b = {.fetched = false};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_true(next.window_open);
    assert_int_equal(next.window_pos, 25);
    assert_int_equal(next.last_position, 25);
    assert_int_equal(st, CP_CATCHING_UP);

    cur.window_open = false;
    after(&cur, &b, &next, &st, &stops);
    assert_int_equal(st, CP_LIVE);
    b.failed = true;
    after(&cur, &b, &next, &st, &stops);
    assert_int_equal(st, CP_FAILED); /* a failed projection's counts do not make it live */
}

static void test_last_position_never_moves_back(void **state)
{
    (void)state;
    struct checkpoint cur = open_at(10), next;
    cur.last_position = 50; /* e.g. a rebuild's swap kept the live one's higher position */
    struct cp_batch b = {.fetched = true, .nevents = 5, .cut = 5, .batch_end = 40, .last_read = 35};
    enum cp_status st;
    bool stops;
    after(&cur, &b, &next, &st, &stops);
    assert_int_equal(next.last_position, 50);
    b.more = true;
    b.batch_end = 20;
    after(&cur, &b, &next, &st, &stops);
    assert_int_equal(next.last_position, 50);
}

static void test_a_window_passed_counts_up_to_its_end(void **state)
{
    (void)state;
    struct checkpoint cp = open_at(12);
    checkpoint_pass(&cp);
    assert_false(cp.window_open);
    assert_int_equal(cp.window_pos, 0);
    assert_int_equal(cp.window_max, 0);
    assert_int_equal(cp.last_position, 40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_window_read_to_its_end_closes),
        cmocka_unit_test(test_a_full_fetch_keeps_the_window_open_at_its_end),
        cmocka_unit_test(test_a_bad_event_under_stop_ends_the_batch_before_it),
        cmocka_unit_test(test_a_bad_first_event_under_stop_moves_nothing),
        cmocka_unit_test(test_a_cut_under_skip_goes_on_after_the_dead_letter),
        cmocka_unit_test(test_progress_in_memory_keeps_the_window),
        cmocka_unit_test(test_last_position_never_moves_back),
        cmocka_unit_test(test_a_window_passed_counts_up_to_its_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
