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
 * statements with PJ_EXEC(). All statements of a batch and the checkpoint
 * are sent in one pipeline and commit in one transaction.
 *
 * Rules for handlers:
 *  - SQL names tables unqualified ("products", not "read_model.products"):
 *    the runner sets search_path to the schema being written, which is how
 *    a rebuild writes into shadow tables while readers keep the live ones.
 *  - A projection's SQL names only its own tables, those in its `tables`
 *    list: a rebuild's search_path holds those alone (its shadow schema),
 *    and another projection's tables move at their own pace anyway. A
 *    statement naming another table works live but fails the rebuild at
 *    once ("rebuild failed: ... relation ... does not exist", SQLSTATE
 *    42P01), and the harness (tests/integration/projection_harness.py)
 *    rebuilds every case, so a projection's own tests find it.
 *  - Parameterized statements only; values never go into SQL text.
 *  - Statements can not read results back; put reads inside the statement
 *    (CTEs, subqueries), so the database decides with current rows.
 *  - A statement that only sets columns of its own row can be PJ_BULK
 *    (below): that is the cheapest way to apply many events.
 *  - A handler returns its outcome (enum pj_outcome): PJ_OK, PJ_BAD_EVENT
 *    after an accessor or pj_bad() recorded why, or PJ_RETRY when it could
 *    not do its work for a passing reason (out of memory). A statement that
 *    fails with a data error (SQLSTATE class 22 or 23, e.g. a unique
 *    violation) also makes the event bad; the projection's on_error policy
 *    then applies to that one event.
 *
 * The build and the start check what can be checked: PJ_EXEC fails to
 * compile when it passes another number of parameters than its statement
 * declares, and every command refuses to start (exit 1, one line naming the
 * projection and the statement) when a statement's SQL uses another number
 * of $N placeholders, a PJ_BULK statement has no key, or the statements
 * are not numbered 0, 1, 2, ... (registry_check, src/registry_check.c).
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

/*
 * What became of an event (a handler's return value), or of a call that
 * queues work (PJ_EXEC, pj_textarr_add):
 *  - PJ_OK: applied, or queued to be; an event that needs no statement too.
 *  - PJ_BAD_EVENT: the event breaks the contract; pj_bad() or an accessor
 *    recorded why (without a reason the dead letter says so). The
 *    projection's on_error policy applies to that event alone.
 *  - PJ_RETRY: the work could not be done now (out of memory, the
 *    connection failed): the runner drops the batch and tries it again
 *    later. Never a property of the event: an event is bad only when it
 *    says PJ_BAD_EVENT.
 */
enum pj_outcome {
    PJ_OK = 0,
    PJ_BAD_EVENT,
    PJ_RETRY,
};

/* payload is the decoded event_data, always a JSON object (NULL with PJ_NO_PAYLOAD). */
typedef enum pj_outcome (*pj_handler_fn)(struct pj_ctx *ctx, const struct pj_event *ev,
                                         const json_t *payload);

/* pj_handler flags */
#define PJ_NO_PAYLOAD                                                                              \
    0x1 /* the handler never reads event_data: payload is NULL, any JSON is fine */

struct pj_handler {
    const char *event_type; /* "*" matches every event type */
    pj_handler_fn fn;
    unsigned flags;
};

/*
 * Statements. A projection numbers its statements and says how many
 * parameters each takes in one place, its statement ids:
 *
 *     enum {
 *         ST_SEEN = PJ_STMT_ID(0, 2),   // index 0, two parameters
 *         ST_GONE = PJ_STMT_ID(1, 1),   // index 1, one
 *     };
 *     static const struct pj_statement statements[] = {
 *         PJ_STATEMENT(ST_SEEN, .key = 1, .flags = PJ_COUNT_IGNORED,
 *                      .sql = "UPDATE widgets SET seen = seen + 1, updated_at = $2::timestamptz"
 *                             " WHERE id = $1::uuid"),
 *         PJ_STATEMENT(ST_GONE, .key = 1, .sql = "DELETE FROM widgets WHERE id = $1::uuid"),
 *         PJ_STATEMENTS_END,
 *     };
 *
 * and a handler queues one with PJ_EXEC(ctx, ST_SEEN, ev->aggregate_id,
 * ev->occurred_at), which does not compile with another number of
 * parameters. Indexes run 0, 1, 2, ... in the order of the ids; at most
 * 64 parameters.
 */
