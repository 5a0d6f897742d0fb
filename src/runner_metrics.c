/*
 * runner_metrics: the metric families (see runner_metrics.h). Counters and
 * gauges are tables, so adding one is one line.
 */
#include "runner_metrics.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct counter {
    const char *name;
    const char *help;
    size_t offset; /* of a uint64_t in struct runner_stats */
};

static const struct counter counters[] = {
    {"projectord_events_processed_total", "Events handled and committed (ignored ones included)",
     offsetof(struct runner_stats, events_processed)},
    {"projectord_events_ignored_total", "Events that changed nothing (missing row, failed guard)",
     offsetof(struct runner_stats, events_ignored)},
    {"projectord_events_skipped_total", "Bad events dead-lettered (on_error = skip)",
     offsetof(struct runner_stats, events_skipped)},
    {"projectord_batches_total", "Batches committed", offsetof(struct runner_stats, batches)},
    {"projectord_errors_total", "Failed steps retried with backoff",
     offsetof(struct runner_stats, errors)},
    {"projectord_connection_losses_total", "Database connections lost",
     offsetof(struct runner_stats, connection_losses)},
};

enum gauge { G_OWNED, G_FAILED, G_LAST, G_HEAD, G_LAG, G_COUNT };

static const struct {
    const char *name;
    const char *help;
} gauges[G_COUNT] = {
    [G_OWNED] = {"projectord_projection_owned", "1 while this instance holds the projection"},
    [G_FAILED] = {"projectord_projection_failed", "1 while stopped by a bad event"},
    [G_LAST] = {"projectord_last_position", "Highest position applied or passed"},
    [G_HEAD] = {"projectord_head_position", "Event store head, as of the last window opened"},
    [G_LAG] = {"projectord_lag_events", "Head minus last position (an estimate)"},
};

static int64_t gauge_value(enum gauge g, const struct runner_gauges *v)
{
    switch (g) {
    case G_OWNED:
        return v->owned;
    case G_FAILED:
        return v->failed;
    case G_LAST:
        return v->last_position;
    case G_HEAD:
        return v->head_position;
    default:
        return v->head_position > v->last_position ? v->head_position - v->last_position : 0;
    }
}

static void render_counters(struct mbuf *out, struct runner *const *runners,
                            const struct runner_stats *stats, size_t n)
{
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        metrics_family(out, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < n; i++) {
            if (!runners[i])
                continue;
            const uint64_t *v = (const uint64_t *)((const char *)&stats[i] + counters[c].offset);
            mbuf_printf(out, "%s{projection=\"%s\"} %llu\n", counters[c].name,
                        runner_name(runners[i]), (unsigned long long)*v);
        }
    }
}

static void render_gauges(struct mbuf *out, struct runner *const *runners, size_t n)
{
    for (int g = 0; g < G_COUNT; g++) {
        metrics_family(out, gauges[g].name, "gauge", gauges[g].help);
        for (size_t i = 0; i < n; i++) {
            struct runner_gauges v;
            if (!runners[i])
                continue;
            runner_gauges(runners[i], &v);
            mbuf_printf(out, "%s{projection=\"%s\"} %lld\n", gauges[g].name,
                        runner_name(runners[i]), (long long)gauge_value((enum gauge)g, &v));
        }
    }
    metrics_family(out, "projectord_projection_status", "gauge",
                   "1 for the projection's current status");
    for (size_t i = 0; i < n; i++) {
        struct runner_gauges v;
        if (!runners[i])
            continue;
        runner_gauges(runners[i], &v);
        mbuf_printf(out, "projectord_projection_status{projection=\"%s\",status=\"%s\"} 1\n",
                    runner_name(runners[i]), v.status);
    }
}

bool runner_metrics_stalled(const struct runner_gauges *v, int64_t head)
{
    if (!v->owned || v->failed || strcmp(v->status, "stopped") == 0)
        return false;
    int64_t ahead = v->head_position > head ? v->head_position : head;
    return v->last_position < ahead && v->progress_age > v->stall_s;
}

