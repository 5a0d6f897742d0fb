/*
 * tailer: one runner's reader of the tail (tailer.h).
 *
 * The file reads top-down: the news and the batch held; the event-store
 * connection's session (a separate one); opening a window (pacing, the
 * share); fetching a batch; the results and sync of both.
 */
#include "tailer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "batch.h"
#include "log.h"
#include "pace.h"
#include "runner_sql.h"
#include "tailread.h"
#include "tailwin.h"

#define SRC_RETRY_INITIAL_S 0.5
#define SRC_RETRY_MAX_S     30.0

/* The reader's statements, prepared on the connection that reads the event store. */
enum tail_stmt { TS_OPEN_PLAN, TS_OPEN, TS_FETCH_PLAN, TS_FETCH, TS_FETCH_CELL, TS_COUNT };
static const struct {
    const char *name;
    const char *sql;
    int nparams;
} tail_stmts[TS_COUNT] = {
    [TS_OPEN_PLAN] = {"open_plan", SQL_OPEN_PLAN, 0},
    [TS_OPEN] = {"open_window", SQL_OPEN_WINDOW, 4},
    [TS_FETCH_PLAN] = {"fetch_plan", SQL_FETCH_PLAN, 0},
    [TS_FETCH] = {"fetch", SQL_FETCH, 7},
    [TS_FETCH_CELL] = {"fetch_cell", SQL_FETCH_CELL, 6},
};

/* The results of an open's request, in the order sent. */
enum { OPEN_RES_PLAN, OPEN_RES_WINDOW, OPEN_RES_BATCH };

struct tailer {
    struct tailer_setup s;

    /* A separate event-store connection's session. */
    bool ready;     /* set up */
    bool setup_bad; /* a setup statement failed */
    ev_timer retry_timer;
    struct backoff backoff;

    /* Windows. */
    struct rs_member member; /* in the share, when it may share */
    uint64_t open_ticket;    /* our open is the share's (0: not shared) */
    enum first_fetch { FIRST_NONE, FIRST_OWN, FIRST_SHARED } first; /* sent with the open */
    bool first_taken; /* the open's request brought the window's first batch */
    struct pace pace; /* the event rate its own opens saw */
    double opened_at; /* ev_now() of its last open sent alone (not through the share) */
    ev_timer pause_timer;

    /* The request in flight. */
    enum tail_req { REQ_NONE, REQ_OPEN, REQ_FETCH } req;
    int results;
    bool failed;  /* a statement of it failed: err_state, err_msg */
    bool foreign; /* the open found foreign transaction ids: err_msg says which */
    char err_state[6];
    char err_msg[BATCH_ERR_MAX];
    /*
     * The batch size the fetch in flight asked for: a full batch means "the
     * window may hold more" only against the limit it was sent with (a
     * reload may change the config's before its result comes back).
     */
    int fetch_limit;
    double started;

    /* The batch: ours alone, or a share's. */
    PGresult *own;
    struct rs_batch *sbatch;
    struct tail_batch batch;
};

static void say(struct tailer *t, enum tail_outcome what)
{
    struct tail_news n = {.what = what};
    t->s.cb(t->s.arg, &n);
}

static void fail(struct tailer *t, const char *step, const char *sqlstate, const char *message)
{
    struct tail_news n = {
        .what = TAIL_FAILED, .step = step, .sqlstate = sqlstate, .message = message};
    t->s.cb(t->s.arg, &n);
}

static int64_t parse_i64(const char *text)
{
    return text && *text ? strtoll(text, NULL, 10) : 0;
}

static const char *fmt_i64(char buf[21], int64_t v)
{
    snprintf(buf, 21, "%" PRId64, v);
    return buf;
}

void tailer_release(struct tailer *t)
{
    if (t->sbatch) {
        if (t->sbatch->pending) /* its read was given up: nobody may wait for it */
            readshare_failed(t->s.share, t->sbatch);
        readshare_release(t->s.share, t->sbatch);
    } else if (t->own) {
        PQclear(t->own);
    }
    t->sbatch = NULL;
    t->own = NULL;
    t->batch = (struct tail_batch){0};
}

