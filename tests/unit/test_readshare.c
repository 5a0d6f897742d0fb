/*
 * Unit tests for the opens of the read share (src/readshare.c): a runner
 * about to open the window another runner is opening waits for that open,
 * even a slow one, and takes its answer, so that all read one window; a
 * failed open frees it at once. A live window's only batch outlives the
 * runner that read it, for the runners that take the window after it. The
 * opens form a chain that a runner woken later still takes, and nobody opens
 * a second window ahead of a runner that has not taken the first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <libpq-fe.h>

#include "pace.h"
#include "readshare.h"

#define LO  "100:100:"
#define HI  "100:120:"
#define HI2 "100:140:"

struct fixture {
    struct ev_loop *loop;
    struct readshare *share;
    struct rs_member a, b;
    int b_kicks;
};

static void count_kick(void *arg)
{
    (*(int *)arg)++;
}

static void no_kick(void *arg)
{
    (void)arg;
}

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof f);
    f.loop = ev_loop_new(EVFLAG_AUTO);
    f.share = readshare_new(f.loop, 100, 4);
    if (!f.loop || !f.share)
        return -1;
    readshare_join(f.share, &f.a, no_kick, NULL);
    readshare_join(f.share, &f.b, count_kick, &f.b_kicks);
    f.a.sharing = f.b.sharing = true;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    readshare_leave(&f->a);
    readshare_leave(&f->b);
    readshare_free(f->share);
    ev_loop_destroy(f->loop);
    return 0;
}

/* The loop's clock (ev_now) moves on by seconds. */
static void let_time_pass(struct fixture *f, double seconds)
{
    usleep((useconds_t)(seconds * 1e6));
    ev_now_update(f->loop);
}

/* a sends the open of window LO; b asks for the same window `after` seconds later. */
static uint64_t a_opens_then_b_asks(struct fixture *f, double after, enum rs_answer *b_answer)
{
    struct rs_window w;
    assert_int_equal(readshare_open(&f->a, LO, &w), RS_SEND);
    uint64_t ticket = readshare_open_sent(&f->a, LO);
    assert_true(ticket > 0);
    if (after > 0)
        let_time_pass(f, after);
    *b_answer = readshare_open(&f->b, LO, &w);
    return ticket;
}

/*
 * The open of a big backlog takes seconds (a 5M-event backlog's did). A
 * runner that gave up waiting after a second opened a window of its own at
 * another hi and read the whole backlog alone (tests/bench/RESULTS.md).
 */
static void a_slow_open_is_waited_for_and_shared(void **state)
{
    struct fixture *f = *state;
    enum rs_answer b_answer;
    uint64_t ticket = a_opens_then_b_asks(f, READSHARE_STALE_S + 0.2, &b_answer);
    assert_int_equal(b_answer, RS_WAIT);

    struct rs_window done = {.hi = HI, .first = 101, .last = 119, .head = 119};
    readshare_open_done(f->share, ticket, &done);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(f->b_kicks, 1);

    struct rs_window w;
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_HIT);
    assert_string_equal(w.hi, HI);
    assert_int_equal(w.first, 101);
    assert_int_equal(w.last, 119);
}

static void a_failed_open_frees_the_waiter_at_once(void **state)
{
    struct fixture *f = *state;
    enum rs_answer b_answer;
    uint64_t ticket = a_opens_then_b_asks(f, 0, &b_answer);
    assert_int_equal(b_answer, RS_WAIT);

    readshare_open_failed(f->share, ticket);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(f->b_kicks, 1);
    struct rs_window w;
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_SEND);
}

/* A fetched batch's rows: only the first position is read by the share. */
static PGresult *rows_from(int64_t first)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attr = {.name = "global_position", .format = 0, .typid = 20, .typlen = 8};
    char text[21];
    snprintf(text, sizeof text, "%lld", (long long)first);
    assert_non_null(res);
    assert_int_equal(PQsetResultAttrs(res, 1, &attr), 1);
    assert_int_equal(PQsetvalue(res, 0, 0, text, (int)strlen(text)), 1);
    return res;
}

/*
 * a opens window (LO, HI) holding positions first..last, reads its first
 * batch and passes it, as a projection with nothing to do there does; then
 * b takes the open and asks for that batch.
 */
