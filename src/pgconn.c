/*
 * pgconn: an asynchronous libpq connection on a libev loop (see pgconn.h).
 *
 * States: DOWN (waiting for the reconnect timer) -> CONNECTING (driving
 * PQconnectPoll, re-arming the watcher for read or write as it asks; the
 * socket may change between polls) -> CHECK (pipeline mode, non-blocking:
 * asking pg_is_in_recovery(), and on a standby asking again after a
 * backoff delay) -> UP (the read watcher is always on, the write watcher
 * only while libpq has unsent data) -> DOWN again on any failure. CLOSED is
 * final.
 *
 * A failure noticed while the owner is calling us (a send that libpq
 * refuses) is not reported re-entrantly: it arms a zero-delay timer, and
 * PGCONN_LOST arrives from the loop like every other event.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "log.h"
#include "pgconn.h"

#define CONNECT_TIMEOUT_S   10.0
#define RECONNECT_INITIAL_S 0.2
#define RECONNECT_MAX_S     10.0
/* A server that refuses (wrong password, no such database or role) will not change its mind soon.
 */
#define REFUSED_MAX_S 60.0

enum pgconn_state { ST_DOWN, ST_CONNECTING, ST_CHECK, ST_UP, ST_CLOSED };

struct pgconn {
    struct ev_loop *loop;
    char *name;
    char *appname;          /* application_name unless the conninfo sets one; NULL: "projectord" */
    const char *projection; /* the log records' projection field, or NULL (borrowed) */
    char *conninfo;
    pgconn_cb cb;
    void *arg;
    int notifies; /* how many the last PGCONN_NOTIFY stands for */
    PGconn *pg;
    enum pgconn_state state;
    ev_io io;
    ev_timer timer; /* connect timeout, reconnect delay, or deferred failure */
    struct backoff backoff;
    int pending;         /* statements and syncs sent whose results are not delivered yet */
    PGresult *current;   /* the result being delivered, unless taken */
    unsigned generation; /* bumped by every drop, so loops notice a reset made by a callback */
    bool broken;         /* a send failed; drop from the loop, not from inside the caller */
    bool standby;        /* CHECK: this session found a hot standby (the owner was told) */
    int in_recovery;     /* CHECK: the answer so far: 1, 0, or -1 when none came */
};

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static uint32_t jitter_random(void)
{
    static uint32_t state;
    if (state == 0)
        state = (uint32_t)getpid() ^ (uint32_t)time(NULL) ^ 0x9e3779b9u;
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

/* libpq messages may span lines; a log record must not. */
static void one_line(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    for (const char *s = src ? src : ""; *s && n + 1 < size; s++)
        dst[n++] = (*s == '\n' || *s == '\r') ? ' ' : *s;
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

static void notice_cb(void *arg, const char *message)
{
    struct pgconn *c = arg;
    char line[1024];
    one_line(line, sizeof line, message);
    log_info_f(&(struct log_fields){.projection = c->projection}, "%s: server: %s", c->name, line);
}

struct pgconn *pgconn_new(struct ev_loop *loop, const char *name, const char *conninfo,
                          pgconn_cb cb, void *arg)
{
    struct pgconn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->name = strdup(name);
    c->conninfo = strdup(conninfo ? conninfo : "");
    if (!c->name || !c->conninfo) {
        free(c->name);
        free(c->conninfo);
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->cb = cb;
    c->arg = arg;
    c->state = ST_DOWN;
    c->backoff = (struct backoff)BACKOFF_INIT(RECONNECT_INITIAL_S, RECONNECT_MAX_S);
    ev_init(&c->io, io_cb);
    c->io.data = c;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    return c;
}

static void watch(struct pgconn *c, int events)
{
    int fd = PQsocket(c->pg);
    if (ev_is_active(&c->io) && c->io.fd == fd && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(c->loop, &c->io);
    if (fd < 0)
        return;
    ev_io_set(&c->io, fd, events);
    ev_io_start(c->loop, &c->io);
}

static void arm_timer(struct pgconn *c, double after)
{
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_set(&c->timer, after, 0.0);
    ev_timer_start(c->loop, &c->timer);
}

static void disconnect(struct pgconn *c)
{
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->pending = 0;
    c->broken = false;
    c->standby = false;
    c->generation++;
}

/*
 * The last connect failure said, for the whole process: every connection
 * of the daemon fails the same way when the password is wrong or the
 * server is down, and an operator needs the cause once, not a line per
 * connection and retry. Cleared by a connection that comes up, so the next
 * failure is said again.
 */
static char said_failure[1024];

bool pgconn_refused(const char *message, const char *sqlstate)
{
    /*
     * The server answered and said no for good: authentication (class 28),
     * no such database (3D000), no right to connect (42501); or it asked for
     * a password we do not have. Not the network, nor a server starting up
     * or out of connections (57P03, 53300), which pass.
     */
    if (message && strstr(message, "fe_sendauth:"))
        return true;
    if (sqlstate && *sqlstate)
        return strncmp(sqlstate, "28", 2) == 0 || strcmp(sqlstate, "3D000") == 0 ||
               strcmp(sqlstate, "42501") == 0;
    /* Without the code (a one-shot command's default verbosity): the server's words. */
    return message && strstr(message, "FATAL:") &&
           (strstr(message, "password authentication failed") ||
            strstr(message, "does not exist") || strstr(message, "pg_hba.conf") ||
            strstr(message, "permission denied"));
}

/*
 * Drop the connection and reconnect after the backoff delay. sqlstate: the
 * server's for the failure, else NULL: a failure of the connection itself
 * is 08001 (could not connect) or 08006 (lost), the codes the SQL standard
 * gives them, so every such line names one. owner: the owner asked for it
 * (pgconn_reset), which is no database error.
 */
static void drop_and_retry(struct pgconn *c, const char *why, const char *sqlstate, bool owner)
{
    if (c->state == ST_CLOSED)
        return;
    bool was_up = c->state == ST_UP || c->state == ST_CHECK;
    char line[1024];
    one_line(line, sizeof line, why);
    disconnect(c);
    c->state = ST_DOWN;
    bool refused = !was_up && !owner && pgconn_refused(line, sqlstate);
    c->backoff.max_s = refused ? REFUSED_MAX_S : RECONNECT_MAX_S;
    double delay = backoff_next(&c->backoff, jitter_random());
    if (!sqlstate || !*sqlstate)
        sqlstate = owner ? "" : was_up ? "08006" : "08001";
    struct log_fields f = {.projection = c->projection, .sqlstate = sqlstate};
    char code[24] = "";
    if (*sqlstate)
        snprintf(code, sizeof code, " (SQLSTATE %s)", sqlstate);
    if (was_up || owner) {
        log_warning_f(&f, "%s: %s: %s%s; reconnecting in %.1fs", c->name,
                      was_up ? "connection lost" : "cannot connect", line, code, delay);
    } else if (strcmp(line, said_failure) == 0) {
        log_debug("%s: cannot connect (still): %s%s; again in %.1fs", c->name, line, code, delay);
    } else if (refused) {
        snprintf(said_failure, sizeof said_failure, "%s", line);
        log_error_f(&f,
                    "%s: cannot connect: refused by the server: %s%s; retrying with growing "
                    "backoff (up to %.0f s), said again when the error changes",
                    c->name, line, code, REFUSED_MAX_S);
    } else {
        snprintf(said_failure, sizeof said_failure, "%s", line);
        log_warning_f(&f,
                      "%s: cannot connect: %s%s; retrying with growing backoff (up to %.0f s), "
                      "said again when the error changes",
                      c->name, line, code, RECONNECT_MAX_S);
    }
    arm_timer(c, delay);
    c->cb(c, c->arg, PGCONN_LOST, NULL, NULL);
}

void pgconn_reset(struct pgconn *c, const char *why)
{
    drop_and_retry(c, why, NULL, true);
}

/* libpq failed on this connection: its message, with the server's SQLSTATE if it sent one. */
static void conn_failed(struct pgconn *c)
{
    char line[1024], sqlstate[6];
    pgconn_message_sqlstate(PQerrorMessage(c->pg), line, sizeof line, sqlstate);
    drop_and_retry(c, line, sqlstate, false);
}

static void start_connect(struct pgconn *c)
{
    /*
     * Defaults first: the owner's conninfo (expanded from dbname) overrides
     * them. client_encoding comes after it, so nothing overrides it: the
     * handlers parse payloads as UTF-8 JSON and send UTF-8 text, whatever the
     * database's encoding (a LATIN1 event store gave "José" as byte 0xe9).
     * A startup parameter beats PGCLIENTENCODING, `options=-c ...` and the
     * role's or database's settings, and is sent again on every reconnect.
     */
    const char *keys[] = {"fallback_application_name",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "tcp_user_timeout",
                          "dbname",
                          "client_encoding",
                          NULL};
    const char *vals[] = {c->appname ? c->appname : "projectord",
                          "1",
                          "10",
                          "5",
                          "3",
                          "30000",
                          c->conninfo,
                          "UTF8",
                          NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    c->state = ST_CONNECTING;
    if (!c->pg) {
        drop_and_retry(c, "out of memory", NULL, false);
        return;
    }
    /*
     * Verbose while connecting: libpq has no other way to tell the SQLSTATE
     * of an error the server sends during the startup (a wrong password is
     * 28P01, a missing database 3D000); conn_failed takes it out of the
     * message. Back to the default once connected (notices).
     */
    PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_failed(c);
        return;
    }
    watch(c, EV_WRITE);
    arm_timer(c, CONNECT_TIMEOUT_S);
}

void pgconn_start(struct pgconn *c)
{
    if (c->state != ST_DOWN)
        return;
    ev_timer_stop(c->loop, &c->timer);
    start_connect(c);
}

static void flush(struct pgconn *c);

/* Ask whether the server is a hot standby: one statement and a sync, answered in CHECK. */
static void send_check(struct pgconn *c)
{
    c->in_recovery = -1;
    if (!PQsendQueryParams(c->pg, "SELECT pg_catalog.pg_is_in_recovery()", 0, NULL, NULL, NULL,
                           NULL, 0) ||
        !PQpipelineSync(c->pg)) {
        conn_failed(c);
        return;
    }
    c->pending = 2;
    arm_timer(c, CONNECT_TIMEOUT_S); /* an answer that does not come counts as a failed connect */
    flush(c);
}

static void connected(struct pgconn *c)
{
    ev_timer_stop(c->loop, &c->timer);
    PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        conn_failed(c);
        return;
    }
    PQsetNoticeProcessor(c->pg, notice_cb, c);
    c->state = ST_CHECK;
    send_check(c);
}

/* A primary: the owner may use the connection now. */
static void go_up(struct pgconn *c)
{
    ev_timer_stop(c->loop, &c->timer);
    if (c->standby)
        log_info_f(&(struct log_fields){.projection = c->projection},
                   "%s: the server is no longer a hot standby (promoted)", c->name);
    c->standby = false;
    backoff_reset(&c->backoff);
    said_failure[0] = '\0';
    c->state = ST_UP;
    watch(c, EV_READ);
    log_info_f(&(struct log_fields){.projection = c->projection},
               "%s: connected to %s:%s/%s (server %d)", c->name, PQhost(c->pg), PQport(c->pg),
               PQdb(c->pg), PQserverVersion(c->pg));
    c->cb(c, c->arg, PGCONN_READY, NULL, NULL);
}

/* A hot standby: tell the owner (once per session) and ask again after a while. */
static void wait_for_promotion(struct pgconn *c)
{
    double delay = backoff_next(&c->backoff, jitter_random());
    arm_timer(c, delay);
    log_debug("%s: the server is a hot standby; asking again in %.1fs", c->name, delay);
    if (!c->standby) {
        c->standby = true;
        c->cb(c, c->arg, PGCONN_STANDBY, NULL, NULL);
    }
}

/*
 * The next result of a request in flight that has arrived, or NULL when
 * none is ready (or none is pending); the caller owns it. In pipeline mode
 * a NULL separates statements; two in a row mean nothing is ready. *nulls
 * starts at 0 for each round of reading.
 */
static PGresult *next_result(struct pgconn *c, int *nulls)
{
    while (c->pending > 0 && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (++*nulls > 1)
                return NULL;
            continue;
        }
        *nulls = 0;
        c->pending--;
        return res;
    }
    return NULL;
}

/* The answer to send_check: results until the sync, then the verdict. */
static void on_check_readable(struct pgconn *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_failed(c);
        return;
    }
    char error[512] = "", sqlstate[6] = "";
    int nulls = 0;
    PGresult *res;
    while ((res = next_result(c, &nulls))) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK && PQntuples(res) == 1)
            c->in_recovery = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        else if (st != PGRES_PIPELINE_SYNC && !error[0]) {
            snprintf(error, sizeof error, "checking for a hot standby: %s", pgconn_error_line(res));
            snprintf(sqlstate, sizeof sqlstate, "%s", pgconn_sqlstate(res));
        }
        PQclear(res);
    }
    if (c->pending > 0)
        return;
    if (error[0] || c->in_recovery < 0)
        drop_and_retry(c, error[0] ? error : "checking for a hot standby: no answer", sqlstate,
                       false);
    else if (c->in_recovery)
        wait_for_promotion(c);
    else
        go_up(c);
}

