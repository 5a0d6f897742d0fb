/*
 * runner_int: the runner's insides, shared by its modules and by nobody
 * else: runner.c (the core: the state machine, setup, ownership, batches,
 * checkpoints; it reads the tail through its reader, tailer.h) and, above
 * it, the kinds of job it runs besides tailing, runner_rebuild.c (the
 * shadow runner of a rebuild) and
 * runner_replay.c (replaying dead letters), wired by runner_jobs.c. The
 * core calls a job only through its hooks (struct rn_job) and a job calls
 * the core's rn_* steps, never the other way round. Everything here runs
 * on the loop; a step sends one request and sets the state its results
 * come back in (rn_set_state, the table in rstate.c).
 */
#ifndef PROJECTORD_RUNNER_INT_H
#define PROJECTORD_RUNNER_INT_H

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "backoff.h"
#include "log.h"
#include "batch.h"
#include "checkpoint.h"
#include "pgconn.h"
#include "rstate.h"
#include "runner.h"
#include "runner_sql.h"
#include "tailer.h"

enum after_note { NOTE_THEN_NEXT, NOTE_THEN_WAIT, NOTE_THEN_DONE };

/*
 * The fields of a runner's log records (log.h): its projection, its
 * position (the checkpoint's), and the SQLSTATE (NULL or "": none).
 */
#define RN_FIELDS(r, state)                                                                        \
    (&(struct log_fields){.projection = (r)->proj->name,                                           \
                          .position = (r)->cp.last_position,                                       \
                          .has_position = true,                                                    \
                          .sqlstate = (state)})
/* The same about one event: its position instead of the checkpoint's. */
#define RN_EVENT_FIELDS(r, pos, state)                                                             \
    (&(struct log_fields){.projection = (r)->proj->name,                                           \
                          .position = (pos),                                                       \
                          .has_position = true,                                                    \
                          .sqlstate = (state)})

struct bad_event {
    int index;
    char sqlstate[6];
    char *error;
    bool unstorable; /* the read-model database's encoding cannot hold its payload */
};

struct runner {
    struct ev_loop *loop;
    const struct projection *proj;
    const struct projection_config *pcfg;
    const struct config *cfg;
    const char *owner;
    struct fleet *fleet;
    struct runner_stats *stats; /* the daemon's, or own_stats */
    struct runner_stats own_stats;
    runner_done_cb done;
    void *done_arg;
    /*
     * conn writes the read model, checkpoints, status and holds the
     * ownership lock; src reads the event store. They are one connection
     * unless database.target names a separate read-model database, and then
     * src is the reader's (its session and its read-only OPEN and FETCH).
     */
    struct pgconn *conn;
    struct pgconn *src;
    struct tailer *tail;    /* reads the tail: windows, pacing, shared reads, fetches */
    char *replay_positions; /* bigint[] literal of the next dead letters, NULL when none */
    enum rstate state;
    bool wake_pending;
    bool stopping;
    bool failed;      /* stopped by a bad event (on_error = stop) until the process restarts */
    bool set_up;      /* this connection's statements are prepared */
    bool holds_lock;  /* this connection holds the ownership lock */
    bool claimed;     /* the last claim got the lock */
    bool standing_by; /* said so in the log already */
    bool dirty;       /* progress past unhandled events, or ignored counts, not yet written */
    bool heartbeat_due;
    bool announced; /* the status row says what we are doing (not still 'starting') */
    char *types;    /* text[] literal of the handled event types, NULL for all */
    char *tables;   /* text[] literal of the projection's tables */
    char version[12];
    char *search_path;
    /*
     * live: a statement of the projection was rejected when prepared (a
     * declared one names a column that does not exist, ...): the session is
     * set up without them and the projection stays failed, with
     * unprepared_error in its status row, until a resume prepares again.
     */
    bool unprepared;
    char unprepared_state[6];
    char unprepared_error[BATCH_ERR_MAX];