#define PJ_STMT_ID(index, nparams) ((index) << 8 | (nparams))
#define PJ_STMT_INDEX(id)          ((id) >> 8)
#define PJ_STMT_NPARAMS(id)        ((id)&0xff)

struct pj_statement {
    const char *sql;
    int nparams;    /* set by PJ_STATEMENT from the id: the $N the SQL uses */
    unsigned flags; /* PJ_BULK, PJ_COUNT_IGNORED */
    /*
     * The parameter that names the one row the statement changes (1 for
     * $1), or 0 when it is about no single row. A statement about a key
     * whose events are held (PJ_BULK) sends them first, so one key's events
     * keep their order; one without a key sends everything held first.
     */
    int key;
};

/* One statements[] element: PJ_STATEMENT(id, .sql = "...", .key = 1, .flags = ...). */
#define PJ_STATEMENT(id, ...) [PJ_STMT_INDEX(id)] = {.nparams = PJ_STMT_NPARAMS(id), __VA_ARGS__}

/* The end of statements[] (a missing index stops the list early: the start check says so). */
#define PJ_STATEMENTS_END                                                                          \
    {                                                                                              \
        .sql = NULL, .nparams = -1                                                                 \
    }

/*
 * pj_statement flags
 *
 * PJ_COUNT_IGNORED: the statement changes one row per event, and an event
 * for which it changed none (its row is missing) is counted in the status
 * table's events_ignored. For a statement whose only rows are written by a
 * CTE, report them: `SELECT 1 FROM` the data-modifying CTE.
 *
 * PJ_BULK: the statement applies many events at once, and the runner holds
 * its events back to send them together (a single-row update costs the
 * server about three times what a row of a set-based one does). Each
 * parameter is an array ($2::timestamptz[]) with one element per event;
 * handlers still pass one event's values to PJ_EXEC. The rules:
 *  - It has a key (.key): the row the event changes, spelled one way (the
 *    aggregate_id from the envelope). An event's statement, bulk or not,
 *    whose key is held sends the held events first, so the events of one
 *    bulk statement have distinct keys, and one key's events keep their order.
 *    An event whose key value is NULL sends them all first.
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
 */
#define PJ_BULK          0x1
#define PJ_COUNT_IGNORED 0x2

/*
 * Set-based work (optional). A projection whose batch touches few rows many
 * times (counters, aggregates) can collect values in per-batch state while
 * its handlers run and write them with one statement at the end: flush runs
 * after the batch's last event and may PJ_EXEC; release frees what the
 * state points to. The state (state_size bytes, pj_state) is zeroed before
 * each attempt of a batch, as a batch can be sent again. A statement queued
 * by flush belongs to no single event: if it fails, or flush returns other
 * than PJ_OK, the batch is retried, never dead-lettered.
 */
