/*
 * batch: the statements one batch sends, and which event each belongs to.
 *
 * This is the runner's side of struct pj_ctx (projection.h): handlers queue
 * statements through pj_exec, the runner adds its own (dead letters, the
 * checkpoint), and when results come back in order, batch_stmt() says which
 * event a failed statement was working for. The ctx owns its arrays
 * (batch_free); the connection is borrowed.
 */
#ifndef PROJECTORD_BATCH_H
#define PROJECTORD_BATCH_H

#include <stddef.h>

#include "bulk.h"
#include "pgconn.h"
#include "projection.h"

#define BATCH_NO_EVENT (-1)
#define BATCH_ERR_MAX  512
#define BATCH_HELD     0x100 /* batch_stmt flag: a PJ_BULK statement sent for held events */

#define BATCH_DEAD_LETTER 0x200 /* batch_stmt flag: the dead letter of event `event` */

struct batch_stmt {
    int event; /* index in the fetched events, or BATCH_NO_EVENT */
    unsigned flags;
    size_t nevents; /* events it was sent for: 1, or the held events of a PJ_BULK statement */
};

struct pj_ctx {
    struct pgconn *conn;
    const struct projection *proj;
    int nstatements;
    int event; /* the event whose handler is running */
    char err[BATCH_ERR_MAX];
    struct batch_stmt *stmts;
    size_t n, cap;
    size_t queued; /* pj_exec calls in this try (sending held events lowers n + held) */
    void *state;   /* the projection's per-batch state (state_size bytes) */
    struct bulk bulk;
    /*
     * Send each PJ_BULK event alone: set when a statement sent for several
     * held events failed with a data error, so that the next try finds the
     * event it belongs to. The runner clears it when the batch is done.
     */
    bool one_by_one;
};

/* Returns 0, or -1 when out of memory (the state). */
int batch_init(struct pj_ctx *b, const struct projection *p, struct pgconn *conn);
void batch_free(struct pj_ctx *b);

/*
 * Forget the statements and held events of the previous try; zero the
 * projection's state.
 */
void batch_reset(struct pj_ctx *b);

/*
 * After the batch's events: send the held events, then the projection's
 * flush, if it has one. Returns 0, or -1 (b->err says why when the flush
 * refused; empty when the connection or memory failed).
 */
int batch_flush(struct pj_ctx *b);

/* Record a statement just sent on b->conn for nevents events. Returns 0, or -1 out of memory. */
int batch_record(struct pj_ctx *b, int event, unsigned flags, size_t nevents);

/* pj_exec calls so far in this try: grows whenever a handler queues a statement. */
size_t batch_queued(const struct pj_ctx *b);

/* The i-th statement sent, or NULL past the end. */
const struct batch_stmt *batch_stmt(const struct pj_ctx *b, size_t i);

/* Name of the projection's prepared statement number idx. */
void batch_stmt_name(int idx, char buf[16]);

#endif