    const struct rn_kind *kind; /* live or a rebuild's shadow: the policies that differ */
    /* The job under way besides tailing (struct rn_job): a shadow's rebuild, a replay; or NULL. */
    const struct rn_job *job;
    int job_state; /* the job's own state (its table: rn_job.states), set by rn_set_job_state */
    const struct rn_jobs *jobs; /* live: the kinds of job it may start */

    /*
     * Rebuilds. The live runner spawns a shadow runner (its child) that
     * replays everything into shadow tables; when the shadow has caught up
     * it holds the live runner (no new window), catches up once more and
     * swaps tables and checkpoint in; the live runner then reloads.
     */
    struct runner *parent;  /* shadow: the live runner */
    struct runner *child;   /* live: the shadow under way, or NULL */
    bool rebuild_requested; /* live: asked for in the status table, or a version change */
    bool rebuild_then_stop; /* live: a one-shot `projectord rebuild`: stop when it is done */
    bool rebuild_ok;        /* live: the last rebuild swapped in */
    bool held;              /* live: the shadow is finishing; open no new window */
    bool reload_pending;    /* live: the checkpoint was swapped: load it again */
    bool rebuild_begun;     /* shadow: its tables and checkpoint row exist */
    bool cp_loaded;         /* shadow: its setup found its checkpoint row, still its owner's */
    bool caught_up;         /* shadow: the last window opened was empty */
    bool swapped;           /* shadow: the last swap attempt succeeded */

    /* shadow: swap attempts in a row that gave way to a lock, and the short delays between. */
    unsigned swap_waits;
    struct backoff swap_backoff;
    double swap_sent; /* ev_time() the last swap attempt went out */

    /* Replaying dead letters (projectord replay-dead-letters), in position order. */
    bool replay_requested;
    bool replay_then_stop; /* a one-shot replay: stop when it is over */
    int64_t replay_pos;    /* dead letters up to here are done with */
    int64_t replayed;      /* applied by this replay */
    bool replay_over;      /* the last replay went through to the end */

    struct checkpoint cp;
    int64_t head;

    /* the batch (the reader's rows, borrowed until rn_clear_batch) */
    const PGresult *events;
    int ev0; /* the batch's first row in events (a shared batch may start earlier) */
    int nevents;
    int64_t batch_end;  /* the window's events up to here are in the batch */
    int cut;            /* events [0, cut) are in the batch; cut < nevents only for on_error=stop */
    bool stop_on_error; /* on_error = stop when the batch was built (a reload may change it) */
    bool more;          /* the window may hold more */
    bool shared;        /* read for the instance's runners: it holds every event type */
    struct bad_event *bad;
    size_t nbad;
    struct pj_ctx ctx;
    size_t results;
    int64_t processed;
    int64_t ignored; /* counted from the batch's results, after its checkpoint went out */
    int64_t skipped;
    int64_t ignored_unsaved; /* counted in committed batches, for the next checkpoint */
    int64_t ignored_sent;    /* of those, in the checkpoint in flight */
    int err_stmt;            /* index of the first failed statement, or -1 */
    char err_state[6];
    char err_msg[BATCH_ERR_MAX];
    int64_t new_seq;
    double latency;       /* of the batch being committed, in seconds; < 0 if unknown */
    double batch_started; /* ev_time() of its fetch */
    enum after_note after_note;

    ev_timer retry_timer;
    ev_timer heartbeat_timer;
    ev_timer deferred_timer;
    ev_timer claim_timer;
    ev_timer reap_timer;  /* live: frees a finished child outside its own callbacks */
    double head_at;       /* ev_now() when head was read */
    double pending_since; /* occurred_at (epoch s) of the oldest event still to apply, as
                             of the last fetch; 0: none known (the metrics' lag in seconds) */
    double progress_at;   /* ev_now() when last_position last moved, or the window was empty */
    struct backoff backoff;
    /* The failure last logged at ERROR: the same one again is said at debug only. */
    char said_failure[BATCH_ERR_MAX];