/* A read failed or was given up: runners waiting for it must not wait longer. */
static void read_failed(struct tailer *t)
{
    if (t->open_ticket)
        readshare_open_failed(t->s.share, t->open_ticket);
    t->open_ticket = 0;
    if (t->sbatch)
        tailer_release(t);
}

void tailer_abandon(struct tailer *t)
{
    read_failed(t);
    t->req = REQ_NONE;
}

static void kick(void *arg)
{
    say(arg, TAIL_KICK);
}

static void pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kick(w->data);
}

static void src_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);

struct tailer *tailer_new(const struct tailer_setup *s)
{
    struct tailer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->s = *s;
    t->backoff = (struct backoff)BACKOFF_INIT(SRC_RETRY_INITIAL_S, SRC_RETRY_MAX_S);
    ev_init(&t->retry_timer, src_retry_cb);
    t->retry_timer.data = t;
    ev_init(&t->pause_timer, pause_cb);
    t->pause_timer.data = t;
    if (s->may_share && s->share) {
        readshare_join(s->share, &t->member, kick, t);
        t->member.sharing = true; /* until it turns out another instance owns the projection */
    }
    return t;
}

void tailer_stop(struct tailer *t)
{
    ev_timer_stop(t->s.loop, &t->retry_timer);
    ev_timer_stop(t->s.loop, &t->pause_timer);
}

void tailer_free(struct tailer *t)
{
    if (!t)
        return;
    tailer_stop(t);
    if (t->open_ticket)
        readshare_open_failed(t->s.share, t->open_ticket);
    readshare_leave(&t->member);
    tailer_release(t);
    free(t);
}

void tailer_set_sharing(struct tailer *t, bool on)
{
    t->member.sharing = on;
}

void tailer_leave_passed(struct tailer *t)
{
    if (!t->s.cp->window_open && t->member.lo)
        readshare_left(&t->member);
}

void tailer_woken(struct tailer *t)
{
    readshare_woken(&t->member);
}

/* ---- the event store's session (a separate connection) --------------------- */

int tailer_queue_statements(struct tailer *t, struct pgconn *c)
{
    (void)t;
    for (int i = 0; i < TS_COUNT; i++)
        if (pgconn_prepare(c, tail_stmts[i].name, tail_stmts[i].sql, tail_stmts[i].nparams) < 0)
            return -1;
    return 0;
}

/* Its session only (it holds no state of ours). */
static void send_src_setup(struct tailer *t)
{
    const char *path[] = {"public"};
    t->ready = false;
    t->setup_bad = false;
    if (pgconn_query(t->s.src, "DEALLOCATE ALL", 0, NULL) < 0 ||
        pgconn_query(t->s.src, SQL_SESSION_SETUP, 1, path) < 0 ||
        tailer_queue_statements(t, t->s.src) < 0 || pgconn_sync(t->s.src) < 0)
        return; /* PGCONN_LOST follows, and a reconnect */
}

static void on_src_setup_result(struct tailer *t, const PGresult *res)
{
    if (!pgconn_result_ok(res) && !t->setup_bad) {
        t->setup_bad = true;
        log_error_f(&(struct log_fields){.projection = t->s.name, .sqlstate = pgconn_sqlstate(res)},
                    "%s: event store session setup failed: %s (SQLSTATE %s); retrying with backoff",
                    t->s.name, pgconn_error_line(res), pgconn_sqlstate(res));
    }
}

/* Setup failed on a working connection (e.g. no access to event_store): try again later. */
static void src_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tailer *t = w->data;
    if (pgconn_idle(t->s.src))
        send_src_setup(t);
}

static void on_src_setup_done(struct tailer *t)
{
    if (t->setup_bad) {
        ev_timer_set(&t->retry_timer, backoff_next(&t->backoff, (uint32_t)rand()), 0.0);
        ev_timer_start(t->s.loop, &t->retry_timer);
        return;
    }
    backoff_reset(&t->backoff);
    t->ready = true;
    say(t, TAIL_READY); /* a read may have been waiting for it */
}

/*
 * Reads wait until a separate connection is up and done with any request
 * its owner gave up on; its setup, or that request's sync, says TAIL_READY.
 */
