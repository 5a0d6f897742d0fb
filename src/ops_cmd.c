/*
 * ops_cmd: the operator's one-shot commands that act on projections:
 * `rebuild NAME... | --all`, `replay-dead-letters NAME`, `resume NAME` and
 * `dead-letters [--json] [NAME]` / `dead-letters --purge NAME [--before POSITION]`.
 *
 * A projection that a running instance owns (its ownership lock is held) is
 * worked on by that instance: the command sets a request column in the
 * status table (rebuild_requested_at, replay_requested_at,
 * resume_requested_at), the owner picks it up with its next heartbeat, and
 * the command waits for the matching result column (rebuilt_at,
 * replayed_at), printing the progress the instance records. Projections no
 * instance owns are worked on here, in a loop of our own: a live runner
 * takes the ownership lock (an instance starting meanwhile stands by), does
 * the job and stops. A rebuild keeps the live tables serving until the swap.
 *
 * `adopt-restored-store` is the odd one out: it rewrites the event store's
 * transaction ids and moves every checkpoint (sql/V026) in a transaction of
 * its own, and asks the owners to reload and resume.
 */
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fleet.h"
#include "log.h"
#include "pgconn.h"
#include "registry.h"
#include "runner.h"

/* A failed statement's error, one line with its SQLSTATE (a static buffer: one at a time). */
static const char *db_error(const PGresult *res, PGconn *conn)
{
    static char buf[1100];
    return pgconn_error_text(res, conn, buf, sizeof buf);
}

#define PROGRESS_INTERVAL_S 1.0

struct progress {
    const char *name;
    double started;
    int64_t first_done;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * One progress line: done / total, and once the rate is known (events done
 * since the first sample) the rate and ETA; redrawn in place on a terminal.
 * The total is the head as last seen, and events keep coming while a
 * rebuild runs: a total already passed counts as the done ones, so the
 * line never says more than 100 %.
 */
static void print_progress(struct progress *p, int64_t done, int64_t total)
{
    if (p->first_done < 0) {
        p->first_done = done;
        p->started = now_s();
    }
    if (total < done)
        total = done;
    double elapsed = now_s() - p->started;
    double rate = elapsed > 0 ? (double)(done - p->first_done) / elapsed : 0;
    char speed[64] = "";
    if (rate > 0)
        snprintf(speed, sizeof speed, ", %.0f events/s, ETA %.0fs", rate,
                 (double)(total - done) / rate);
    bool tty = isatty(STDOUT_FILENO);
    printf("%s%s: %" PRId64 " / %" PRId64 " events (%.0f%%)%s%s", tty ? "\r" : "", p->name, done,
           total, total > 0 ? 100.0 * (double)done / (double)total : 100.0, speed,
           tty ? "   " : "\n");
    fflush(stdout);
}

/*
 * SIGTERM or SIGINT while a rebuild command runs: the signal's number. A
 * rebuild run here is stopped (sql/V008's projectord_abandon_rebuild drops
 * its shadow; the live tables stay as they were) and the command exits 1;
 * one that a running instance does goes on there, and the command stops
 * waiting for it.
 */
static volatile sig_atomic_t stop_signal;

static void note_signal(int sig)
{
    stop_signal = sig;
}

/* ---- rebuilt here ---------------------------------------------------------- */

struct local {
    struct ev_loop *loop;
    struct runner **runners;
    struct progress *progress;
    size_t n, running;
    ev_timer tick;
    ev_timer poll; /* wakes the live runners, as the daemon's poll timer does */
    ev_signal sigterm, sigint;
};

static void local_done(struct runner *r, void *arg)
{
    (void)r;
    struct local *l = arg;
    if (--l->running == 0)
        ev_break(l->loop, EVBREAK_ALL);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct local *l = w->data;
    for (size_t i = 0; i < l->n; i++) {
        int64_t done, total;
        /* No total before the rebuild's first window: nothing to say yet. */
        if (runner_rebuild_progress(l->runners[i], &done, &total) && total > 0)
            print_progress(&l->progress[i], done, total);
    }
}

/*
 * A rebuild here owns the live projection for as long as it takes (minutes
 * for a large store): its live runner must go on applying new events
 * meanwhile, as the daemon's would. No LISTEN here; the poll wakes it.
 */
static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    struct local *l = w->data;
    for (size_t i = 0; i < l->n; i++)
        if (l->runners[i])
            runner_wake(l->runners[i]);
}

