/*
 * readshare: one read of the event store for all the projections of an
 * instance (see readshare.h for what is shared and why it stays correct).
 */
#include "readshare.h"

#include "pace.h"

#include <stdlib.h>
#include <string.h>

/* An open sent through the share. */
struct rs_open {
    uint64_t seq; /* 0: none */
    char *lo;
    char *hi;
    int64_t first, last, head;
    bool empty;
    bool pending;
    double sent_at;
    double done_at; /* when it was answered */
};

struct readshare {
    struct ev_loop *loop;
    int batch_size;
    int batch_ahead;
    int64_t ahead_bytes; /* 0: no byte budget */
    uint64_t seq;        /* opens sent so far */
    uint64_t wake_floor; /* seq when the current notification round began */
    uint64_t kick_round;
    struct rs_open open; /* the last open sent */
    struct rs_open prev; /* the one before, while the last goes on from its hi: a chain */
    struct pace pace;    /* the event rate the opens saw */
    struct rs_member *members;
    struct rs_batch *batches; /* newest first */
    ev_timer kick_timer;      /* kicks run from the loop, never inside a caller */
    ev_timer wait_timer;      /* while members wait: lets staleness end their wait */
    ev_timer gate_timer;      /* ends the wait of a member held back by last_open_untaken */
};

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct readshare *s = w->data;
    uint64_t round = ++s->kick_round;
    /* A kick may make members leave or wait again: rescan from the head each time. */
    for (;;) {
        struct rs_member *m = s->members;
        while (m && !(m->waiting && m->kicked != round))
            m = m->next;
        if (!m)
            return;
        m->kicked = round;
        m->waiting = false;
        m->kick(m->arg);
    }
}

static bool any_waiting(const struct readshare *s)
{
    for (const struct rs_member *m = s->members; m; m = m->next)
        if (m->waiting)
            return true;
    return false;
}

static void wait_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct readshare *s = w->data;
    if (!any_waiting(s)) {
        ev_timer_stop(loop, w);
        return;
    }
    kick_cb(loop, &s->kick_timer, revents);
}

/* m must wait for a kick. */
static enum rs_answer wait(struct rs_member *m)
{
    m->waiting = true;
    if (!ev_is_active(&m->share->wait_timer))
        ev_timer_again(m->share->loop, &m->share->wait_timer);
    return RS_WAIT;
}

static void kick_waiters(struct readshare *s)
{
    if (any_waiting(s) && !ev_is_active(&s->kick_timer))
        ev_timer_start(s->loop, &s->kick_timer);
}

struct readshare *readshare_new(struct ev_loop *loop, int batch_size, int batch_ahead)
{
    struct readshare *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->batch_size = batch_size > 0 ? batch_size : 1;
    s->batch_ahead = batch_ahead > 0 ? batch_ahead : 1;
    ev_timer_init(&s->kick_timer, kick_cb, 0., 0.);
    s->kick_timer.data = s;
    ev_init(&s->wait_timer, wait_cb);
    s->wait_timer.repeat = READSHARE_STALE_S / 4;
    s->wait_timer.data = s;
    ev_init(&s->gate_timer, wait_cb);
    s->gate_timer.data = s;
    return s;
}

static void open_clear(struct rs_open *o)
{
    free(o->lo);
    free(o->hi);
    *o = (struct rs_open){0};
}

static void batch_free(struct rs_batch *b)
{
    PQclear(b->res);
    free(b->lo);
    free(b->hi);
    free(b);
}

void readshare_free(struct readshare *s)
{
    if (!s)
        return;
    ev_timer_stop(s->loop, &s->kick_timer);
    ev_timer_stop(s->loop, &s->wait_timer);
    ev_timer_stop(s->loop, &s->gate_timer);
    while (s->batches) {
        struct rs_batch *b = s->batches;
        s->batches = b->next;
        batch_free(b);
    }
    for (struct rs_member *m = s->members; m; m = m->next)
        m->share = NULL;
    open_clear(&s->open);
    open_clear(&s->prev);
    free(s);
}

int readshare_grid(const struct readshare *s)
{
    return s->batch_size;
}

void readshare_join(struct readshare *s, struct rs_member *m, void (*kick)(void *), void *arg)
{
    m->share = s;
    m->kick = kick;
    m->arg = arg;
    m->next = s->members;
    s->members = m;
}

static void prune(struct readshare *s);