    /*
     * What the log said of the status (note_status in runner.c): the last
     * transition logged (NULL: none yet), and the catch-up under way.
     */
    const char *said_status;
    bool window_seen;         /* a window was opened since the checkpoint was (re)loaded */
    double catchup_since;     /* ev_now() the catch-up began; 0: none under way */
    double catchup_said_at;   /* its last progress line (or its start) */
    int64_t catchup_from;     /* last_position when it began */
    int64_t catchup_said_pos; /* last_position at its last progress line */
    uint64_t catchup_events;  /* events_processed when it began */

    /* Hot standbys (pgconn.h): refused until promoted. */
    bool src_standby;   /* separate src on one: the projection is failed meanwhile */
    bool standby_noted; /* the status row says so */
    bool standby_said;  /* conn on one (nothing can be written there): logged once */
};

/*
 * A kind of runner: what differs between the live runner of a projection
 * and the shadow runner of its rebuild, as data the core reads (it never
 * asks which kind it is). Each kind is defined where it lives: the live one
 * in runner.c (rn_live_kind), the shadow in runner_rebuild.c, which hands
 * it to rn_create.
 */
struct rn_kind {
    const char *label;      /* after the projection's name in the log: "" or " (rebuild)" */
    const char *what;       /* what a bad event stops (on_error = stop): "projection", ... */
    const char *resuming;   /* the log's word when its checkpoint is loaded */
    const char *app_suffix; /* after application_name's projectord/NAME: "" or "/rebuild" */
    const char *schema;     /* search_path's first schema, or its prefix ... */
    bool schema_is_prefix;  /* ... to which the projection's name is appended */
    bool shares_reads;      /* may read with the instance's other runners (tailer.h) */
    /*
     * Owns the projection: claims its lock, counts in the instance's share
     * (fleet.h), is handed over when over it. A kind that does not own runs
     * under the owner's runner, and its job loads its own checkpoint row
     * in the setup instead of the claim (rn_job.queue_load).
     */
    bool owns;
    /*
     * Writes the status row (notes, heartbeats, a statement that does not
     * prepare: failed until resumed) and tells the log the projection's
     * status and its hot standbys; another kind's owner says all that.
     */
    bool writes_status;
    const char *checkpoint_sql; /* its checkpoint (SQL_CHECKPOINT's parameters and answer) */
    const char *status;         /* the status its checkpoint writes; NULL: the checkpoint's own */
};

/* ---- runner.c ------------------------------------------------------------ */

/* The live runner's kind (the core's own). */
extern const struct rn_kind rn_live_kind;

/* A runner of that kind: a live runner (parent NULL), or the shadow that rebuilds parent's tables.
 */
struct runner *rn_create(struct ev_loop *loop, const struct projection *p,
                         const struct projection_config *pc, const struct config *cfg,
                         const char *owner, struct fleet *fleet, struct runner_stats *stats,
                         const struct rn_kind *kind, struct runner *parent, runner_done_cb done,
                         void *done_arg);

/* Decide what to do once a step has completed and the connection is idle. */
void rn_next_step(struct runner *r);

/* Stop for good: close the connections, then call the done callback. */
void rn_finish(struct runner *r);

/*
 * The one place where the state changes: logs the transition (debug), or
 * refuses one the table in rstate.c does not hold (an error: a bug of the
 * machine). Returns false when refused.
 */
bool rn_set_state(struct runner *r, enum rstate to);

/* Start a request in `state`: results are counted and errors recorded from here. */
void rn_begin_request(struct runner *r, enum rstate state);

/* The job under way from now (NULL: none), in its first state. */
void rn_set_job(struct runner *r, const struct rn_job *job);

/*
 * The one place where a job's state changes: the same rule as rn_set_state,
 * against the job's table (rstate.c). Returns false when refused.
 */
bool rn_set_job_state(struct runner *r, int to);

