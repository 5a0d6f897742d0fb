/*
 * checkpoint: the pure arithmetic of a projection's tail checkpoint, the
 * snapshot window (docs/design.md, "Tailing: the snapshot window").
 *
 * A checkpoint is two snapshots, lo and hi (pg_current_snapshot() as
 * text), and a position inside the window they make: every event visible
 * in lo is applied, and of the events visible in hi but not in lo, those up
 * to window_pos (in position order). Nothing here talks to the database or
 * the loop: the runner describes what a batch did, and this module says
 * what the checkpoint that commits with it is, so every rule can be tested
 * alone (tests/unit/test_checkpoint.c).
 *
 * The snapshot strings are owned by the struct (checkpoint_free); the
 * functions that return a new checkpoint copy nothing: they say which of
 * lo and hi the next one starts from.
 */
#ifndef PROJECTORD_CHECKPOINT_H
#define PROJECTORD_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

/* The checkpoint as committed (or, between an open and its commit, the open window). */
struct checkpoint {
    char *lo;
    char *hi;
    int64_t window_pos; /* events of the window up to here are applied */
    int64_t window_max; /* highest position in the window; 0 if unknown */
    int64_t last_position;
    int64_t seq;
    bool window_open;
};

/* What a batch did, as far as the checkpoint cares. */
struct cp_batch {
    bool fetched;         /* events were read; false: a write of progress made in memory */
    bool failed;          /* the projection is stopped by an earlier bad event */
    int nevents;          /* events read */
    int cut;              /* events [0, cut) are in the batch (a bad event may end it early) */
    bool stop_on_error;   /* the batch was built under on_error = stop */
    bool more;            /* the fetch was full: the window may hold more */
    int64_t batch_end;    /* the window's events up to here were read */
    int64_t cut_position; /* position of event cut - 1 (when cut > 0) */
    int64_t last_read;    /* position of the last event read (when nevents > 0) */
};

enum cp_status { CP_LIVE, CP_CATCHING_UP, CP_FAILED };

/*
 * The checkpoint the batch commits: next gets cur's numbers moved on (its
 * lo/hi pointers are cur's: when next->window_open is false the next lo is
 * cur's hi). *stops is set when the batch ends at a bad event under
 * on_error = stop (the event at index cut). last_position never moves back.
 */
void checkpoint_after(const struct checkpoint *cur, const struct cp_batch *b,
                      struct checkpoint *next, enum cp_status *status, bool *stops);

/*
 * The window held nothing the projection handles: it slides in memory
 * (the caller moves lo to hi), everything up to its end counts as passed.
 */
void checkpoint_pass(struct checkpoint *cp);

const char *checkpoint_status_name(enum cp_status s);

void checkpoint_free(struct checkpoint *cp);

#endif