void readshare_left(struct rs_member *m)
{
    free(m->lo);
    free(m->hi);
    m->lo = m->hi = NULL;
    if (m->share) {
        prune(m->share);
        kick_waiters(m->share);
    }
}

void readshare_leave(struct rs_member *m)
{
    struct readshare *s = m->share;
    readshare_left(m);
    m->waiting = false;
    if (!s)
        return;
    for (struct rs_member **p = &s->members; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    m->share = NULL;
}

bool readshare_active(const struct rs_member *m)
{
    if (!m->share || !m->sharing)
        return false;
    for (const struct rs_member *o = m->share->members; o; o = o->next)
        if (o != m && o->sharing)
            return true;
    return false;
}

void readshare_wake_round(struct readshare *s)
{
    if (s)
        s->wake_floor = s->seq;
}

void readshare_woken(struct rs_member *m)
{
    if (m->share && m->floor < m->share->wake_floor)
        m->floor = m->share->wake_floor;
}

/* ---- opens ----------------------------------------------------------------- */

/* Whether o has moved on in its window lately (it is not stuck). */
static bool moving(const struct rs_member *o, double now)
{
    return now - o->moved_at < READSHARE_STALE_S;
}

static void fill_window(const struct rs_open *o, struct rs_window *w)
{
    w->hi = o->hi;
    w->first = o->first;
    w->last = o->last;
    w->head = o->head;
    w->empty = o->empty;
}

/*
 * Whether another member still reads the window before the last open (one
 * that ends where it starts): it takes that open next, and an open from the
 * last one's hi would be a second window ahead of it. Waiting for it to take
 * the last open keeps the opens to about one per window applied, where every
 * runner with nothing to do had opened on every notification (five opens per
 * batch applied at 2,800 events/s). Not for longer than READSHARE_GATE_S
 * after the open was answered: a slow projection must not hold back the
 * windows of the others.
 */
static bool last_open_untaken(const struct rs_member *m)
{
    struct readshare *s = m->share;
    double now = ev_now(s->loop);
    double left = s->open.done_at + READSHARE_GATE_S - now;
    /* ev_now follows the wall clock, which may step back */
    if (left <= 0 || left > 2 * READSHARE_GATE_S)
        return false;
    for (const struct rs_member *o = s->members; o; o = o->next)
        if (o != m && o->sharing && o->hi && strcmp(o->hi, s->open.lo) == 0 && moving(o, now)) {
            if (!ev_is_active(&s->gate_timer)) {
                ev_timer_set(&s->gate_timer, left, 0.);
                ev_timer_start(s->loop, &s->gate_timer);
            }
            return true;
        }
    return false;
}

/* An empty window whose hi is its lo: it moves nobody on. */
static bool goes_nowhere(const struct rs_open *o)
{
    return !o->pending && o->empty && strcmp(o->lo, o->hi) == 0;
}

/* Wait for a pending open, unless it is taking too long. */
static enum rs_answer wait_for_open(struct rs_member *m, const struct rs_open *o)
{
    return ev_now(m->share->loop) - o->sent_at < READSHARE_OPEN_STALE_S ? wait(m) : RS_SEND;
}

enum rs_answer readshare_open(struct rs_member *m, const char *lo, struct rs_window *w)
{
    struct readshare *s = m->share;
    const struct rs_open *o = &s->open;
    w->stale = false;
    if (o->seq == 0)
        return RS_SEND;
    bool stale = o->seq <= m->floor;
    /*
     * The next window on the chain is taken even when it is older than m's
     * wake-up (m opens again after it): it is open, and its batch is read.
     * Not one that goes nowhere then (nor one before it): m would take it
     * again and again.
     */
    if (strcmp(o->lo, lo) == 0 && !(stale && goes_nowhere(o))) {
        if (o->pending)
            return wait_for_open(m, o);
        fill_window(o, w);
        w->stale = stale;
        return RS_HIT;
    }
    if (s->prev.seq && !goes_nowhere(&s->prev) && strcmp(s->prev.lo, lo) == 0) {
        fill_window(&s->prev, w);
        w->stale = true; /* the last open follows it */
        return RS_HIT;
    }
    if (stale) {
        bool ahead = !o->pending && strcmp(o->hi, lo) == 0 && last_open_untaken(m);
        return ahead ? wait(m) : RS_SEND;
    }
    if (o->pending)
        return wait_for_open(m, o);
    w->hi = o->hi;
    return RS_AT;
}

uint64_t readshare_open_sent(struct rs_member *m, const char *lo)
{
    struct readshare *s = m->share;
    char *copy = strdup(lo);
    if (!copy)
        return 0;
    open_clear(&s->prev);
    if (s->open.seq && !s->open.pending && strcmp(s->open.hi, lo) == 0)
        s->prev = s->open;
    else
        open_clear(&s->open);
    s->open =
        (struct rs_open){.seq = ++s->seq, .lo = copy, .pending = true, .sent_at = ev_now(s->loop)};
    return s->seq;
}

void readshare_open_done(struct readshare *s, uint64_t ticket, const struct rs_window *w)
{
    if (ticket == 0 || s->open.seq != ticket)
        return;
    s->open.hi = strdup(w->hi);
    if (!s->open.hi) {
        readshare_open_failed(s, ticket);
        return;
    }
    s->open.first = w->first;
    s->open.last = w->last;
    s->open.head = w->head;
    s->open.empty = w->empty;
    s->open.pending = false;
    s->open.done_at = ev_now(s->loop);
    pace_note(&s->pace, s->open.done_at, w->head);
    kick_waiters(s);
}

void readshare_open_failed(struct readshare *s, uint64_t ticket)
{
    if (ticket == 0 || s->open.seq != ticket)
        return;
    open_clear(&s->open);
    open_clear(&s->prev);
    prune(s); /* the batches the two kept go with them */
    kick_waiters(s);
}

double readshare_next_open(const struct readshare *s, int min_ms)
{
    return s->open.sent_at + pace_interval(&s->pace, min_ms);
}

/* ---- batches --------------------------------------------------------------- */

static bool same_window(const char *lo, const char *hi, const char *lo2, const char *hi2)
{
    return lo2 && hi2 && strcmp(lo, lo2) == 0 && strcmp(hi, hi2) == 0;
}

/* Whether o reads window (lo, hi) and has moved on in it lately (it is not stuck). */
static bool reading(const struct rs_member *o, const char *lo, const char *hi, double now)
{
    return same_window(lo, hi, o->lo, o->hi) && moving(o, now);
}

/* The lowest cursor of the other members reading window (lo, hi), or -1. */
static int64_t slowest(const struct rs_member *m, const char *lo, const char *hi)
{
    double now = ev_now(m->share->loop);
    int64_t low = -1;
    for (const struct rs_member *o = m->share->members; o; o = o->next)
        if (o != m && reading(o, lo, hi, now) && (low < 0 || o->cursor < low))
            low = o->cursor;
    return low;
}

/* Whether b holds the whole window of open o. */
static bool holds_window(const struct rs_open *o, const struct rs_batch *b)
{
    return o->seq && !o->pending && !o->empty && same_window(o->lo, o->hi, b->lo, b->hi) &&
           b->after < o->first && b->end >= o->last;
}

/*
 * Whether b holds the whole window of one of the share's kept opens. The
 * runners the open woke take the window after the one that sent it has
 * often passed it already (a projection with nothing to do in a live window
 * passes it at once), and each would read it again: 7,359 of 24,198 fetches
 * in 15 s at 1,000 events/s.
 * Only a one-batch window is kept so: a backlog's first batch is not needed
 * again once its readers pass it.
 */
static bool holds_kept_open(const struct readshare *s, const struct rs_batch *b)
{
    return holds_window(&s->open, b) || holds_window(&s->prev, b);
}

/* Drop batches no reader of their window will ask for again. */
static void prune(struct readshare *s)
{
    double now = ev_now(s->loop);
    for (struct rs_batch **p = &s->batches; *p;) {
        struct rs_batch *b = *p;
        bool needed = b->pending || b->refs > 0 || holds_kept_open(s, b);
        if (!needed)
            for (const struct rs_member *o = s->members; o; o = o->next)
                if (reading(o, b->lo, b->hi, now) && o->cursor < b->end)
                    needed = true;
        if (needed) {
            p = &b->next;
            continue;
        }
        *p = b->next;
        batch_free(b);
    }
}

static struct rs_batch *new_batch(struct readshare *s, const char *lo, const char *hi,
                                  int64_t after)
{
    struct rs_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->lo = strdup(lo);
    b->hi = strdup(hi);
    if (!b->lo || !b->hi) {
        batch_free(b);
        return NULL;
    }
    b->after = after;
    b->pending = true;
    b->sent_at = ev_now(s->loop);
    b->refs = 1;
    b->next = s->batches;
    s->batches = b;
    return b;
}

/* Batches of the window not yet passed by position `from`, and their bytes. */
static int batches_from(const struct readshare *s, const char *lo, const char *hi, int64_t from,
                        int64_t *bytes)
{
    int n = 0;
    *bytes = 0;
    for (const struct rs_batch *b = s->batches; b; b = b->next)
        if (same_window(lo, hi, b->lo, b->hi) && (b->pending || b->end > from)) {
            n++;
            *bytes += b->bytes;
        }
    return n;
}

void readshare_set_ahead_bytes(struct readshare *s, int64_t bytes)
{
    s->ahead_bytes = bytes > 0 ? bytes : 0;
}

bool readshare_too_far_ahead(int batches, int64_t bytes, int max_batches, int64_t max_bytes)
{
    return batches >= max_batches || (max_bytes > 0 && batches > 0 && bytes >= max_bytes);
}

static bool note_reader(struct rs_member *m, const char *lo, const char *hi, int64_t after)
{
    if (!same_window(lo, hi, m->lo, m->hi)) {
        char *l = strdup(lo), *h = strdup(hi);
        if (!l || !h) {
            free(l);
            free(h);
            return false;
        }
        free(m->lo);
        free(m->hi);
        m->lo = l;
        m->hi = h;
        m->moved_at = 0;
    }
    bool moved = m->cursor != after || m->moved_at == 0;
    m->cursor = after;
    if (moved) {
        m->moved_at = ev_now(m->share->loop);
        kick_waiters(m->share);
    }
    return true;
}

enum rs_answer readshare_fetch(struct rs_member *m, const char *lo, const char *hi, int64_t after,
                               struct rs_batch **out)
{
    struct readshare *s = m->share;
    *out = NULL;
    if (!note_reader(m, lo, hi, after))
        return RS_SEND;
    prune(s);
    for (struct rs_batch *b = s->batches; b; b = b->next) {
        if (!same_window(lo, hi, b->lo, b->hi) || b->after > after)
            continue;
        /* A read under way may well cover us, unless it is taking too long. */
        if (b->pending && after < b->after + s->batch_size &&
            ev_now(s->loop) - b->sent_at < READSHARE_STALE_S)
            return wait(m);
        if (!b->pending && after < b->end) {
            b->refs++;
            *out = b;
            return RS_HIT;
        }
    }
    int64_t low = slowest(m, lo, hi), bytes = 0;
    if (low >= 0 && low < after) {
        int ahead = batches_from(s, lo, hi, low, &bytes);
        if (readshare_too_far_ahead(ahead, bytes, s->batch_ahead, s->ahead_bytes))
            return wait(m);
    }
    *out = new_batch(s, lo, hi, after);
    return RS_SEND;
}

/* Where the cell of the grid of `size` positions holding `first` ends, within the window. */
static int64_t cell_end(int64_t first, int64_t size, int64_t window_max)
{
    int64_t end = ((first - 1) / size + 1) * size;
    return end < window_max ? end : window_max;
}

int64_t readshare_batch_end(int64_t first, int64_t last, bool cut, int64_t size, int64_t window_max)
{
    if (first <= 0) /* no event: the window has none after the batch's start */
        return window_max;
    /*
     * Cut by bytes: the cell goes on after its last event, and a batch
     * must not claim the events it did not bring (they would be skipped).
     */
    return cut ? last : cell_end(first, size, window_max);
}

void readshare_fetched(struct readshare *s, struct rs_batch *b, PGresult *res, int64_t window_max,
                       bool cut)
{
    b->res = res;
    b->pending = false;
    int n = PQntuples(res);
    int64_t first = n > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    int64_t last = n > 0 ? strtoll(PQgetvalue(res, n - 1, 0), NULL, 10) : 0;
    b->end = readshare_batch_end(first, last, cut, s->batch_size, window_max);
    b->bytes = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < PQnfields(res); c++)
            b->bytes += PQgetlength(res, i, c);
    kick_waiters(s);
}

void readshare_failed(struct readshare *s, struct rs_batch *b)
{
    b->pending = false;
    b->end = b->after; /* covers nothing: pruned once released */
    kick_waiters(s);
}

void readshare_release(struct readshare *s, struct rs_batch *b)
{
    if (!b)
        return;
    b->refs--;
    if (s) {
        prune(s);
        kick_waiters(s);
    }
}
