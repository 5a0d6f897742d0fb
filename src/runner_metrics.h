/*
 * runner_metrics: the daemon's runners as Prometheus text (metrics.h), one
 * series per projection, labelled projection="NAME".
 */
#ifndef PROJECTORD_RUNNER_METRICS_H
#define PROJECTORD_RUNNER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "runner.h"

/*
 * Append every metric family to out. runners[i] (NULL: never started, left
 * out) counts into stats[i]; instances is the number of instances running
 * against the database, as last counted.
 */
void runner_metrics_render(struct mbuf *out, struct runner *const *runners,
                           const struct runner_stats *stats, size_t n, int instances);

/* The highest head any of the runners saw (a runner that opens no window knows no newer one). */
int64_t runner_metrics_head(struct runner *const *runners, size_t n);

/*
 * Whether a projection this instance owns is stalled (SPEC §3, "healthy
 * means progressing"): running, behind head (the highest head any of the
 * instance's runners saw: a runner that opens no window knows no newer
 * one), and no progress for longer than its stall_timeout_ms.
 */
bool runner_metrics_stalled(const struct runner_gauges *v, int64_t head);

#endif
