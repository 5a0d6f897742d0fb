/*
 * Unit tests for the tail window arithmetic (src/tailwin.c): snapshot
 * parsing, visibility as pg_visible_in_snapshot() defines it, and a model
 * check that sliding windows over random transaction histories deliver
 * every committed transaction exactly once, with the index-friendly SQL
 * predicate agreeing with the definition.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tailwin.h"

static void parse_valid(void **state)
{
    (void)state;
    struct snapshot s;
    assert_int_equal(snapshot_parse("750:760:750,752,759", &s), 0);
    assert_int_equal(s.xmin, 750);
    assert_int_equal(s.xmax, 760);
    assert_int_equal(s.nxip, 3);
    assert_int_equal(s.xip[1], 752);
    snapshot_free(&s);

    assert_int_equal(snapshot_parse(SNAPSHOT_NONE, &s), 0);
    assert_int_equal(s.nxip, 0);
    snapshot_free(&s);
}

static void parse_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "750",
        "750:",
        "750:760",
        "a:760:",
        "760:750:",
        "750:760:752,751",
        "750:760:749",
        "750:760:760",
        "750:760:752,",
        "750:760:752;753",
        "-1:5:",
        "99999999999999999999999:1:",
        "750:760:752,752",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct snapshot s = {0};
        if (snapshot_parse(bad[i], &s) == 0)
            fail_msg("accepted malformed snapshot '%s'", bad[i]);
    }
}

static void visibility(void **state)
{
    (void)state;
    struct snapshot s;
    assert_int_equal(snapshot_parse("750:760:752,755", &s), 0);
    assert_true(snapshot_visible(&s, 3));
    assert_true(snapshot_visible(&s, 749));
    assert_true(snapshot_visible(&s, 750));
    assert_false(snapshot_visible(&s, 752));
    assert_true(snapshot_visible(&s, 754));
    assert_false(snapshot_visible(&s, 755));
    assert_true(snapshot_visible(&s, 759));
    assert_false(snapshot_visible(&s, 760));
    assert_false(snapshot_visible(&s, 1000));
    snapshot_free(&s);
}

static void params_literal(void **state)
{
    (void)state;
    struct snapshot lo, hi;
    assert_int_equal(snapshot_parse("750:760:752,755", &lo), 0);
    assert_int_equal(snapshot_parse("755:790:755", &hi), 0);
    struct tailwin_params p;
    assert_int_equal(tailwin_params(&lo, &p), 0);
    assert_string_equal(p.xip_lo, "{752,755}");
    assert_string_equal(p.xmax_lo, "760");
    assert_false(snapshot_visible(&hi, 790));
    tailwin_params_free(&p);
    snapshot_free(&lo);
    snapshot_free(&hi);

    assert_int_equal(snapshot_parse(SNAPSHOT_NONE, &lo), 0);
    assert_int_equal(tailwin_params(&lo, &p), 0);
    assert_string_equal(p.xip_lo, "{}");
    assert_string_equal(p.xmax_lo, "1");
    tailwin_params_free(&p);
    snapshot_free(&lo);
}

static bool covers(const char *newer, const char *older)
{
    struct snapshot n, o;
    assert_int_equal(snapshot_parse(newer, &n), 0);
    assert_int_equal(snapshot_parse(older, &o), 0);
    bool c = snapshot_covers(&n, &o);
    snapshot_free(&n);
    snapshot_free(&o);
    return c;
}

/* A shared hi (readshare.h) is taken only when it sees all that lo sees. */
static void covers_only_newer(void **state)
{
    (void)state;
    assert_true(covers("750:760:752,755", SNAPSHOT_NONE));
    assert_true(covers("750:760:752,755", "750:760:752,755"));
    assert_true(covers("755:790:755", "750:760:752,755"));  /* 752 ended, 755 still running */
    assert_false(covers("750:760:752,755", "755:790:755")); /* older: misses 760..789 */
    assert_true(covers("750:760:752", "750:760:752,755"));  /* 755 committed since */
    assert_false(covers("750:760:752,755", "750:760:752")); /* 755 visible in lo, not in hi */
    assert_false(covers("700:700:", "750:760:752"));
}

/* ---- model check -------------------------------------------------------- */

#define MAX_TX    200
#define FIRST_XID 3

struct history {
    uint64_t next_xid;
    bool running[MAX_TX + FIRST_XID];
    bool committed[MAX_TX + FIRST_XID];
};

/* A snapshot as PostgreSQL takes it: running transactions are invisible. */
static void take_snapshot(const struct history *h, struct snapshot *s)
{
    s->xmax = h->next_xid;
    s->xmin = h->next_xid;
    s->nxip = 0;
    s->xip = malloc(sizeof(uint64_t) * (MAX_TX + 1));
    assert_non_null(s->xip);
    for (uint64_t x = FIRST_XID; x < h->next_xid; x++) {
        if (!h->running[x])
            continue;
        if (s->nxip == 0)
            s->xmin = x;
        s->xip[s->nxip++] = x;
    }
}

/* The predicate the fetch query uses instead of NOT visible(lo). */
static bool sql_predicate(const struct snapshot *lo, const struct snapshot *hi, uint64_t x)
{
    bool in_xip = false;
    for (size_t i = 0; i < lo->nxip; i++)
        in_xip |= lo->xip[i] == x;
    return (in_xip || (x >= lo->xmax && x < hi->xmax)) && snapshot_visible(hi, x);
}

static void run_history(unsigned seed)
{
    srand(seed);
    struct history h = {.next_xid = FIRST_XID};
    struct snapshot lo;
    assert_int_equal(snapshot_parse(SNAPSHOT_NONE, &lo), 0);
    int delivered[MAX_TX + FIRST_XID] = {0};
    while (h.next_xid < MAX_TX + FIRST_XID) {
        int action = rand() % 10;
        if (action < 4) {
            h.running[h.next_xid++] = true; /* a transaction takes its id */
        } else if (action < 8) {
            uint64_t x = FIRST_XID + (uint64_t)rand() % (h.next_xid - FIRST_XID + 1);
            if (x < h.next_xid && h.running[x]) {
                h.running[x] = false;
                h.committed[x] = rand() % 5 != 0; /* some roll back */
            }
        } else {
            struct snapshot hi;
            take_snapshot(&h, &hi);
            for (uint64_t x = FIRST_XID; x < h.next_xid; x++) {
                bool in = tailwin_contains(&lo, &hi, x) && h.committed[x];
                assert_int_equal(sql_predicate(&lo, &hi, x), tailwin_contains(&lo, &hi, x));
                delivered[x] += in;
            }
            snapshot_free(&lo);
            lo = hi;
        }
    }
    for (uint64_t x = FIRST_XID; x < h.next_xid; x++) {
        if (h.committed[x] && snapshot_visible(&lo, x))
            assert_int_equal(delivered[x], 1);
        else
            assert_int_equal(delivered[x], 0);
    }
    snapshot_free(&lo);
}

static void windows_deliver_each_commit_once(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 500; seed++)
        run_history(seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_valid),       cmocka_unit_test(parse_malformed),
        cmocka_unit_test(visibility),        cmocka_unit_test(params_literal),
        cmocka_unit_test(covers_only_newer), cmocka_unit_test(windows_deliver_each_commit_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
