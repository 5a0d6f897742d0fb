/*
 * runner_replay: re-applying a projection's dead letters
 * (`projectord replay-dead-letters`), a kind of job (struct rn_job,
 * runner_int.h) that the live runner runs between its batches.
 *
 * A replay reads the dead letters in position order, in batches: their
 * positions from the read-model database, then their events from the event
 * store (another database, maybe). Each batch is applied like a tailing
 * batch with on_error = skip: a dead letter that applies now is removed in
 * the same transaction, one still bad keeps it with the new error. The
 * tail checkpoint does not move.
 *
 *   LIST --> APPLY (the runner's FETCH, APPLY) --> REPLAYED --> LIST ...
 *    |  (none left, or none of their events)
 *    +--> DONE  (its own machine: rstate.h, enum replay_state)
 */
#include <inttypes.h>
#include <stdlib.h>

#include "log.h"
#include "runner_int.h"
#include "runner_sql.h"

static void replay_finish(struct runner *r);

/* Begin with the first dead letter; the runner steps the replay from here on. */
static void replay_start(struct runner *r)
{
    log_info_f(RN_FIELDS(r, NULL), "%s: replaying dead letters", r->proj->name);
    r->replay_requested = false;
    rn_set_job(r, &replay_job);
    r->replay_pos = 0;
    r->replayed = 0;
}

/* A replayed event that applied now is no longer a dead letter. */
static int replay_drop_dead_letter(struct runner *r, int i)
{
    const char *params[] = {r->proj->name, rn_event_value(r, i, FC_POSITION)};
    if (pgconn_query(r->conn, SQL_DROP_DEAD_LETTER, 2, params) < 0)
        return -1;
    return batch_record(&r->ctx, BATCH_NO_EVENT, 0, 1);
}

static void replay_fetch(struct runner *r)
{
    char after[21], limit[21];
    const char *params[] = {r->proj->name, rn_fmt_i64(after, r->replay_pos),
                            rn_fmt_i64(limit, r->cfg->batch_size)};
    free(r->replay_positions);
    r->replay_positions = NULL;
    rn_begin_job_request(r, RP_LIST);
    if (pgconn_query(r->conn, SQL_LIST_DEAD_LETTERS, 3, params) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

static void on_replay_list_result(struct runner *r, const PGresult *res)
{
    rn_record_error(r, res);
    r->results++;
    if (pgconn_result_ok(res) && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) &&
        rn_set_str(&r->replay_positions, PQgetvalue(res, 0, 0)) < 0)
        r->err_stmt = 0;
}

/* The listed dead letters' events, from the event store (maybe another database). */
static void on_replay_listed(struct runner *r)
{
    if (r->err_stmt >= 0) {
        rn_step_failed(r, "list dead letters", r->err_state, r->err_msg);
        return;
    }
    if (!r->replay_positions) {
        replay_finish(r);
        return;
    }
    rn_set_state(r, R_IDLE);
    rn_set_job_state(r, RP_APPLY);
    /* Waiting for the event store's connection, rn_next_step lists them again once it can. */
    tailer_fetch_positions(r->tail, r->replay_positions);
}

/* A replay batch ends with its counts (it writes no checkpoint). */
static void send_replayed(struct runner *r)
{
    char applied[21];
    const char *params[] = {r->proj->name, rn_fmt_i64(applied, r->processed)};
    rn_begin_job_request(r, RP_REPLAYED);
    if (pgconn_query(r->conn, SQL_REPLAYED, 2, params) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

static void on_replayed(struct runner *r)
{
    if (r->err_stmt >= 0) {
        rn_step_failed(r, "replay dead letters", r->err_state, r->err_msg);
        return;
    }
    r->replayed += r->processed;
    if (r->cut > 0)
        r->replay_pos = rn_event_position(r, r->cut - 1);
    for (size_t i = 0; i < r->nbad; i++)
        log_warning_f(RN_EVENT_FIELDS(r, rn_event_position(r, r->bad[i].index), r->bad[i].sqlstate),
                      "%s: dead letter at position %" PRId64 " still fails: %s%s%s%s",
                      r->proj->name, rn_event_position(r, r->bad[i].index), r->bad[i].error,
                      r->bad[i].sqlstate[0] ? " (SQLSTATE " : "", r->bad[i].sqlstate,
                      r->bad[i].sqlstate[0] ? ")" : "");
    rn_clear_batch(r);
    rn_next_step(r);
}

static void replay_finish(struct runner *r)
{
    const char *params[] = {r->proj->name};
    rn_clear_batch(r);
    rn_begin_job_request(r, RP_DONE);
    if (pgconn_query(r->conn, SQL_REPLAY_DONE, 1, params) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

static void on_replay_done(struct runner *r)
{
    if (r->err_stmt >= 0) {
        rn_step_failed(r, "finish replay", r->err_state, r->err_msg);
        return;
    }
    rn_set_job(r, NULL);
    r->replay_over = true;
    log_info_f(RN_FIELDS(r, NULL), "%s: replay over: %" PRId64 " dead letter(s) applied",
               r->proj->name, r->replayed);
    rn_set_state(r, R_IDLE);
    if (r->replay_then_stop)
        runner_stop(r);
    else
        rn_next_step(r);
}

bool runner_replayed(const struct runner *r)
{
    return r->replay_over;
}

void runner_request_replay(struct runner *r, bool then_stop)
{
    r->replay_requested = true;
    r->replay_then_stop = then_stop;
}

static void replay_on_result(struct runner *r, const PGresult *res)
{
    if (r->job_state == RP_LIST) {
        on_replay_list_result(r, res);
        return;
    }
    rn_record_error(r, res);
    r->results++;
}

static void replay_on_sync(struct runner *r)
{
    if (r->job_state == RP_LIST)
        on_replay_listed(r);
    else if (r->job_state == RP_REPLAYED)
        on_replayed(r);
    else
        on_replay_done(r);
}

const struct rn_job replay_job = {
    .name = "replay",
    .states = &replay_states,
    .start = replay_start,
    .step = replay_fetch,
    .fetched_nothing = replay_finish,
    .applied = replay_drop_dead_letter,
    .batch_applied = send_replayed,
    .skips_bad = true,
    .on_result = replay_on_result,
    .on_sync = replay_on_sync,
};
