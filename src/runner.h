/*
 * runner: one projection kept up to date over its own connection.
 *
 * A runner is a state machine driven by its pgconn's callbacks: set up the
 * session and load the checkpoint, then repeat: open a tail window, fetch a
 * batch, apply it (handlers' statements, then the checkpoint, one
 * transaction), until the window is exhausted; then wait for a wake-up.
 * Bad events follow the projection's on_error policy; any other error is
 * logged, recorded in the status table and retried with backoff.
 *
 * The runner borrows the projection, its config and the owner string; they
 * must outlive it.
 */
#ifndef PROJECTORD_RUNNER_H
#define PROJECTORD_RUNNER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "fleet.h"
#include "metrics.h"
#include "projection.h"

struct runner;

/*
 * What a runner counts, for the metrics endpoint. The daemon owns one per
 * projection, so the counts outlive a runner that a reload restarts.
 */
struct runner_stats {
    uint64_t events_processed, events_skipped, events_ignored; /* as in the status table */
    uint64_t batches;                                          /* committed */
    uint64_t errors;                  /* failed steps, retried with backoff */
    uint64_t connection_losses;       /* of either of its connections */
    struct histogram batch_seconds;   /* from a batch's fetch to its commit */
    struct histogram latency_seconds; /* a batch's newest event: its commit to ours */
};

/* The runner's state now, for gauges. status is a static string. */
struct runner_gauges {
    bool owned;
    bool failed;
    int64_t last_position;
    int64_t head_position; /* as of the last window opened */
    double head_at;        /* ev_now() when that window was taken */
    double progress_age;   /* seconds since last_position moved or an open found nothing new */
    double stall_s;        /* stall_timeout_ms, in seconds */
    double lag_seconds;    /* age of the oldest event still to apply (0: none), as of the last
                              fetch by its occurred_at; owned projections only */
    const char *status;
};

/* Called once when a stopping runner has finished (see runner_stop). */
typedef void (*runner_done_cb)(struct runner *r, void *arg);

/*
 * Returns NULL when out of memory. The runner owns its projection only while
 * it holds the ownership lock (fleet.h); fleet is shared with the daemon's
 * other runners. stats (borrowed; NULL: not counted) is added to.
 */
struct runner *runner_new(struct ev_loop *loop, const struct projection *p,
                          const struct projection_config *pc, const struct config *cfg,
                          const char *owner, struct fleet *fleet, struct runner_stats *stats,
                          runner_done_cb done, void *done_arg);
void runner_free(struct runner *r);

/* Connect and start projecting. */
void runner_start(struct runner *r);

/* New events may have been committed: look soon (coalesced while busy). */
void runner_wake(struct runner *r);

/*
 * An operator asked something of this projection (a rebuild, resume or
 * replay request in its status row): read the row now, as the heartbeat
 * would.
 */
void runner_poke(struct runner *r);

/* Finish the batch in flight, mark the projection stopped, then call done. */
void runner_stop(struct runner *r);

const char *runner_name(const struct runner *r);

void runner_gauges(const struct runner *r, struct runner_gauges *out);

/*
 * Rebuild the projection from scratch, the zero-downtime way (a shadow
 * runner, then a swap). then_stop: for a one-shot `projectord rebuild`,
 * stop once the rebuild is over. Call before runner_start.
 */
void runner_request_rebuild(struct runner *r, bool then_stop);

/*
 * Re-apply the projection's dead letters, in position order, removing each
 * that applies now. then_stop: stop once the replay is over.
 */
void runner_request_replay(struct runner *r, bool then_stop);

/* Whether the last replay went through every dead letter. */
bool runner_replayed(const struct runner *r);

/* Whether the last rebuild swapped its tables in. */
bool runner_rebuilt(const struct runner *r);

/* While a rebuild runs: its position and the head it started from. */
bool runner_rebuild_progress(const struct runner *r, int64_t *done, int64_t *total);

#endif