/* Start a request of the job's own, in job state `to`: it runs in R_JOB and comes back to it. */
void rn_begin_job_request(struct runner *r, int to);

/* Remember the request's first failed statement (the others only say "aborted"). */
void rn_record_error(struct runner *r, const PGresult *res);

/* A step failed, not by an event's fault: log, record, retry with backoff. */
void rn_step_failed(struct runner *r, const char *what, const char *sqlstate, const char *message);

/* Forget the batch: what was fetched, its bad events and its counts. */
void rn_clear_batch(struct runner *r);

/* Queue the checkpoint the batch commits, after the batch's own statements. */
int rn_queue_checkpoint(struct runner *r);
/* That checkpoint committed; batch_ignored: counted in the batch's results. */
void rn_checkpoint_saved(struct runner *r, int64_t batch_ignored);

/*
 * Tailing: the next batch after the checkpoint, from the reader (tailer.h):
 * fetched inside the open window, or from the next window. Its news sets
 * the state (OPEN, FETCH, or IDLE to wait) and goes on from there.
 */
void rn_read_next(struct runner *r);

/* Helpers. rn_set_str: copy src into *dst (freeing the old), -1 when out of memory. */
int rn_set_str(char **dst, const char *src);
const char *rn_fmt_i64(char buf[21], int64_t v);
const char *rn_event_value(const struct runner *r, int i, enum fetch_column col);
int64_t rn_event_position(const struct runner *r, int i);

/* ---- kinds of job (runner_rebuild.c, runner_replay.c) -------------------- */

/*
 * What a runner does besides tailing is a job of its own kind, in a module
 * above this core: the core calls a job only through these hooks, and the
 * job drives the core through the rn_* steps above, so the dependencies
 * point one way. A hook left NULL means the core's own default.
 */
struct rn_job {
    const char *name;
    const struct job_states *states; /* its own machine (rstate.h) */
    /* Live runner r asked for it: begin (a rebuild spawns the shadow that runs it). */
    void (*start)(struct runner *r);
    /* Session setup: queued before the projection's statements are prepared ... */
    int (*queue_setup)(struct runner *r);
    /* ... and last, instead of the claim (its results come as R_SETUP's). */
    int (*queue_load)(struct runner *r);
    /* The setup (queue_load's) came back: false when the job is over (NULL: go on). */
    bool (*loaded)(struct runner *r);
    /* The setup failed: true when the job gave up for good (NULL, false: retry). */
    bool (*setup_failed)(struct runner *r);
    /* Between batches: send the job's next request. */
    void (*step)(struct runner *r);
    /* Told to stop, between requests (NULL: the status note, then done). */
    void (*stopped)(struct runner *r);
    /* Its checkpoint row is another instance's now: stop, touching nothing. */
    void (*lost)(struct runner *r);
    /* The fetch found no event (NULL: the window is passed). */
    void (*fetched_nothing)(struct runner *r);
    /* Inside a batch: event i applied; queue what goes with it (-1: failed). */
    int (*applied)(struct runner *r, int i);
    /*
     * The batch's statements all applied (maybe none): end it with the
     * job's own request (NULL: the tail's checkpoint and the sync go right
     * behind the statements, one round trip).
     */
    void (*batch_applied)(struct runner *r);
    /* Its batches dead-letter a bad event whatever on_error says (a replay). */
    bool skips_bad;
    /* Results and sync of the job's own requests (R_JOB; its state says which). */
    void (*on_result)(struct runner *r, const PGresult *res);
    void (*on_sync)(struct runner *r);
};

/* The kinds a live runner may start (runner_jobs.c wires them). */
struct rn_jobs {
    const struct rn_job *rebuild;
    const struct rn_job *replay;
};

/* Rebuilding into shadow tables (runner_rebuild.c): start spawns the shadow runner. */
extern const struct rn_job rebuild_job;

/* Replaying dead letters (runner_replay.c), inside the live runner. */
extern const struct rn_job replay_job;

#endif
