/*
 * readshare: one read of the event store for all the projections of an
 * instance.
 *
 * Without it every runner opens its own windows and fetches its own copy of
 * every batch, so four projections walk the event table four times and the
 * fetch is about half of a catch-up's server time (tests/bench/RESULTS.md).
 * With it, runners that own their projection share:
 *
 *  - window opens: the opens sent through the share form a chain, each
 *    from the hi of the one before, and the share keeps the last two. A
 *    runner about to open from lo takes the kept open from lo, even one
 *    older than the notification that woke it (it opens again after that
 *    window), and waits for one that is pending (up to
 *    READSHARE_OPEN_STALE_S). A runner at the end of the chain that needs
 *    a newer window sends the next open, but not while another runner
 *    still reads the window before the last open (and has moved on in it
 *    within READSHARE_STALE_S), for READSHARE_GATE_S at most: that one
 *    takes the last open next, and a window opened now would be a second
 *    one ahead of it (every runner with nothing to do opening on every
 *    notification made five opens per batch applied). A runner off the
 *    chain (another lo: a cold start, a runner that fell behind) takes the
 *    last open's hi when it was sent after the notification round that
 *    woke it and sees all that lo sees (snapshot_covers, checked by the
 *    caller): it sends an open of its own at that hi, which puts it on the
 *    chain.
 *  - batches: inside a shared window, batches are fetched for every event
 *    type and end on a grid of batch_size positions (the grid starts at the
 *    first event after the fetch's lower bound), so runners at different
 *    points of one cell still meet at its end. A fetched batch is kept
 *    while a runner of that window has not passed it, and a batch that is
 *    the whole window of a kept open while the share keeps that open (the
 *    runners it woke take it later). A runner waits for a read another
 *    sent only while that read is younger than READSHARE_STALE_S.
 *  - pacing: a runner that is batch_ahead batches (or, for big events,
 *    readshare_set_ahead_bytes) ahead of the slowest
 *    runner still reading its window waits for it (a runner that has not
 *    moved on for READSHARE_STALE_S seconds, stuck or retrying one batch,
 *    no longer counts), so the batches kept are few and memory stays
 *    bounded.
 *
 * Correctness does not depend on any of it: a window (lo, hi) is valid for
 * any hi newer than lo, and a batch is the window's events in a position
 * range, whoever fetched it. Single-threaded: everything runs on the loop.
 */
#ifndef PROJECTORD_READSHARE_H
#define PROJECTORD_READSHARE_H

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#define READSHARE_STALE_S 1.0
/*
 * An open is waited for much longer than a batch: the open of a big backlog
 * is one slow statement (seconds at 5M events, a scan of every entry of the
 * transaction_id index in it), and a runner that stopped waiting opened its
 * own window at another hi and read the whole backlog alone (a 5M catch-up
 * fetched every event four times). A failed or lost open frees the waiters
 * at once (readshare_open_failed); this only bounds a slow one.
 */
#define READSHARE_OPEN_STALE_S 30.0
#define READSHARE_AHEAD        4 /* how many batches a runner may read ahead of the slowest */
/* How many batch_max_bytes the batches not passed by the slowest may hold before a runner waits. */
#define READSHARE_AHEAD_BOUNDS 2
/* How long a runner waits for another to take the last open before it opens the next. */
#define READSHARE_GATE_S 0.005

struct readshare;

/* A member of the share, embedded in its owner (a runner); zero it before joining. */
struct rs_member {
    struct readshare *share;
    struct rs_member *next;
    void (*kick)(void *arg); /* a wait may be over: step again (never called re-entrantly) */
    void *arg;
    bool sharing;    /* owns its projection and may read with the others */
    bool waiting;    /* told RS_WAIT; kicked when something changes */
    uint64_t floor;  /* only opens sent after this may serve it */
    char *lo, *hi;   /* the window it reads now (copies), NULL between windows */
    int64_t cursor;  /* the lower bound of its last fetch */
    double moved_at; /* when its cursor last moved: one that stopped moving is not waited for */
    uint64_t kicked; /* the kick round it was last kicked in */
};

/* A window's answer: the hi snapshot, its first and last positions, the head. */
struct rs_window {
    const char *hi; /* valid until the share changes; copy it */
    int64_t first, last, head;
    bool empty;
    bool stale; /* older than the wake-up: open again after this window */
};

