/*
 * runner_rebuild: rebuilding a projection from scratch without downtime, a
 * kind of job (struct rn_job, runner_int.h) run by a shadow runner.
 *
 * The live runner spawns a shadow runner (its child) that replays the whole
 * event store into shadow tables (schema projectord_rebuild_NAME, made by
 * sql/V008's functions) with its own checkpoint row in
 * read_model.projection_rebuild, while the live runner goes on. When the
 * shadow has caught up it holds the live runner (no new window), catches
 * up once more and swaps tables and checkpoint in one transaction; the
 * live runner then reloads its checkpoint. A failed or interrupted rebuild
 * leaves the live tables alone; the next one starts over.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runner_int.h"
#include "runner_sql.h"

static void send_swap(struct runner *r);

/*
 * A swap that gave way to a lock (sql/V027: it waits 200 ms at most, so
 * that readers never wait on it for long and never lose a deadlock to it)
 * is tried again soon, with jitter; a reader's transaction ends in
 * milliseconds. The live runner stays held meanwhile, so these delays are
 * kept short.
 */
#define SWAP_RETRY_INITIAL_S        0.02
#define SWAP_RETRY_MAX_S            0.5
#define SQLSTATE_LOCK_NOT_AVAILABLE "55P03"
#define SQLSTATE_DEADLOCK           "40P01"

/* A shadow creates its tables (once) before its statements can be prepared. */
static int queue_begin(struct runner *r)
{
    const char *params[] = {r->proj->name, r->tables, r->owner};
    if (r->rebuild_begun)
        return 0;
    return pgconn_query(r->conn, SQL_BEGIN_REBUILD, 3, params);
}

/* ... and ends its setup by loading its checkpoint. */
static int queue_load(struct runner *r)
{
    const char *params[] = {r->proj->name, r->owner};
    r->cp_loaded = false;
    return pgconn_query(r->conn, SQL_LOAD_REBUILD, 2, params);
}

/*
 * The shadow runner: it reads on its own (its own event types), into its
 * own schema, writes its rebuild's checkpoint row (read_model.
 * projection_rebuild, status 'rebuilding') and neither owns the projection
 * nor writes its status row: the live runner, its parent, does.
 */
static const struct rn_kind shadow_kind = {
    .label = " (rebuild)",
    .what = "rebuild",
    .resuming = "rebuild resuming",
    .app_suffix = "/rebuild",
    .schema = "projectord_rebuild_",
    .schema_is_prefix = true,
    .checkpoint_sql = SQL_REBUILD_CHECKPOINT,
    .status = "rebuilding",
};

static void shadow_done(struct runner *child, void *arg)
{
    (void)child;
    struct runner *r = arg;
    ev_timer_start(r->loop, &r->reap_timer); /* not from inside the child's callbacks */
}

static void rebuild_start(struct runner *r)
{
    r->rebuild_requested = false;
    r->rebuild_ok = false;
    r->child = rn_create(r->loop, r->proj, r->pcfg, r->cfg, r->owner, r->fleet, NULL, &shadow_kind,
                         r, shadow_done, r);
    if (!r->child) {
        log_error_f(RN_FIELDS(r, NULL), "%s: out of memory starting a rebuild", r->proj->name);
        return;
    }
    rn_set_job(r->child, &rebuild_job);
    r->child->swap_backoff = (struct backoff)BACKOFF_INIT(SWAP_RETRY_INITIAL_S, SWAP_RETRY_MAX_S);
    log_info_f(RN_FIELDS(r, NULL),
               "%s: rebuilding into shadow tables (schema projectord_rebuild_%s)", r->proj->name,
               r->proj->name);
    runner_start(r->child);
}

/* The end of a rebuild, swapped in or given up; the live runner goes on. */
static void rebuild_over(struct runner *r, bool swapped)
{
    struct runner *live = r->parent;
    live->held = false;
    live->rebuild_ok = swapped;
    if (swapped) {
        live->failed = false;
        live->reload_pending = true;
        log_info_f(RN_FIELDS(r, NULL),
                   "%s: rebuilt tables swapped in at position %" PRId64 " (the swap took %.0f ms)",
                   r->proj->name, r->cp.last_position, (ev_time() - r->swap_sent) * 1000);
    }
    rn_finish(r);
}

/*
 * The rebuild's checkpoint row is no longer this owner's: another instance
 * owns the projection and started its own rebuild (its begin replaced the
 * row and the shadow tables). Stop without a write: an abandon would drop
 * the other instance's shadow, and its checkpoint is not ours to load.
 */
