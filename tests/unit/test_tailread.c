/*
 * Unit tests for tailread, on canned results built client-side (libpq's
 * PQmakeEmptyPGresult and PQsetvalue): an open's row gives the window or
 * its emptiness; trouble with transaction ids is worded by kind; a window
 * moves the checkpoint (an empty one slides it shut); a shared batch is
 * read from the first row past our position; the byte bound is read from
 * the last row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runner_sql.h"
#include "tailread.h"

/* A result of ncols text columns and nrows rows; NULL cells where cells[i] is NULL. */
static PGresult *canned(int ncols, int nrows, const char *const *cells)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc *attrs = calloc((size_t)ncols, sizeof *attrs);
    char names[32][8];
    assert_non_null(res);
    assert_non_null(attrs);
    for (int c = 0; c < ncols; c++) {
        snprintf(names[c], sizeof names[c], "c%d", c);
        attrs[c] = (PGresAttDesc){
            .name = names[c], .format = 0, .typid = 25, .typlen = -1, .atttypmod = -1};
    }
    assert_true(PQsetResultAttrs(res, ncols, attrs));
    free(attrs);
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) {
            const char *v = cells[r * ncols + c];
            assert_true(PQsetvalue(res, r, c, (char *)v, v ? (int)strlen(v) : -1));
        }
    return res;
}

static void test_an_open_row_gives_the_window(void **state)
{
    (void)state;
    const char *row[] = {"100:120:", "11", "40", "55", NULL};
    PGresult *res = canned(5, 1, row);
    struct rs_window w;
    tailread_window(res, &w);
    assert_string_equal(w.hi, "100:120:");
    assert_int_equal(w.first, 11);
    assert_int_equal(w.last, 40);
    assert_int_equal(w.head, 55);
    assert_false(w.empty);
    char msg[512];
    assert_false(tailread_foreign_ids(res, 10, msg, sizeof msg));
    PQclear(res);
}

static void test_an_open_without_events_is_empty(void **state)
{
    (void)state;
    const char *row[] = {"100:120:", NULL, NULL, "55", NULL};
    PGresult *res = canned(5, 1, row);
    struct rs_window w;
    tailread_window(res, &w);
    assert_true(w.empty);
    assert_int_equal(w.head, 55);
    PQclear(res);
}

static void test_foreign_ids_are_worded_by_kind(void **state)
{
    (void)state;
    const char *ahead[] = {"100:120:", NULL, NULL, "55", "ahead 900 120"};
    const char *applied[] = {"100:120:", NULL, NULL, "55", "applied 42 118"};
    char msg[512];
    PGresult *res = canned(5, 1, ahead);
    assert_true(tailread_foreign_ids(res, 10, msg, sizeof msg));
    assert_non_null(strstr(msg, "ahead of this server's (id 900, next id here 120)"));
    assert_non_null(strstr(msg, "adopt-restored-store"));
    PQclear(res);
    res = canned(5, 1, applied);
    assert_true(tailread_foreign_ids(res, 40, msg, sizeof msg));
    assert_non_null(strstr(msg, "event at position 42, id 118, beyond last_position 40"));
    PQclear(res);
}

static void test_a_window_opens_from_the_old_hi(void **state)
{
    (void)state;
    struct checkpoint cp = {.lo = strdup("100:105:"), .hi = strdup("100:110:"), .window_pos = 3};
    struct rs_window w = {.hi = "100:120:", .first = 11, .last = 40, .head = 40};
    assert_int_equal(tailread_open_window(&cp, &w), 0);
    assert_string_equal(cp.lo, "100:110:");
    assert_string_equal(cp.hi, "100:120:");
    assert_true(cp.window_open);
    assert_int_equal(cp.window_pos, 10);
    assert_int_equal(cp.window_max, 40);
    checkpoint_free(&cp);
}

static void test_an_empty_window_slides_shut(void **state)
{
    (void)state;
    struct checkpoint cp = {.lo = strdup("100:105:"), .hi = strdup("100:110:"), .window_pos = 3};
    struct rs_window w = {.hi = "100:120:", .head = 40, .empty = true};
    assert_int_equal(tailread_open_window(&cp, &w), 0);
    assert_string_equal(cp.lo, "100:120:");
    assert_string_equal(cp.hi, "100:120:");
    assert_false(cp.window_open);
    assert_int_equal(cp.window_pos, 3); /* the checkpoint module moves it (checkpoint_pass) */
    checkpoint_free(&cp);
}

/* A fetch's rows: positions, and the byte bound's flag in the last column. */
static PGresult *fetched(const char *const *positions, const char *const *full, int n)
{
    const char *cells[4 * (FC_BYTES_FULL + 1)];
    assert_true(n <= 4);
    for (int r = 0; r < n; r++)
        for (int c = 0; c <= FC_BYTES_FULL; c++)
            cells[r * (FC_BYTES_FULL + 1) + c] = c == FC_POSITION     ? positions[r]
                                                 : c == FC_BYTES_FULL ? full[r]
                                                                      : "x";
    return canned(FC_BYTES_FULL + 1, n, cells);
}