/* Stop every runner: each finishes its request in flight, a rebuild gives itself up. */
static void stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop, (void)revents;
    struct local *l = w->data;
    if (stop_signal)
        return;
    stop_signal = w->signum;
    for (size_t i = 0; i < l->n; i++)
        if (l->runners[i])
            runner_stop(l->runners[i]);
}

enum job { JOB_REBUILD, JOB_REPLAY };

static int run_here(const struct config *cfg, enum job job, const struct projection **projs,
                    size_t n)
{
    static char owner[300];
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    snprintf(owner, sizeof owner, "%s:%ld (%s)", host, (long)getpid(),
             job == JOB_REBUILD ? "rebuild" : "replay");
    struct fleet fleet = {.projections = (int)n};
    struct local l = {.loop = ev_default_loop(EVFLAG_AUTO), .n = n, .running = n};
    l.runners = calloc(n, sizeof *l.runners);
    l.progress = calloc(n, sizeof *l.progress);
    int rc = 0;
    for (size_t i = 0; l.runners && l.progress && i < n; i++) {
        l.runners[i] = runner_new(l.loop, projs[i], config_projection(cfg, projs[i]->name), cfg,
                                  owner, &fleet, NULL, local_done, &l);
        if (!l.runners[i])
            break;
        l.progress[i] = (struct progress){.name = projs[i]->name, .first_done = -1};
        if (job == JOB_REBUILD)
            runner_request_rebuild(l.runners[i], true);
        else
            runner_request_replay(l.runners[i], true);
        runner_start(l.runners[i]);
    }
    ev_timer_init(&l.tick, tick_cb, PROGRESS_INTERVAL_S, PROGRESS_INTERVAL_S);
    l.tick.data = &l;
    ev_timer_start(l.loop, &l.tick);
    double poll_s = cfg->poll_interval_ms / 1000.0;
    ev_timer_init(&l.poll, poll_cb, poll_s, poll_s);
    l.poll.data = &l;
    ev_timer_start(l.loop, &l.poll);
    ev_signal_init(&l.sigterm, stop_cb, SIGTERM);
    ev_signal_init(&l.sigint, stop_cb, SIGINT);
    l.sigterm.data = l.sigint.data = &l;
    ev_signal_start(l.loop, &l.sigterm);
    ev_signal_start(l.loop, &l.sigint);
    ev_run(l.loop, 0);
    ev_signal_stop(l.loop, &l.sigterm);
    ev_signal_stop(l.loop, &l.sigint);
    ev_timer_stop(l.loop, &l.tick);
    ev_timer_stop(l.loop, &l.poll);
    for (size_t i = 0; i < n; i++) {
        bool ok =
            l.runners && l.runners[i] &&
            (job == JOB_REPLAY ? runner_replayed(l.runners[i]) : runner_rebuilt(l.runners[i]));
        const char *what = job == JOB_REPLAY ? "dead letters replayed" : "rebuilt";
        printf("%s%s: %s%s\n", isatty(STDOUT_FILENO) && job == JOB_REBUILD ? "\n" : "",
               projs[i]->name, ok ? "" : "not ", what);
        rc |= !ok;
        runner_free(l.runners ? l.runners[i] : NULL);
    }
    if (stop_signal && rc)
        fprintf(stderr, "projectord: %s interrupted (%s): %s; run it again\n",
                job == JOB_REPLAY ? "replay-dead-letters" : "rebuild", strsignal(stop_signal),
                job == JOB_REPLAY ? "the dead letters replayed so far stay applied"
                                  : "given up, the live tables are as they were");
    free(l.runners);
    free(l.progress);
    return rc ? EXIT_FAILURE_1 : 0;
}

/* ---- rebuilt by a running instance ----------------------------------------- */

static bool owned_elsewhere(PGconn *conn, const char *name)
{
    char key[12];
    snprintf(key, sizeof key, "%d", FLEET_PROJECTION_LOCK);
    const char *params[] = {key, name};
    PGresult *res =
        PQexecParams(conn,
                     "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"
                     "   AND classid = $1::int::oid AND objsubid = 2 AND granted"
                     "   AND objid = (hashtext($2)::bigint & 4294967295)::oid"
                     "   AND database = (SELECT oid FROM pg_catalog.pg_database"
                     "                    WHERE datname = pg_catalog.current_database())",
                     2, NULL, params, NULL, NULL, 0);
    bool owned = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "0") != 0;
    PQclear(res);
    return owned;
}

