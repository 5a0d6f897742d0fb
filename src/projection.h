/*
 * projection: the API a projection author sees.
 *
 * A projection is one file projections/NAME.c that defines
 *
 *     const struct projection projection_NAME = { ... };
 *
 * plus its tables in sql/VNNN__NAME.sql. The build finds the file by itself
 * (every .c file in projections/ is globbed and registered), so nothing else changes.
 *
 * How a batch runs: the runner reads events in order, and for each event
 * whose event_type has a handler it decodes event_data (it must be a JSON
 * object, or the event is bad) and calls the handler. The handler validates
 * the fields it needs with the pj_* accessors and queues its parameterized
 * statements with pj_exec(). All statements of a batch and the checkpoint
 * are sent in one pipeline and commit in one transaction.
 *
 * Rules for handlers:
 *  - SQL names tables unqualified ("products", not "read_model.products"):
 *    the runner sets search_path to the schema being written, which is how
 *    a rebuild writes into shadow tables while readers keep the live ones.
 *  - Parameterized statements only; values never go into SQL text.
 *  - Statements can not read results back; put reads inside the statement
 *    (CTEs, subqueries), so the database decides with current rows.
 *  - A statement that only sets columns of its own row can be PJ_BULK
 *    (below): that is the cheapest way to apply many events.
 *  - Return 0, or -1 after a pj_* accessor or pj_bad() recorded why the
 *    event is bad. A statement that fails with a data error (SQLSTATE class
 *    22 or 23, e.g. a unique violation) also makes the event bad; the
 *    projection's on_error policy then applies to that one event.
 */
#ifndef PROJECTORD_PROJECTION_H
#define PROJECTORD_PROJECTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * The event envelope. Strings are as PostgreSQL prints them (timestamps in
 * UTC, ISO format) and are valid only during the handler call. Optional
 * columns are NULL when SQL NULL.
 */
struct pj_event {
    int64_t position;
    const char *position_text;
    const char *event_id;
    const char *stream_id;
    const char *aggregate_type;
    const char *aggregate_id;
    const char *event_type;
    int32_t event_version;
    int32_t aggregate_version;
    const char *aggregate_version_text;
    const char *event_data; /* jsonb text */
    const char *metadata;   /* jsonb text or NULL */
    const char *occurred_at;
    const char *causation_id;
    const char *correlation_id;
    const char *transaction_id;
};

struct pj_ctx; /* one batch being built; owned by the runner */

/* payload is the decoded event_data, always a JSON object (NULL with PJ_NO_PAYLOAD). */
typedef int (*pj_handler_fn)(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload);

/* pj_handler flags */
#define PJ_NO_PAYLOAD                                                                              \
    0x1 /* the handler never reads event_data: payload is NULL, any JSON is fine */

struct pj_handler {
    const char *event_type; /* "*" matches every event type */
    pj_handler_fn fn;
    unsigned flags;
};

struct pj_statement {
    const char *sql;
    int nparams;
    unsigned flags; /* PJ_BULK or 0 */
};

/*
 * pj_statement flags
 *
 * PJ_BULK: the statement applies many events at once, and the runner holds
 * its events back to send them together (a single-row update costs the
 * server about three times what a row of a set-based one does). Each
 * parameter is an array ($2::timestamptz[]) with one element per event;
 * handlers still pass one event's values to pj_exec. The rules:
 *  - $1 is the key: the row the event changes, spelled one way (the
 *    aggregate_id from the envelope). An event's statement, bulk or not,
 *    whose key is held sends the held events first, so the events of one
 *    bulk statement have distinct keys, and one key's events keep their order.
 *    A statement without a key (NULL $1) sends them all first.
 *  - It changes its keys' rows, one row per event at most, and reports
 *    the events that changed one (for PJ_COUNT_IGNORED: `SELECT 1 FROM`
 *    a data-modifying CTE, or the UPDATE's own count).
 *  - Applying its events in one go must equal applying them one by one, in
 *    any order relative to the projection's statements about other keys:
 *    no uniqueness across rows (that stays single). Rows that other keys
 *    share, such as sums, may be added to: held statements go out in the
 *    order of the statements array (orders.c puts additions first, so a
 *    sum that overflows in position order also overflows in the send).
 *  - A data error in a statement sent for several events sends the batch
 *    again with each bulk event alone, so the error finds its event.
 * Pass the same pj_exec flags for every event of a bulk statement.
 */
#define PJ_BULK 0x1

/*
 * Set-based work (optional). A projection whose batch touches few rows many
 * times (counters, aggregates) can collect values in per-batch state while
 * its handlers run and write them with one statement at the end: flush runs
 * after the batch's last event and may pj_exec; release frees what the
 * state points to. The state (state_size bytes, pj_state) is zeroed before
 * each attempt of a batch, as a batch can be sent again. A statement queued
 * by flush belongs to no single event: if it fails, the batch is retried,
 * never dead-lettered.
 */
struct projection {
    const char *name;
    int version; /* bump when the read model must be rebuilt */
    const char *description;
    const char *const *tables;             /* NULL-terminated, unqualified */
    const struct pj_statement *statements; /* terminated by {NULL, 0}; index = statement id */
    const struct pj_handler *handlers;     /* terminated by {NULL, NULL, 0} */
    size_t state_size;
    int (*flush)(struct pj_ctx *ctx, void *state);
    void (*release)(void *state);
};

/* The projection's per-batch state (state_size bytes), or NULL without one. */
void *pj_state(struct pj_ctx *ctx);

/*
 * A growing text[] literal, for passing a batch's values as one array
 * parameter ("{a,NULL,\"b c\"}"). Zero-initialise; pj_textarr_free releases.
 */
struct pj_textarr {
    char *buf;
    size_t len, cap;
    size_t n;
};

/* Append value (NULL for SQL NULL). Returns 0, or -1 when out of memory. */
int pj_textarr_add(struct pj_textarr *a, const char *value);

/* The literal so far ("{}" when empty); valid until the next add or free. */
const char *pj_textarr_literal(struct pj_textarr *a);

void pj_textarr_free(struct pj_textarr *a);

/* pj_exec flags */
#define PJ_COUNT_IGNORED 0x1 /* no row affected means the target row is missing: count it */

/*
 * Queue statement `stmt` (an index into the projection's statements) with
 * text parameters (NULL for SQL NULL). Parameters are copied before it
 * returns. Returns 0, or -1 if the batch could not take it (the runner
 * retries the batch later; the handler just returns -1).
 */
int pj_exec(struct pj_ctx *ctx, int stmt, const char *const *params, unsigned flags);

/* Record why the event is bad; returns -1 so handlers can `return pj_bad(...)`. */
int pj_bad(struct pj_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Field accessors (SPEC §4 rules). Each returns 0, or -1 after recording the
 * reason, so a handler writes `if (pj_str(...) < 0) return -1;`.
 */
int pj_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
int pj_opt_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
int pj_int64(struct pj_ctx *ctx, const json_t *obj, const char *key, int64_t *out);
int pj_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
int pj_opt_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
int pj_array(struct pj_ctx *ctx, const json_t *obj, const char *key, const json_t **out);

/* Format v into buf (at least 21 bytes) and return buf, for parameters. */
const char *pj_i64(char buf[21], int64_t v);

#endif