static void rebuild_lost(struct runner *r)
{
    log_warning_f(RN_FIELDS(r, NULL),
                  "%s (rebuild): the rebuild is another instance's now; giving this one up",
                  r->proj->name);
    rebuild_over(r, false);
}

/*
 * A shadow's search_path is its own schema and public: it holds the
 * projection's own tables (its `tables` list) and nothing of read_model.
 * A statement naming another projection's table (or a table missing from
 * the list) prepares live but not here, and no retry can change that: so,
 * rather than retrying its setup with backoff for ever, the rebuild is
 * given up with projection.h's rule in its error (the status table's
 * last_error, the one-shot command's exit 1).
 */
static void rebuild_step(struct runner *r);

/* Its setup began the rebuild (its tables exist) and loaded its checkpoint row, if still ours. */
static bool rebuild_loaded(struct runner *r)
{
    r->rebuild_begun = true;
    if (!r->cp_loaded) {
        rebuild_lost(r);
        return false;
    }
    return true;
}

static bool rebuild_setup_failed(struct runner *r)
{
    /* undefined_table, undefined_function, undefined_object */
    static const char *const undefined[] = {"42P01", "42883", "42704", NULL};
    bool names_what_it_lacks = false;
    for (const char *const *s = undefined; *s; s++)
        names_what_it_lacks |= strcmp(r->err_state, *s) == 0;
    /*
     * Only in the setup that begins the rebuild: the schema is then the one
     * its own transaction makes. In a later session the schema may be gone
     * because the projection has another owner now, whose status row an
     * abandon must not touch: the retry finds that out (rebuild_lost).
     */
    if (!names_what_it_lacks || r->rebuild_begun)
        return false;
    char cause[sizeof r->err_msg];
    snprintf(cause, sizeof cause, "%s", r->err_msg);
    snprintf(r->err_msg, sizeof r->err_msg,
             "%.300s (SQLSTATE %s): a rebuild sees only the projection's own tables, so its SQL "
             "may name no other (src/projection.h)",
             cause, r->err_state);
    log_error_f(RN_FIELDS(r, r->err_state), "%s (rebuild): %s; giving the rebuild up",
                r->proj->name, r->err_msg);
    r->stats->errors++;
    r->failed = true;
    rebuild_step(r);
    return true;
}

/*
 * What a shadow does between batches: catch up until a window comes back
 * empty; then hold the live runner (it opens no new window), catch up once
 * more, and swap. The last window is opened after the hold, so its snapshot
 * covers everything the live projection has applied; if the swap still
 * finds otherwise, it simply goes round again.
 */
static void rebuild_step(struct runner *r)
{
    if (r->failed) {
        const char *params[] = {r->proj->name, r->err_msg};
        rn_begin_job_request(r, RB_ABANDON);
        if (pgconn_query(r->conn, SQL_ABANDON_REBUILD, 2, params) < 0 || pgconn_sync(r->conn) < 0)
            rn_set_state(r, R_DOWN);
        return;
    }
    if (r->cp.window_open || !r->caught_up) {
        rn_read_next(r);
    } else if (!r->parent->held) {
        r->parent->held = true;
        rn_set_job_state(r, RB_HELD);
        r->caught_up = false;
        rn_read_next(r);
    } else {
        send_swap(r);
    }
}

/*
 * A one-shot `projectord rebuild` stopped by a signal gives its rebuild up:
 * the shadow schema goes and the rebuild's row says failed, so no
 * half-built shadow and no 'rebuilding' status outlive the command (the
 * live tables were never touched). The daemon's own rebuild is left for its
 * next start, which begins it again while the request stands.
 */
static void rebuild_stopped(struct runner *r)
{
    /*
     * Not when the projection was lost (set_owned stops the rebuild then): the
     * shadow schema may hold the new owner's rebuild already.
     */
    if (!r->parent->rebuild_then_stop || !r->parent->holds_lock || !r->rebuild_begun) {
        rn_finish(r);
        return;
    }
    ev_timer_stop(r->loop, &r->retry_timer);
    r->failed = true;
    snprintf(r->err_msg, sizeof r->err_msg, "interrupted: the rebuild command was stopped");
    log_info_f(RN_FIELDS(r, NULL), "%s: rebuild interrupted; dropping its shadow tables",
               r->proj->name);
    rebuild_step(r);
}

