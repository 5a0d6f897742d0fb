/*
 * pgconn: one asynchronous PostgreSQL connection driven by a libev loop.
 *
 * Everything goes through libpq's non-blocking API in pipeline mode: a
 * request is any number of statements queued with pgconn_query /
 * pgconn_exec_prepared / pgconn_prepare, closed by pgconn_sync. The
 * statements of one request run in one implicit transaction that commits at
 * the sync point, or rolls back whole if any statement fails. Results come
 * back through the callback one per statement (PGCONN_RESULT; statements
 * after a failed one come as PGRES_PIPELINE_ABORTED), then PGCONN_SYNC.
 *
 * When the connection fails or breaks, the callback gets PGCONN_LOST and
 * the connection retries on its own with capped exponential backoff; after
 * each (re)connect it reports PGCONN_READY, where the owner re-issues its
 * session setup (prepared statements, LISTEN). Server notices go to the log.
 *
 * A hot standby is never reported ready: every connection projectord makes
 * needs a primary (a standby's snapshots do not list the primary's
 * transactions in progress, nothing can be written there, NOTIFY does not
 * reach it). Before PGCONN_READY the connection asks pg_is_in_recovery();
 * on a standby the owner gets PGCONN_STANDBY once, and the question is asked
 * again on the same session with backoff until the server is promoted, then
 * PGCONN_READY follows.
 *
 * pgconn_flush_request asks the server to send the results so far without
 * ending the request, so the owner can look at them before deciding how to
 * finish the transaction (the checkpoint write needs the handlers' counts).
 *
 * Results are owned by pgconn and cleared after the callback returns, unless
 * the callback takes one with pgconn_take_result. The callback may call any
 * pgconn function, pgconn_free excepted.
 */
#ifndef PROJECTORD_PGCONN_H
#define PROJECTORD_PGCONN_H

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct pgconn;

enum pgconn_event {
    PGCONN_READY,   /* connected; no request in flight */
    PGCONN_RESULT,  /* one statement's result (res) */
    PGCONN_SYNC,    /* the request's sync point: all its results were delivered */
    PGCONN_NOTIFY,  /* notifications arrived: one event per read, with the last (notify) */
    PGCONN_LOST,    /* the connection failed or broke; a reconnect is scheduled */
    PGCONN_STANDBY, /* the server is a hot standby: waiting for its promotion (see above) */
};

typedef void (*pgconn_cb)(struct pgconn *c, void *arg, enum pgconn_event ev, const PGresult *res,
                          const PGnotify *notify);

/*
 * Create a connection to conninfo (NULL or "": libpq's PG* environment),
 * named `name` in log lines. Nothing happens until pgconn_start().
 * Returns NULL if out of memory. Free with pgconn_free().
 */
struct pgconn *pgconn_new(struct ev_loop *loop, const char *name, const char *conninfo,
                          pgconn_cb cb, void *arg);
void pgconn_free(struct pgconn *c);

/*
 * The session's application_name (pg_stat_activity), e.g.
 * "projectord/users", used from the next connect on; without one,
 * "projectord". A connection string (or PGAPPNAME) that sets its own
 * application_name wins: the name is libpq's fallback_application_name.
 * Returns 0, or -1 when out of memory. The string is copied.
 */
int pgconn_set_application_name(struct pgconn *c, const char *name);

/* The projection the connection's log records are about (log.h); borrowed. */
void pgconn_set_log_projection(struct pgconn *c, const char *projection);

/* Connect now (or, if a reconnect is scheduled, at once). */
void pgconn_start(struct pgconn *c);

/*
 * Drop the connection (logging why) and reconnect after the backoff delay.
 * Failures pgconn notices itself are logged with their SQLSTATE: the
 * server's, else 08001 (could not connect) or 08006 (connection lost).
 */
void pgconn_reset(struct pgconn *c, const char *why);

/*
 * Whether a failed connect is the server refusing for good (authentication,
 * no such database or role, no right to connect), not the network or a
 * server that is down or busy: by its SQLSTATE when known (else NULL or
 * ""), else by the message.
 */
bool pgconn_refused(const char *message, const char *sqlstate);

/* Close for good: no reconnect. Pending requests are dropped silently. */
void pgconn_close(struct pgconn *c);

/* Connected, and no request waiting for its sync. */
bool pgconn_idle(const struct pgconn *c);
/* In a PGCONN_NOTIFY callback: how many notifications it stands for. */
int pgconn_notifies(const struct pgconn *c);
bool pgconn_connected(const struct pgconn *c);
const char *pgconn_name(const struct pgconn *c);

/*
 * Queue statements of the current request. Parameters are text (NULL for
 * SQL NULL) and are copied before return. Each returns 0, or -1 when the
 * connection is unusable (a PGCONN_LOST follows).
 */
int pgconn_query(struct pgconn *c, const char *sql, int nparams, const char *const *params);
int pgconn_prepare(struct pgconn *c, const char *name, const char *sql, int nparams);
int pgconn_exec_prepared(struct pgconn *c, const char *name, int nparams,
                         const char *const *params);

/* Close the current request and send it. Returns 0 or -1 as above. */
int pgconn_sync(struct pgconn *c);

/* Send what is queued and have the server return its results now. */
int pgconn_flush_request(struct pgconn *c);

/* Inside a PGCONN_RESULT callback: keep the result (caller PQclear()s it). */
PGresult *pgconn_take_result(struct pgconn *c);

/* Helpers for reading results. */
const char *pgconn_sqlstate(const PGresult *res);   /* "" when none */
const char *pgconn_error_line(const PGresult *res); /* primary message, one line */
bool pgconn_result_ok(const PGresult *res);         /* COMMAND_OK or TUPLES_OK */

/*
 * A failed statement's error as one line for a one-shot command's output:
 * "primary message (SQLSTATE XXXXX)", or the connection's message (conn
 * may be NULL) when there is no result. Returns buf.
 */
const char *pgconn_error_text(const PGresult *res, PGconn *conn, char *buf, size_t size);

/*
 * A libpq error message as one line, and the SQLSTATE it names ("" when
 * none): a connection's message made with PQERRORS_VERBOSE carries the
 * server's code ("FATAL:  28P01: password authentication failed ..."),
 * which is taken out of the line, as is its LOCATION.
 */
void pgconn_message_sqlstate(const char *message, char *line, size_t size, char sqlstate[6]);

#endif