static bool usable(const struct tailer *t)
{
    return !t->s.separate || (t->ready && pgconn_idle(t->s.src));
}

/* A read on a separate connection is lost: it waits for the connection's setup. */
static void drop_read(struct tailer *t)
{
    tailer_abandon(t);
    t->ready = false;
    say(t, TAIL_DROPPED);
}

/* A send failed: on a separate connection the read is dropped; else its loss follows. */
static void send_failed(struct tailer *t)
{
    if (t->s.separate)
        drop_read(t);
    else
        say(t, TAIL_DROPPED);
}

void tailer_src_event(struct tailer *t, enum pgconn_event ev, const PGresult *res, bool reading)
{
    switch (ev) {
    case PGCONN_READY:
        send_src_setup(t);
        break;
    case PGCONN_LOST:
        t->ready = false;
        ev_timer_stop(t->s.loop, &t->retry_timer);
        if (reading)
            drop_read(t);
        break;
    case PGCONN_RESULT:
        if (!t->ready)
            on_src_setup_result(t, res);
        else if (reading)
            tailer_result(t, res);
        break;
    case PGCONN_SYNC:
        if (!t->ready)
            on_src_setup_done(t);
        else if (reading)
            tailer_synced(t);
        else
            say(t, TAIL_READY); /* a request given up on is over */
        break;
    case PGCONN_NOTIFY:
    case PGCONN_STANDBY:
        break;
    }
}

/* ---- a request --------------------------------------------------------------- */

static void begin(struct tailer *t, enum tail_req req)
{
    say(t, req == REQ_OPEN ? TAIL_OPENING : TAIL_FETCHING);
    t->req = req;
    t->results = 0;
    t->failed = false;
}

static int exec_stmt(struct tailer *t, enum tail_stmt st, const char *const *params)
{
    return pgconn_exec_prepared(t->s.src, tail_stmts[st].name, tail_stmts[st].nparams, params);
}

/* Remember the request's first failed statement; those after it only say "aborted". */
static void record_error(struct tailer *t, const PGresult *res)
{
    if (t->failed || PQresultStatus(res) != PGRES_FATAL_ERROR)
        return;
    t->failed = true;
    snprintf(t->err_state, sizeof t->err_state, "%s", pgconn_sqlstate(res));
    snprintf(t->err_msg, sizeof t->err_msg, "%s", pgconn_error_line(res));
}

/* ---- opening a window ---------------------------------------------------------- */

/*
 * The window just opened, by us or by another runner from the same lo: the
 * owner hears of it, then the checkpoint moves to it (an empty one slides).
 * Returns -1 when out of memory.
 */
static int set_window(struct tailer *t, const struct rs_window *w, bool taken)
{
    struct tail_news n = {
        .what = TAIL_WINDOW, .head = w->head, .empty = w->empty, .taken = taken, .stale = w->stale};
    t->s.cb(t->s.arg, &n);
    return tailread_open_window(t->s.cp, w);
}

/* Take a window another runner opened from our lo (readshare.h). */
static void take_window(struct tailer *t, const struct rs_window *w)
{
    if (set_window(t, w, true) < 0)
        say(t, TAIL_NOMEM);
    else if (t->s.cp->window_open)
        tailer_next(t);
    else
        say(t, TAIL_PASSED);
}

/*
 * Whether a new open must wait: while events keep coming, windows are
 * opened at most every min_read_interval_ms (longer above 1,000 events/s,
 * pace.h), so the events committed in between are read and applied
 * together. Opening on every notification cost the server a fifth more CPU
 * at 1,000 events/s (tests/bench/RESULTS.md). The first open after a quiet
 * spell goes at once. Shared opens are paced together, by the share's last
 * open and the rate its opens saw.
 */
static bool pause_open(struct tailer *t, bool shared)
{
    int min_ms = t->s.cfg->min_read_interval_ms;
    double gap, next;
    if (shared) {
        gap = PACE_MAX_FACTOR * min_ms / 1000.0; /* the longest the share may ask */
        next = readshare_next_open(t->s.share, min_ms);
    } else {
        gap = pace_interval(&t->pace, min_ms);
        next = t->opened_at + gap;
    }
    double left = next - ev_now(t->s.loop);
    /* ev_now follows the wall clock, which may step back */
    if (left <= 0 || left > gap)
        return false;
    say(t, TAIL_WAIT);
    if (!ev_is_active(&t->pause_timer)) {
        ev_timer_set(&t->pause_timer, left, 0.);
        ev_timer_start(t->s.loop, &t->pause_timer);
    }
    return true;
}

