/*
 * rstate: the states of a projection runner and the transitions allowed
 * between them, as one explicit table (rstate.c). The runner changes its
 * state in one place only (rn_set_state in runner.c), which asks this
 * table, logs the change, and refuses one the table does not hold. Pure:
 * no loop, no database; tests/unit/test_rstate.c checks the rules.
 *
 * A request state (SETUP .. ABANDON) is set as its request goes out, and
 * its results and sync come back in it; IDLE, WAIT, STANDBY and DOWN wait
 * for something; DONE is the end.
 */
#ifndef PROJECTORD_RSTATE_H
#define PROJECTORD_RSTATE_H

#include <stdbool.h>

enum rstate {
    R_DOWN,        /* waiting for the connection */
    R_SETUP,       /* session setup and first claim in flight */
    R_STANDBY,     /* another instance owns the projection: claim again later */
    R_CLAIM,       /* trying to take ownership */
    R_REGISTER,    /* owner now: loading the checkpoint */
    R_RELEASE,     /* handing the projection over to another instance */
    R_IDLE,        /* waiting for a wake-up */
    R_OPEN,        /* opening a window */
    R_FETCH,       /* reading a batch */
    R_APPLY,       /* a replay's statements sent, their results coming */
    R_ROLLBACK,    /* a statement failed: waiting for the sync */
    R_COMMIT,      /* a batch's statements (or none), its checkpoint and the sync sent */
    R_NOTE,        /* status-only write in flight */
    R_SWAP,        /* shadow: trying to swap the rebuilt tables in */
    R_REPLAY_LIST, /* reading the positions of the next dead letters to replay */
    R_REPLAYED,    /* a replay batch's dead letters dropped, counts moved */
    R_REPLAY_DONE, /* the replay's end recorded */
    R_ABANDON,     /* shadow: giving the rebuild up */
    R_WAIT,        /* backing off before a retry */
    R_DONE,
};

/* Whether the runner may go from `from` to `to` (staying in a state always may). */
bool rstate_allowed(enum rstate from, enum rstate to);

/* The state's name for the log ("IDLE"); a static string. */
const char *rstate_name(enum rstate s);

#endif
