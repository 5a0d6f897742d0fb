/*
 * rstate: the runner's transition table (rstate.h). Each row says from
 * which states the runner may enter a state, and why, so that a change of
 * state the machine was not built for is caught where it happens (logged
 * and refused by the runner) instead of showing up later as a stuck or
 * doubled request. The jobs' tables (rebuild, replay) follow the runner's.
 */
#include "rstate.h"

#define B(s) (1u << (s))

/* Every request state: its sync (or a failure) ends it. */
#define REQUESTS                                                                                   \
    (B(R_SETUP) | B(R_CLAIM) | B(R_REGISTER) | B(R_RELEASE) | B(R_OPEN) | B(R_FETCH) |             \
     B(R_APPLY) | B(R_ROLLBACK) | B(R_COMMIT) | B(R_NOTE) | B(R_JOB))
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
    /* A job's batch (a replay's): a statement failed. */
    [R_ROLLBACK] = B(R_APPLY),
    /* A batch's commit right behind its statements, or a checkpoint alone. */
    [R_COMMIT] = B(R_APPLY) | B(R_IDLE) | B(R_COMMIT),
    /* A status write: between steps, or after a step failed. */
    [R_NOTE] = REQUESTS | B(R_IDLE),
    /*
     * A job's request: between steps (a swap, an abandon, a replay's list),
     * when its batch's statements applied (a replay's counts), when a fetch
     * found nothing (a replay's end), or when its setup failed for good (a
     * rebuild gives itself up). Its own table orders its steps.
     */
    [R_JOB] = B(R_IDLE) | B(R_APPLY) | B(R_OPEN) | B(R_FETCH) | B(R_SETUP),
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
        [R_DOWN] = "DOWN",   [R_SETUP] = "SETUP",       [R_STANDBY] = "STANDBY",
        [R_CLAIM] = "CLAIM", [R_REGISTER] = "REGISTER", [R_RELEASE] = "RELEASE",
        [R_IDLE] = "IDLE",   [R_OPEN] = "OPEN",         [R_FETCH] = "FETCH",
        [R_APPLY] = "APPLY", [R_ROLLBACK] = "ROLLBACK", [R_COMMIT] = "COMMIT",
        [R_NOTE] = "NOTE",   [R_JOB] = "JOB",           [R_WAIT] = "WAIT",
        [R_DONE] = "DONE",
    };
    return (unsigned)s <= R_DONE ? names[s] : "?";
}

/* ---- the jobs' machines ---------------------------------------------------- */

bool job_state_allowed(const struct job_states *t, int from, int to)
{
    if (from < 0 || from >= t->count || to < 0 || to >= t->count)
        return false;
    return from == to || (t->from_ok[to] & B(from)) != 0;
}

const char *job_state_name(const struct job_states *t, int s)
{
    return s >= 0 && s < t->count ? t->names[s] : "?";
}

static const char *const rebuild_names[RB_COUNT] = {
    [RB_CATCH_UP] = "CATCH_UP",
    [RB_HELD] = "HELD",
    [RB_SWAP] = "SWAP",
    [RB_ABANDON] = "ABANDON",
};

static const unsigned rebuild_from[RB_COUNT] = {
    /* Where it begins; nothing comes back to it (a hold lasts until the rebuild ends). */
    [RB_CATCH_UP] = 0,
    /* Caught up, or the swap found the live runner ahead after all: catch up once more, held. */
    [RB_HELD] = B(RB_CATCH_UP) | B(RB_SWAP),
    /* Only with the live runner held, so the swap's window covers all it applied. */
    [RB_SWAP] = B(RB_HELD),
    /* Failed, or stopped: from anywhere; nothing leaves it but the end. */
    [RB_ABANDON] = B(RB_CATCH_UP) | B(RB_HELD) | B(RB_SWAP),
};

const struct job_states rebuild_states = {
    .job = "rebuild", .count = RB_COUNT, .names = rebuild_names, .from_ok = rebuild_from};

static const char *const replay_names[RP_COUNT] = {
    [RP_LIST] = "LIST",
    [RP_APPLY] = "APPLY",
    [RP_REPLAYED] = "REPLAYED",
    [RP_DONE] = "DONE",
};

static const unsigned replay_from[RP_COUNT] = {
    /* Where it begins, each batch begins, and a failed step is retried from. */
    [RP_LIST] = B(RP_APPLY) | B(RP_REPLAYED) | B(RP_DONE),
    /* Dead letters listed: their events are fetched and applied. */
    [RP_APPLY] = B(RP_LIST),
    /* Only after their statements applied. */
    [RP_REPLAYED] = B(RP_APPLY),
    /* None listed, or none of their events found. */
    [RP_DONE] = B(RP_LIST) | B(RP_APPLY),
};

const struct job_states replay_states = {
    .job = "replay", .count = RP_COUNT, .names = replay_names, .from_ok = replay_from};