/* Write the shadow's checkpoint and try the swap, in one transaction. */
static void send_swap(struct runner *r)
{
    char version[12];
    snprintf(version, sizeof version, "%d", r->proj->version);
    const char *params[] = {r->proj->name, r->tables, version};
    rn_clear_batch(r);
    rn_begin_job_request(r, RB_SWAP);
    r->new_seq = -1;
    r->swapped = false;
    r->swap_sent = ev_time();
    if (rn_queue_checkpoint(r) < 0 || pgconn_query(r->conn, SQL_FINISH_REBUILD, 3, params) < 0 ||
        pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

/* The swap gave way to a lock: nothing changed; try again shortly. */
static void swap_wait(struct runner *r)
{
    double delay = backoff_next(&r->swap_backoff, (uint32_t)rand());
    r->swap_waits++;
    /* Said once at info (and every 50th time), not as a storm of warnings. */
    if (r->swap_waits == 1 || r->swap_waits % 50 == 0)
        log_info_f(RN_FIELDS(r, NULL),
                   "%s: the swap gave way to a lock held by another session (%u times); "
                   "trying again",
                   r->proj->name, r->swap_waits);
    else
        log_debug("%s: the swap gave way to a lock (SQLSTATE %s); again in %.0f ms", r->proj->name,
                  r->err_state, delay * 1000);
    rn_clear_batch(r);
    rn_set_state(r, R_WAIT);
    ev_timer_stop(r->loop, &r->retry_timer);
    ev_timer_set(&r->retry_timer, delay, 0.0);
    ev_timer_start(r->loop, &r->retry_timer);
}

static void on_swap_done(struct runner *r)
{
    if (r->err_stmt >= 0 && strcmp(r->err_state, SQLSTATE_CHECKPOINT_MOVED) == 0) {
        rebuild_lost(r);
        return;
    }
    if (r->err_stmt >= 0) {
        if (strcmp(r->err_state, SQLSTATE_LOCK_NOT_AVAILABLE) == 0 ||
            strcmp(r->err_state, SQLSTATE_DEADLOCK) == 0)
            swap_wait(r);
        else
            rn_step_failed(r, "swap rebuilt tables", r->err_state, r->err_msg);
        return;
    }
    if (r->swap_waits > 0)
        log_info_f(RN_FIELDS(r, NULL), "%s: the swap went through after giving way %u times",
                   r->proj->name, r->swap_waits);
    r->swap_waits = 0;
    backoff_reset(&r->swap_backoff);
    r->cp.seq = r->new_seq;
    rn_checkpoint_saved(r, 0);
    if (r->swapped) {
        rebuild_over(r, true);
        return;
    }
    r->caught_up = false; /* the live runner was ahead after all: catch up once more */
    rn_set_job_state(r, RB_HELD);
    rn_next_step(r);
}

void runner_request_rebuild(struct runner *r, bool then_stop)
{
    r->rebuild_requested = true;
    r->rebuild_then_stop = then_stop;
}

bool runner_rebuilt(const struct runner *r)
{
    return r->rebuild_ok;
}

bool runner_rebuild_progress(const struct runner *r, int64_t *done, int64_t *total)
{
    if (!r->child)
        return false;
    *done = r->child->cp.last_position;
    *total = r->child->head;
    return true;
}

static void rebuild_on_result(struct runner *r, const PGresult *res)
{
    if (r->job_state == RB_ABANDON) {
        if (!pgconn_result_ok(res))
            log_warning_f(RN_FIELDS(r, pgconn_sqlstate(res)),
                          "%s: could not record the failed rebuild: %s (SQLSTATE %s)",
                          r->proj->name, pgconn_error_line(res), pgconn_sqlstate(res));
        return;
    }
    /* RB_SWAP: the checkpoint's new seq, then whether the swap happened. */
    rn_record_error(r, res);
    if (pgconn_result_ok(res) && PQntuples(res) == 1 && r->results == 0)
        r->new_seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else if (pgconn_result_ok(res) && PQntuples(res) == 1)
        r->swapped = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    r->results++;
}

static void rebuild_on_sync(struct runner *r)
{
    if (r->job_state == RB_ABANDON)
        rebuild_over(r, false);
    else
        on_swap_done(r);
}

/* start runs on the live runner; the other hooks on the shadow it spawns. */
const struct rn_job rebuild_job = {
    .name = "rebuild",
    .states = &rebuild_states,
    .start = rebuild_start,
    .queue_setup = queue_begin,
    .queue_load = queue_load,
    .loaded = rebuild_loaded,
    .setup_failed = rebuild_setup_failed,
    .step = rebuild_step,
    .stopped = rebuild_stopped,
    .lost = rebuild_lost,
    .on_result = rebuild_on_result,
    .on_sync = rebuild_on_sync,
};
