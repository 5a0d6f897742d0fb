/*
 * Unit tests for the tail reader (tailer.h), without a server: the
 * connection's sending functions are wrapped at link time (tests/CMakeLists.txt,
 * --wrap), so each test sees the statements a request sends and their
 * parameters, and feeds canned results (libpq's PQmakeEmptyPGresult and
 * PQsetvalue) and the sync back through the reader's API. The news it
 * gives its owner are recorded in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "readshare.h"
#include "runner_sql.h"
#include "tailer.h"

/* ---- the wrapped connection: what was sent, and the result being read ------- */

static char sent[64][256];
static int nsent;
static PGresult *current; /* the result tailer_result is reading */
static bool taken;
static bool send_fails;

static void record(const char *what, const char *name, int n, const char *const *params)
{
    assert_true(nsent < 64);
    char *o = sent[nsent++];
    int len = snprintf(o, 256, "%s %s", what, name);
    for (int i = 0; i < n; i++)
        len += snprintf(o + len, (size_t)(256 - len), "%s%s", i ? "," : "(",
                        params[i] ? params[i] : "NULL");
    if (n > 0)
        snprintf(o + len, (size_t)(256 - len), ")");
}

int __wrap_pgconn_exec_prepared(struct pgconn *c, const char *name, int n,
                                const char *const *params);
int __wrap_pgconn_exec_prepared(struct pgconn *c, const char *name, int n,
                                const char *const *params)
{
    (void)c;
    record("exec", name, n, params);
    return send_fails ? -1 : 0;
}

int __wrap_pgconn_query(struct pgconn *c, const char *sql, int n, const char *const *params);
int __wrap_pgconn_query(struct pgconn *c, const char *sql, int n, const char *const *params)
{
    (void)c;
    char head[40];
    snprintf(head, sizeof head, "%.39s", sql);
    record("query", head, n, params);
    return send_fails ? -1 : 0;
}

int __wrap_pgconn_prepare(struct pgconn *c, const char *name, const char *sql, int n);
int __wrap_pgconn_prepare(struct pgconn *c, const char *name, const char *sql, int n)
{
    (void)c;
    (void)sql;
    (void)n;
    record("prepare", name, 0, NULL);
    return 0;
}

int __wrap_pgconn_sync(struct pgconn *c);
int __wrap_pgconn_sync(struct pgconn *c)
{
    (void)c;
    record("sync", "", 0, NULL);
    return send_fails ? -1 : 0;
}

bool __wrap_pgconn_idle(const struct pgconn *c);
bool __wrap_pgconn_idle(const struct pgconn *c)
{
    (void)c;
    return true;
}

PGresult *__wrap_pgconn_take_result(struct pgconn *c);
PGresult *__wrap_pgconn_take_result(struct pgconn *c)
{
    (void)c;
    taken = true;
    return current;
}

/* ---- canned results ------------------------------------------------------------ */

static PGresult *canned(int ncols, int nrows, const char *const *cells)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[32];
    char names[32][8];
    assert_non_null(res);
    assert_true(ncols <= 32);
    for (int c = 0; c < ncols; c++) {
        snprintf(names[c], sizeof names[c], "c%d", c);
        attrs[c] = (PGresAttDesc){
            .name = names[c], .format = 0, .typid = 25, .typlen = -1, .atttypmod = -1};
    }
    assert_true(PQsetResultAttrs(res, ncols, attrs));
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) {
            const char *v = cells[r * ncols + c];
            assert_true(PQsetvalue(res, r, c, (char *)v, v ? (int)strlen(v) : -1));
        }
    return res;
}

/* An open's row (SQL_OPEN_WINDOW): hi, first, last, head, trouble. */
static PGresult *window_row(const char *hi, const char *first, const char *last, const char *head,
                            const char *trouble)
{
    const char *row[] = {hi, first, last, head, trouble};
    return canned(5, 1, row);
}