static enum rs_answer b_fetches_after_a_passed(struct fixture *f, int64_t first, int64_t last)
{
    struct rs_window w;
    assert_int_equal(readshare_open(&f->a, LO, &w), RS_SEND);
    uint64_t ticket = readshare_open_sent(&f->a, LO);
    struct rs_window done = {.hi = HI, .first = first, .last = last, .head = last};
    readshare_open_done(f->share, ticket, &done);

    struct rs_batch *batch;
    assert_int_equal(readshare_fetch(&f->a, LO, HI, first - 1, &batch), RS_SEND);
    assert_non_null(batch);
    readshare_fetched(f->share, batch, rows_from(first), last, false);
    readshare_release(f->share, batch);
    readshare_left(&f->a);

    assert_int_equal(readshare_open(&f->b, LO, &w), RS_HIT);
    enum rs_answer got = readshare_fetch(&f->b, LO, HI, first - 1, &batch);
    if (batch) {
        if (got == RS_SEND)
            readshare_failed(f->share, batch);
        readshare_release(f->share, batch);
    }
    return got;
}

/* At 1,000 events/s, 7,359 of 24,198 fetches in 15 s read a live window again. */
static void a_live_windows_batch_outlives_its_reader(void **state)
{
    assert_int_equal(b_fetches_after_a_passed(*state, 101, 119), RS_HIT);
}

/* A backlog's first batch is no use once passed: memory stays bounded. */
static void a_backlogs_first_batch_does_not(void **state)
{
    assert_int_equal(b_fetches_after_a_passed(*state, 101, 1000), RS_SEND);
}

/* a sends the open of (lo, hi) and it comes back holding first..last (empty if last < first). */
static void a_opened(struct fixture *f, const char *lo, const char *hi, int64_t first, int64_t last)
{
    uint64_t ticket = readshare_open_sent(&f->a, lo);
    assert_true(ticket > 0);
    struct rs_window done = {
        .hi = hi, .first = first, .last = last, .head = last, .empty = last < first};
    readshare_open_done(f->share, ticket, &done);
}

/* a opens window (LO, HI), holding positions 101..119, and m reads its only batch. */
static void opened_and_read(struct fixture *f, struct rs_member *m)
{
    struct rs_batch *batch;
    a_opened(f, LO, HI, 101, 119);
    assert_int_equal(readshare_fetch(m, LO, HI, 100, &batch), RS_SEND);
    readshare_fetched(f->share, batch, rows_from(101), 119, false);
    readshare_release(f->share, batch);
}

/*
 * Where a shared batch ends. Cut by batch_max_bytes, it ends at its last
 * event: ending at its cell's end claimed the cell's events it did not
 * bring, and the runners skipped them.
 */
static void a_batch_cut_by_bytes_ends_at_its_last_event(void **state)
{
    (void)state;
    /* The grid of 100: the cell of 101 ends at 200, or at the window's end. */
    assert_int_equal(readshare_batch_end(101, 150, false, 100, 1000), 200);
    assert_int_equal(readshare_batch_end(101, 150, false, 100, 180), 180);
    assert_int_equal(readshare_batch_end(100, 100, false, 100, 1000), 100);
    assert_int_equal(readshare_batch_end(1, 1, false, 1, 5), 1);
    assert_int_equal(readshare_batch_end(101, 103, true, 100, 1000), 103);
    /* One big event alone. */
    assert_int_equal(readshare_batch_end(150, 150, true, 100, 1000), 150);
    /* No event: the rest of the window has none. */
    assert_int_equal(readshare_batch_end(0, 0, false, 100, 1000), 1000);
    assert_int_equal(readshare_batch_end(0, 0, true, 100, 1000), 1000);
}

/* A runner waits when the slowest reader's unpassed batches reach the count or the bytes. */
static void pacing_counts_batches_and_bytes(void **state)
{
    (void)state;
    assert_false(readshare_too_far_ahead(0, 0, 4, 16));
    assert_false(readshare_too_far_ahead(3, 15, 4, 16));
    assert_true(readshare_too_far_ahead(4, 0, 4, 16));
    assert_true(readshare_too_far_ahead(1, 16, 4, 16));
    /* No byte bound; and the bound never stops a runner with nothing ahead. */
    assert_false(readshare_too_far_ahead(3, 1 << 30, 4, 0));
    assert_false(readshare_too_far_ahead(0, 0, 4, 1));
}

