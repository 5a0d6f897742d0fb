/*
 * tailread: reading the tail of the event store, the parts that need no
 * connection: whether a checkpoint's snapshots hold, what an open sends
 * (its parameters from lo; whether a shared open's hi covers our lo), what
 * its answer says (the window, or transaction ids this cluster cannot
 * judge), how a window moves the checkpoint, and where a fetched batch
 * starts and whether the byte bound cut it. The tail reader
 * sends the requests (tailer.c) and hands their results here, so these
 * rules are unit-tested with canned results (tests/unit/test_tailread.c).
 *
 * Results are borrowed; strings taken from one live as long as it does.
 */
#ifndef PROJECTORD_TAILREAD_H
#define PROJECTORD_TAILREAD_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "readshare.h"
#include "tailwin.h"

/* Whether both of the checkpoint's snapshots parse. */
bool tailread_checkpoint_valid(const struct checkpoint *cp);

/*
 * The open's parameters for a window from lo (tailwin.h; the caller frees
 * them with tailwin_params_free). Returns -1 and says why when lo is
 * malformed or memory ran out.
 */
int tailread_open_params(const char *lo, struct tailwin_params *p, const char **why);

/* Whether hi sees everything lo does, so that (lo, hi) is a window (a shared open's hi). */
bool tailread_covers(const char *hi, const char *lo);

/* The window an open found, from its row (SQL_OPEN_WINDOW); w->hi points into res. */
void tailread_window(const PGresult *res, struct rs_window *w);

/*
 * Whether the open found transaction ids this cluster cannot judge
 * (SQL_TROUBLE); if so, msg says what and what to do, for the log and the
 * status row. last_position: the checkpoint's, for the wording.
 */
bool tailread_foreign_ids(const PGresult *res, int64_t last_position, char *msg, size_t size);

/*
 * The checkpoint once w is opened: an empty window slides (lo = hi =
 * w->hi, closed); otherwise lo is the old hi and the window runs from
 * w->first to w->last. Returns -1 when out of memory.
 */
int tailread_open_window(struct checkpoint *cp, const struct rs_window *w);

/*
 * Whether batch_max_bytes cut the fetch: the window may hold more than it
 * returned, however few rows came (runner_sql.h, SQL_BOUNDED_EVENTS).
 */
bool tailread_cut_by_bytes(const PGresult *res);

/* The first row of a fetch past position pos (a shared batch may start earlier). */
int tailread_first_after(const PGresult *res, int64_t pos);

/*
 * A fetched event's occurred_at (a timestamptz as the session prints it:
 * DateStyle ISO, "2026-11-21 10:00:00.123456+00", any offset) in seconds
 * since the epoch, or -1 when the text is not of that form (NULL,
 * infinity, a year BC or beyond 9999): the metrics' lag in seconds.
 */
double tailread_epoch(const char *timestamptz);

#endif