/* A fetch's rows at positions from..to (the byte bound's flag "f"). */
static PGresult *events(int from, int to)
{
    enum { NCOL = FC_BYTES_FULL + 1 };
    static char pos[16][12];
    const char *cells[16 * NCOL];
    int n = to - from + 1;
    assert_true(n >= 0 && n <= 16);
    for (int r = 0; r < n; r++) {
        snprintf(pos[r], sizeof pos[r], "%d", from + r);
        for (int c = 0; c < NCOL; c++)
            cells[r * NCOL + c] = c == FC_POSITION ? pos[r] : c == FC_BYTES_FULL ? "f" : "x";
    }
    return canned(NCOL, n, cells);
}

static PGresult *command_ok(void)
{
    return PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK);
}

static PGresult *fatal(void)
{
    return PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
}

/* ---- the owner: the news it was given ---------------------------------------------- */

struct owner {
    struct tailer *t;
    bool step_on_kick; /* asks again when kicked, as a runner in IDLE does */
    struct tail_news news[32];
    struct tail_batch batch[32];
    char message[32][512];
    int n;
};

static void on_news(void *arg, const struct tail_news *news)
{
    struct owner *o = arg;
    assert_true(o->n < 32);
    o->news[o->n] = *news;
    if (news->batch)
        o->batch[o->n] = *news->batch;
    snprintf(o->message[o->n], sizeof o->message[o->n], "%s", news->message ? news->message : "");
    o->n++;
    if (news->what == TAIL_KICK && o->step_on_kick)
        tailer_next(o->t);
}

static enum tail_outcome last_news(const struct owner *o)
{
    assert_true(o->n > 0);
    return o->news[o->n - 1].what;
}

/* Hand res to the reader as its request's next result; it keeps it or we free it. */
static void feed(struct tailer *t, PGresult *res)
{
    current = res;
    taken = false;
    tailer_result(t, res);
    if (!taken)
        PQclear(res);
    current = NULL;
}

struct fixture {
    struct ev_loop *loop;
    struct config cfg;
    struct checkpoint cp;
    struct owner owner;
    struct tailer *t;
    struct pgconn *src; /* never dereferenced: every use is wrapped */
};

static struct fixture *fixture_new(bool separate, struct readshare *share, bool may_share)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->loop = EV_DEFAULT;
    f->cfg.batch_size = 2;
    f->cfg.batch_max_bytes = 1000;
    f->cp = (struct checkpoint){
        .lo = strdup("100:100:"), .hi = strdup("100:100:"), .last_position = 10};
    f->src = (struct pgconn *)f; /* a token */
    struct tailer_setup s = {.loop = f->loop,
                             .name = "test",
                             .src = f->src,
                             .separate = separate,
                             .share = share,
                             .may_share = may_share,
                             .cfg = &f->cfg,
                             .cp = &f->cp,
                             .types = "{A}",
                             .cb = on_news,
                             .arg = &f->owner};
    f->t = tailer_new(&s);
    assert_non_null(f->t);
    f->owner.t = f->t;
    return f;
}

static void fixture_free(struct fixture *f)
{
    tailer_free(f->t);
    checkpoint_free(&f->cp);
    free(f);
}

