/*
 * Unit tests for the metrics text: histogram bucketing against bounds
 * counted here, the exposition lines of a histogram (cumulative buckets,
 * +Inf equal to the count), the text buffer's growth, and HOST:PORT parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "runner_metrics.h"

static void test_histogram_buckets(void **state)
{
    (void)state;
    struct histogram h = {0};
    const double values[] = {0.0, 0.001, 0.0011, 0.02, 0.7, 9.9, 10.0, 11.0, 3600.0};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        histogram_observe(&h, values[i]);
    assert_int_equal(h.count, 9);
    /* Each value lands in the first bucket whose bound is >= it; beyond 10 s in none. */
    uint64_t expected[HISTOGRAM_BUCKETS] = {0};
    size_t in_buckets = 0;
    double sum = 0;
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        sum += values[i];
        for (int b = 0; b < HISTOGRAM_BUCKETS; b++)
            if (values[i] <= histogram_bounds[b]) {
                expected[b]++;
                in_buckets++;
                break;
            }
    }
    assert_int_equal(in_buckets, 7);
    assert_memory_equal(h.buckets, expected, sizeof expected);
    assert_true(h.sum == sum);
}

static void test_histogram_text(void **state)
{
    (void)state;
    struct histogram h = {0};
    histogram_observe(&h, 0.003);
    histogram_observe(&h, 0.003);
    histogram_observe(&h, 42.0);
    struct mbuf out = {0};
    metrics_histogram(&out, "x_seconds", "orders", &h);
    assert_false(out.oom);
    assert_non_null(strstr(out.data, "x_seconds_bucket{projection=\"orders\",le=\"0.0025\"} 0\n"));
    assert_non_null(strstr(out.data, "x_seconds_bucket{projection=\"orders\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(out.data, "x_seconds_bucket{projection=\"orders\",le=\"10\"} 2\n"));
    assert_non_null(strstr(out.data, "x_seconds_bucket{projection=\"orders\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(out.data, "x_seconds_sum{projection=\"orders\"} 42.006000\n"));
    assert_non_null(strstr(out.data, "x_seconds_count{projection=\"orders\"} 3\n"));
    mbuf_free(&out);
}

static void test_mbuf_grows(void **state)
{
    (void)state;
    struct mbuf out = {0};
    char expected[20000] = "";
    for (int i = 0; i < 2000; i++) {
        char piece[16];
        snprintf(piece, sizeof piece, "%d,", i);
        strcat(expected, piece);
        mbuf_printf(&out, "%d,", i);
    }
    assert_false(out.oom);
    assert_int_equal(out.len, strlen(expected));
    assert_string_equal(out.data, expected);
    mbuf_free(&out);
    assert_null(out.data);
}

static void check_address(const char *text, const char *host, const char *port)
{
    char h[64] = "", p[8] = "";
    int rc = metrics_parse_address(text, h, sizeof h, p, sizeof p);
    if (!host) {
        if (rc == 0)
            fail_msg("'%s' parsed as host '%s' port '%s'", text, h, p);
        return;
    }
    assert_int_equal(rc, 0);
    assert_string_equal(h, host);
    assert_string_equal(p, port);
}

static void test_parse_address(void **state)
{
    (void)state;
    check_address("127.0.0.1:9187", "127.0.0.1", "9187");
    check_address("localhost:1", "localhost", "1");
    check_address("[::1]:65535", "::1", "65535");
    check_address("0.0.0.0:80", "0.0.0.0", "80");
    check_address("9187", NULL, NULL);
    check_address(":9187", NULL, NULL);
    check_address("host:", NULL, NULL);
    check_address("host:0", NULL, NULL);
    check_address("host:65536", NULL, NULL);
    check_address("host:12ab", NULL, NULL);
    check_address("host:-1", NULL, NULL);
    check_address("::1:9187", NULL, NULL);
    check_address("[::1:9187", NULL, NULL);
    check_address("[]:9187", NULL, NULL);
    check_address("a-very-long-host-name-that-does-not-fit-in-the-buffer-given.example:1", NULL,
                  NULL);
}

/* A live projection owned here: last and head positions, seconds since progress, 20 s allowed. */
static struct runner_gauges live_at(int64_t last, int64_t head, double age)
{
    return (struct runner_gauges){.owned = true,
                                  .last_position = last,
                                  .head_position = head,
                                  .progress_age = age,
                                  .stall_s = 20.0,
                                  .status = "live"};
}

static void test_stalled(void **state)
{
    (void)state;
    struct runner_gauges v = live_at(100, 100, 60.0);
    assert_false(runner_metrics_stalled(&v, 0));  /* at the head: nothing to do is no stall */
    assert_true(runner_metrics_stalled(&v, 101)); /* another runner saw a newer head */
    v = live_at(90, 100, 20.5);
    assert_true(runner_metrics_stalled(&v, 0));
    v = live_at(90, 100, 19.5);
    assert_false(runner_metrics_stalled(&v, 0)); /* behind, but moved lately */
    v = live_at(90, 100, 60.0);
    v.failed = true; /* unhealthy for that, not stalled */
    assert_false(runner_metrics_stalled(&v, 0));
    v = live_at(90, 100, 60.0);
    v.owned = false; /* a standby: the owner tells */
    assert_false(runner_metrics_stalled(&v, 0));
    v = live_at(90, 100, 60.0);
    v.status = "stopped";
    assert_false(runner_metrics_stalled(&v, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_histogram_buckets), cmocka_unit_test(test_histogram_text),
        cmocka_unit_test(test_mbuf_grows),        cmocka_unit_test(test_parse_address),
        cmocka_unit_test(test_stalled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