/* Two rows, first and last. */
static PGresult *two_rows(int64_t first, int64_t last)
{
    PGresult *res = rows_from(first);
    char text[21];
    snprintf(text, sizeof text, "%lld", (long long)last);
    assert_int_equal(PQsetvalue(res, 1, 0, text, (int)strlen(text)), 1);
    return res;
}

/* A cut batch covers up to its last event only: the next fetch goes on from there. */
static void a_cut_batch_is_not_taken_past_its_end(void **state)
{
    struct fixture *f = *state;
    struct rs_batch *batch, *got;
    a_opened(f, LO, HI, 101, 400);
    assert_int_equal(readshare_fetch(&f->a, LO, HI, 100, &batch), RS_SEND);
    readshare_fetched(f->share, batch, two_rows(101, 105), 400, true);
    assert_int_equal(batch->end, 105);
    /* b, at 104, takes it; at 105 it needs the next read. */
    assert_int_equal(readshare_fetch(&f->b, LO, HI, 104, &got), RS_HIT);
    assert_ptr_equal(got, batch);
    readshare_release(f->share, got);
    assert_int_equal(readshare_fetch(&f->b, LO, HI, 105, &got), RS_SEND);
    assert_non_null(got);
    readshare_failed(f->share, got);
    readshare_release(f->share, got);
    readshare_release(f->share, batch);
}

/* A notification round that wakes b after the last open was sent. */
static void b_woken_after(struct fixture *f)
{
    readshare_wake_round(f->share);
    readshare_woken(&f->b);
}

/*
 * A runner still applying the window before took the next one opened while
 * it worked only if it was woken before that open; otherwise it sent an
 * open of its own from the same lo: five opens per batch applied at 2,800
 * events/s. It takes it now, and opens again after it.
 */
static void a_window_older_than_the_wake_up_is_taken(void **state)
{
    struct fixture *f = *state;
    a_opened(f, LO, HI, 101, 119);
    b_woken_after(f);
    struct rs_window w;
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_HIT);
    assert_string_equal(w.hi, HI);
    assert_true(w.stale);
}

/* The window before the last stays on offer: b takes it, then the last. */
static void the_window_before_the_last_is_taken(void **state)
{
    struct fixture *f = *state;
    a_opened(f, LO, HI, 101, 119);
    a_opened(f, HI, HI2, 121, 139);
    struct rs_window w;
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_HIT);
    assert_string_equal(w.hi, HI);
    assert_true(w.stale);
    assert_int_equal(readshare_open(&f->b, HI, &w), RS_HIT);
    assert_string_equal(w.hi, HI2);
}

/*
 * b reads window (LO, HI) while a opened (HI, HI2) and passed it: a, woken
 * again, waits for b to take (HI, HI2) before it opens from HI2, and b's
 * leaving its window lets it go.
 */
static void no_second_window_ahead_of_a_reader(void **state)
{
    struct fixture *f = *state;
    opened_and_read(f, &f->b);
    a_opened(f, HI, HI2, 121, 139);

    readshare_wake_round(f->share);
    readshare_woken(&f->a);
    struct rs_window w;
    assert_int_equal(readshare_open(&f->a, HI2, &w), RS_WAIT);
    readshare_left(&f->b);
    assert_int_equal(readshare_open(&f->a, HI2, &w), RS_SEND);
}

/* A slow reader holds the next open back for READSHARE_GATE_S at most. */
static void a_slow_reader_holds_the_next_open_back_briefly(void **state)
{
    struct fixture *f = *state;
    opened_and_read(f, &f->a);
    a_opened(f, HI, HI2, 121, 139);

    b_woken_after(f);
    struct rs_window w;
    assert_int_equal(readshare_open(&f->b, HI2, &w), RS_WAIT);
    /* The gate's own timer kicks b, not the staleness timer a quarter second later. */
    double t0 = ev_time();
    ev_run(f->loop, EVRUN_ONCE);
    assert_true(ev_time() - t0 < READSHARE_STALE_S / 8);
    assert_int_equal(f->b_kicks, 1);
    assert_int_equal(readshare_open(&f->b, HI2, &w), RS_SEND);
}

/*
 * An empty window whose hi is its lo, taken again and again, overflowed the
 * stack: as the last open, and as the one before an empty last open.
 */
