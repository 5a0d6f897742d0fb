/*
 * runner: one projection's state machine (see runner.h).
 *
 *   DOWN --ready--> SETUP --> IDLE --wake--> OPEN --> FETCH --> COMMIT
 *                               ^                      ^  |        |
 *                               |                      |  +--------+ (more)
 *                               +----------------------+-----------+
 *
 * COMMIT sends the handlers' statements, the checkpoint and the sync in one
 * request: the batch commits without waiting for the daemon. A failed
 * statement aborts the rest, checkpoint included, and tells which event was
 * bad; the batch is sent again with the bad event dead-lettered (skip) or
 * cut before it (stop). The events a batch ignored are counted from its
 * results, so the next checkpoint writes them (rn_checkpoint_saved). A
 * dead-letter replay still waits for its statements' results (APPLY, then
 * ROLLBACK or its counts).
 *
 * The file reads top-down: helpers and lifecycle; requests, notes and
 * retries; tailing (the news of the tail reader, tailer.h, which opens
 * windows, paces, shares and fetches); a batch (queue its events, apply
 * it, a replay's results); the checkpoint (commit and its results);
 * ownership (setup, claim, load, release); the dispatch of each result and
 * sync to the step in flight; scheduling (rn_next_step: what to do between
 * steps). Each request's send sits next to the handling of its results;
 * the state changes only in rn_set_state.
 *
 * Every callback runs on the loop, so it may do anything; the only state
 * shared with the outside is the wake/stop flags. Rebuilds and dead-letter
 * replays are jobs of their own kinds, in runner_rebuild.c and
 * runner_replay.c above this core, which calls them only through their
 * hooks (struct rn_job, runner_int.h); their own requests run in R_JOB.
 * What differs between the live runner and a rebuild's shadow is data, the
 * runner's kind (struct rn_kind): this file reads as one runner.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "log.h"
#include "payload.h"
#include "registry.h"
#include "declared.h"
#include "runner_int.h"
#include "tailer.h"
#include "tailread.h"

#define HEARTBEAT_S           5.0
#define RETRY_INITIAL_S       0.5
#define RETRY_MAX_S           30.0
#define DEFERRED_CHECKPOINT_S 1.0  /* how late progress past unhandled events may be written */
#define DEFERRED_RETRY_S      0.05 /* the runner was busy when it was due */
#define DEFERRED_COUNTS_S     0.05 /* how late a batch's ignored count may be written */
#define CLAIM_INTERVAL_S      2.0  /* how often a standby tries to take a projection over */
#define CATCHUP_LOG_S         5.0  /* how often a catch-up logs its progress */

/*
 * Hot standbys are refused (pgconn.h). The event store on one: its snapshots
 * do not list the primary's transactions in progress, so a window taken
 * there slides past an event whose transaction is still open on the primary.
 */
#define STANDBY_SOURCE                                                                             \
    "database.conninfo names a hot standby (the server is in recovery): its snapshots do not"      \
    " list the primary's transactions in progress, so events could be skipped; point"              \
    " database.conninfo at the primary (checking again with backoff)"
#define STANDBY_TARGET                                                                             \
    "database.target names a hot standby (the server is in recovery): nothing can be written"      \
    " there; point database.target at the primary (checking again with backoff)"
#define STANDBY_BOTH                                                                               \
    "database.conninfo names a hot standby (the server is in recovery): the event store must be"   \
    " read and the read model written on the primary; point database.conninfo at the primary"      \
    " (checking again with backoff)"

/*
 * The runner's own statements, prepared once per session next to the
 * handlers'. The checkpoint's SQL is its kind's (a shadow's writes its
 * rebuild's row).
 */
enum runner_stmt { RS_CHECKPOINT, RS_DEAD_LETTER, RS_NOTE, RS_COUNT };
static const struct {
    const char *name;
    const char *sql;
    int nparams;
} runner_stmts[RS_COUNT] = {
    [RS_CHECKPOINT] = {"checkpoint", NULL, SQL_CHECKPOINT_NPARAMS},
    [RS_DEAD_LETTER] = {"dead_letter", SQL_DEAD_LETTER, 7},
    [RS_NOTE] = {"note", SQL_NOTE, 8},
};

/* The live runner: it owns the projection, writes its status and reads with the others. */
const struct rn_kind rn_live_kind = {
    .label = "",
    .what = "projection",
    .resuming = "owned by this instance; resuming",
    .app_suffix = "",
    .schema = "read_model",
    .shares_reads = true,
    .owns = true,
    .writes_status = true,
    .checkpoint_sql = SQL_CHECKPOINT,
};

static void conn_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                    const PGnotify *notify);
static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void claim_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void send_batch(struct runner *r);
static void send_checkpoint(struct runner *r);
static void on_claim_done(struct runner *r);
static void tail_news(void *arg, const struct tail_news *news);
static void send_register(struct runner *r);
static void stand_by(struct runner *r);
static void pass_window(struct runner *r);
static void defer_checkpoint(struct runner *r, double after);

/* ---- helpers ---------------------------------------------------------- */

/*
 * At most `longest`, and a quarter of stall_timeout_ms: the status row says
 * a projection is progressing when its position moves or a heartbeat finds
 * it at the head (sql/V028), so both must come well within the timeout, or
 * a projection idle at the head, or passing events it does not handle,
 * would look stalled for a moment when events come.
 */
static double within_stall(const struct runner *r, double longest)
{
    double quarter = r->cfg->stall_timeout_ms / 4000.0;
    return quarter < longest ? quarter : longest;
}