static void test_a_shared_batch_is_read_past_our_position(void **state)
{
    (void)state;
    const char *pos[] = {"11", "12", "15", "20"}, *full[] = {"f", "f", "f", "f"};
    PGresult *res = fetched(pos, full, 4);
    assert_int_equal(tailread_first_after(res, 0), 0);
    assert_int_equal(tailread_first_after(res, 12), 2);
    assert_int_equal(tailread_first_after(res, 14), 2);
    assert_int_equal(tailread_first_after(res, 20), 4);
    assert_false(tailread_cut_by_bytes(res));
    PQclear(res);
}

static void test_the_byte_bound_is_read_from_the_last_row(void **state)
{
    (void)state;
    const char *pos[] = {"11", "12"}, *full[] = {"f", "t"};
    PGresult *res = fetched(pos, full, 2);
    assert_true(tailread_cut_by_bytes(res));
    PQclear(res);
    res = fetched(pos, full, 0);
    assert_false(tailread_cut_by_bytes(res)); /* no rows: nothing was cut */
    PQclear(res);
}

static void test_occurred_at_is_read_as_seconds_since_the_epoch(void **state)
{
    (void)state;
    assert_true(tailread_epoch("1970-01-01 00:00:00+00") == 0);
    assert_true(tailread_epoch("2026-11-21 10:00:00.25+00") == 1795255200.25);
    /* The same moment in other zones. */
    assert_true(tailread_epoch("2026-11-21 15:30:00.25+05:30") == 1795255200.25);
    assert_true(tailread_epoch("2026-11-21 02:00:00.25-08") == 1795255200.25);
    assert_true(tailread_epoch("1900-01-01 00:00:00+00:09:21") == -2208988800.0 - 561);
    assert_true(tailread_epoch(NULL) == -1);
    assert_true(tailread_epoch("infinity") == -1);
    assert_true(tailread_epoch("0044-03-15 12:00:00+00 BC") == -1);
    assert_true(tailread_epoch("12026-11-21 10:00:00+00") == -1);
    assert_true(tailread_epoch("2026-11-21 10:00:00") == -1);
    assert_true(tailread_epoch("2026-11-21 10:00:00+0x") == -1);
}

static void test_a_checkpoint_needs_both_snapshots(void **state)
{
    (void)state;
    struct checkpoint cp = {.lo = "100:105:101", .hi = "100:120:"};
    assert_true(tailread_checkpoint_valid(&cp));
    cp.hi = "garbage";
    assert_false(tailread_checkpoint_valid(&cp)); /* lo parsed first: freed, ASan checks */
    cp = (struct checkpoint){.lo = "garbage", .hi = "100:120:"};
    assert_false(tailread_checkpoint_valid(&cp));
}

static void test_an_open_is_sent_from_a_well_formed_lo(void **state)
{
    (void)state;
    struct tailwin_params p;
    const char *why = NULL;
    assert_int_equal(tailread_open_params("100:105:101,103", &p, &why), 0);
    assert_string_equal(p.xmax_lo, "105");
    assert_non_null(strstr(p.xip_lo, "101"));
    assert_non_null(strstr(p.xip_lo, "103"));
    tailwin_params_free(&p);
    assert_int_equal(tailread_open_params("not a snapshot", &p, &why), -1);
    assert_string_equal(why, "stored snapshot is malformed");
}

static void test_a_shared_open_is_ours_only_if_its_hi_covers_our_lo(void **state)
{
    (void)state;
    assert_true(tailread_covers("100:120:", "100:105:"));
    assert_true(tailread_covers("100:105:", "100:105:"));
    assert_false(tailread_covers("100:105:", "100:120:"));
    assert_false(tailread_covers("garbage", "100:105:"));
    assert_false(tailread_covers("100:120:", "garbage"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_open_row_gives_the_window),
        cmocka_unit_test(test_an_open_without_events_is_empty),
        cmocka_unit_test(test_foreign_ids_are_worded_by_kind),
        cmocka_unit_test(test_a_window_opens_from_the_old_hi),
        cmocka_unit_test(test_an_empty_window_slides_shut),
        cmocka_unit_test(test_a_shared_batch_is_read_past_our_position),
        cmocka_unit_test(test_the_byte_bound_is_read_from_the_last_row),
        cmocka_unit_test(test_a_checkpoint_needs_both_snapshots),
        cmocka_unit_test(test_occurred_at_is_read_as_seconds_since_the_epoch),
        cmocka_unit_test(test_an_open_is_sent_from_a_well_formed_lo),
        cmocka_unit_test(test_a_shared_open_is_ours_only_if_its_hi_covers_our_lo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
