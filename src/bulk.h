/*
 * bulk: the events a batch holds back for its PJ_BULK statements
 * (projection.h), and the keys they are about.
 *
 * A held event is a row of text parameters appended to its statement's
 * arrays; the batch sends each statement once with those arrays when a key
 * comes again, before the projection's flush, or at the end of the batch.
 * Keys are kept as 64-bit hashes: a collision only sends the held events
 * earlier than needed, which is always correct. struct bulk owns everything
 * it points to (bulk_free).
 */
#ifndef PROJECTORD_BULK_H
#define PROJECTORD_BULK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "projection.h"

struct bulk_stmt {
    struct pj_textarr *cols; /* nparams arrays; NULL for a statement that is not PJ_BULK */
    int nparams;
    int key;        /* the statement's key parameter (1 for $1) */
    size_t n;       /* events held */
    int event;      /* the first held event's index */
    unsigned flags; /* the statement's flags */
};

struct bulk {
    struct bulk_stmt *stmts; /* indexed like the projection's statements */
    int nstmts;
    uint64_t *keys; /* open addressing, 0 = free */
    size_t keycap, nkeys;
    size_t held; /* events held over all statements */
};

/* Returns 0, or -1 when out of memory. */
int bulk_init(struct bulk *b, const struct projection *p, int nstmts);
void bulk_free(struct bulk *b);

/* Forget every held event (the arrays keep their memory for the next batch). */
void bulk_clear(struct bulk *b);

/*
 * Whether a statement about key must wait for the held events to go first:
 * key is held already, or key is NULL (about no one row) and anything is held.
 */
bool bulk_conflicts(const struct bulk *b, const char *key);

/* Hold event's parameters for statement stmt (a PJ_BULK one). Returns 0 or -1 (memory). */
int bulk_hold(struct bulk *b, int stmt, int event, const char *const *params);

/*
 * The i-th parameter of statement stmt's held events, as an array literal;
 * valid until the next bulk_hold or bulk_clear.
 */
const char *bulk_param(struct bulk *b, int stmt, int i);

#endif