int rn_set_str(char **dst, const char *src)
{
    char *copy = strdup(src);
    if (!copy)
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

const char *rn_fmt_i64(char buf[21], int64_t v)
{
    snprintf(buf, 21, "%" PRId64, v);
    return buf;
}

static int64_t parse_i64(const char *text)
{
    return text && *text ? strtoll(text, NULL, 10) : 0;
}

/* A text[] literal of items, quoted and escaped. Caller frees; NULL when out of memory. */
static char *array_literal(const char *const *items, size_t n)
{
    size_t size = 3;
    for (size_t i = 0; i < n; i++)
        size += 2 * strlen(items[i]) + 3;
    char *out = malloc(size), *o = out;
    if (!out)
        return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        *o++ = '"';
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *o++ = '\\';
            *o++ = *c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

/* The handled event types as text[]; NULL when a handler takes all (or out of memory). */
static char *types_literal(const struct projection *p)
{
    if (registry_handles_all(p))
        return NULL;
    const char *types[64];
    size_t n = 0;
    for (const struct pj_handler *h = p->handlers; h->event_type && n < 64; h++)
        types[n++] = h->event_type;
    return array_literal(types, n);
}

static char *tables_literal(const struct projection *p)
{
    size_t n = 0;
    while (p->tables[n])
        n++;
    return array_literal(p->tables, n);
}

static bool is_data_error(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0;
}

static const char *current_status(const struct runner *r)
{
    if (r->failed || r->src_standby)
        return "failed";
    if (r->child)
        return "rebuilding";
    return r->cp.window_open ? "catching_up" : "live";
}

/* The batch's fields: the reader's rows it borrowed, its bad events and its counts. */
static void forget_batch(struct runner *r)
{
    r->events = NULL;
    r->ev0 = 0;
    r->nevents = 0;
    r->batch_end = 0;
    r->cut = 0;
    r->more = false;
    r->shared = false;
    r->processed = r->ignored = r->skipped = 0;
    for (size_t i = 0; i < r->nbad; i++)
        free(r->bad[i].error);
    free(r->bad);
    r->bad = NULL;
    r->nbad = 0;
    r->ctx.one_by_one = false;
}

/* Forget the batch: what was fetched (the reader's: given back), its bad events and its counts. */
void rn_clear_batch(struct runner *r)
{
    tailer_release(r->tail);
    forget_batch(r);
}

static struct bad_event *find_bad(struct runner *r, int index)
{
    for (size_t i = 0; i < r->nbad; i++)
        if (r->bad[i].index == index)
            return &r->bad[i];
    return NULL;
}

static struct bad_event *add_bad(struct runner *r, int index, const char *sqlstate,
                                 const char *error)
{
    struct bad_event *grown = realloc(r->bad, (r->nbad + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    r->bad = grown;
    struct bad_event *b = &r->bad[r->nbad];
    b->error = strdup(error);
    if (!b->error)
        return NULL;
    b->index = index;
    b->unstorable = false;
    snprintf(b->sqlstate, sizeof b->sqlstate, "%s", sqlstate);
    r->nbad++;
    return b;
}

const char *rn_event_value(const struct runner *r, int i, enum fetch_column col)
{
    return PQgetisnull(r->events, r->ev0 + i, col) ? NULL : PQgetvalue(r->events, r->ev0 + i, col);
}

int64_t rn_event_position(const struct runner *r, int i)
{
    return parse_i64(PQgetvalue(r->events, r->ev0 + i, FC_POSITION));
}

static void fill_event(const struct runner *r, int i, struct pj_event *ev)
{
    *ev = (struct pj_event){
        .position = rn_event_position(r, i),
        .position_text = rn_event_value(r, i, FC_POSITION),
        .event_id = rn_event_value(r, i, FC_EVENT_ID),
        .stream_id = rn_event_value(r, i, FC_STREAM_ID),
        .aggregate_type = rn_event_value(r, i, FC_AGGREGATE_TYPE),
        .aggregate_id = rn_event_value(r, i, FC_AGGREGATE_ID),
        .event_type = rn_event_value(r, i, FC_EVENT_TYPE),
        .event_version = (int32_t)parse_i64(rn_event_value(r, i, FC_EVENT_VERSION)),
        .aggregate_version = (int32_t)parse_i64(rn_event_value(r, i, FC_AGGREGATE_VERSION)),
        .aggregate_version_text = rn_event_value(r, i, FC_AGGREGATE_VERSION),
        .event_data = rn_event_value(r, i, FC_EVENT_DATA),
        .metadata = rn_event_value(r, i, FC_METADATA),
        .occurred_at = rn_event_value(r, i, FC_OCCURRED_AT),
        .causation_id = rn_event_value(r, i, FC_CAUSATION_ID),
        .correlation_id = rn_event_value(r, i, FC_CORRELATION_ID),
        .transaction_id = rn_event_value(r, i, FC_TRANSACTION_ID),
    };
}

/* Remember the request's first failed statement; those after it only say "aborted". */
void rn_record_error(struct runner *r, const PGresult *res)
{
    if (r->err_stmt >= 0 || PQresultStatus(res) != PGRES_FATAL_ERROR)
        return;
    r->err_stmt = (int)r->results;
    snprintf(r->err_state, sizeof r->err_state, "%s", pgconn_sqlstate(res));
    snprintf(r->err_msg, sizeof r->err_msg, "%s", pgconn_error_line(res));
}

/*
 * The status as the log tells it: transitions to live, failed and standby
 * once each, and a catch-up's progress every CATCHUP_LOG_S. Called with
 * every change of state, since the status only changes with one. A window
 * that opens and closes within CATCHUP_LOG_S (a live projection under
 * load) is no catch-up to speak of: only one that lasted long enough to
 * log its progress ends with a "live" line. A rebuild's shadow says
 * nothing here (the rebuild's own lines do).
 */
static void note_status(struct runner *r)
{
    if (!r->kind->writes_status || r->state == R_DONE)
        return; /* rn_finish says "stopped" */
    const char *status;
    if (r->state == R_STANDBY)
        status = "standby";
    else if (r->holds_lock && (r->window_seen || r->failed || r->src_standby))
        status = current_status(r);
    else
        return; /* connecting or loading: nothing to say yet */
    double now = ev_now(r->loop);
    if (strcmp(status, "catching_up") == 0) {
        if (r->catchup_since == 0) {
            r->catchup_since = r->catchup_said_at = now;
            r->catchup_from = r->catchup_said_pos = r->cp.last_position;
            r->catchup_events = r->stats->events_processed;
        }
        if (now - r->catchup_said_at >= CATCHUP_LOG_S) {
            double rate =
                (double)(r->cp.last_position - r->catchup_said_pos) / (now - r->catchup_said_at);
            int64_t behind = r->head > r->cp.last_position ? r->head - r->cp.last_position : 0;
            char eta[32] = "unknown";
            if (rate > 0)
                snprintf(eta, sizeof eta, "%.0f s", (double)behind / rate);
            log_info_f(RN_FIELDS(r, NULL),
                       "%s: catching up: position %" PRId64 " of %" PRId64 " (%" PRId64
                       " behind), %.0f positions/s, ETA %s; %" PRIu64 " events applied so far",
                       r->proj->name, r->cp.last_position, r->head, behind, rate, eta,
                       r->stats->events_processed - r->catchup_events);
            r->catchup_said_at = now;
            r->catchup_said_pos = r->cp.last_position;
            r->said_status = "catching_up";
        }
        return;
    }
    bool long_catchup = r->said_status && strcmp(r->said_status, "catching_up") == 0;
    r->catchup_since = 0;
    if (r->said_status && strcmp(r->said_status, status) == 0 && !long_catchup)
        return;
    if (strcmp(status, "live") == 0 && long_catchup)
        log_info_f(RN_FIELDS(r, NULL),
                   "%s: live at position %" PRId64 " (caught up from position %" PRId64 ")",
                   r->proj->name, r->cp.last_position, r->catchup_from);
    else if (strcmp(status, "live") == 0)
        log_info_f(RN_FIELDS(r, NULL), "%s: live at position %" PRId64, r->proj->name,
                   r->cp.last_position);
    else if (strcmp(status, "failed") == 0)
        log_info_f(RN_FIELDS(r, NULL), "%s: failed at position %" PRId64 " (the error is above)",
                   r->proj->name, r->cp.last_position);
    else if (strcmp(status, "standby") == 0)
        log_info_f(RN_FIELDS(r, NULL),
                   "%s: standing by (owned by another instance, or this one has its share)",
                   r->proj->name);
    r->said_status = status;
}

/*
 * The one place where the runner's state changes. A transition the table
 * (rstate.c) does not hold is a bug of this machine: said as such and
 * refused, the runner staying where it was (the test suite fails on the
 * line).
 */
bool rn_set_state(struct runner *r, enum rstate to)
{
    if (r->state == to) {
        note_status(r);
        return true;
    }
    if (!rstate_allowed(r->state, to)) {
        log_error_f(RN_FIELDS(r, NULL), "%s%s: internal error: state transition %s -> %s refused",
                    r->proj->name, r->kind->label, rstate_name(r->state), rstate_name(to));
        return false;
    }
    log_debug("%s%s: %s -> %s", r->proj->name, r->kind->label, rstate_name(r->state),
              rstate_name(to));
    r->state = to;
    note_status(r);
    return true;
}

/* Start a request: results are counted and errors recorded from here. */
void rn_begin_request(struct runner *r, enum rstate state)
{
    rn_set_state(r, state);
    r->results = 0;
    r->err_stmt = -1;
}

void rn_set_job(struct runner *r, const struct rn_job *job)
{
    if (job || r->job)
        log_debug("%s%s: %s %s", r->proj->name, r->kind->label, job ? job->name : r->job->name,
                  job ? "begins" : "ends");
    r->job = job;
    r->job_state = 0;
}

/* The job's own machine, by the same rule as the runner's (rn_set_state). */
bool rn_set_job_state(struct runner *r, int to)
{
    const struct job_states *t = r->job->states;
    if (r->job_state == to)
        return true;
    if (!job_state_allowed(t, r->job_state, to)) {
        log_error_f(RN_FIELDS(r, NULL),
                    "%s%s: internal error: state transition %s %s -> %s refused", r->proj->name,
                    r->kind->label, t->job, job_state_name(t, r->job_state), job_state_name(t, to));
        return false;
    }
    log_debug("%s%s: %s %s -> %s", r->proj->name, r->kind->label, t->job,
              job_state_name(t, r->job_state), job_state_name(t, to));
    r->job_state = to;
    return true;
}

void rn_begin_job_request(struct runner *r, int to)
{
    rn_set_job_state(r, to);
    rn_begin_request(r, R_JOB);
}

/* ---- lifecycle ---------------------------------------------------------- */

/* A runner of kind `kind`: a live runner (parent NULL), or the shadow that rebuilds parent's. */
struct runner *rn_create(struct ev_loop *loop, const struct projection *p,
                         const struct projection_config *pc, const struct config *cfg,
                         const char *owner, struct fleet *fleet, struct runner_stats *stats,
                         const struct rn_kind *kind, struct runner *parent, runner_done_cb done,
                         void *done_arg)
{
    struct runner *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    *r = (struct runner){.loop = loop,
                         .proj = p,
                         .pcfg = pc,
                         .cfg = cfg,
                         .owner = owner,
                         .fleet = fleet,
                         .kind = kind,
                         .done = done,
                         .done_arg = done_arg,
                         .state = R_DOWN,
                         .err_stmt = -1};
    r->stats = stats ? stats : &r->own_stats;
    r->backoff = (struct backoff)BACKOFF_INIT(RETRY_INITIAL_S, RETRY_MAX_S);
    snprintf(r->version, sizeof r->version, "%d", p->version);
    r->types = types_literal(p);
    r->tables = tables_literal(p);
    r->parent = parent;
    char label[128], path[128];
    snprintf(label, sizeof label, "%s%s", p->name, kind->label);
    snprintf(path, sizeof path, "%s%s, public", kind->schema,
             kind->schema_is_prefix ? p->name : "");
    r->search_path = strdup(path);
    r->conn = pgconn_new(loop, label, config_target(cfg), conn_cb, r);
    r->src = r->conn;
    if (cfg->target_conninfo) {
        char src_label[sizeof label + 16];
        snprintf(src_label, sizeof src_label, "%s (event store)", label);
        r->src = pgconn_new(loop, src_label, cfg->conninfo, conn_cb, r);
    }
    /* pg_stat_activity tells the projections' sessions apart (pgconn.h: unless the conninfo names
     * one) */
    char appname[128];
    snprintf(appname, sizeof appname, "projectord/%s%s", p->name, kind->app_suffix);
    for (int i = 0; i < 2 && r->conn && r->src; i++) {
        struct pgconn *c = i == 0 ? r->conn : r->src;
        pgconn_set_log_projection(c, p->name);
        if (pgconn_set_application_name(c, appname) < 0) {
            runner_free(r);
            return NULL;
        }
    }
    if (!r->conn || !r->src || !r->tables || !r->search_path ||
        rn_set_str(&r->cp.lo, SNAPSHOT_NONE) < 0 || rn_set_str(&r->cp.hi, SNAPSHOT_NONE) < 0 ||
        (!r->types && !registry_handles_all(p))) {
        runner_free(r);
        return NULL;
    }
    struct tailer_setup reader = {.loop = loop,
                                  .name = p->name,
                                  .src = r->src,
                                  .separate = r->src != r->conn,
                                  .share = fleet->share,
                                  .may_share = kind->shares_reads,
                                  .cfg = cfg,
                                  .cp = &r->cp,
                                  .types = r->types,
                                  .cb = tail_news,
                                  .arg = r};
    r->tail = tailer_new(&reader);
    if (!r->tail || batch_init(&r->ctx, p, r->conn) < 0) {
        runner_free(r);
        return NULL;
    }
    ev_init(&r->retry_timer, retry_cb);
    r->retry_timer.data = r;
    ev_timer_init(&r->heartbeat_timer, heartbeat_cb, within_stall(r, HEARTBEAT_S),
                  within_stall(r, HEARTBEAT_S));
    r->heartbeat_timer.data = r;
    ev_timer_init(&r->deferred_timer, deferred_cb, DEFERRED_CHECKPOINT_S, 0.0);
    r->deferred_timer.data = r;
    ev_timer_init(&r->claim_timer, claim_cb, CLAIM_INTERVAL_S, 0.0);
    r->claim_timer.data = r;
    ev_timer_init(&r->reap_timer, reap_cb, 0.0, 0.0);
    r->reap_timer.data = r;
    return r;
}

/* All but the reap timer: a finished child is freed by its parent's. */
static void stop_timers(struct runner *r)
{
    ev_timer_stop(r->loop, &r->retry_timer);
    ev_timer_stop(r->loop, &r->heartbeat_timer);
    ev_timer_stop(r->loop, &r->deferred_timer);
    ev_timer_stop(r->loop, &r->claim_timer);
    if (r->tail)
        tailer_stop(r->tail);
}

void runner_free(struct runner *r)
{
    if (!r)
        return;
    stop_timers(r);
    ev_timer_stop(r->loop, &r->reap_timer);
    runner_free(r->child);
    forget_batch(r);
    tailer_free(r->tail);
    batch_free(&r->ctx);
    if (r->src != r->conn)
        pgconn_free(r->src);
    pgconn_free(r->conn);
    free(r->replay_positions);
    checkpoint_free(&r->cp);
    free(r->types);
    free(r->tables);
    free(r->search_path);
    free(r);
}

const char *runner_name(const struct runner *r)
{
    return r->proj->name;
}

void runner_gauges(const struct runner *r, struct runner_gauges *out)
{
    *out = (struct runner_gauges){
        .owned = r->holds_lock,
        .failed = r->failed || r->src_standby,
        .last_position = r->cp.last_position,
        .head_position = r->head,
        .head_at = r->head_at,
        .progress_age = ev_now(r->loop) - r->progress_at,
        .stall_s = r->cfg->stall_timeout_ms / 1000.0,
        .lag_seconds = r->holds_lock && r->cp.last_position < r->head && r->pending_since > 0 &&
                               ev_now(r->loop) > r->pending_since
                           ? ev_now(r->loop) - r->pending_since
                           : 0,
        .status = r->state == R_DONE ? "stopped"
                  : r->holds_lock    ? current_status(r)
                                     : "standby",
    };
}

void runner_start(struct runner *r)
{
    if (r->kind->writes_status)
        ev_timer_start(r->loop, &r->heartbeat_timer);
    pgconn_start(r->conn);
    if (r->src != r->conn)
        pgconn_start(r->src);
}

static void set_owned(struct runner *r, bool owned);

void rn_finish(struct runner *r)
{
    rn_set_state(r, R_DONE);
    set_owned(r, false); /* the connection and its lock go */
    stop_timers(r);
    pgconn_close(r->conn);
    if (r->src != r->conn)
        pgconn_close(r->src);
    log_info_f(RN_FIELDS(r, NULL), "%s%s: stopped at position %" PRId64, r->proj->name,
               r->kind->label, r->cp.last_position);
    r->done(r, r->done_arg);
}

/* ---- requests, status notes, retries and the event store's session -------- */

static void after_note(struct runner *r);

static int exec_stmt(struct runner *r, enum runner_stmt st, const char *const *params)
{
    return pgconn_exec_prepared(r->conn, runner_stmts[st].name, runner_stmts[st].nparams, params);
}

static void send_note(struct runner *r, const char *status, const char *error, const char *sqlstate,
                      enum after_note then)
{
    char instance_key[12], instance_id[12], stall[12];
    snprintf(instance_key, sizeof instance_key, "%d", FLEET_INSTANCE_LOCK);
    snprintf(instance_id, sizeof instance_id, "%d", r->fleet->instance_id);
    snprintf(stall, sizeof stall, "%d", r->cfg->stall_timeout_ms);
    const char *params[] = {
        r->proj->name, status,      r->owner, error, sqlstate && *sqlstate ? sqlstate : NULL,
        instance_key,  instance_id, stall};
    r->after_note = then;
    if (!r->kind->writes_status || !r->holds_lock) {
        /*
         * Only the owner writes the status row (a stand-by would overwrite
         * the owner's); a rebuild's is its checkpoint.
         */
        after_note(r);
        return;
    }
    rn_begin_request(r, R_NOTE);
    if (exec_stmt(r, RS_NOTE, params) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN); /* PGCONN_LOST follows */
}

static void wait_and_retry(struct runner *r);

/* What a status note was for, once it is written (or skipped: not the status row's writer). */
static void after_note(struct runner *r)
{
    if (r->after_note == NOTE_THEN_DONE)
        rn_finish(r);
    else if (r->after_note == NOTE_THEN_WAIT)
        wait_and_retry(r);
    else
        rn_next_step(r);
}

static void wait_and_retry(struct runner *r)
{
    double delay = backoff_next(&r->backoff, (uint32_t)rand());
    rn_set_state(r, R_WAIT);
    ev_timer_stop(r->loop, &r->retry_timer);
    ev_timer_set(&r->retry_timer, delay, 0.0);
    ev_timer_start(r->loop, &r->retry_timer);
}

/* Errors that are not the event's fault: log, record, and try again later. */
void rn_step_failed(struct runner *r, const char *what, const char *sqlstate, const char *message)
{
    char line[BATCH_ERR_MAX];
    snprintf(line, sizeof line, "%s: %s", what, message);
    /*
     * A permanent error (permission denied, a missing table) fails every
     * retry the same way: said once, then again only when it changes or
     * after the runner got going again (a committed batch clears it).
     */
    bool again = strcmp(line, r->said_failure) == 0;
    log_write_fields(
        again ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR, __FILE__, __LINE__, RN_FIELDS(r, sqlstate),
        "%s: %s failed%s: %s (SQLSTATE %s); retrying with backoff", r->proj->name, what,
        again ? " again" : "", message, sqlstate && *sqlstate ? sqlstate : "none");
    snprintf(r->said_failure, sizeof r->said_failure, "%s", line);
    r->stats->errors++;
    rn_clear_batch(r);
    send_note(r, current_status(r), line, sqlstate, NOTE_THEN_WAIT);
}

/*
 * The one place where the runner's ownership changes, and with it the
 * instance's count of owned projections (fleet.h): the count must follow
 * every way a lock is lost (a finished runner's connection closes, a
 * broken one drops it), or the instance believes it owns more than its
 * share and hands projections over to nobody. A rebuild belongs to the
 * owner: losing the projection stops it, and the next owner starts its
 * own from the request still in the status table.
 */
static void set_owned(struct runner *r, bool owned)
{
    if (!r->kind->owns || owned == r->holds_lock)
        return;
    r->holds_lock = owned;
    r->fleet->owned += owned ? 1 : -1;
    if (!owned && r->child && !r->child->stopping) {
        log_info_f(RN_FIELDS(r, NULL), "%s: no longer the owner: stopping its rebuild",
                   r->proj->name);
        runner_stop(r->child);
    }
}

static int send_claim_statement(struct runner *r)
{
    char instance_key[12], owned[12], total[12], projection_key[12], instance_id[12];
    snprintf(instance_key, sizeof instance_key, "%d", FLEET_INSTANCE_LOCK);
    snprintf(instance_id, sizeof instance_id, "%d", r->fleet->instance_id);
    snprintf(owned, sizeof owned, "%d", r->fleet->owned);
    snprintf(total, sizeof total, "%d", r->fleet->projections);
    snprintf(projection_key, sizeof projection_key, "%d", FLEET_PROJECTION_LOCK);
    const char *params[] = {instance_key, owned, total, projection_key, r->proj->name, instance_id};
    r->claimed = false;
    return pgconn_query(r->conn, SQL_CLAIM, 6, params);
}

/*
 * The session settings, then the statements: the reader's too when one
 * connection also reads the event store (a separate one is the reader's).
 */
static bool queue_session(struct runner *r)
{
    const char *path[] = {r->search_path};
    bool ok = pgconn_query(r->conn, "DEALLOCATE ALL", 0, NULL) == 0 &&
              pgconn_query(r->conn, SQL_SESSION_SETUP, 1, path) == 0 &&
              (r->src != r->conn || tailer_queue_statements(r->tail, r->conn) == 0);
    for (int i = 0; ok && i < RS_COUNT; i++)
        ok = pgconn_prepare(r->conn, runner_stmts[i].name,
                            runner_stmts[i].sql ? runner_stmts[i].sql : r->kind->checkpoint_sql,
                            runner_stmts[i].nparams) == 0;
    return ok;
}

/* ---- tailing: the reader's news (tailer.h) ------------------------------------ */

static void after_fetch(struct runner *r);

/* The next batch after the checkpoint: fetched in its window, or from the next one. */
void rn_read_next(struct runner *r)
{
    tailer_next(r->tail);
}

/* A window opened or taken: the head it saw; an empty one slid without a write. */
static void window_opened(struct runner *r, const struct tail_news *n)
{
    if (n->taken)
        r->wake_pending = n->stale;
    r->head = n->head;
    r->head_at = ev_now(r->loop);
    r->window_seen = true;
    if (n->empty) {
        r->pending_since = 0;              /* nothing left to apply: no lag */
        r->progress_at = r->head_at;       /* at the head: nothing to apply is progress */
        r->heartbeat_due |= !r->announced; /* but say we are live */
        r->caught_up = true;
    }
}

/* A batch from the reader, borrowed until rn_clear_batch. */
static void take_batch(struct runner *r, const struct tail_batch *b)
{
    forget_batch(r);
    r->events = b->res;
    r->ev0 = b->ev0;
    r->nevents = b->n;
    r->batch_end = b->end;
    r->more = b->more;
    r->shared = b->shared;
    r->batch_started = b->started;
    after_fetch(r);
}

/*
 * Reading on would skip events or apply them out of order: stop, say so
 * once, and wait for a resume (adopt-restored-store asks for one) or a
 * restart, which load the checkpoint again and check again. No retries in
 * between: nothing changes until someone acts.
 */
static void stop_for_foreign_ids(struct runner *r, const char *message)
{
    rn_clear_batch(r);
    r->stats->errors++;
    r->failed = true;
    snprintf(r->err_msg, sizeof r->err_msg, "%s", message);
    log_error_f(RN_FIELDS(r, SQLSTATE_FOREIGN_IDS), "%s%s: %s (SQLSTATE %s)", r->proj->name,
                r->kind->label, r->err_msg, SQLSTATE_FOREIGN_IDS);
    send_note(r, "failed", r->err_msg, SQLSTATE_FOREIGN_IDS, NOTE_THEN_NEXT);
}

/*
 * A read is lost. On a separate event store connection: wait in R_IDLE for
 * the connection's setup to step us again, unless stopping, which needs
 * only the read-model connection.
 */
static void read_dropped(struct runner *r)
{
    if (r->src == r->conn) {
        rn_set_state(r, R_DOWN); /* PGCONN_LOST follows (or came) */
        return;
    }
    rn_clear_batch(r);
    r->wake_pending = true;
    rn_set_state(r, R_IDLE);
    if (r->stopping)
        rn_next_step(r);
}

/* The separate event store connection can take a read (again). */
static void event_store_ready(struct runner *r)
{
    if (r->src_standby) {
        log_info_f(RN_FIELDS(r, NULL), "%s: the event store is no longer a hot standby; resuming",
                   r->proj->name);
        r->src_standby = false;
        r->heartbeat_due = true; /* the status row says failed */
        r->wake_pending = true;
    }
    if (r->state == R_IDLE)
        rn_next_step(r); /* a step may have been waiting for it */
}

/* Everything the reader says; the runner's state changes here, around its requests. */
static void tail_news(void *arg, const struct tail_news *n)
{
    struct runner *r = arg;
    switch (n->what) {
    case TAIL_OPENING:
        rn_begin_request(r, R_OPEN);
        r->wake_pending = false;
        break;
    case TAIL_FETCHING:
        rn_begin_request(r, R_FETCH);
        break;
    case TAIL_WINDOW:
        window_opened(r, n);
        break;
    case TAIL_BATCH:
        take_batch(r, n->batch);
        break;
    case TAIL_PASSED:
        rn_next_step(r);
        break;
    case TAIL_WAIT:
        rn_set_state(r, R_IDLE);
        break;
    case TAIL_KICK:
        if (r->state == R_IDLE && !r->failed)
            rn_next_step(r);
        break;
    case TAIL_READY:
        event_store_ready(r);
        break;
    case TAIL_FAILED:
        rn_step_failed(r, n->step, n->sqlstate, n->message);
        break;
    case TAIL_FOREIGN:
        if (r->failed)
            rn_next_step(r);
        else
            stop_for_foreign_ids(r, n->message);
        break;
    case TAIL_DROPPED:
        read_dropped(r);
        break;
    case TAIL_NOMEM:
        pgconn_reset(r->conn, "out of memory");
        break;
    }
}

/* Whether the batch holds an event this projection handles. */
static bool handles_any(const struct runner *r)
{
    for (int i = 0; i < r->nevents; i++)
        if (registry_handler(r->proj, rn_event_value(r, i, FC_EVENT_TYPE)))
            return true;
    return false;
}

static void after_fetch(struct runner *r)
{
    /*
     * The batch's first event is the oldest still to apply: the lag is the
     * tail's (a job's batches are not: a replay's are old dead letters).
     */
    if (!r->job && r->nevents > 0)
        r->pending_since = tailread_epoch(rn_event_value(r, 0, FC_OCCURRED_AT));
    if (r->job && r->job->fetched_nothing && r->nevents == 0) {
        r->job->fetched_nothing(r);
    } else if (r->shared && r->more && !handles_any(r)) {
        /*
         * Nothing of ours in this part of the window: move on without a
         * write, but write the progress within a second, as for a window
         * passed whole: a window can be a whole backlog of events of other
         * types, and the status row must not look stalled meanwhile.
         */
        r->cp.window_pos = r->batch_end;
        r->dirty = true;
        defer_checkpoint(r, within_stall(r, DEFERRED_CHECKPOINT_S));
        rn_clear_batch(r);
        rn_next_step(r);
    } else if (r->nevents == 0 || (r->shared && !handles_any(r))) {
        pass_window(r);
    } else {
        send_batch(r);
    }
}

/* ---- building a batch ----------------------------------------------------- */

/*
 * Event i's outcome (projection.h); *handled is false when the projection
 * has no handler for it (a shared batch holds every type).
 */
static enum pj_outcome run_handler(struct runner *r, int i, bool *handled)
{
    struct pj_event ev;
    fill_event(r, i, &ev);
    const struct pj_handler *h = registry_handler(r->proj, ev.event_type);
    *handled = h != NULL;
    if (!h)
        return PJ_OK;
    r->ctx.event = i;
    r->ctx.err[0] = '\0';
    json_t *payload = NULL;
    if (!(h->flags & PJ_NO_PAYLOAD)) {
        bool oom = false;
        payload =
            payload_decode(ev.event_data, (size_t)PQgetlength(r->events, r->ev0 + i, FC_EVENT_DATA),
                           &oom, r->ctx.err, sizeof r->ctx.err);
        if (!payload)
            return oom ? PJ_RETRY : PJ_BAD_EVENT;
    }
    enum pj_outcome rc = h->fn(&r->ctx, &ev, payload);
    json_decref(payload);
    return rc;
}

/*
 * An event the read-model database's encoding cannot hold (UTF-8 text in a
 * LATIN1 read model: SQLSTATE 22P05) can not be dead-lettered with its
 * payload either: its dead letter keeps the position, the event store has
 * the rest. The error loses its non-ASCII characters for the same reason.
 */
static void unstorable_error(const char *error, char *out, size_t size)
{
    size_t n = 0;
    for (const char *s = error; *s && n + 1 < size; s++)
        out[n++] = (unsigned char)*s < 0x80 ? *s : '?';
    out[n] = '\0';
    snprintf(out + n, size - n,
             " (payload not kept: the read-model database's encoding"
             " cannot hold it; the event store has it)");
}

static int send_dead_letter(struct runner *r, const struct bad_event *b)
{
    int i = b->index;
    char error[BATCH_ERR_MAX + 128];
    if (b->unstorable)
        unstorable_error(b->error, error, sizeof error);
    const char *params[] = {r->proj->name,
                            rn_event_value(r, i, FC_POSITION),
                            rn_event_value(r, i, FC_EVENT_ID),
                            rn_event_value(r, i, FC_EVENT_TYPE),
                            b->unstorable ? error : b->error,
                            b->sqlstate[0] ? b->sqlstate : NULL,
                            b->unstorable ? NULL : rn_event_value(r, i, FC_EVENT_DATA)};
    if (exec_stmt(r, RS_DEAD_LETTER, params) < 0)
        return -1;
    return batch_record(&r->ctx, i, BATCH_DEAD_LETTER, 1);
}

/*
 * Queue event i: its handler's statements, or, when it is bad, a dead
 * letter (skip) or the end of the batch (stop). An event found bad by a
 * failed statement also ends a skip batch, right after its dead letter:
 * every such failure costs a rollback and a resend, and ending there keeps
 * that cost to the events before it rather than the whole batch each time.
 * Returns 1 when the batch ends here, 0 to go on, -1 when the connection or
 * memory failed.
 */
static int queue_event(struct runner *r, int i)
{
    struct bad_event *b = find_bad(r, i);
    if (!b) {
        size_t before = batch_queued(&r->ctx);
        bool handled;
        enum pj_outcome rc = run_handler(r, i, &handled);
        if (!handled)
            return 0;
        if (rc == PJ_OK) {
            r->processed++;
            return r->job && r->job->applied ? r->job->applied(r, i) : 0;
        }
        if (rc != PJ_BAD_EVENT)
            return -1; /* PJ_RETRY: memory or the connection; the batch goes again later */
        b = add_bad(r, i, "",
                    r->ctx.err[0] ? r->ctx.err : "the handler found it bad (no reason given)");
        if (!b)
            return -1;
        if (batch_queued(&r->ctx) > before) {
            /* The handler queued statements before failing: abandon this try. */
            if (pgconn_query(r->conn, SQL_ABANDON, 0, NULL) < 0 ||
                batch_record(&r->ctx, BATCH_NO_EVENT, 0, 1) < 0)
                return -1;
            return 1;
        }
    }
    if (r->stop_on_error) {
        r->cut = i;
        return 1;
    }
    r->skipped++;
    if (send_dead_letter(r, b) < 0) /* replaying: records the new error */
        return -1;
    if (b->sqlstate[0] == '\0')
        return 0;
    r->cut = i + 1;
    return 1;
}

static void send_commit(struct runner *r);

static void send_batch(struct runner *r)
{
    batch_reset(&r->ctx);
    rn_begin_request(r, R_APPLY);
    r->processed = r->ignored = r->skipped = 0;
    r->cut = r->nevents;
    r->stop_on_error = r->pcfg->on_error == ON_ERROR_STOP && !(r->job && r->job->skips_bad);
    for (int i = 0; i < r->nevents; i++) {
        int rc = queue_event(r, i);
        if (rc < 0) {
            pgconn_reset(r->conn, "could not queue a statement");
            return;
        }
        if (rc > 0)
            break;
    }
    if (batch_flush(&r->ctx) < 0) {
        /* The batch's statements are on the wire: only dropping the session undoes them. */
        log_error_f(RN_FIELDS(r, NULL), "%s: the projection's batch flush failed: %s",
                    r->proj->name, r->ctx.err[0] ? r->ctx.err : "could not queue a statement");
        pgconn_reset(r->conn, "batch flush failed");
        return;
    }
    if (!r->job || !r->job->batch_applied) {
        send_commit(r);
        return;
    }
    /* A job that ends its batches itself (a replay) waits for their statements' results. */
    if (r->ctx.n == 0) {
        r->job->batch_applied(r);
        return;
    }
    if (pgconn_flush_request(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

/* A handler statement's result: an error, or an event that changed nothing. */
static void on_statement_result(struct runner *r, const PGresult *res)
{
    const struct batch_stmt *st = batch_stmt(&r->ctx, r->results);
    rn_record_error(r, res);
    if (st && (st->flags & PJ_COUNT_IGNORED) && pgconn_result_ok(res)) {
        /* Each event changes one row at most (PJ_BULK's rule); others changed nothing. */
        size_t changed = (size_t)strtoull(PQcmdTuples((PGresult *)res), NULL, 10);
        r->ignored += (int64_t)(st->nevents - (changed < st->nevents ? changed : st->nevents));
    }
    r->results++;
}

/* A job's batch's statements: the job ends the batch once they have all applied. */
static void on_apply_result(struct runner *r, const PGresult *res)
{
    on_statement_result(r, res);
    if (r->results < r->ctx.n)
        return;
    if (r->err_stmt >= 0) {
        rn_set_state(r, R_ROLLBACK);
        if (pgconn_sync(r->conn) < 0)
            rn_set_state(r, R_DOWN);
        return;
    }
    r->job->batch_applied(r);
}

static void on_rollback_done(struct runner *r)
{
    const struct batch_stmt *st = batch_stmt(&r->ctx, (size_t)r->err_stmt);
    if (strcmp(r->err_state, SQLSTATE_ABANDONED) == 0) {
        send_batch(r);
        return;
    }
    if (st && (st->flags & BATCH_DEAD_LETTER)) {
        struct bad_event *b = find_bad(r, st->event);
        if (b && !b->unstorable && strcmp(r->err_state, SQLSTATE_UNTRANSLATABLE) == 0) {
            log_warning_f(RN_EVENT_FIELDS(r, rn_event_position(r, st->event), r->err_state),
                          "%s: the dead letter of the event at position %" PRId64
                          " keeps no payload: %s (SQLSTATE %s)",
                          r->proj->name, rn_event_position(r, st->event), r->err_msg, r->err_state);
            b->unstorable = true;
            send_batch(r);
            return;
        }
        rn_step_failed(r, "write dead letter", r->err_state, r->err_msg);
        return;
    }
    if (st && st->event < 0 && (st->flags & BATCH_HELD) && is_data_error(r->err_state) &&
        !r->ctx.one_by_one) {
        /* Held events of several events: which one is bad shows when each goes alone. */
        log_info_f(RN_FIELDS(r, r->err_state),
                   "%s: %s (SQLSTATE %s); trying the batch again one event at a time",
                   r->proj->name, r->err_msg, r->err_state);
        r->ctx.one_by_one = true;
        send_batch(r);
        return;
    }
    if (st && st->event >= 0 && is_data_error(r->err_state)) {
        if (!add_bad(r, st->event, r->err_state, r->err_msg)) {
            pgconn_reset(r->conn, "out of memory");
            return;
        }
        send_batch(r);
        return;
    }
    rn_step_failed(r, "apply batch", r->err_state, r->err_msg);
}

/* ---- the checkpoint ------------------------------------------------------- */

/*
 * Write the checkpoint within after seconds (sooner if already due). Set
 * the timer each time: a one-shot libev timer that has fired keeps an
 * expiry in the past, and starting it again as it is fires at once (which
 * wrote a checkpoint for every window of traffic the projection ignores).
 */
static void defer_checkpoint(struct runner *r, double after)
{
    if (ev_is_active(&r->deferred_timer)) {
        if (ev_timer_remaining(r->loop, &r->deferred_timer) <= after)
            return;
        ev_timer_stop(r->loop, &r->deferred_timer);
    }
    ev_timer_set(&r->deferred_timer, after, 0.0);
    ev_timer_start(r->loop, &r->deferred_timer);
}

/* The checkpoint this batch will commit, written into next (checkpoint.h). */
static void next_checkpoint(const struct runner *r, struct checkpoint *next, const char **status,
                            const struct bad_event **stop_at)
{
    struct cp_batch b = {
        .fetched = r->events != NULL,
        .failed = r->failed,
        .nevents = r->nevents,
        .cut = r->cut,
        .stop_on_error = r->stop_on_error,
        .more = r->more,
        .batch_end = r->batch_end,
        .cut_position = r->cut > 0 ? rn_event_position(r, r->cut - 1) : 0,
        .last_read = r->nevents > 0 ? rn_event_position(r, r->nevents - 1) : 0,
    };
    enum cp_status st;
    bool stops;
    checkpoint_after(&r->cp, &b, next, &st, &stops);
    *status = checkpoint_status_name(st);
    *stop_at = stops ? find_bad((struct runner *)r, r->cut) : NULL;
}

/* Queue the checkpoint this batch commits (the batch's own statements went before). */
int rn_queue_checkpoint(struct runner *r)
{
    struct checkpoint next;
    const char *status;
    const struct bad_event *stop_at;
    next_checkpoint(r, &next, &status, &stop_at);
    char seq[21], pos[21], wmax[21], last[21], processed[21], ignored[21], skipped[21], head[21],
        errpos[21], stall[21];
    const char *params[SQL_CHECKPOINT_NPARAMS] = {
        r->proj->name,
        rn_fmt_i64(seq, r->cp.seq),
        next.window_open ? r->cp.lo : r->cp.hi,
        r->cp.hi,
        rn_fmt_i64(pos, next.window_pos),
        rn_fmt_i64(wmax, next.window_open ? r->cp.window_max : 0),
        rn_fmt_i64(last, next.last_position),
        rn_fmt_i64(processed, r->processed),
        rn_fmt_i64(ignored, r->ignored_unsaved),
        rn_fmt_i64(skipped, r->skipped),
        rn_fmt_i64(head, r->head),
        r->kind->status && !stop_at ? r->kind->status : status,
        r->owner,
        stop_at ? stop_at->error : NULL,
        stop_at && stop_at->sqlstate[0] ? stop_at->sqlstate : NULL,
        stop_at ? rn_fmt_i64(errpos, rn_event_position(r, stop_at->index)) : NULL,
        /* Another database may be another cluster, whose commit log can't date it. */
        r->cut > 0 && r->src == r->conn ? rn_event_value(r, r->cut - 1, FC_TRANSACTION_ID) : NULL,
        r->cut > 0 ? rn_event_value(r, r->cut - 1, FC_OCCURRED_AT) : NULL,
        rn_fmt_i64(stall, r->cfg->stall_timeout_ms),
    };
    r->ignored_sent = r->ignored_unsaved;
    return exec_stmt(r, RS_CHECKPOINT, params);
}

/*
 * The checkpoint and the sync that commits the batch's transaction go out
 * right behind its statements: a batch is one round trip, and its commit
 * does not wait for the daemon to read the statements' results. Those
 * results come first in the same request (R_COMMIT counts them).
 */
static void send_commit(struct runner *r)
{
    rn_set_state(r, R_COMMIT);
    r->new_seq = -1;
    if (rn_queue_checkpoint(r) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

/* A checkpoint alone: progress made in memory, or counts not yet written. */
static void send_checkpoint(struct runner *r)
{
    batch_reset(&r->ctx);
    rn_begin_request(r, R_COMMIT);
    send_commit(r);
}

/*
 * A checkpoint committed: the ignored count it carried is in the table.
 * The batch's own count is known only now, from its statements' results,
 * which came after its checkpoint was sent; the next checkpoint carries it,
 * written soon if no batch comes first.
 */
void rn_checkpoint_saved(struct runner *r, int64_t batch_ignored)
{
    r->ignored_unsaved += batch_ignored - r->ignored_sent;
    r->ignored_sent = 0;
    r->dirty = r->ignored_unsaved > 0;
    if (r->dirty)
        defer_checkpoint(r, DEFERRED_COUNTS_S);
}

static void count_batch(struct runner *r);

static void committed(struct runner *r)
{
    struct checkpoint next;
    const char *status;
    const struct bad_event *stop_at;
    next_checkpoint(r, &next, &status, &stop_at);
    if (!next.window_open && rn_set_str(&r->cp.lo, r->cp.hi) < 0) {
        pgconn_reset(r->conn, "out of memory");
        return;
    }
    r->cp.window_pos = next.window_pos;
    r->cp.window_open = next.window_open;
    if (next.last_position > r->cp.last_position)
        r->progress_at = ev_now(r->loop);
    r->cp.last_position = next.last_position;
    r->cp.seq = r->new_seq;
    rn_checkpoint_saved(r, r->ignored);
    r->heartbeat_due = false; /* the checkpoint wrote it */
    r->announced = true;
    if (!next.window_open)
        r->cp.window_max = 0;
    backoff_reset(&r->backoff);
    r->said_failure[0] = '\0';
    if (stop_at) {
        r->failed = true;
        snprintf(r->err_msg, sizeof r->err_msg, "event at position %" PRId64 " (%s): %s",
                 rn_event_position(r, stop_at->index),
                 rn_event_value(r, stop_at->index, FC_EVENT_TYPE), stop_at->error);
        log_error_f(RN_EVENT_FIELDS(r, rn_event_position(r, stop_at->index), stop_at->sqlstate),
                    "%s%s: %s%s%s; %s stopped (on_error = stop)", r->proj->name, r->kind->label,
                    r->err_msg, stop_at->sqlstate[0] ? ", SQLSTATE " : "", stop_at->sqlstate,
                    r->kind->what);
    }
    for (size_t i = 0; stop_at == NULL && i < r->nbad; i++)
        log_warning_f(RN_EVENT_FIELDS(r, rn_event_position(r, r->bad[i].index), r->bad[i].sqlstate),
                      "%s: event at position %" PRId64 " dead-lettered: %s%s%s%s", r->proj->name,
                      rn_event_position(r, r->bad[i].index), r->bad[i].error,
                      r->bad[i].sqlstate[0] ? " (SQLSTATE " : "", r->bad[i].sqlstate,
                      r->bad[i].sqlstate[0] ? ")" : "");
    log_debug("%s: committed %" PRId64 " events up to position %" PRId64 " (%" PRId64 " ignored)",
              r->proj->name, r->processed, r->cp.last_position, r->ignored);
    count_batch(r);
    rn_clear_batch(r);
    rn_next_step(r);
}

/* A committed batch, for the metrics (a checkpoint-only write is no batch). */
static void count_batch(struct runner *r)
{
    struct runner_stats *s = r->stats;
    if (r->cut == 0 && r->nbad == 0)
        return;
    s->batches++;
    s->events_processed += (uint64_t)r->processed;
    s->events_ignored += (uint64_t)r->ignored;
    s->events_skipped += (uint64_t)r->skipped;
    histogram_observe(&s->batch_seconds, ev_time() - r->batch_started);
    if (r->latency >= 0)
        histogram_observe(&s->latency_seconds, r->latency);
}

/* The batch's statements' results, then its checkpoint's. */
static void on_commit_result(struct runner *r, const PGresult *res)
{
    if (r->results < r->ctx.n) {
        on_statement_result(r, res);
        return;
    }
    rn_record_error(r, res);
    r->results++;
    if (pgconn_result_ok(res) && PQntuples(res) == 1) {
        r->new_seq = parse_i64(PQgetvalue(res, 0, 0));
        r->latency = PQgetisnull(res, 0, 1) ? -1.0 : strtod(PQgetvalue(res, 0, 1), NULL);
    }
}

static void on_commit_done(struct runner *r)
{
    if (r->err_stmt < 0 && r->new_seq >= 0) {
        committed(r);
        return;
    }
    if (strcmp(r->err_state, SQLSTATE_CHECKPOINT_MOVED) == 0 && r->job && r->job->lost) {
        /* The job's checkpoint row (a rebuild's) is another instance's now. */
        rn_clear_batch(r);
        r->job->lost(r);
        return;
    }
    if (strcmp(r->err_state, SQLSTATE_CHECKPOINT_MOVED) == 0) {
        log_warning_f(RN_FIELDS(r, r->err_state), "%s: %s (SQLSTATE %s); reloading it",
                      r->proj->name, r->err_msg, r->err_state);
        rn_clear_batch(r);
        send_register(r);
        return;
    }
    rn_step_failed(r, "commit batch", r->err_state, r->err_msg);
}

/*
 * The window held nothing this projection handles: slide in memory and
 * write the checkpoint a little later (or with the next batch), so a
 * projection that ignores the traffic does not write for every window.
 */
static void pass_window(struct runner *r)
{
    if (rn_set_str(&r->cp.lo, r->cp.hi) < 0) {
        pgconn_reset(r->conn, "out of memory");
        return;
    }
    int64_t before = r->cp.last_position;
    checkpoint_pass(&r->cp);
    if (r->cp.last_position > before)
        r->progress_at = ev_now(r->loop);
    r->dirty = true;
    defer_checkpoint(r, within_stall(r, DEFERRED_CHECKPOINT_S));
    rn_clear_batch(r);
    rn_next_step(r);
}

/* ---- ownership: setup, claim, checkpoint load, release ---------------------- */

static void send_setup(struct runner *r)
{
    rn_begin_request(r, R_SETUP);
    bool ok = queue_session(r) && (!r->job || !r->job->queue_setup || r->job->queue_setup(r) == 0);
    for (int i = 0; ok && !r->unprepared && r->proj->statements[i].sql; i++) {
        char name[16];
        batch_stmt_name(i, name);
        ok = pgconn_prepare(r->conn, name, r->proj->statements[i].sql,
                            r->proj->statements[i].nparams) == 0;
    }
    if (!ok || (r->kind->owns ? send_claim_statement(r) : r->job->queue_load(r)) < 0 ||
        pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

static void send_claim(struct runner *r)
{
    rn_begin_request(r, R_CLAIM);
    if (send_claim_statement(r) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

/* Setup and claim requests end with the claim; its answer is the last result. */
static void on_claim_result(struct runner *r, const PGresult *res)
{
    rn_record_error(r, res);
    r->results++;
    if (pgconn_result_ok(res) && PQntuples(res) == 1 && PQnfields(res) == 2) {
        r->claimed = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        r->fleet->instances = (int)parse_i64(PQgetvalue(res, 0, 1));
    }
}

static void on_register_done(struct runner *r);

static void on_setup_done(struct runner *r)
{
    if (r->err_stmt >= 0 && r->job && r->job->setup_failed && r->job->setup_failed(r))
        return;
    if (r->kind->owns || r->err_stmt >= 0) {
        on_claim_done(r);
        return;
    }
    /* A kind that does not own loaded its job's checkpoint instead of claiming. */
    r->set_up = true;
    if (r->job->loaded && !r->job->loaded(r))
        return;
    on_register_done(r);
}

/*
 * Whether the setup failed on one of the projection's statements (they come
 * right before the claim, its last result): then it is set up again
 * without them, and stays failed once it owns the projection (unprepared).
 */
static bool statement_rejected(struct runner *r)
{
    int n = 0;
    while (r->proj->statements[n].sql)
        n++;
    int first = (int)r->results - 1 - n;
    if (!r->kind->writes_status || r->unprepared || r->err_stmt < first || r->err_stmt >= first + n)
        return false;
    int i = r->err_stmt - first;
    const struct declared *d = declared_of(r->proj);
    char where[300] = "";
    if (d)
        snprintf(where, sizeof where, " (%.240s:%d)", d->file, d->statement_lines[i]);
    /* A missing table: most likely an example whose migrations `migrate --no-examples` left out. */
    bool no_table = strcmp(r->err_state, "42P01") == 0;
    snprintf(r->unprepared_error, sizeof r->unprepared_error,
             "statement %d%s does not prepare: %.300s%s", i, where, r->err_msg,
             no_table ? " (apply its migration, an example's: `projectord migrate --examples`; "
                        "or disable it)"
                      : "");
    snprintf(r->unprepared_state, sizeof r->unprepared_state, "%s", r->err_state);
    log_error_f(RN_FIELDS(r, r->unprepared_state),
                "%s: %s (SQLSTATE %s); the projection is failed until resumed or restarted",
                r->proj->name, r->unprepared_error, r->unprepared_state);
    r->unprepared = true;
    r->stats->errors++;
    send_setup(r);
    return true;
}

static void on_claim_done(struct runner *r)
{
    if (r->err_stmt >= 0 && statement_rejected(r))
        return;
    if (r->err_stmt >= 0) {
        log_error_f(RN_FIELDS(r, r->err_state),
                    "%s: session setup failed: %s (SQLSTATE %s); retrying with backoff",
                    r->proj->name, r->err_msg, r->err_state);
        wait_and_retry(r);
        return;
    }
    r->set_up = true;
    if (r->stopping) {
        rn_finish(r);
        return;
    }
    if (!r->claimed) {
        stand_by(r);
        return;
    }
    set_owned(r, true);
    r->standing_by = false;
    send_register(r);
}

static void send_register(struct runner *r)
{
    rn_begin_request(r, R_REGISTER);
    const char *params[] = {r->proj->name, r->version, r->owner, r->failed ? "t" : "f"};
    if (pgconn_query(r->conn, SQL_REGISTER, 4, params) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

/* A projection built by other code than this binary's is rebuilt (if so configured). */
static void check_version(struct runner *r, const char *stored)
{
    if (!r->jobs || !stored || strcmp(stored, r->version) == 0 || r->rebuild_requested)
        return;
    if (!r->cfg->rebuild_on_version_change) {
        log_warning_f(RN_FIELDS(r, NULL),
                      "%s: tables built by version %s, this is version %s; not rebuilding "
                      "(rebuild_on_version_change = false)",
                      r->proj->name, stored, r->version);
        return;
    }
    log_info_f(RN_FIELDS(r, NULL), "%s: tables built by version %s, this is version %s: rebuilding",
               r->proj->name, stored, r->version);
    r->rebuild_requested = true;
}

static void on_register_result(struct runner *r, const PGresult *res)
{
    rn_record_error(r, res);
    if (pgconn_result_ok(res) && PQntuples(res) == 1 && PQnfields(res) == 9 &&
        strcmp(PQfname(res, 0), "tail_snapshot_lo") == 0) { /* not the session setup's row */
        if (rn_set_str(&r->cp.lo, PQgetvalue(res, 0, 0)) < 0 ||
            rn_set_str(&r->cp.hi, PQgetvalue(res, 0, 1)) < 0)
            r->err_stmt = (int)r->results;
        r->cp.window_pos = parse_i64(PQgetvalue(res, 0, 2));
        r->cp.window_max = parse_i64(PQgetvalue(res, 0, 3));
        r->cp.last_position = parse_i64(PQgetvalue(res, 0, 4));
        r->cp.seq = parse_i64(PQgetvalue(res, 0, 5));
        /* Progress and counts not yet written are gone with the state they came from. */
        r->ignored_unsaved = r->ignored_sent = 0;
        r->dirty = false;
        r->cp.window_open = strcmp(r->cp.lo, r->cp.hi) != 0;
        r->cp_loaded = true;
        r->rebuild_requested |= strcmp(PQgetvalue(res, 0, 7), "t") == 0;
        r->replay_requested |= strcmp(PQgetvalue(res, 0, 8), "t") == 0;
        check_version(r, PQgetisnull(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6));
    }
    r->results++;
}

static void on_register_done(struct runner *r)
{
    if (r->err_stmt >= 0) {
        rn_step_failed(r, "load checkpoint", r->err_state, r->err_msg);
        return;
    }
    if (!tailread_checkpoint_valid(&r->cp)) {
        rn_step_failed(r, "load checkpoint", "", "stored snapshot is malformed");
        return;
    }
    if (r->unprepared && !r->failed) {
        r->failed = true;
        send_note(r, "failed", r->unprepared_error, r->unprepared_state, NOTE_THEN_NEXT);
        return;
    }
    log_info_f(RN_FIELDS(r, NULL), "%s: %s at position %" PRId64 "%s", r->proj->name,
               r->kind->resuming, r->cp.last_position,
               r->cp.window_open ? " (inside a window)" : "");
    r->announced = false;
    r->window_seen = false; /* live or catching up: the first window tells (note_status) */
    r->progress_at = ev_now(r->loop); /* the metrics' stall clock starts with ownership */
    rn_set_state(r, R_IDLE);
    r->wake_pending = true;
    rn_next_step(r);
}

/* Another instance holds the projection: look again in a while. */
static void stand_by(struct runner *r)
{
    tailer_set_sharing(r->tail, false);
    if (r->rebuild_then_stop) {
        log_error_f(RN_FIELDS(r, NULL),
                    "%s: another instance took the projection over; ask it to rebuild instead",
                    r->proj->name);
        rn_finish(r);
        return;
    }
    r->standing_by = true; /* note_status says so */
    rn_set_state(r, R_STANDBY);
    ev_timer_stop(r->loop, &r->claim_timer);
    ev_timer_set(&r->claim_timer, CLAIM_INTERVAL_S, 0.0);
    ev_timer_start(r->loop, &r->claim_timer);
}

/* Give the projection back (this instance owns more than its share). */
static void send_release(struct runner *r)
{
    char key[12];
    snprintf(key, sizeof key, "%d", FLEET_PROJECTION_LOCK);
    const char *params[] = {key, r->proj->name};
    set_owned(r, false);
    log_info_f(RN_FIELDS(r, NULL), "%s: handing over to another instance (%d instances, share %d)",
               r->proj->name, r->fleet->instances, fleet_share(r->fleet));
    rn_begin_request(r, R_RELEASE);
    if (pgconn_query(r->conn, SQL_RELEASE, 2, params) < 0 || pgconn_sync(r->conn) < 0)
        rn_set_state(r, R_DOWN);
}

/* ---- dispatch: a result or sync goes to the step in flight ------------------ */

static void on_result(struct runner *r, const PGresult *res)
{
    switch (r->state) {
    case R_SETUP:
        if (r->kind->owns)
            on_claim_result(r, res);
        else
            on_register_result(r, res); /* the job's load ends its setup */
        break;
    case R_CLAIM:
        on_claim_result(r, res);
        break;
    case R_REGISTER:
        on_register_result(r, res);
        break;
    case R_OPEN:
    case R_FETCH:
        tailer_result(r->tail, res); /* the reader's request */
        break;
    case R_APPLY:
        on_apply_result(r, res);
        break;
    case R_COMMIT:
        on_commit_result(r, res);
        break;
    case R_NOTE:
        if (!pgconn_result_ok(res)) {
            log_warning_f(RN_FIELDS(r, pgconn_sqlstate(res)),
                          "%s: status update failed: %s (SQLSTATE %s)", r->proj->name,
                          pgconn_error_line(res), pgconn_sqlstate(res));
        } else if (PQntuples(res) == 1) {
            r->fleet->instances =
                (int)parse_i64(PQgetvalue(res, 0, 0)); /* While a rebuild or replay runs its request
                                                          stays set: it is not a new one. */
            r->rebuild_requested |= !r->child && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
            r->replay_requested |= !r->job && strcmp(PQgetvalue(res, 0, 3), "t") == 0;
            bool resume = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
            if (r->failed && resume) {
                log_info_f(RN_FIELDS(r, NULL),
                           "%s: resumed by request; retrying from the checkpoint", r->proj->name);
                r->failed = false;
                r->wake_pending = true;
            }
            /*
             * The checkpoint may have been moved under us (adopt-restored-store
             * asks every projection to resume): load it again before reading.
             */
            if (resume && !r->failed)
                r->reload_pending = true;
        }
        break;
    case R_JOB:
        r->job->on_result(r, res); /* the job's own request */
        break;
    default:
        break;
    }
}

static void on_sync(struct runner *r)
{
    switch (r->state) {
    case R_SETUP:
        on_setup_done(r);
        break;
    case R_CLAIM:
        on_claim_done(r);
        break;
    case R_REGISTER:
        on_register_done(r);
        break;
    case R_RELEASE:
        if (r->stopping)
            rn_finish(r);
        else
            stand_by(r);
        break;
    case R_OPEN:
    case R_FETCH:
        tailer_synced(r->tail); /* its news says what comes next */
        break;
    case R_ROLLBACK:
        on_rollback_done(r);
        break;
    case R_COMMIT:
        /* A failed statement of the batch took the transaction with it. */
        if (r->err_stmt >= 0 && (size_t)r->err_stmt < r->ctx.n)
            on_rollback_done(r);
        else
            on_commit_done(r);
        break;
    case R_NOTE:
        after_note(r);
        break;
    case R_JOB:
        r->job->on_sync(r);
        break;
    default:
        break;
    }
}

/*
 * A separate event store connection: the reader's (its session, its
 * reads). Its results belong to the step in flight only while that step is
 * a read (OPEN, FETCH); anything else comes from a request the runner gave
 * up on when the other connection broke.
 */
static void src_event(struct runner *r, enum pgconn_event ev, const PGresult *res)
{
    if (ev == PGCONN_LOST)
        r->stats->connection_losses++;
    if (ev != PGCONN_STANDBY) {
        tailer_src_event(r->tail, ev, res, r->state == R_OPEN || r->state == R_FETCH);
        return;
    }
    if (!r->src_standby) {
        if (r->kind->writes_status) /* else its owner's runner says it */
            log_error_f(RN_FIELDS(r, NULL), "%s: %s", r->proj->name, STANDBY_SOURCE);
        r->stats->errors++;
        r->src_standby = true;
        r->standby_noted = false;
    }
    if (r->state == R_IDLE)
        rn_next_step(r); /* to say so in the status row */
}

static void conn_cb(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                    const PGnotify *notify)
{
    (void)notify;
    struct runner *r = arg;
    if (c == r->src && c != r->conn) {
        src_event(r, ev, res);
        return;
    }
    switch (ev) {
    case PGCONN_READY:
        r->standby_said = false;
        r->standby_noted = false; /* a new session registers again, as 'starting' */
        send_setup(r);
        break;
    case PGCONN_STANDBY:
        /* Nothing can be written there, the status row neither: say it here, once. */
        if (!r->standby_said && r->kind->writes_status)
            log_error_f(RN_FIELDS(r, NULL), "%s: %s", r->proj->name,
                        r->src == r->conn ? STANDBY_BOTH : STANDBY_TARGET);
        r->standby_said = true;
        r->stats->errors++;
        break;
    case PGCONN_LOST:
        r->stats->connection_losses++;
        r->set_up = false;
        set_owned(r, false);
        ev_timer_stop(r->loop, &r->claim_timer);
        tailer_abandon(r->tail);
        rn_clear_batch(r);
        ev_timer_stop(r->loop, &r->retry_timer);
        if (r->stopping)
            rn_finish(r);
        else
            rn_set_state(r, R_DOWN);
        break;
    case PGCONN_RESULT:
        on_result(r, res);
        break;
    case PGCONN_SYNC:
        on_sync(r);
        break;
    case PGCONN_NOTIFY:
        break;
    }
}

/* ---- scheduling ------------------------------------------------------------ */

/* Decide what to do once a step has completed and the connection is idle. */
void rn_next_step(struct runner *r)
{
    rn_set_state(r, R_IDLE);
    /* A job reads on its own (a replay reads dead letters). */
    tailer_set_sharing(r->tail,
                       r->holds_lock && !r->failed && !r->src_standby && !r->stopping && !r->job);
    tailer_leave_passed(r->tail);
    bool over_share = r->kind->owns && !r->child && r->fleet->owned > fleet_share(r->fleet);
    if ((r->stopping || over_share) && r->dirty) {
        rn_clear_batch(r);
        send_checkpoint(r);
        return;
    }
    if (r->stopping) {
        if (r->child)
            return; /* the rebuild stops first; reap_cb comes back here */
        if (r->job && r->job->stopped)
            r->job->stopped(r);
        else
            send_note(r, r->failed ? "failed" : "stopped", NULL, NULL, NOTE_THEN_DONE);
        return;
    }
    if (over_share) {
        send_release(r);
        return;
    }
    if (r->unprepared && !r->failed) {
        /* Resumed: prepare the statements again, in a new session. */
        r->unprepared = false;
        pgconn_reset(r->conn, "resumed: preparing the projection's statements again");
        return;
    }
    if (r->reload_pending) {
        r->reload_pending = false;
        send_register(r);
        return;
    }
    if (r->src_standby && !r->standby_noted && r->holds_lock) {
        r->standby_noted = true;
        r->heartbeat_due = false;
        send_note(r, "failed", STANDBY_SOURCE, NULL, NOTE_THEN_NEXT);
        return;
    }
    if (r->heartbeat_due) {
        r->heartbeat_due = false;
        r->announced = true;
        send_note(r, current_status(r), NULL, NULL, NOTE_THEN_NEXT);
        return;
    }
    /*
     * A job runs alone: a replay inside this runner, a rebuild in its shadow
     * (whose job it is from the start). Only the live runner starts one
     * (jobs: the kinds it may start).
     */
    if (r->jobs && r->replay_requested && !r->job)
        r->jobs->replay->start(r);
    if (r->job) {
        r->job->step(r);
        return;
    }
    if (r->jobs && r->rebuild_requested && !r->child)
        r->jobs->rebuild->start(r);
    if (r->failed)
        return;
    if (r->cp.window_open || (r->wake_pending && !r->held))
        rn_read_next(r);
}

void runner_wake(struct runner *r)
{
    tailer_woken(r->tail);
    r->wake_pending = true;
    if (r->state == R_IDLE && !r->failed && !r->stopping)
        rn_next_step(r);
}

void runner_stop(struct runner *r)
{
    if (r->stopping)
        return;
    r->stopping = true;
    if (r->child)
        runner_stop(r->child);
    if (r->state == R_IDLE ||
        (r->job && r->job->stopped && r->state == R_WAIT && pgconn_idle(r->conn)))
        rn_next_step(r); /* a job between retries may still have to give itself up */
    else if (r->state == R_DOWN || r->state == R_WAIT || r->state == R_STANDBY)
        rn_finish(r);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runner *r = w->data;
    if (r->state != R_WAIT)
        return;
    if (!pgconn_idle(r->conn)) {
        rn_set_state(r, R_DOWN);
        return;
    }
    if (!r->set_up)
        send_setup(r);
    else if (!r->holds_lock && r->kind->owns)
        send_claim(r);
    else
        rn_next_step(r);
}

/* Frees a finished child (a rebuild's shadow), outside its own callbacks. */
static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runner *r = w->data;
    if (!r->child || r->child->state != R_DONE)
        return;
    runner_free(r->child);
    r->child = NULL;
    r->held = false;
    if (r->rebuild_then_stop && !r->stopping)
        runner_stop(r);
    else if (r->state == R_IDLE)
        rn_next_step(r);
}

static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runner *r = w->data;
    /* A swap is committing or was: the checkpoint is about to be reloaded. */
    if (!r->dirty || r->held || r->reload_pending)
        return;
    if (r->state != R_IDLE || !pgconn_idle(r->conn)) {
        /* Busy: the batch under way will carry it, or try again shortly. */
        defer_checkpoint(r, DEFERRED_RETRY_S);
        return;
    }
    rn_clear_batch(r);
    send_checkpoint(r);
}

static void claim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runner *r = w->data;
    if (r->state == R_STANDBY && pgconn_idle(r->conn))
        send_claim(r);
}

static void heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct runner *r = w->data;
    w->repeat = within_stall(r, HEARTBEAT_S); /* stall_timeout_ms may have been reloaded */
    ev_timer_again(loop, w);
    runner_poke(r);
}

void runner_poke(struct runner *r)
{
    /* Often due while a step is in flight (the poll timer ticks with it): next_step sends it. */
    r->heartbeat_due = true;
    if (r->state == R_IDLE && pgconn_idle(r->conn))
        rn_next_step(r);
}