/* A fetched batch, shared: the events of the window in (after, end]. */
struct rs_batch {
    char *lo, *hi;
    int64_t after;
    int64_t end; /* the window's events up to here are in res; meaningful once done */
    PGresult *res;
    int64_t bytes; /* of its values, once done */
    bool pending;  /* sent, not answered */
    double sent_at;
    int refs;
    struct rs_batch *next;
};

enum rs_answer {
    RS_SEND, /* nothing to share: send your own read (and report it) */
    RS_WAIT, /* another member's read is coming, or you are far ahead: wait for a kick */
    RS_HIT,  /* the answer is here */
    RS_AT,   /* open your window at the hi given */
};

/* batch_size: the grid and the most events in a batch; batch_ahead: pacing (>= 1). */
struct readshare *readshare_new(struct ev_loop *loop, int batch_size, int batch_ahead);
void readshare_free(struct readshare *s);

/*
 * Pacing by bytes as well: a runner waits while the batches the slowest
 * reader has not passed hold `bytes` or more (0: no such bound), so big
 * events do not pile up READSHARE_AHEAD batches of them.
 */
void readshare_set_ahead_bytes(struct readshare *s, int64_t bytes);

/*
 * Whether a runner is too far ahead of the slowest reader of its window,
 * whose unpassed batches are `batches` holding `bytes`: at max_batches, or
 * at max_bytes (0: none) with at least one batch.
 */
bool readshare_too_far_ahead(int batches, int64_t bytes, int max_batches, int64_t max_bytes);

/* The grid's size: a shared batch's most events. */
int readshare_grid(const struct readshare *s);

void readshare_join(struct readshare *s, struct rs_member *m, void (*kick)(void *), void *arg);
void readshare_leave(struct rs_member *m);

/* Whether m reads shared now: it shares, and so does another member. */
bool readshare_active(const struct rs_member *m);

/* The share's notification round starts: members woken in it need opens sent after now. */
void readshare_wake_round(struct readshare *s);
/* m was woken in the current round. */
void readshare_woken(struct rs_member *m);

/*
 * Opening from lo. RS_HIT fills *w; RS_AT sets w->hi. After RS_SEND the
 * caller sends its open and reports it with readshare_open_sent, then its
 * outcome with readshare_open_done or readshare_open_failed.
 */
enum rs_answer readshare_open(struct rs_member *m, const char *lo, struct rs_window *w);
uint64_t readshare_open_sent(struct rs_member *m, const char *lo);
void readshare_open_done(struct readshare *s, uint64_t ticket, const struct rs_window *w);
void readshare_open_failed(struct readshare *s, uint64_t ticket);
/*
 * While events keep coming, the earliest ev_now() for the next open through
 * the share (pace.h; min_ms: min_read_interval_ms). In the past when no open
 * is kept or the last one found nothing new.
 */
double readshare_next_open(const struct readshare *s, int min_ms);

/* m leaves its window (it is done with it, or gave up on it). */
void readshare_left(struct rs_member *m);

/*
 * The next batch of window (lo, hi) after position `after`. RS_HIT sets *out
 * to a batch holding a reference (readshare_release it). RS_SEND sets *out
 * to a new pending batch (one reference) that the caller fetches and
 * completes with readshare_fetched (which takes res) or readshare_failed;
 * *out is NULL when out of memory (fetch unshared then). RS_WAIT: wait.
 */
enum rs_answer readshare_fetch(struct rs_member *m, const char *lo, const char *hi, int64_t after,
                               struct rs_batch **out);
/*
 * res holds the window's events after b->after in position order, at most
 * batch_size; cut: batch_max_bytes ended it before its cell's end.
 */
void readshare_fetched(struct readshare *s, struct rs_batch *b, PGresult *res, int64_t window_max,
                       bool cut);

/*
 * Where a shared batch ends (the window's events up to there are in it):
 * first and last are its first and last event's positions (0: none), size
 * the grid's; a batch cut by bytes ends at its last event, else at the end
 * of its first event's cell (never past window_max).
 */
int64_t readshare_batch_end(int64_t first, int64_t last, bool cut, int64_t size,
                            int64_t window_max);
void readshare_failed(struct readshare *s, struct rs_batch *b);
void readshare_release(struct readshare *s, struct rs_batch *b);

#endif