/*
 * Whether to open, and where: RS_SEND and RS_AT send an open (at *hi for
 * RS_AT), RS_WAIT and RS_HIT are dealt with here.
 */
static enum rs_answer share_open(struct tailer *t, const char **hi)
{
    *hi = NULL;
    t->open_ticket = 0;
    bool shared = t->s.may_share && readshare_active(&t->member);
    struct rs_window w;
    enum rs_answer a = shared ? readshare_open(&t->member, t->s.cp->lo, &w) : RS_SEND;
    switch (a) {
    case RS_WAIT:
        say(t, TAIL_WAIT);
        break;
    case RS_HIT:
        take_window(t, &w);
        break;
    case RS_AT:
        if (tailread_covers(w.hi, t->s.cp->lo)) {
            *hi = w.hi;
            break;
        }
        /* that hi does not cover lo: a window of its own */
        /* fall through */
    case RS_SEND:
        if (pause_open(t, shared))
            return RS_WAIT;
        a = RS_SEND;
        if (shared)
            t->open_ticket = readshare_open_sent(&t->member, t->s.cp->lo);
        else
            t->opened_at = ev_now(t->s.loop);
        break;
    }
    return a;
}

/*
 * The planner setting and the fetch of the batch after pos up to max, from
 * window hi (NULL bounds: the window the open in the same request found,
 * runner_sql.h SQL_WINDOW_BOUND): the grid's cell when shared, else our
 * own types.
 */
static int queue_fetch(struct tailer *t, bool shared, const char *pos, const char *max,
                       const char *hi)
{
    char size[21], bytes[21];
    fmt_i64(bytes, t->s.cfg->batch_max_bytes);
    t->fetch_limit = shared ? readshare_grid(t->s.share) : t->s.cfg->batch_size;
    fmt_i64(size, t->fetch_limit);
    if (shared) {
        const char *params[] = {pos, max, hi, t->s.cp->lo, size, bytes};
        return exec_stmt(t, TS_FETCH_CELL, params);
    }
    const char *params[] = {pos, max, hi, t->s.cp->lo, t->s.types, size, bytes};
    return exec_stmt(t, TS_FETCH, params);
}

/* A fetch of its own request: the planner settings go first (SQL_FETCH_PLAN). */
static int queue_planned_fetch(struct tailer *t, bool shared, const char *pos, const char *max,
                               const char *hi)
{
    if (exec_stmt(t, TS_FETCH_PLAN, NULL) < 0)
        return -1;
    return queue_fetch(t, shared, pos, max, hi);
}

/*
 * The window's first batch, in the open's request, so a live wake-up costs
 * one round trip less. Shared when the runner reads with others now. The
 * open made the fetch's planner settings (SQL_OPEN_WINDOW).
 */
static int queue_first_fetch(struct tailer *t)
{
    t->first = t->s.may_share && readshare_active(&t->member) ? FIRST_SHARED : FIRST_OWN;
    t->first_taken = false;
    t->started = ev_time();
    return queue_fetch(t, t->first == FIRST_SHARED, NULL, NULL, NULL);
}

static void open_window(struct tailer *t)
{
    const char *hi;
    enum rs_answer a = share_open(t, &hi);
    if (a == RS_WAIT || a == RS_HIT)
        return;
    struct tailwin_params p;
    const char *why;
    if (tailread_open_params(t->s.cp->lo, &p, &why) < 0) {
        read_failed(t); /* the share was told of an open that cannot go */
        fail(t, "open window", "", why);
        return;
    }
    char last[21];
    const char *params[] = {p.xip_lo, p.xmax_lo, hi, fmt_i64(last, t->s.cp->last_position)};
    begin(t, REQ_OPEN);
    t->foreign = false;
    if (exec_stmt(t, TS_OPEN_PLAN, NULL) < 0 || exec_stmt(t, TS_OPEN, params) < 0 ||
        queue_first_fetch(t) < 0 || pgconn_sync(t->s.src) < 0)
        send_failed(t);
    tailwin_params_free(&p);
}