int64_t runner_metrics_head(struct runner *const *runners, size_t n)
{
    int64_t head = 0;
    for (size_t i = 0; i < n; i++) {
        struct runner_gauges v;
        if (!runners[i])
            continue;
        runner_gauges(runners[i], &v);
        if (v.head_position > head)
            head = v.head_position;
    }
    return head;
}

/*
 * Health as the status view judges it, from this instance's side:
 * healthy is 0 when it owns the projection and it is failed or stalled. A
 * standby reports 1: the owner's series tells (alert on the minimum over
 * instances). Lag and progress are the owner's alone.
 */
enum health_gauge { HG_STALLED, HG_HEALTHY, HG_LAG_SECONDS, HG_SINCE_PROGRESS };

static const struct {
    const char *name, *help;
    bool owned_only;
} health_gauges[] = {
    [HG_STALLED] = {"projectord_projection_stalled",
                    "1 while behind the head with no progress for longer than stall_timeout_ms",
                    false},
    [HG_HEALTHY] = {"projectord_projection_healthy",
                    "0 while this instance owns the projection and it is failed or stalled", false},
    [HG_LAG_SECONDS] = {"projectord_projection_lag_seconds",
                        "Age of the oldest event still to apply, by its occurred_at (owned only)",
                        true},
    [HG_SINCE_PROGRESS] = {"projectord_seconds_since_progress",
                           "Since last_position last moved or an open found nothing new (owned "
                           "only)",
                           true},
};

static void render_health(struct mbuf *out, struct runner *const *runners, size_t n)
{
    int64_t head = runner_metrics_head(runners, n);
    for (size_t g = 0; g < sizeof health_gauges / sizeof health_gauges[0]; g++) {
        metrics_family(out, health_gauges[g].name, "gauge", health_gauges[g].help);
        for (size_t i = 0; i < n; i++) {
            struct runner_gauges v;
            if (!runners[i])
                continue;
            runner_gauges(runners[i], &v);
            if (health_gauges[g].owned_only && !v.owned)
                continue;
            bool stalled = runner_metrics_stalled(&v, head);
            double value = g == HG_STALLED       ? stalled
                           : g == HG_HEALTHY     ? !(v.owned && (v.failed || stalled))
                           : g == HG_LAG_SECONDS ? v.lag_seconds
                                                 : v.progress_age;
            mbuf_printf(out,
                        g <= HG_HEALTHY ? "%s{projection=\"%s\"} %.0f\n"
                                        : "%s{projection=\"%s\"} %.3f\n",
                        health_gauges[g].name, runner_name(runners[i]), value);
        }
    }
}

static void render_histograms(struct mbuf *out, struct runner *const *runners,
                              const struct runner_stats *stats, size_t n)
{
    metrics_family(out, "projectord_batch_duration_seconds", "histogram",
                   "From a batch's fetch to its commit");
    for (size_t i = 0; i < n; i++)
        if (runners[i])
            metrics_histogram(out, "projectord_batch_duration_seconds", runner_name(runners[i]),
                              &stats[i].batch_seconds);
    metrics_family(out, "projectord_apply_latency_seconds", "histogram",
                   "From the commit of a batch's newest event (or its occurred_at) to the "
                   "batch's commit");
    for (size_t i = 0; i < n; i++)
        if (runners[i])
            metrics_histogram(out, "projectord_apply_latency_seconds", runner_name(runners[i]),
                              &stats[i].latency_seconds);
}

void runner_metrics_render(struct mbuf *out, struct runner *const *runners,
                           const struct runner_stats *stats, size_t n, int instances)
{
    metrics_family(out, "projectord_build_info", "gauge", "The running version");
    mbuf_printf(out, "projectord_build_info{version=\"%s\"} 1\n", PROJECTORD_VERSION);
    metrics_family(out, "projectord_instances", "gauge",
                   "Instances running against the database, as last counted");
    mbuf_printf(out, "projectord_instances %d\n", instances);
    render_counters(out, runners, stats, n);
    render_gauges(out, runners, n);
    render_health(out, runners, n);
    render_histograms(out, runners, stats, n);
}
