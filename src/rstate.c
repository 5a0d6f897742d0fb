/*
 * rstate: the runner's transition table (rstate.h). Each row says from
 * which states the runner may enter a state, and why, so that a change of
 * state the machine was not built for is caught where it happens (logged
 * and refused by the runner) instead of showing up later as a stuck or
 * doubled request.
 */
#include "rstate.h"

#define B(s) (1u << (s))

/* Every request state: its sync (or a failure) ends it. */
#define REQUESTS                                                                                   \
    (B(R_SETUP) | B(R_CLAIM) | B(R_REGISTER) | B(R_RELEASE) | B(R_OPEN) | B(R_FETCH) |             \
     B(R_APPLY) | B(R_ROLLBACK) | B(R_COMMIT) | B(R_NOTE) | B(R_SWAP) | B(R_REPLAY_LIST) |         \
     B(R_REPLAYED) | B(R_REPLAY_DONE) | B(R_ABANDON))
#define ALL (REQUESTS | B(R_DOWN) | B(R_STANDBY) | B(R_IDLE) | B(R_WAIT))

/* from_ok[to]: the states from which `to` may be entered. */
static const unsigned from_ok[R_DONE + 1] = {
    /* A send failed or the connection was lost: from anywhere but the end. */
    [R_DOWN] = ALL,
    /* The connection is (back) up, or a failed setup is retried. */
    [R_SETUP] = B(R_DOWN) | B(R_WAIT),
    /* The claim (alone, or ending the setup) did not get the lock; or the projection was handed
       over. */
    [R_STANDBY] = B(R_SETUP) | B(R_CLAIM) | B(R_RELEASE),
    /* A stand-by's periodic claim, or a failed claim retried. */
    [R_CLAIM] = B(R_STANDBY) | B(R_WAIT),
    /* Owner now, a swapped or moved checkpoint, or a resume: load the checkpoint. */
    [R_REGISTER] = B(R_SETUP) | B(R_CLAIM) | B(R_IDLE) | B(R_COMMIT),
    /* Over its share: decided between steps. */
    [R_RELEASE] = B(R_IDLE),
    /* A step is over (its sync came, or it found nothing to send). */
    [R_IDLE] = REQUESTS | B(R_IDLE) | B(R_WAIT),
    /* Opens and the jobs' first requests are decided between steps. */
    [R_OPEN] = B(R_IDLE),
    /* After the open (its first batch was not taken), or between steps. */
    [R_FETCH] = B(R_IDLE) | B(R_OPEN),
    /* A batch fetched (or shared), or sent again after a rollback. */
    [R_APPLY] = B(R_IDLE) | B(R_OPEN) | B(R_FETCH) | B(R_ROLLBACK) | B(R_COMMIT),
    /* A replay batch's statement failed. */
    [R_ROLLBACK] = B(R_APPLY),
    /* A batch's commit right behind its statements, or a checkpoint alone. */
    [R_COMMIT] = B(R_APPLY) | B(R_IDLE) | B(R_COMMIT),
    /* A status write: between steps, or after a step failed. */
    [R_NOTE] = REQUESTS | B(R_IDLE),
    /* A shadow's swap and its giving up are decided between steps. */
    [R_SWAP] = B(R_IDLE),
    [R_ABANDON] = B(R_IDLE),
    /* A replay's next dead letters, between steps. */
    [R_REPLAY_LIST] = B(R_IDLE),
    /* A replay batch's statements all applied (or there were none). */
    [R_REPLAYED] = B(R_APPLY),
    /* No dead letter left, or none of their events. */
    [R_REPLAY_DONE] = B(R_IDLE) | B(R_REPLAY_LIST) | B(R_OPEN) | B(R_FETCH),
    /* A step failed: back off, from a request or from between steps. */
    [R_WAIT] = REQUESTS | B(R_IDLE),
    /* Stopped: from anywhere, once. */
    [R_DONE] = ALL,
};

bool rstate_allowed(enum rstate from, enum rstate to)
{
    if ((unsigned)from > R_DONE || (unsigned)to > R_DONE)
        return false;
    return from == to || (from_ok[to] & B(from)) != 0;
}

const char *rstate_name(enum rstate s)
{
    static const char *const names[R_DONE + 1] = {
        [R_DOWN] = "DOWN",
        [R_SETUP] = "SETUP",
        [R_STANDBY] = "STANDBY",
        [R_CLAIM] = "CLAIM",
        [R_REGISTER] = "REGISTER",
        [R_RELEASE] = "RELEASE",
        [R_IDLE] = "IDLE",
        [R_OPEN] = "OPEN",
        [R_FETCH] = "FETCH",
        [R_APPLY] = "APPLY",
        [R_ROLLBACK] = "ROLLBACK",
        [R_COMMIT] = "COMMIT",
        [R_NOTE] = "NOTE",
        [R_SWAP] = "SWAP",
        [R_REPLAY_LIST] = "REPLAY_LIST",
        [R_REPLAYED] = "REPLAYED",
        [R_REPLAY_DONE] = "REPLAY_DONE",
        [R_ABANDON] = "ABANDON",
        [R_WAIT] = "WAIT",
        [R_DONE] = "DONE",
    };
    return (unsigned)s <= R_DONE ? names[s] : "?";
}
