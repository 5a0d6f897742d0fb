/*
 * tailwin: the snapshot window that makes tailing commit-safe (SPEC §3).
 *
 * A projection's checkpoint is two snapshots, lo and hi (pg_snapshot text,
 * "xmin:xmax:xip,..."), and a position. Every event whose transaction is
 * visible in lo has been applied; the window holds the events whose
 * transaction is visible in hi but not in lo, and those of them up to `pos`
 * (in global_position order) have been applied too. When the window is
 * exhausted it slides: lo = hi, hi = a fresh snapshot.
 *
 * Events committed between two snapshots fall in one window, so commit order
 * holds between windows and position order inside one; a transaction still
 * running when hi was taken is simply in a later window, which is why an
 * out-of-order commit is never skipped, and why a long transaction that
 * appends nothing holds nothing up.
 *
 * To open a window, "not visible in lo" is rewritten for SQL as
 *     transaction_id = ANY(xip(lo)) OR transaction_id >= xmax(lo)
 * so that the window's position range is found through the transaction_id
 * index, however long the table. tailwin_params() computes those values.
 *
 * Pure code: no I/O. A struct snapshot owns its xip array (snapshot_free).
 */
#ifndef PROJECTORD_TAILWIN_H
#define PROJECTORD_TAILWIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAPSHOT_NONE "1:1:" /* nothing visible: the lo of a projection built from scratch */

struct snapshot {
    uint64_t xmin;
    uint64_t xmax;
    size_t nxip;
    uint64_t *xip; /* sorted, each in [xmin, xmax) */
};

/* Parse pg_snapshot text. Returns 0, or -1 if malformed (out untouched). */
int snapshot_parse(const char *text, struct snapshot *out);
void snapshot_free(struct snapshot *s);

/* pg_visible_in_snapshot() */
bool snapshot_visible(const struct snapshot *s, uint64_t xid);

/*
 * True if every transaction visible in older is visible in newer, so that
 * (older, newer) is a window: a hi must never see less than its lo.
 */
bool snapshot_covers(const struct snapshot *newer, const struct snapshot *older);

/* True if xid is in the window (lo, hi]: visible in hi and not in lo. */
bool tailwin_contains(const struct snapshot *lo, const struct snapshot *hi, uint64_t xid);

/* SQL parameters for "not visible in lo", as text. */
struct tailwin_params {
    char *xip_lo;     /* xid8[] literal, e.g. "{750,752}" (caller frees) */
    char xmax_lo[21]; /* decimal */
};

/* Fill p from lo. Returns 0, or -1 when out of memory. */
int tailwin_params(const struct snapshot *lo, struct tailwin_params *p);
void tailwin_params_free(struct tailwin_params *p);

#endif
