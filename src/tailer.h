/*
 * tailer: one runner's reader of the event store's tail. Asked for "the
 * next batch after this checkpoint" (tailer_next), it fetches inside the
 * checkpoint's open window, or opens the next window and fetches its first
 * batch in the same request; it paces its opens (pace.h), reads with the
 * instance's other runners when it may (readshare.h), and keeps a separate
 * event-store connection's session (database.target). Its rules that need
 * no connection are in tailread.h.
 *
 * It tells its owner everything through the one callback it was given, as
 * news (enum tail_outcome): a request goes out now, a window was opened, a
 * batch is ready, nothing to apply, wait, read again, failed. It changes
 * no state of its owner's: the owner sets its own around the news (the
 * runner's OPEN, FETCH, IDLE). The owner forwards the results and sync of
 * the reader's requests (tailer_result, tailer_synced) and, when the event
 * store has a connection of its own, every event of that connection
 * (tailer_src_event).
 *
 * The checkpoint is the owner's: the reader reads it and moves it to each
 * window it opens or takes (tailread_open_window); the owner moves it
 * through a window. A batch handed over stays the reader's: the owner
 * borrows it until tailer_release. Everything runs on the loop.
 */
#ifndef PROJECTORD_TAILER_H
#define PROJECTORD_TAILER_H

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "pgconn.h"
#include "readshare.h"

struct tailer;

enum tail_outcome {
    TAIL_OPENING,  /* an open, with its window's first fetch, goes out now */
    TAIL_FETCHING, /* a fetch goes out now */
    TAIL_WINDOW,   /* a window was opened or taken (news: head, empty, taken, stale): the
                      checkpoint is at it; the read goes on */
    TAIL_BATCH,    /* a batch to apply (news.batch), maybe of no event */
    TAIL_PASSED,   /* the window opened is empty: nothing to apply */
    TAIL_WAIT,     /* nothing went out: wait for TAIL_KICK or TAIL_READY */
    TAIL_KICK,     /* a wait may be over (the share has news, a pause ended): ask again */
    TAIL_READY,    /* the separate event-store connection can take a read (again) */
    TAIL_FAILED,   /* the read failed (news: step, sqlstate, message) */
    TAIL_FOREIGN,  /* the open found transaction ids this cluster cannot judge (news.message) */
    TAIL_DROPPED,  /* the read could not be sent or its connection broke; on one connection
                      for both, PGCONN_LOST follows */
    TAIL_NOMEM,    /* out of memory taking another runner's window */
};

/* A batch: rows ev0 .. ev0 + n - 1 of res, the window's events in position order. */
struct tail_batch {
    const PGresult *res;
    int ev0; /* a shared batch may start before our position */
    int n;
    int64_t end;    /* the window's events up to here are in it */
    bool more;      /* the window may hold more */
    bool shared;    /* read for every runner: it holds every event type */
    double started; /* ev_time() its read began */
};

struct tail_news {
    enum tail_outcome what;
    int64_t head;                   /* TAIL_WINDOW: the event store's last position */
    bool empty;                     /* TAIL_WINDOW: no event in it (the checkpoint slid) */
    bool taken;                     /* TAIL_WINDOW: another runner's open (it used the wake-up) */
    bool stale;                     /* TAIL_WINDOW, taken: older than the wake-up: open again */
    const char *step;               /* TAIL_FAILED: "open window" or "fetch" */
    const char *sqlstate;           /* TAIL_FAILED: "" when none */
    const char *message;            /* TAIL_FAILED, TAIL_FOREIGN */
    const struct tail_batch *batch; /* TAIL_BATCH */
};

/* Called from the reader's calls and from the loop; it may ask the reader again. */
typedef void (*tailer_cb)(void *arg, const struct tail_news *news);

struct tailer_setup {
    struct ev_loop *loop;
    const char *name;         /* for the log (borrowed) */
    struct pgconn *src;       /* reads the event store (borrowed) */
    bool separate;            /* src is not the owner's connection: the reader sets it up */
    struct readshare *share;  /* the instance's, or NULL */
    bool may_share;           /* reads with the others (a rebuild's shadow does not) */
    const struct config *cfg; /* batch_size, batch_max_bytes, min_read_interval_ms (reloaded) */
    struct checkpoint *cp;    /* the owner's */
    const char *types;        /* text[] of the handled event types, NULL for all (borrowed) */
    tailer_cb cb;
    void *arg;
};

/* NULL when out of memory. */
struct tailer *tailer_new(const struct tailer_setup *s);
void tailer_free(struct tailer *t);

/* The owner stops for good: no more news from the reader's timers. */
void tailer_stop(struct tailer *t);

/* Queue the prepares of the reader's statements on c (the owner's setup, one connection). */
int tailer_queue_statements(struct tailer *t, struct pgconn *c);

/*
 * The next batch after the checkpoint: fetched inside its open window, or
 * from the next window, opened (or taken from another runner) now.
 */
void tailer_next(struct tailer *t);

/* The events at positions (a bigint[] literal), own types or not: a dead-letter replay's. */
void tailer_fetch_positions(struct tailer *t, const char *positions);

/* A result and the sync of the reader's request in flight (after TAIL_OPENING, TAIL_FETCHING). */
void tailer_result(struct tailer *t, const PGresult *res);
void tailer_synced(struct tailer *t);

/*
 * An event of a separate event-store connection; reading: the owner is
 * waiting for the reader's request (results of one it gave up on are
 * nobody's).
 */
void tailer_src_event(struct tailer *t, enum pgconn_event ev, const PGresult *res, bool reading);

/* The read in flight is given up (the owner's connection broke): nobody waits for it. */
void tailer_abandon(struct tailer *t);

/* The owner is done with the batch handed over. */
void tailer_release(struct tailer *t);

/* Whether it may read with the others now (it owns its projection, is not failed, ...). */
void tailer_set_sharing(struct tailer *t, bool on);

/* Between steps: a window the checkpoint has passed is left (the others stop waiting for us). */
void tailer_leave_passed(struct tailer *t);

/* A notification woke the owner: only opens sent after the share's round may serve it. */
void tailer_woken(struct tailer *t);

#endif