struct projection {
    const char *name;
    int version; /* bump when the read model must be rebuilt */
    const char *description;
    const char *const *tables;             /* NULL-terminated, unqualified: all its SQL names */
    const struct pj_statement *statements; /* PJ_STATEMENT()s, then PJ_STATEMENTS_END */
    const struct pj_handler *handlers;     /* terminated by {NULL, NULL, 0} */
    size_t state_size;
    enum pj_outcome (*flush)(struct pj_ctx *ctx, void *state);
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

/* Append value (NULL for SQL NULL): PJ_OK, or PJ_RETRY when out of memory. */
enum pj_outcome pj_textarr_add(struct pj_textarr *a, const char *value);

/*
 * The literal so far ("{}" when empty), or NULL when out of memory; valid
 * until the next add or free.
 */
const char *pj_textarr_literal(struct pj_textarr *a);

void pj_textarr_free(struct pj_textarr *a);

/*
 * Queue statement id (a PJ_STMT_ID) with its text parameters, one argument
 * each (NULL for SQL NULL); they are copied before it returns. It fails to
 * compile when the number of parameters is not the one id declares.
 * Returns PJ_OK, or PJ_RETRY when the batch could not take it (out of
 * memory, the connection failed): the handler returns that as it is.
 */
#define PJ_EXEC(ctx, id, ...)                                                                      \
    pj_exec((ctx),                                                                                 \
            (id) + 0 * (int)sizeof(struct {                                                        \
                       _Static_assert(                                                             \
                           PJ_NARGS_(__VA_ARGS__) == PJ_STMT_NPARAMS(id),                          \
                           "PJ_EXEC: not the number of parameters the statement id declares");     \
                       int unused_;                                                                \
                   }),                                                                             \
            (const char *const[]){__VA_ARGS__})

/* The number of arguments (1 to 64), as a constant the preprocessor counts. */
#define PJ_NARGS_(...)                                                                             \
    PJ_NARGS_N_(__VA_ARGS__, 64, 63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48,   \
                47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28,    \
                27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,   \
                6, 5, 4, 3, 2, 1, 0)
#define PJ_NARGS_N_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17,    \
                    a18, a19, a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32,     \
                    a33, a34, a35, a36, a37, a38, a39, a40, a41, a42, a43, a44, a45, a46, a47,     \
                    a48, a49, a50, a51, a52, a53, a54, a55, a56, a57, a58, a59, a60, a61, a62,     \
                    a63, a64, n, ...)                                                              \
    n

/* PJ_EXEC's function: params holds exactly PJ_STMT_NPARAMS(id) values. */
enum pj_outcome pj_exec(struct pj_ctx *ctx, int id, const char *const *params);

/* Record why the event is bad; returns PJ_BAD_EVENT, so handlers can `return pj_bad(...)`. */
enum pj_outcome pj_bad(struct pj_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Field accessors (SPEC §4 rules). Each returns true, or false after
 * recording the reason, so a handler writes
 *
 *     if (!pj_str(ctx, payload, "name", &name))
 *         return PJ_BAD_EVENT;
 *
 * obj may be any JSON object: the payload, or one reached with pj_object or
 * pj_object_at. Strings point into the payload and live as long as it does.
 */
bool pj_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
bool pj_opt_str(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
bool pj_int64(struct pj_ctx *ctx, const json_t *obj, const char *key, int64_t *out);
bool pj_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);
bool pj_opt_uuid(struct pj_ctx *ctx, const json_t *obj, const char *key, const char **out);

/* Nested values: a required object or array field, and the objects of an array. */
bool pj_object(struct pj_ctx *ctx, const json_t *obj, const char *key, const json_t **out);
bool pj_array(struct pj_ctx *ctx, const json_t *obj, const char *key, const json_t **out);

/*
 * Element i (below json_array_size(array)) of the array field `key`, which
 * must be an object ("items[2] must be a JSON object (got string)").
 */
bool pj_object_at(struct pj_ctx *ctx, const json_t *array, const char *key, size_t i,
                  const json_t **out);

/*
 * Put where (printf-style, e.g. "items[%zu]") in front of the reason
 * recorded so far ("items[2]: field 'quantity' is missing"), for checks of
 * a nested object in a helper that does not know where it is. Returns
 * PJ_BAD_EVENT.
 */
enum pj_outcome pj_bad_in(struct pj_ctx *ctx, const char *where, ...)
    __attribute__((format(printf, 2, 3)));

/* a + b and a * b into *out; true (and *out unset) when the result is beyond bigint. */
bool pj_add_overflows(int64_t a, int64_t b, int64_t *out);
bool pj_mul_overflows(int64_t a, int64_t b, int64_t *out);

/* Format v into buf (at least 21 bytes) and return buf, for parameters. */
const char *pj_i64(char buf[21], int64_t v);

#endif