static void poll_connect(struct pgconn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        watch(c, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        watch(c, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        connected(c);
        break;
    default:
        conn_failed(c);
        break;
    }
}

/* Send what libpq has buffered; watch for writability while some is left. */
static void flush(struct pgconn *c)
{
    int r = PQflush(c->pg);
    if (r < 0)
        conn_failed(c);
    else
        watch(c, r == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void deliver_results(struct pgconn *c)
{
    unsigned gen = c->generation;
    int nulls = 0;
    PGresult *res;
    while ((res = next_result(c, &nulls))) {
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            c->cb(c, c->arg, PGCONN_SYNC, NULL, NULL);
        } else {
            c->current = res;
            c->cb(c, c->arg, PGCONN_RESULT, res, NULL);
            if (c->current)
                PQclear(c->current);
            c->current = NULL;
        }
        if (gen != c->generation)
            return;
    }
}

/*
 * The notifications of one read are one event, with the last of them: they
 * are wake-up hints, and each wake-up starts a round of window opens. At
 * 1,000 appends/s a fifth of the rounds came within 0.1 ms of the one
 * before, from the same read, and each made the open just sent stale.
 */
/*
 * Each run of notifications on one channel is delivered once (the last of
 * them), its length in c->notifies: a busy event store sends thousands,
 * while a notification on another channel (an operator's request) must
 * not be lost among them.
 */
static void deliver_notifies(struct pgconn *c)
{
    PGnotify *last = NULL, *n;
    unsigned gen = c->generation;
    c->notifies = 0;
    while (c->pg && gen == c->generation && (n = PQnotifies(c->pg)) != NULL) {
        if (last && strcmp(last->relname, n->relname) != 0) {
            c->cb(c, c->arg, PGCONN_NOTIFY, NULL, last);
            c->notifies = 0;
        }
        if (last)
            PQfreemem(last);
        last = n;
        c->notifies++;
    }
    if (last) {
        if (gen == c->generation)
            c->cb(c, c->arg, PGCONN_NOTIFY, NULL, last);
        PQfreemem(last);
    }
}

static void on_readable(struct pgconn *c)
{
    unsigned gen = c->generation;
    if (!PQconsumeInput(c->pg)) {
        conn_failed(c);
        return;
    }
    deliver_results(c);
    if (gen != c->generation || c->state != ST_UP)
        return;
    deliver_notifies(c);
    if (gen != c->generation || c->state != ST_UP)
        return;
    if (PQstatus(c->pg) == CONNECTION_BAD)
        conn_failed(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct pgconn *c = w->data;
    if (c->state == ST_CONNECTING) {
        poll_connect(c);
        return;
    }
    if (c->state != ST_UP && c->state != ST_CHECK)
        return;
    unsigned gen = c->generation;
    if (revents & EV_WRITE)
        flush(c);
    if (gen != c->generation || !(revents & EV_READ))
        return;
    if (c->state == ST_CHECK)
        on_check_readable(c);
    else if (c->state == ST_UP)
        on_readable(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pgconn *c = w->data;
    if (c->state == ST_CONNECTING || (c->state == ST_CHECK && c->pending > 0))
        drop_and_retry(c, "connection timed out", NULL, false);
    else if (c->state == ST_CHECK)
        send_check(c); /* a standby: has it been promoted? */
    else if (c->state == ST_UP && c->broken)
        conn_failed(c);
    else if (c->state == ST_DOWN)
        start_connect(c);
}

static int send_failed(struct pgconn *c)
{
    if (!c->broken) {
        c->broken = true;
        arm_timer(c, 0.0);
    }
    return -1;
}

static bool usable(const struct pgconn *c)
{
    return c->state == ST_UP && !c->broken;
}

int pgconn_query(struct pgconn *c, const char *sql, int nparams, const char *const *params)
{
    if (!usable(c))
        return -1;
    if (!PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0))
        return send_failed(c);
    c->pending++;
    return 0;
}

int pgconn_prepare(struct pgconn *c, const char *name, const char *sql, int nparams)
{
    if (!usable(c))
        return -1;
    if (!PQsendPrepare(c->pg, name, sql, nparams, NULL))
        return send_failed(c);
    c->pending++;
    return 0;
}

int pgconn_exec_prepared(struct pgconn *c, const char *name, int nparams, const char *const *params)
{
    if (!usable(c))
        return -1;
    if (!PQsendQueryPrepared(c->pg, name, nparams, params, NULL, NULL, 0))
        return send_failed(c);
    c->pending++;
    return 0;
}

int pgconn_sync(struct pgconn *c)
{
    if (!usable(c))
        return -1;
    if (!PQpipelineSync(c->pg))
        return send_failed(c);
    c->pending++;
    unsigned gen = c->generation;
    flush(c);
    return gen == c->generation ? 0 : -1;
}

int pgconn_flush_request(struct pgconn *c)
{
    if (!usable(c))
        return -1;
    if (!PQsendFlushRequest(c->pg))
        return send_failed(c);
    unsigned gen = c->generation;
    flush(c);
    return gen == c->generation ? 0 : -1;
}

PGresult *pgconn_take_result(struct pgconn *c)
{
    PGresult *res = c->current;
    c->current = NULL;
    return res;
}

void pgconn_close(struct pgconn *c)
{
    disconnect(c);
    c->state = ST_CLOSED;
}

void pgconn_free(struct pgconn *c)
{
    if (!c)
        return;
    disconnect(c);
    free(c->name);
    free(c->conninfo);
    free(c->appname);
    free(c);
}

int pgconn_set_application_name(struct pgconn *c, const char *name)
{
    char *copy = strdup(name);
    if (!copy)
        return -1;
    free(c->appname);
    c->appname = copy;
    return 0;
}

void pgconn_set_log_projection(struct pgconn *c, const char *projection)
{
    c->projection = projection;
}

int pgconn_notifies(const struct pgconn *c)
{
    return c->notifies;
}

bool pgconn_idle(const struct pgconn *c)
{
    return usable(c) && c->pending == 0;
}

bool pgconn_connected(const struct pgconn *c)
{
    return c->state == ST_UP;
}

const char *pgconn_name(const struct pgconn *c)
{
    return c->name;
}

const char *pgconn_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *pgconn_error_line(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!s && res)
        s = PQresultErrorMessage(res);
    return s && *s ? s : "unknown error";
}

/* "SEVERITY:  " then five [0-9A-Z] and ": ": the code a verbose message carries. */
static const char *verbose_code(const char *s)
{
    static const char *const severities[] = {"FATAL:  ", "ERROR:  ", "PANIC:  "};
    for (size_t i = 0; i < sizeof severities / sizeof severities[0]; i++) {
        const char *at = strstr(s, severities[i]);
        if (!at)
            continue;
        const char *code = at + strlen(severities[i]);
        if (strspn(code, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5 && code[5] == ':' &&
            code[6] == ' ')
            return code;
    }
    return NULL;
}

void pgconn_message_sqlstate(const char *message, char *line, size_t size, char sqlstate[6])
{
    char text[2048];
    sqlstate[0] = '\0';
    snprintf(text, sizeof text, "%s", message ? message : "");
    char *where = strstr(text, "\nLOCATION:");
    if (where)
        *where = '\0';
    char *code = (char *)verbose_code(text);
    if (code) {
        memcpy(sqlstate, code, 5);
        sqlstate[5] = '\0';
        memmove(code, code + 7, strlen(code + 7) + 1);
    }
    one_line(line, size, text);
}

const char *pgconn_error_text(const PGresult *res, PGconn *conn, char *buf, size_t size)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = pgconn_sqlstate(res);
    char line[1024];
    one_line(line, sizeof line, msg ? msg : conn ? PQerrorMessage(conn) : "unknown error");
    snprintf(buf, size, "%s%s%s%s", line, *state ? " (SQLSTATE " : "", state, *state ? ")" : "");
    return buf;
}

bool pgconn_result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}