static void an_empty_stale_window_is_not_taken(void **state)
{
    struct fixture *f = *state;
    struct rs_window w;
    a_opened(f, LO, LO, 0, -1);
    b_woken_after(f);
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_SEND);
    a_opened(f, LO, LO, 0, -1);
    b_woken_after(f);
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_SEND);
}

/* An empty window that moves on is taken: the runner stays on the chain. */
static void an_empty_stale_window_that_moves_on_is_taken(void **state)
{
    struct fixture *f = *state;
    struct rs_window w;
    a_opened(f, LO, HI, 0, -1);
    b_woken_after(f);
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_HIT);
    assert_string_equal(w.hi, HI);
    assert_true(w.empty);
}

/* The window before the last keeps its only batch too, for the runners that take it. */
static void the_window_before_the_lasts_batch_is_kept(void **state)
{
    struct fixture *f = *state;
    struct rs_batch *batch;
    opened_and_read(f, &f->a);
    readshare_left(&f->a);
    a_opened(f, HI, HI2, 121, 139);
    readshare_left(&f->a); /* and passes that one: the share prunes */

    struct rs_window w;
    assert_int_equal(readshare_open(&f->b, LO, &w), RS_HIT);
    assert_int_equal(readshare_fetch(&f->b, LO, HI, 100, &batch), RS_HIT);
    readshare_release(f->share, batch);
}

/* A failed open ends the chain: the batch of the window before it is not kept. */
static void a_failed_open_drops_the_chain(void **state)
{
    struct fixture *f = *state;
    struct rs_batch *batch;
    opened_and_read(f, &f->a);
    readshare_left(&f->a);
    readshare_open_failed(f->share, readshare_open_sent(&f->a, HI));

    assert_int_equal(readshare_fetch(&f->b, LO, HI, 100, &batch), RS_SEND);
    readshare_failed(f->share, batch);
    readshare_release(f->share, batch);
}

/* ev_now() is a wall clock time: a double resolves it to about 0.2 us */
static void assert_next_open_in(struct fixture *f, double want)
{
    double wait = readshare_next_open(f->share, 2) - ev_now(f->loop);
    if (want == 0)
        assert_true(wait <= 0);
    else
        assert_true(wait > want - 1e-6 && wait < want + 1e-6);
}

/* a opens from lo to hi `after` seconds later, finding first..last. */
static void a_opened_after(struct fixture *f, double after, const char *lo, const char *hi,
                           int64_t first, int64_t last)
{
    let_time_pass(f, after);
    a_opened(f, lo, hi, first, last);
}

/*
 * The share paces its opens by the rate its opens saw (pace.h): at 1,000
 * events/s and below min_read_interval_ms after the last open, ten times
 * that at a high rate, and not at all after an open that found nothing new.
 */
static void the_next_open_waits_longer_at_a_high_rate(void **state)
{
    struct fixture *f = *state;
    a_opened(f, LO, HI, 101, 119);
    assert_next_open_in(f, 0); /* the first: nothing to compare its head with */
    a_opened_after(f, 0.01, HI, HI2, 120, 139);
    assert_next_open_in(f, 0.002);
    a_opened_after(f, 0.1, HI2, "100:160:", 140, 20139); /* 20,000 events in 0.1 s */
    assert_next_open_in(f, 0.002 * PACE_MAX_FACTOR);
    /* found nothing new: the next event is the first after a quiet spell */
    a_opened_after(f, 0.01, "100:160:", "100:180:", 20140, 20139);
    assert_next_open_in(f, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_slow_open_is_waited_for_and_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_open_frees_the_waiter_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(a_live_windows_batch_outlives_its_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(a_backlogs_first_batch_does_not, setup, teardown),
        cmocka_unit_test(a_batch_cut_by_bytes_ends_at_its_last_event),
        cmocka_unit_test(pacing_counts_batches_and_bytes),
        cmocka_unit_test_setup_teardown(a_cut_batch_is_not_taken_past_its_end, setup, teardown),
        cmocka_unit_test_setup_teardown(a_window_older_than_the_wake_up_is_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(the_window_before_the_last_is_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(no_second_window_ahead_of_a_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(a_slow_reader_holds_the_next_open_back_briefly, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_empty_stale_window_is_not_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(an_empty_stale_window_that_moves_on_is_taken, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(the_window_before_the_lasts_batch_is_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(a_failed_open_drops_the_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(the_next_open_waits_longer_at_a_high_rate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