static void reset_sent(void)
{
    nsent = 0;
    send_fails = false;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_an_open_brings_its_first_batch_in_one_request(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    tailer_next(f->t);
    assert_int_equal(f->owner.n, 1);
    assert_int_equal(f->owner.news[0].what, TAIL_OPENING);
    assert_int_equal(nsent, 4);
    assert_string_equal(sent[0], "exec open_plan");
    assert_string_equal(sent[1], "exec open_window({},100,NULL,10)");
    /* the first batch: bounds from the open's settings, our types, batch_size, the byte bound */
    assert_string_equal(sent[2], "exec fetch(NULL,NULL,NULL,100:100:,{A},2,1000)");
    assert_string_equal(sent[3], "sync ");

    feed(f->t, command_ok());
    feed(f->t, window_row("100:105:", "11", "14", "14", NULL));
    assert_int_equal(last_news(&f->owner), TAIL_WINDOW);
    assert_int_equal(f->owner.news[1].head, 14);
    assert_false(f->owner.news[1].empty);
    assert_false(f->owner.news[1].taken);
    assert_true(f->cp.window_open);
    assert_string_equal(f->cp.lo, "100:100:");
    assert_string_equal(f->cp.hi, "100:105:");
    assert_int_equal(f->cp.window_pos, 10);
    assert_int_equal(f->cp.window_max, 14);
    feed(f->t, events(11, 12));
    tailer_synced(f->t);
    assert_int_equal(f->owner.n, 3);
    assert_int_equal(last_news(&f->owner), TAIL_BATCH);
    const struct tail_batch *b = &f->owner.batch[2];
    assert_int_equal(b->n, 2);
    assert_int_equal(b->ev0, 0);
    assert_int_equal(b->end, 12);
    assert_true(b->more); /* a full batch: the window may hold more */
    assert_false(b->shared);
    assert_int_equal(nsent, 4); /* nothing more was sent */
    tailer_release(f->t);
    fixture_free(f);
}

static void test_a_fetch_is_judged_by_the_limit_it_was_sent_with(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    f->cp.window_open = true;
    f->cp.window_pos = 10;
    f->cp.window_max = 20;
    tailer_next(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_FETCHING);
    assert_int_equal(nsent, 3);
    assert_string_equal(sent[0], "exec fetch_plan");
    assert_string_equal(sent[1], "exec fetch(10,20,100:100:,100:100:,{A},2,1000)");
    f->cfg.batch_size = 5; /* a reload while the fetch is in flight */
    feed(f->t, command_ok());
    feed(f->t, events(11, 12));
    tailer_synced(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_BATCH);
    assert_true(f->owner.batch[f->owner.n - 1].more); /* 2 of the 2 asked for */
    tailer_release(f->t);

    /* Sent with 5, reloaded to 2: two rows are all the window had. */
    reset_sent();
    tailer_next(f->t);
    assert_string_equal(sent[1], "exec fetch(10,20,100:100:,100:100:,{A},5,1000)");
    f->cfg.batch_size = 2;
    feed(f->t, command_ok());
    feed(f->t, events(11, 12));
    tailer_synced(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_BATCH);
    assert_false(f->owner.batch[f->owner.n - 1].more);
    tailer_release(f->t);
    fixture_free(f);
}

static void test_an_empty_window_slides_and_passes(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    tailer_next(f->t);
    feed(f->t, command_ok());
    feed(f->t, window_row("100:107:", NULL, NULL, "10", NULL));
    assert_int_equal(last_news(&f->owner), TAIL_WINDOW);
    assert_true(f->owner.news[f->owner.n - 1].empty);
    feed(f->t, events(1, 0)); /* the first fetch found nothing: not a batch */
    tailer_synced(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_PASSED);
    assert_false(f->cp.window_open);
    assert_string_equal(f->cp.lo, "100:107:");
    assert_string_equal(f->cp.hi, "100:107:");
    fixture_free(f);
}

static void test_foreign_transaction_ids_stop_the_read(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    tailer_next(f->t);
    feed(f->t, command_ok());
    feed(f->t, window_row("100:105:", "11", "14", "14", "ahead 900 120"));
    feed(f->t, events(1, 0));
    tailer_synced(f->t);
    assert_int_equal(f->owner.n, 2); /* no window: the checkpoint stays */
    assert_int_equal(last_news(&f->owner), TAIL_FOREIGN);
    assert_non_null(strstr(f->owner.message[1], "ahead of this server's"));
    assert_non_null(strstr(f->owner.message[1], "adopt-restored-store"));
    assert_false(f->cp.window_open);
    assert_string_equal(f->cp.hi, "100:100:");
    fixture_free(f);
}

static void test_a_failed_statement_fails_its_step(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    tailer_next(f->t);
    feed(f->t, command_ok());
    feed(f->t, fatal());
    feed(f->t, PQmakeEmptyPGresult(NULL, PGRES_PIPELINE_ABORTED));
    tailer_synced(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_FAILED);
    assert_string_equal(f->owner.news[f->owner.n - 1].step, "open window");

    f->cp.window_open = true;
    f->cp.window_max = 20;
    tailer_next(f->t);
    feed(f->t, command_ok());
    feed(f->t, fatal());
    tailer_synced(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_FAILED);
    assert_string_equal(f->owner.news[f->owner.n - 1].step, "fetch");
    fixture_free(f);
}

static void test_a_malformed_lo_fails_before_anything_is_sent(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    free(f->cp.lo);
    f->cp.lo = strdup("garbage");
    tailer_next(f->t);
    assert_int_equal(nsent, 0);
    assert_int_equal(last_news(&f->owner), TAIL_FAILED);
    assert_string_equal(f->owner.message[f->owner.n - 1], "stored snapshot is malformed");
    fixture_free(f);
}

static void test_a_send_that_fails_drops_the_read(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    send_fails = true;
    tailer_next(f->t);
    assert_int_equal(f->owner.news[0].what, TAIL_OPENING);
    assert_int_equal(last_news(&f->owner), TAIL_DROPPED);
    fixture_free(f);
}

static void test_a_separate_event_store_reads_once_set_up(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(true, NULL, false);
    tailer_next(f->t);
    assert_int_equal(nsent, 0);
    assert_int_equal(last_news(&f->owner), TAIL_WAIT);

    tailer_src_event(f->t, PGCONN_READY, NULL, false);
    assert_int_equal(nsent, 8); /* its session, the reader's five statements, the sync */
    assert_string_equal(sent[0], "query DEALLOCATE ALL");
    assert_string_equal(sent[2], "prepare open_plan");
    assert_string_equal(sent[6], "prepare fetch_cell");
    PGresult *ok = command_ok();
    for (int i = 0; i < 7; i++)
        tailer_src_event(f->t, PGCONN_RESULT, ok, false);
    PQclear(ok);
    tailer_src_event(f->t, PGCONN_SYNC, NULL, false);
    assert_int_equal(last_news(&f->owner), TAIL_READY);

    tailer_next(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_OPENING);
    /* Lost while reading: the read is dropped, and the next waits for the session again. */
    tailer_src_event(f->t, PGCONN_LOST, NULL, true);
    assert_int_equal(last_news(&f->owner), TAIL_DROPPED);
    reset_sent();
    tailer_next(f->t);
    assert_int_equal(nsent, 0);
    assert_int_equal(last_news(&f->owner), TAIL_WAIT);
    fixture_free(f);
}

/* Run the loop's pending kicks (readshare kicks from the loop, never inside a caller). */
static void run_kicks(struct ev_loop *loop)
{
    for (int i = 0; i < 3; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

static void test_runners_that_share_open_and_fetch_once(void **state)
{
    (void)state;
    reset_sent();
    struct readshare *share = readshare_new(EV_DEFAULT, 2, READSHARE_AHEAD);
    assert_non_null(share);
    struct fixture *a = fixture_new(false, share, true);
    struct fixture *b = fixture_new(false, share, true);
    b->owner.step_on_kick = true;
    struct fixture *shadow = fixture_new(false, share, false);

    tailer_next(a->t);
    assert_int_equal(last_news(&a->owner), TAIL_OPENING);
    assert_string_equal(sent[2],
                        "exec fetch_cell(NULL,NULL,NULL,100:100:,2,1000)"); /* every type */
    tailer_next(b->t); /* the same lo: it waits for a's open */
    assert_int_equal(last_news(&b->owner), TAIL_WAIT);
    tailer_next(shadow->t); /* a rebuild's shadow reads alone, its own types */
    assert_int_equal(last_news(&shadow->owner), TAIL_OPENING);
    assert_string_equal(sent[6], "exec fetch(NULL,NULL,NULL,100:100:,{A},2,1000)");
    assert_int_equal(nsent, 8);

    feed(a->t, command_ok());
    feed(a->t, window_row("100:105:", "11", "14", "14", NULL));
    run_kicks(a->loop); /* the window is known: b takes it, and waits for its first batch */
    assert_int_equal(b->owner.n, 4);
    assert_int_equal(b->owner.news[1].what, TAIL_KICK);
    assert_int_equal(b->owner.news[2].what, TAIL_WINDOW);
    assert_true(b->owner.news[2].taken);
    assert_int_equal(b->owner.news[2].head, 14);
    assert_int_equal(last_news(&b->owner), TAIL_WAIT);
    assert_true(b->cp.window_open);
    assert_string_equal(b->cp.hi, "100:105:");
    feed(a->t, events(11, 12));
    tailer_synced(a->t);
    assert_int_equal(last_news(&a->owner), TAIL_BATCH);
    assert_true(a->owner.batch[a->owner.n - 1].shared);
    assert_int_equal(a->owner.batch[a->owner.n - 1].end, 12);
    assert_true(a->owner.batch[a->owner.n - 1].more);

    run_kicks(b->loop);
    assert_int_equal(last_news(&b->owner), TAIL_BATCH); /* a's batch, not read again */
    assert_int_equal(b->owner.batch[b->owner.n - 1].n, 2);
    assert_int_equal(nsent, 8);

    tailer_release(a->t);
    tailer_release(b->t);
    fixture_free(a);
    fixture_free(b);
    fixture_free(shadow);
    readshare_free(share);
}

static void test_opens_are_paced_while_events_keep_coming(void **state)
{
    (void)state;
    reset_sent();
    struct fixture *f = fixture_new(false, NULL, false);
    f->cfg.min_read_interval_ms = 50;
    const char *heads[] = {"10", "20"};
    for (int i = 0; i < 2; i++) {
        tailer_next(f->t);
        assert_int_equal(last_news(&f->owner), TAIL_OPENING);
        feed(f->t, command_ok());
        feed(f->t, window_row("100:100:", NULL, NULL, heads[i], NULL));
        feed(f->t, events(1, 0));
        tailer_synced(f->t);
        assert_int_equal(last_news(&f->owner), TAIL_PASSED);
    }
    /* The last open found new events: the next waits for the pause timer. */
    reset_sent();
    tailer_next(f->t);
    assert_int_equal(nsent, 0);
    assert_int_equal(last_news(&f->owner), TAIL_WAIT);
    ev_run(f->loop, EVRUN_ONCE);
    assert_int_equal(last_news(&f->owner), TAIL_KICK);
    tailer_next(f->t);
    assert_int_equal(last_news(&f->owner), TAIL_OPENING);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_open_brings_its_first_batch_in_one_request),
        cmocka_unit_test(test_a_fetch_is_judged_by_the_limit_it_was_sent_with),
        cmocka_unit_test(test_an_empty_window_slides_and_passes),
        cmocka_unit_test(test_foreign_transaction_ids_stop_the_read),
        cmocka_unit_test(test_a_failed_statement_fails_its_step),
        cmocka_unit_test(test_a_malformed_lo_fails_before_anything_is_sent),
        cmocka_unit_test(test_a_send_that_fails_drops_the_read),
        cmocka_unit_test(test_a_separate_event_store_reads_once_set_up),
        cmocka_unit_test(test_runners_that_share_open_and_fetch_once),
        cmocka_unit_test(test_opens_are_paced_while_events_keep_coming),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