/*
 * Leave a request for the owner in `column` (one of the request columns,
 * never user input); returns the request's time as text (caller frees) or
 * NULL.
 */
static char *request(PGconn *conn, const char *name, const char *column)
{
    const char *params[] = {name};
    char sql[512];
    /* The notification goes out with the commit (fleet.h, FLEET_REQUEST_CHANNEL). */
    snprintf(sql, sizeof sql,
             "WITH asked AS (UPDATE read_model.projection_metadata SET %s = clock_timestamp()"
             " WHERE projection_name = $1 RETURNING %s)"
             " SELECT asked.%s, pg_notify('" FLEET_REQUEST_CHANNEL "', $1) FROM asked",
             column, column, column);
    PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    char *at = NULL;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        at = strdup(PQgetvalue(res, 0, 0));
    else
        fprintf(stderr, "projectord: %s: could not ask the owning instance: %s\n", name,
                db_error(res, conn));
    PQclear(res);
    return at;
}

/* Poll until the owner has swapped a rebuild in after `since`, or given up. */
static int wait_for_owner(PGconn *conn, const char *name, const char *since)
{
    struct progress p = {.name = name, .first_done = -1};
    const char *params[] = {name, since};
    for (;;) {
        PGresult *res = PQexecParams(
            conn,
            "SELECT m.rebuilt_at >= $2::timestamptz, m.rebuild_requested_at IS NULL,"
            "       coalesce(r.last_position, 0),"
            "       CASE WHEN r.status = 'rebuilding'"
            "            THEN greatest(r.events_total, m.last_position + m.lag_events) ELSE 0 END,"
            "       m.last_error"
            "  FROM read_model.projection_metadata m"
            "  LEFT JOIN read_model.projection_rebuild r USING (projection_name)"
            " WHERE m.projection_name = $1",
            2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            fprintf(stderr, "projectord: rebuild %s: %s\n", name, db_error(res, conn));
            PQclear(res);
            return EXIT_FAILURE_1;
        }
        bool swapped = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        bool gave_up = !swapped && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        int64_t done = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        int64_t total = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        if (gave_up)
            fprintf(stderr, "projectord: rebuild %s failed: %s\n", name, PQgetvalue(res, 0, 4));
        PQclear(res);
        if (swapped || gave_up) {
            printf("%s%s: %s (by the running instance)\n", isatty(STDOUT_FILENO) ? "\n" : "", name,
                   swapped ? "rebuilt" : "rebuild failed");
            return swapped ? 0 : EXIT_FAILURE_1;
        }
        if (total > 0)
            print_progress(&p, done, total);
        usleep((useconds_t)(PROGRESS_INTERVAL_S * 1e6));
        if (stop_signal) {
            fprintf(stderr,
                    "%sprojectord: rebuild %s: stopped waiting (%s); the running instance goes "
                    "on with it (see projectord status)\n",
                    isatty(STDOUT_FILENO) ? "\n" : "", name, strsignal(stop_signal));
            return EXIT_FAILURE_1;
        }
    }
}

/* ---- the command ------------------------------------------------------------- */

static int pick(int argc, char **argv, const struct projection **out, size_t *n)
{
    *n = 0;
    if (argc == 1 && strcmp(argv[0], "--all") == 0) {
        for (size_t i = 0; i < projection_registry_count; i++)
            out[(*n)++] = projection_registry[i];
        return 0;
    }
    if (argc == 0) {
        fprintf(stderr, "projectord: rebuild: name the projections, or --all\n");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        const struct projection *p = registry_find(argv[i]);
        if (argv[i][0] == '-') {
            fprintf(stderr,
                    "projectord: rebuild: unknown option '%s' (see projectord rebuild --help)\n",
                    argv[i]);
            return -1;
        }
        if (!p) {
            fprintf(stderr, "projectord: rebuild: no projection '%s' (see projectord list)\n",
                    argv[i]);
            return -1;
        }
        out[(*n)++] = p;
    }
    return 0;
}