/* ---- fetching a batch ------------------------------------------------------------ */

/* The window's last position, or the end of all positions when unknown. */
static int64_t window_max(const struct tailer *t)
{
    return t->s.cp->window_max ? t->s.cp->window_max : INT64_MAX;
}

/* Our part of a shared batch: its events after our position. */
static void use_shared_batch(struct tailer *t, struct rs_batch *b)
{
    t->sbatch = b;
    int ev0 = tailread_first_after(b->res, t->s.cp->window_pos);
    t->batch = (struct tail_batch){.res = b->res,
                                   .ev0 = ev0,
                                   .n = PQntuples(b->res) - ev0,
                                   .end = b->end,
                                   .more = b->end < window_max(t),
                                   .shared = true,
                                   .started = t->started};
}

static void hand_over(struct tailer *t)
{
    struct tail_news n = {.what = TAIL_BATCH, .batch = &t->batch};
    t->s.cb(t->s.arg, &n);
}

/* Fetch through the share: true when it answered (the batch, or wait). */
static bool share_fetch(struct tailer *t)
{
    if (!t->s.may_share || !readshare_active(&t->member))
        return false;
    struct checkpoint *cp = t->s.cp;
    struct rs_batch *b;
    enum rs_answer a = readshare_fetch(&t->member, cp->lo, cp->hi, cp->window_pos, &b);
    if (a == RS_WAIT) {
        say(t, TAIL_WAIT);
        return true;
    }
    if (a == RS_SEND) {
        if (!b)
            return false;
        char pos[21], max[21];
        tailer_release(t);
        t->sbatch = b;
        begin(t, REQ_FETCH);
        t->started = ev_time();
        if (queue_planned_fetch(t, true, fmt_i64(pos, cp->window_pos), fmt_i64(max, window_max(t)),
                                cp->hi) < 0 ||
            pgconn_sync(t->s.src) < 0)
            send_failed(t);
        return true;
    }
    tailer_release(t);
    t->started = ev_time();
    use_shared_batch(t, b);
    hand_over(t);
    return true;
}

static void fetch_next(struct tailer *t)
{
    if (share_fetch(t))
        return;
    char pos[21], max[21];
    begin(t, REQ_FETCH);
    t->started = ev_time();
    if (queue_planned_fetch(t, false, fmt_i64(pos, t->s.cp->window_pos),
                            fmt_i64(max, window_max(t)), t->s.cp->hi) < 0 ||
        pgconn_sync(t->s.src) < 0)
        send_failed(t);
}

void tailer_next(struct tailer *t)
{
    if (!usable(t))
        say(t, TAIL_WAIT);
    else if (t->s.cp->window_open)
        fetch_next(t);
    else
        open_window(t);
}

void tailer_fetch_positions(struct tailer *t, const char *positions)
{
    if (!usable(t)) {
        say(t, TAIL_WAIT);
        return;
    }
    const char *params[] = {positions};
    begin(t, REQ_FETCH);
    if (pgconn_query(t->s.src, SQL_FETCH_PLAN, 0, NULL) < 0 ||
        pgconn_query(t->s.src, SQL_FETCH_POSITIONS, 1, params) < 0 || pgconn_sync(t->s.src) < 0)
        send_failed(t);
}

/* ---- results --------------------------------------------------------------------- */

/*
 * A shared first batch is announced to the share as soon as the window is
 * known, so the runners the open wakes wait for it instead of reading it
 * again. When the share has it already, or would have us wait, our copy is
 * dropped and the usual fetch follows.
 */
static void claim_first_batch(struct tailer *t)
{
    struct checkpoint *cp = t->s.cp;
    if (t->first != FIRST_SHARED || !cp->window_open)
        return;
    struct rs_batch *b;
    enum rs_answer a = readshare_fetch(&t->member, cp->lo, cp->hi, cp->window_pos, &b);
    if (a == RS_SEND && b) {
        tailer_release(t);
        t->sbatch = b;
        return;
    }
    if (b)
        readshare_release(t->s.share, b);
    t->first = FIRST_NONE;
}

