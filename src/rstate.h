/*
 * rstate: the states of a projection runner and the transitions allowed
 * between them, as one explicit table (rstate.c). The runner changes its
 * state in one place only (rn_set_state in runner.c), which asks this
 * table, logs the change, and refuses one the table does not hold. Pure:
 * no loop, no database; tests/unit/test_rstate.c checks the rules.
 *
 * A request state (SETUP .. JOB) is set as its request goes out, and
 * its results and sync come back in it; IDLE, WAIT, STANDBY and DOWN wait
 * for something; DONE is the end.
 *
 * A job besides tailing (a rebuild, a replay: struct rn_job in
 * runner_int.h) has a small machine of its own, below: its states and
 * table, checked and logged the same way (rn_set_job_state). Its own
 * requests run in the runner's one state JOB, whose results and sync go to
 * the job; the rest of its work is the runner's (a replay's batches are
 * fetched and applied in FETCH, APPLY and ROLLBACK, a rebuild catches up in
 * OPEN, FETCH and COMMIT). So this table knows no job, and a job's table
 * only its own steps.
 */
#ifndef PROJECTORD_RSTATE_H
#define PROJECTORD_RSTATE_H

#include <stdbool.h>

enum rstate {
    R_DOWN,     /* waiting for the connection */
    R_SETUP,    /* session setup and first claim in flight */
    R_STANDBY,  /* another instance owns the projection: claim again later */
    R_CLAIM,    /* trying to take ownership */
    R_REGISTER, /* owner now: loading the checkpoint */
    R_RELEASE,  /* handing the projection over to another instance */
    R_IDLE,     /* waiting for a wake-up */
    R_OPEN,     /* opening a window */
    R_FETCH,    /* reading a batch */
    R_APPLY,    /* a batch's statements queued; a job's batch (a replay's) awaits their results */
    R_ROLLBACK, /* a job's batch: a statement failed: waiting for the sync */
    R_COMMIT,   /* a batch's statements (or none), its checkpoint and the sync sent */
    R_NOTE,     /* status-only write in flight */
    R_JOB,      /* a job's own request in flight (the job's state says which) */
    R_WAIT,     /* backing off before a retry */
    R_DONE,
};

/* Whether the runner may go from `from` to `to` (staying in a state always may). */
bool rstate_allowed(enum rstate from, enum rstate to);

/* The state's name for the log ("IDLE"); a static string. */
const char *rstate_name(enum rstate s);

/*
 * A job's machine: its states (0 is where it begins; nothing need enter
 * it) and from_ok[to], the states from which `to` may be entered.
 */
struct job_states {
    const char *job; /* "rebuild", "replay" */
    int count;
    const char *const *names;
    const unsigned *from_ok;
};

/* Whether a job may go from `from` to `to` (staying always may). */
bool job_state_allowed(const struct job_states *t, int from, int to);

/* The job's state's name for the log ("SWAP"); a static string, "?" when out of range. */
const char *job_state_name(const struct job_states *t, int s);

/*
 * A rebuild (runner_rebuild.c), in its shadow runner. Its one way to a
 * swap is through a held live runner, and once it gives up it stays given
 * up until it ends.
 */
enum rebuild_state {
    RB_CATCH_UP, /* replaying the event store into the shadow tables; the live runner goes on */
    RB_HELD,     /* caught up: the live runner is held (no new window); catching up the rest */
    RB_SWAP,     /* the swap (checkpoint and tables, one transaction) sent, or to retry (JOB) */
    RB_ABANDON,  /* giving the rebuild up: its row failed, its schema dropped (JOB) */
    RB_COUNT
};
extern const struct job_states rebuild_states;

/* A dead-letter replay (runner_replay.c), in the live runner, batch by batch. */
enum replay_state {
    RP_LIST,     /* reading the positions of the next dead letters (JOB) */
    RP_APPLY,    /* their events fetched and applied (the runner's FETCH, APPLY, ROLLBACK) */
    RP_REPLAYED, /* the batch's dead letters dropped, its counts moved (JOB) */
    RP_DONE,     /* none left: the replay's end recorded (JOB) */
    RP_COUNT
};
extern const struct job_states replay_states;

#endif