int cli_rebuild(const struct config *cfg, int argc, char **argv)
{
    const struct projection **projs =
        calloc(projection_registry_count + (size_t)argc + 1, sizeof *projs);
    const struct projection **here =
        calloc(projection_registry_count + (size_t)argc + 1, sizeof *here);
    size_t n = 0, nhere = 0;
    int rc = 0;
    if (!projs || !here || pick(argc, argv, projs, &n) < 0) {
        free(projs);
        free(here);
        return EXIT_USAGE;
    }
    PGconn *conn;
    int refused = cli_open(cfg, CLI_PRIMARY_EVENTS, &conn);
    if (refused) {
        free(projs);
        free(here);
        return refused;
    }
    char **since = calloc(n, sizeof *since);
    for (size_t i = 0; since && i < n; i++) {
        if (!owned_elsewhere(conn, projs[i]->name))
            here[nhere++] = projs[i];
        else if (!(since[i] = request(conn, projs[i]->name, "rebuild_requested_at")))
            rc = EXIT_FAILURE_1;
    }
    if (nhere > 0)
        rc |= run_here(cfg, JOB_REBUILD, here, nhere);
    /* Waiting: a signal interrupts the sleep and ends the wait (no SA_RESTART). */
    struct sigaction sa = {.sa_handler = note_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (size_t i = 0; since && i < n; i++) {
        if (since[i] && !stop_signal)
            rc |= wait_for_owner(conn, projs[i]->name, since[i]);
        free(since[i]);
    }
    free(since);
    PQfinish(conn);
    free(projs);
    free(here);
    return rc ? EXIT_FAILURE_1 : 0;
}

/* ---- dead letters and failed projections -------------------------------------- */

/*
 * The projection's dead letters at positions up to upto (NULL: all), and in
 * *max (when not NULL) the highest of their positions, as text ("0" when
 * none). -1 when the query failed.
 */
static int dead_letter_count(PGconn *conn, const char *name, const char *upto, char max[21])
{
    const char *params[] = {name, upto};
    PGresult *res = PQexecParams(conn,
                                 "SELECT count(*), coalesce(max(global_position), 0)"
                                 "  FROM read_model.projection_dead_letter"
                                 " WHERE projection_name = $1"
                                 "   AND ($2::bigint IS NULL OR global_position <= $2::bigint)",
                                 2, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    int n = ok ? atoi(PQgetvalue(res, 0, 0)) : -1;
    if (max)
        snprintf(max, 21, "%s", ok ? PQgetvalue(res, 0, 1) : "0");
    PQclear(res);
    return n;
}

/* Poll until `column` of the status row is at or after since. */
static bool wait_for_column(PGconn *conn, const char *name, const char *column, const char *since)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT %s >= $2::timestamptz FROM read_model.projection_metadata"
             " WHERE projection_name = $1",
             column);
    const char *params[] = {name, since};
    for (;;) {
        PGresult *res = PQexecParams(conn, sql, 2, NULL, params, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        bool done = ok && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        if (!ok)
            fprintf(stderr, "projectord: %s: %s\n", name, db_error(res, conn));
        PQclear(res);
        if (!ok || done)
            return done;
        usleep((useconds_t)(PROGRESS_INTERVAL_S * 1e6));
    }
}

static const struct projection *one_projection(const char *command, int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (argv[i][0] == '-') {
            fprintf(stderr, "projectord: %s: unknown option '%s' (see projectord %s --help)\n",
                    command, argv[i], command);
            return NULL;
        }
    if (argc != 1) {
        fprintf(stderr, "projectord: %s: name one projection\n", command);
        return NULL;
    }
    const struct projection *p = registry_find(argv[0]);
    if (!p)
        fprintf(stderr, "projectord: %s: no projection '%s' (see projectord list)\n", command,
                argv[0]);
    return p;
}

int cli_replay_dead_letters(const struct config *cfg, int argc, char **argv)
{
    const struct projection *p = one_projection("replay-dead-letters", argc, argv);
    if (!p)
        return EXIT_USAGE;
    PGconn *conn;
    int refused = cli_open(cfg, CLI_PRIMARY_EVENTS, &conn);
    if (refused)
        return refused;
    /* Those to replay: new ones may come in while it runs, at later positions. */
    char upto[21];
    int before = dead_letter_count(conn, p->name, NULL, upto), rc = 0;
    if (owned_elsewhere(conn, p->name)) {
        char *since = request(conn, p->name, "replay_requested_at");
        rc = since && wait_for_column(conn, p->name, "replayed_at", since) ? 0 : EXIT_FAILURE_1;
        free(since);
    } else {
        rc = run_here(cfg, JOB_REPLAY, &p, 1);
    }
    int after = dead_letter_count(conn, p->name, upto, NULL);
    printf("%s: %d dead letter(s) before, %d applied, %d still failing\n", p->name, before,
           before - after, after);
    PQfinish(conn);
    /* Still failing is not done: a script or an operator must see it (issue 19). */
    return rc ? rc : before < 0 || after != 0 ? EXIT_FAILURE_1 : 0;
}

/* One row of the projection's status for resume: 0, or -1 when the query failed (printed). */
struct resume_view {
    char status[32];
    int64_t position, lag;
    bool taken;      /* the owner cleared the request */
    bool failed_new; /* an error recorded after `since` */
    char error[512];
};

static int resume_look(PGconn *conn, const char *name, const char *since, struct resume_view *v)
{
    const char *params[] = {name, since ? since : "infinity"};
    PGresult *res = PQexecParams(
        conn,
        "SELECT s.status, s.last_position, coalesce(s.lag_events, 0),"
        "       m.resume_requested_at IS NULL,"
        "       coalesce(m.last_error_at > $2::timestamptz, false), coalesce(m.last_error, '')"
        "  FROM read_model.projection_metadata m"
        "  JOIN read_model.projection_status s USING (projection_name)"
        " WHERE m.projection_name = $1",
        2, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (ok) {
        snprintf(v->status, sizeof v->status, "%s", PQgetvalue(res, 0, 0));
        v->position = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        v->lag = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        v->taken = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        v->failed_new = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
        snprintf(v->error, sizeof v->error, "%s", PQgetvalue(res, 0, 5));
    } else {
        fprintf(stderr, "projectord: resume %s: %s\n", name,
                PQresultStatus(res) == PGRES_TUPLES_OK ? "no status row" : PQerrorMessage(conn));
    }
    PQclear(res);
    return ok ? 0 : -1;
}

/*
 * Ask the owner to resume and wait, up to timeout_s, for the outcome: the
 * projection came back (not failed, and past where it stopped or at the
 * head: exit 0) or failed again (an error recorded after the request:
 * exit 1). Without an outcome in time: exit 1, saying so.
 */
static int resume_through_owner(PGconn *conn, const char *name, int timeout_s)
{
    struct resume_view v;
    if (resume_look(conn, name, NULL, &v) < 0)
        return EXIT_FAILURE_1;
    if (strcmp(v.status, "failed") != 0) {
        printf("%s: not failed (%s); nothing to do\n", name, v.status);
        return 0;
    }
    int64_t stopped_at = v.position;
    char *since = request(conn, name, "resume_requested_at");
    if (!since)
        return EXIT_FAILURE_1;
    if (timeout_s == 0) {
        printf("%s: resume asked of the owning instance; see `projectord status`\n", name);
        free(since);
        return 0;
    }
    int rc = -1;
    for (int waited_ms = 0; rc < 0 && waited_ms <= timeout_s * 1000; waited_ms += 200) {
        if (resume_look(conn, name, since, &v) < 0) {
            rc = EXIT_FAILURE_1;
        } else if (v.taken && strcmp(v.status, "failed") == 0 && v.failed_new) {
            if (v.position > stopped_at)
                printf("%s: resumed, applied up to position %" PRId64
                       ", then failed again at a later event: %s\n",
                       name, v.position, v.error);
            else
                printf("%s: failed again at the same event: %s\n", name, v.error);
            rc = EXIT_FAILURE_1;
        } else if (v.taken && strcmp(v.status, "failed") != 0 &&
                   (v.position > stopped_at || v.lag == 0)) {
            printf("%s: resumed: %s at position %" PRId64 "\n", name, v.status, v.position);
            rc = 0;
        } else {
            usleep(200000);
        }
    }
    if (rc < 0) {
        printf("%s: %s within %d s; see `projectord status`\n", name,
               v.taken ? "resumed, but neither past its stop nor failed again"
                       : "the owning instance did not take the request",
               timeout_s);
        rc = EXIT_FAILURE_1;
    }
    free(since);
    return rc;
}

int cli_resume(const struct config *cfg, int argc, char **argv)
{
    int timeout_s = 30;
    char *rest[3]; /* the name, and what one_projection refuses */
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 0 || v > 86400) {
                fprintf(stderr,
                        "projectord: resume: --timeout takes whole seconds, 0 to 86400 (got "
                        "'%s')\n",
                        argv[i]);
                return EXIT_USAGE;
            }
            timeout_s = (int)v;
        } else if (nrest < 3) {
            rest[nrest++] = argv[i];
        }
    }
    const struct projection *p = one_projection("resume", nrest, rest);
    if (!p)
        return EXIT_USAGE;
    PGconn *conn;
    int refused = cli_open(cfg, CLI_PRIMARY, &conn);
    if (refused)
        return refused;
    const char *params[] = {p->name};
    int rc = 0;
    if (owned_elsewhere(conn, p->name)) {
        rc = resume_through_owner(conn, p->name, timeout_s);
    } else {
        PGresult *res = PQexecParams(conn,
                                     "UPDATE read_model.projection_metadata SET status = 'stopped'"
                                     " WHERE projection_name = $1 AND status = 'failed'",
                                     1, NULL, params, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "projectord: resume %s: %s\n", p->name, db_error(res, conn));
        else
            printf(
                "%s: %s\n", p->name,
                strcmp(PQcmdTuples(res), "0") == 0
                    ? "not failed; nothing to do"
                    : "no instance runs it; it retries from its checkpoint when projectord starts");
        PQclear(res);
        rc = ok ? 0 : EXIT_FAILURE_1;
    }
    PQfinish(conn);
    return rc;
}