/* A fetch's rows: into the shared batch they were read for, or ours alone. */
static void take_batch(struct tailer *t, const PGresult *res)
{
    if (t->sbatch && t->sbatch->pending) {
        readshare_fetched(t->s.share, t->sbatch, pgconn_take_result(t->s.src), window_max(t),
                          tailread_cut_by_bytes(res));
        use_shared_batch(t, t->sbatch);
        return;
    }
    tailer_release(t);
    t->own = pgconn_take_result(t->s.src);
    int n = PQntuples(res);
    t->batch = (struct tail_batch){
        .res = t->own,
        .n = n,
        .end = n > 0 ? parse_i64(PQgetvalue(res, n - 1, FC_POSITION)) : 0,
        .more = n >= t->fetch_limit || tailread_cut_by_bytes(res),
        .started = t->started,
    };
}

static void on_open_result(struct tailer *t, const PGresult *res)
{
    record_error(t, res);
    t->results++;
    if (!pgconn_result_ok(res) || PQntuples(res) != 1)
        return;
    /* Transaction ids this cluster cannot judge (SQL_TROUBLE): worded for the log and status. */
    if (tailread_foreign_ids(res, t->s.cp->last_position, t->err_msg, sizeof t->err_msg)) {
        t->foreign = true; /* the sync stops the projection */
        return;
    }
    struct rs_window w;
    tailread_window(res, &w);
    if (set_window(t, &w, false) < 0) {
        t->failed = true;
        snprintf(t->err_state, sizeof t->err_state, "%s", "");
        snprintf(t->err_msg, sizeof t->err_msg, "%s", "out of memory");
        return;
    }
    pace_note(&t->pace, ev_now(t->s.loop), w.head);
    claim_first_batch(t);
    if (t->open_ticket) /* for the runners waiting on our open (readshare.h) */
        readshare_open_done(t->s.share, t->open_ticket, &w);
    t->open_ticket = 0;
}

/* The window's first batch, the last result of the open's request. */
static void on_first_fetch_result(struct tailer *t, const PGresult *res)
{
    record_error(t, res);
    t->results++;
    if (!pgconn_result_ok(res) || !t->s.cp->window_open || t->first == FIRST_NONE)
        return;
    take_batch(t, res);
    t->first_taken = true;
}

static void on_fetch_result(struct tailer *t, const PGresult *res)
{
    record_error(t, res);
    if (t->results++ == 0 || !pgconn_result_ok(res))
        return; /* the first is the planner setting */
    take_batch(t, res);
}

void tailer_result(struct tailer *t, const PGresult *res)
{
    if (t->req == REQ_FETCH) {
        on_fetch_result(t, res);
    } else if (t->req == REQ_OPEN && t->results == OPEN_RES_WINDOW) {
        on_open_result(t, res);
    } else if (t->req == REQ_OPEN && t->results == OPEN_RES_BATCH) {
        on_first_fetch_result(t, res);
    } else if (t->req == REQ_OPEN) {
        record_error(t, res);
        t->results++;
    }
}

/*
 * The request is over. Foreign transaction ids: reading on would skip
 * events or apply them out of order, so the owner stops until someone acts
 * (tailread.h).
 */
void tailer_synced(struct tailer *t)
{
    enum tail_req req = t->req;
    t->req = REQ_NONE;
    if (req == REQ_NONE)
        return;
    if (t->failed) {
        read_failed(t);
        fail(t, req == REQ_OPEN ? "open window" : "fetch", t->err_state, t->err_msg);
    } else if (req == REQ_OPEN && t->foreign) {
        read_failed(t);
        struct tail_news n = {.what = TAIL_FOREIGN, .message = t->err_msg};
        t->s.cb(t->s.arg, &n);
    } else if (req == REQ_OPEN && !t->s.cp->window_open) {
        say(t, TAIL_PASSED);
    } else if (req == REQ_OPEN && !t->first_taken) {
        tailer_next(t);
    } else {
        hand_over(t);
    }
}
