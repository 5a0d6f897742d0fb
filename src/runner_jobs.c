/*
 * runner_jobs: a live runner and the kinds of job it may start besides
 * tailing (rebuild, replay). The core (runner.c) knows a job only by its
 * hooks (struct rn_job, runner_int.h); this file, above the core and the
 * jobs, hands a new runner the kinds it may start.
 */
#include "runner_int.h"

static const struct rn_jobs jobs = {.rebuild = &rebuild_job, .replay = &replay_job};

struct runner *runner_new(struct ev_loop *loop, const struct projection *p,
                          const struct projection_config *pc, const struct config *cfg,
                          const char *owner, struct fleet *fleet, struct runner_stats *stats,
                          runner_done_cb done, void *done_arg)
{
    struct runner *r =
        rn_create(loop, p, pc, cfg, owner, fleet, stats, &rn_live_kind, NULL, done, done_arg);
    if (r)
        r->jobs = &jobs;
    return r;
}