/*
 * `dead-letters --purge NAME [--before POSITION]`: forget the projection's
 * dead letters (those below POSITION), after the operator has decided they
 * need no replay. One DELETE: all of them or none. The daemon's role may
 * delete them (V007 grants it DELETE on read_model's tables; a replay
 * deletes those that apply); a role that may not is told so.
 */
static int purge_dead_letters(const struct config *cfg, const char *name, const char *before)
{
    PGconn *conn;
    int refused = cli_open(cfg, CLI_PRIMARY, &conn);
    if (refused)
        return refused;
    const char *params[] = {name, before};
    PGresult *res = PQexecParams(conn,
                                 "DELETE FROM read_model.projection_dead_letter"
                                 " WHERE projection_name = $1"
                                 "   AND ($2::bigint IS NULL OR global_position < $2::bigint)",
                                 2, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        const char *n = PQcmdTuples(res);
        printf("%s: %s dead letter%s purged%s%s%s\n", name, n, strcmp(n, "1") == 0 ? "" : "s",
               before ? " (positions below " : "", before ? before : "", before ? ")" : "");
    } else if (strcmp(pgconn_sqlstate(res), "42501") == 0) {
        fprintf(stderr,
                "projectord: dead-letters --purge: the role %s may not delete dead letters (%s, "
                "SQLSTATE 42501): run it as the daemon's role or the schema owner\n",
                PQuser(conn), pgconn_error_line(res));
        rc = EXIT_FAILURE_1;
    } else {
        fprintf(stderr, "projectord: dead-letters --purge: %s (SQLSTATE %s)\n",
                pgconn_error_line(res), pgconn_sqlstate(res));
        rc = EXIT_FAILURE_1;
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* The dead letters of res (the query below) as a JSON array, payloads as JSON. */
static void print_dead_letters_json(const PGresult *res)
{
    json_t *all = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        /* A payload jansson cannot hold (an integer beyond 64 bits) comes as its text. */
        json_t *payload = PQgetisnull(res, i, 7)
                              ? json_null()
                              : json_loads(PQgetvalue(res, i, 7), JSON_DECODE_ANY, NULL);
        if (!payload && !PQgetisnull(res, i, 7))
            payload = json_string(PQgetvalue(res, i, 7));
        json_array_append_new(
            all,
            json_pack("{s:s, s:I, s:s, s:s, s:s, s:o, s:s, s:o}", "projection",
                      PQgetvalue(res, i, 0), "position",
                      (json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10), "event_id",
                      PQgetvalue(res, i, 6), "event_type", PQgetvalue(res, i, 2), "failed_at",
                      PQgetvalue(res, i, 3), "sqlstate",
                      PQgetisnull(res, i, 4) ? json_null() : json_string(PQgetvalue(res, i, 4)),
                      "error", PQgetvalue(res, i, 5), "payload", payload ? payload : json_null()));
    }
    char *text = json_dumps(all, JSON_INDENT(2));
    if (text)
        puts(text);
    free(text);
    json_decref(all);
}

static int dead_letters_usage(const char *why, const char *arg)
{
    fprintf(stderr, "projectord: dead-letters: %s%s%s (see projectord dead-letters --help)\n", why,
            arg ? " " : "", arg ? arg : "");
    return EXIT_USAGE;
}

/* A position: digits only, within bigint. */
static bool is_position(const char *text)
{
    if (!text || !*text || strlen(text) > 18 || strspn(text, "0123456789") != strlen(text))
        return false;
    return true;
}

int cli_dead_letters(const struct config *cfg, int argc, char **argv)
{
    bool json = false;
    const char *name = NULL, *purge = NULL, *before = NULL;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--json") == 0)
            json = true;
        else if (strcmp(arg, "--purge") == 0 && i + 1 < argc)
            purge = argv[++i];
        else if (strcmp(arg, "--before") == 0 && i + 1 < argc)
            before = argv[++i];
        else if (strcmp(arg, "--purge") == 0 || strcmp(arg, "--before") == 0)
            return dead_letters_usage(strcmp(arg, "--purge") == 0 ? "--purge needs a projection"
                                                                  : "--before needs a position",
                                      NULL);
        else if (arg[0] == '-')
            return dead_letters_usage("unknown option", arg);
        else if (name)
            return dead_letters_usage("at most one projection", NULL);
        else
            name = arg;
    }
    const char *named = purge ? purge : name;
    if (named && !registry_find(named)) {
        fprintf(stderr, "projectord: dead-letters: no projection '%s' (see projectord list)\n",
                named);
        return EXIT_USAGE;
    }
    if (purge && (name || json))
        return dead_letters_usage("--purge takes one projection and no other argument but "
                                  "--before",
                                  NULL);
    if (before && !purge)
        return dead_letters_usage("--before goes with --purge", NULL);
    if (before && !is_position(before))
        return dead_letters_usage("--before: not a position:", before);
    if (purge)
        return purge_dead_letters(cfg, purge, before);
    PGconn *conn;
    int missing = cli_open(cfg, CLI_SCHEMA, &conn);
    if (missing)
        return missing;
    const char *params[] = {name};
    PGresult *res = PQexecParams(
        conn,
        "SELECT projection_name, global_position, event_type,"
        "       to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        "       sqlstate, error, event_id, payload"
        "  FROM read_model.projection_dead_letter"
        " WHERE $1::text IS NULL OR projection_name = $1"
        " ORDER BY projection_name, global_position",
        1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "projectord: dead-letters: %s\n", db_error(res, conn));
        rc = EXIT_FAILURE_1;
    } else if (json) {
        print_dead_letters_json(res);
    } else {
        printf("%-14s %12s %-24s %-20s %-8s %s\n", "PROJECTION", "POSITION", "EVENT TYPE",
               "FAILED AT", "SQLSTATE", "ERROR");
        for (int i = 0; i < PQntuples(res); i++)
            printf("%-14s %12s %-24s %-20s %-8s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 4),
                   PQgetvalue(res, i, 5));
        printf("(%d dead letter%s)\n", PQntuples(res), PQntuples(res) == 1 ? "" : "s");
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* ---- a restored event store ------------------------------------------------------- */

/*
 * One statement; on failure one line on stderr (saying what to do when the
 * role may not rewrite the store) and NULL. Caller PQclear()s.
 */
static PGresult *adopt_exec(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    fprintf(stderr, "projectord: adopt-restored-store: %s%s\n", db_error(res, conn),
            state && strcmp(state, "42501") == 0
                ? " (run it as the event store's owner: PROJECTORD_DATABASE_URL=...)"
                : "");
    PQclear(res);
    return NULL;
}

/* A statement whose result does not matter beyond success. */
static bool adopt_run(PGconn *conn, const char *sql)
{
    PGresult *res = adopt_exec(conn, sql, 0, NULL);
    PQclear(res);
    return res != NULL;
}

/* The JSON a function returned (one row, one column); NULL on failure. Caller frees. */
static char *adopt_call(PGconn *conn, const char *sql, int n, const char *const *params)
{
    PGresult *res = adopt_exec(conn, sql, n, params);
    char *out = res && PQntuples(res) == 1 ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    return out;
}

static long long json_ll(const json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static void adopt_report(const char *text, bool dry_run)
{
    json_t *root = json_loads(text, 0, NULL);
    if (!root) {
        printf("%s\n", text);
        return;
    }
    printf("event store: %lld events, %lld with transaction ids ahead of this server\n",
           json_ll(root, "events"), json_ll(root, "ahead"));
    size_t i;
    json_t *cp;
    json_array_foreach(json_object_get(root, "checkpoints"), i, cp)
    {
        const char *table = json_string_value(json_object_get(cp, "table"));
        long long to_apply = json_ll(cp, "to_apply");
        printf("%s%s: %lld events applied, %lld to apply",
               json_string_value(json_object_get(cp, "name")),
               table && strcmp(table, "projection_rebuild") == 0 ? " (rebuild)" : "",
               json_ll(cp, "applied"), to_apply);
        if (to_apply > 0)
            printf(" from position %lld", json_ll(cp, "window_position") + 1);
        printf("\n");
    }
    printf("%s\n", dry_run ? "nothing changed (--dry-run)"
                           : "transaction ids rewritten and checkpoints moved; running instances "
                             "reload and resume within seconds");
    json_decref(root);
}

/*
 * With the read model in another database (database.target) the two
 * halves commit apart, the event store first: should the checkpoints then
 * fail to commit, the ids are this cluster's but the checkpoints judge the
 * old ones, and a rebuild from scratch is exact.
 */
static char *adopt_apart(PGconn *source, PGconn *target, bool dry_run)
{
    char *in = NULL, *out = NULL;
    if (!adopt_run(target, "BEGIN") || !adopt_run(source, "BEGIN") ||
        !adopt_run(source, "LOCK TABLE event_store.domain_event IN EXCLUSIVE MODE") ||
        !(in = adopt_call(target, "SELECT read_model.projectord_adoption_checkpoints()", 0, NULL)))
        goto done;
    const char *params[] = {in, dry_run ? "t" : "f"};
    out = adopt_call(source,
                     "SELECT event_store.projectord_adopt_transaction_ids($1::jsonb, $2::bool)", 2,
                     params);
    if (!out || dry_run)
        goto done;
    if (!adopt_run(source, "COMMIT")) {
        free(out);
        out = NULL;
        goto done;
    }
    const char *result[] = {out};
    PGresult *res =
        adopt_exec(target, "SELECT read_model.projectord_adopt_checkpoints($1::jsonb)", 1, result);
    bool ok = res && adopt_run(target, "COMMIT");
    PQclear(res);
    if (!ok) {
        fprintf(stderr, "projectord: adopt-restored-store: the event store's transaction ids were "
                        "rewritten but the checkpoints were not moved: run "
                        "`projectord rebuild --all`\n");
        free(out);
        out = NULL;
    }
done:
    free(in);
    return out;
}

int cli_adopt_restored_store(const struct config *cfg, int argc, char **argv)
{
    bool dry_run = argc == 1 && strcmp(argv[0], "--dry-run") == 0;
    if (argc > 1 || (argc == 1 && !dry_run)) {
        fprintf(stderr, "projectord: adopt-restored-store: unexpected argument '%s' (--dry-run)\n",
                argv[argc > 1 && dry_run ? 1 : 0]);
        return EXIT_USAGE;
    }
    bool apart = config_apart(cfg->conninfo, cfg->target_conninfo);
    PGconn *target = cli_connect(cfg);
    PGconn *source = apart && target ? cli_connect_to(cfg->conninfo) : target;
    if (!target || !source) {
        PQfinish(target);
        return cli_connect_failure();
    }
    int missing = cli_require_primary(cfg, target, true); /* and the schema */
    if (missing) {
        if (source != target)
            PQfinish(source);
        PQfinish(target);
        return missing;
    }
    char *out = NULL;
    if (apart) {
        out = adopt_apart(source, target, dry_run);
    } else if (adopt_run(target, "BEGIN")) {
        const char *params[] = {dry_run ? "t" : "f"};
        out = adopt_call(target, "SELECT read_model.projectord_adopt_restored_store($1::bool)", 1,
                         params);
        if (out && !dry_run && !adopt_run(target, "COMMIT")) {
            free(out);
            out = NULL;
        }
    }
    bool ok = out != NULL;
    if (ok)
        adopt_report(out, dry_run);
    free(out);
    if (source != target)
        PQfinish(source);
    PQfinish(target); /* a dry run's transaction rolls back with the connection */
    return ok ? 0 : EXIT_FAILURE_1;
}
