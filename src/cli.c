/*
 * cli: one-shot commands (see cli.h).
 */
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "declared.h"
#include "log.h"
#include "pgconn.h"
#include "registry.h"
#include "schemagate.h"

#define CONNECT_TIMEOUT "5"

static const char *const status_columns[] = {
    "projection_name", "status",         "last_position",
    "head_position",   "lag_events",     "events_processed",
    "events_skipped",  "events_ignored", "healthy",
    "heartbeat_at",    "owner",          "last_error",
    "stalled",         "progressed_at",  "unhealthy_reason",
};
#define N_STATUS_COLUMNS (sizeof status_columns / sizeof status_columns[0])

#define SQL_STATUS                                                                                 \
    "SELECT s.projection_name, s.status, s.last_position, s.head_position, s.lag_events,"          \
    "       s.events_processed, s.events_skipped, s.events_ignored, s.healthy,"                    \
    "       to_char(s.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"         \
    "       s.owner, s.last_error, h.stalled,"                                                     \
    "       to_char(h.progressed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"        \
    "       CASE h.unhealthy_reason WHEN 'stalled' THEN format("                                   \
    "           'stalled: %s events behind, no progress for %s s (stall_after %s)',"               \
    "           h.lag_events, round(h.seconds_since_progress), h.stall_after)"                     \
    "       ELSE h.unhealthy_reason END"                                                           \
    "  FROM read_model.projection_status s"                                                        \
    "  LEFT JOIN read_model.projection_health h USING (projection_name)"                           \
    " ORDER BY s.projection_name"

static char application_name[64] = "projectord";

void cli_set_command(const char *command)
{
    snprintf(application_name, sizeof application_name, "projectord/%s", command);
}

PGconn *cli_connect(const struct config *cfg)
{
    return cli_connect_to(config_target(cfg));
}

/* A one-shot command's connection, or NULL; says nothing (the caller decides). */
static PGconn *connect_quietly(const char *conninfo, PGconn **failed)
{
    /* client_encoding after dbname, so the conninfo cannot override it (pgconn.c says why). */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                          "client_encoding", NULL};
    const char *vals[] = {CONNECT_TIMEOUT, application_name, conninfo ? conninfo : "", "UTF8",
                          NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn && PQstatus(conn) == CONNECTION_OK)
        return conn;
    if (failed)
        *failed = conn;
    else
        PQfinish(conn);
    return NULL;
}

PGconn *cli_connect_to(const char *conninfo)
{
    PGconn *conn = NULL;
    PGconn *ok = connect_quietly(conninfo, &conn);
    if (ok)
        return ok;
    char line[512];
    snprintf(line, sizeof line, "%s", conn ? PQerrorMessage(conn) : "out of memory");
    for (char *s = line; *s; s++)
        if (*s == '\n')
            *s = ' ';
    fprintf(stderr, "projectord: cannot connect to the database: %s\n", line);
    PQfinish(conn);
    return NULL;
}

/* schemagate.h's question on conn: 0, or an exit code after one line. */
static int ask_schema(PGconn *conn, bool events, bool read_model)
{
    const char *params[] = {events ? "t" : "f", read_model ? "t" : "f"};
    PGresult *res = PQexecParams(conn, SCHEMAGATE_SQL, 2, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char why[1100];
        fprintf(stderr, "projectord: cannot tell whether the schema is there: %s\n",
                pgconn_error_text(res, conn, why, sizeof why));
        rc = EXIT_FAILURE_1;
    } else if (!PQgetisnull(res, 0, 0)) {
        fprintf(stderr, "projectord: %s\n", PQgetvalue(res, 0, 0));
        rc = EXIT_NO_SCHEMA;
    }
    PQclear(res);
    return rc;
}

int cli_require_schema(const struct config *cfg, PGconn *conn)
{
    return ask_schema(conn, !config_apart(cfg->conninfo, cfg->target_conninfo), true);
}

/* 1 when conn's server is a hot standby, 0 when not, -1 when the question failed (printed). */
static int in_recovery(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT pg_catalog.pg_is_in_recovery()");
    int answer = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        answer = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    else {
        char why[1100];
        fprintf(stderr, "projectord: cannot tell whether the server is a hot standby: %s\n",
                pgconn_error_text(res, conn, why, sizeof why));
    }
    PQclear(res);
    return answer;
}

int cli_require_primary(const struct config *cfg, PGconn *target, bool events)
{
    int standby = in_recovery(target);
    if (standby < 0)
        return EXIT_FAILURE_1;
    if (standby && !cfg->target_conninfo) {
        fprintf(stderr, "projectord: database.conninfo names a hot standby (the server is in"
                        " recovery): the event store must be read and the read model written on"
                        " the primary; point database.conninfo at the primary\n");
        return EXIT_CONFIG;
    }
    if (standby) {
        fprintf(stderr, "projectord: database.target names a hot standby (the server is in"
                        " recovery): the read model cannot be written there; point"
                        " database.target at the primary\n");
        return EXIT_CONFIG;
    }
    int missing = cli_require_schema(cfg, target);
    if (missing || !events || !cfg->target_conninfo)
        return missing;
    PGconn *source = cli_connect_to(cfg->conninfo);
    if (!source)
        return EXIT_UNAVAILABLE;
    standby = in_recovery(source);
    if (standby > 0)
        fprintf(stderr, "projectord: database.conninfo names a hot standby (the server is in"
                        " recovery): its snapshots do not list the primary's transactions in"
                        " progress, so events could be skipped; point database.conninfo at the"
                        " primary\n");
    missing = standby == 0 ? ask_schema(source, true, false) : 0;
    PQfinish(source);
    return standby < 0 ? EXIT_FAILURE_1 : standby ? EXIT_CONFIG : missing;
}

static void print_text(const PGresult *res)
{
    printf("%-14s %-12s %12s %12s %10s %12s %8s %8s %-7s %-20s %s\n", "PROJECTION", "STATUS",
           "POSITION", "HEAD", "LAG", "PROCESSED", "SKIPPED", "IGNORED", "HEALTHY", "HEARTBEAT",
           "OWNER");
    for (int i = 0; i < PQntuples(res); i++) {
        printf("%-14s %-12s %12s %12s %10s %12s %8s %8s %-7s %-20s %s\n", PQgetvalue(res, i, 0),
               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
               PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), PQgetvalue(res, i, 6),
               PQgetvalue(res, i, 7), strcmp(PQgetvalue(res, i, 8), "t") == 0 ? "yes" : "no",
               PQgetvalue(res, i, 9), PQgetvalue(res, i, 10));
        if (!PQgetisnull(res, i, 14))
            printf("    unhealthy: %s\n", PQgetvalue(res, i, 14));
        if (!PQgetisnull(res, i, 11))
            printf("    last error: %s\n", PQgetvalue(res, i, 11));
    }
}

static json_t *json_value(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    const char *v = PQgetvalue(res, row, col);
    if (col >= 2 && col <= 7)
        return json_integer(strtoll(v, NULL, 10));
    if (col == 8 || col == 12)
        return json_boolean(strcmp(v, "t") == 0);
    return json_string(v);
}

static void print_json(const PGresult *res)
{
    json_t *rows = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *row = json_object();
        for (size_t c = 0; c < N_STATUS_COLUMNS; c++)
            json_object_set_new(row, status_columns[c], json_value(res, i, (int)c));
        json_array_append_new(rows, row);
    }
    char *text = json_dumps(rows, JSON_INDENT(2));
    if (text)
        puts(text);
    free(text);
    json_decref(rows);
}

/* An enabled projection is healthy when its row says so. */
static bool all_healthy(const struct config *cfg, const PGresult *res)
{
    bool ok = true;
    for (size_t p = 0; p < cfg->n_projections; p++) {
        if (!cfg->projections[p].enabled)
            continue;
        bool found = false;
        for (int i = 0; i < PQntuples(res); i++) {
            if (strcmp(PQgetvalue(res, i, 0), cfg->projections[p].name) != 0)
                continue;
            found = true;
            if (strcmp(PQgetvalue(res, i, 8), "t") != 0) {
                /* The reason, unless it only says the status again ("failed"). */
                const char *status = PQgetvalue(res, i, 1), *why = PQgetvalue(res, i, 14);
                bool say_why = !PQgetisnull(res, i, 14) && strcmp(why, status) != 0;
                fprintf(stderr, "projectord: %s is unhealthy (status %s%s%s)\n",
                        cfg->projections[p].name, status, say_why ? ", " : "", say_why ? why : "");
                ok = false;
            }
        }
        if (!found) {
            fprintf(stderr, "projectord: %s has no status row yet\n", cfg->projections[p].name);
            ok = false;
        }
    }
    return ok;
}

int cli_status(const struct config *cfg, int argc, char **argv)
{
    bool json = false, check = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--check") == 0)
            check = true;
        else {
            fprintf(stderr, "projectord: status: unknown argument '%s' (--json, --check)\n",
                    argv[i]);
            return EXIT_USAGE;
        }
    }
    PGconn *conn = cli_connect(cfg);
    if (!conn)
        return EXIT_UNAVAILABLE;
    int missing = cli_require_schema(cfg, conn);
    if (missing) {
        PQfinish(conn);
        return missing;
    }
    PGresult *res = PQexec(conn, SQL_STATUS);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char why[1100];
        fprintf(stderr, "projectord: status: %s\n", pgconn_error_text(res, conn, why, sizeof why));
        rc = EXIT_FAILURE_1;
    } else {
        if (json)
            print_json(res);
        else
            print_text(res);
        if (check && !all_healthy(cfg, res))
            rc = EXIT_FAILURE_1;
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

int cli_list(bool names_only)
{
    for (size_t i = 0; i < projection_registry_count; i++) {
        const struct projection *p = projection_registry[i];
        /* One name a line: what scripts and the tests read to know the build's projections. */
        if (names_only) {
            printf("%s\n", p->name);
            continue;
        }
        const char *origin = registry_origin(p);
        printf("%s (version %d): %s\n", p->name, p->version, p->description);
        if (origin)
            printf("  declared (%s)\n", origin);
        else
            printf("  compiled-in\n");
        printf("  tables:");
        for (const char *const *t = p->tables; *t; t++)
            printf(" read_model.%s", *t);
        printf("\n  events:");
        for (const struct pj_handler *h = p->handlers; h->event_type; h++)
            printf(" %s", strcmp(h->event_type, "*") == 0 ? "(every event type)" : h->event_type);
        printf("\n");
    }
    return 0;
}

/*
 * Prepare projection p's statements on conn as a runner would (its
 * search_path); one line on stderr for each the database rejects, naming
 * the declared file and line. Returns the number rejected.
 */
static int prepare_statements(PGconn *conn, const struct projection *p)
{
    const struct declared *d = declared_of(p);
    int rejected = 0;
    for (int i = 0; p->statements[i].sql; i++) {
        PGresult *res = PQprepare(conn, "", p->statements[i].sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            rejected++;
            if (d)
                fprintf(stderr, "projectord: %s:%d: ", d->file, d->statement_lines[i]);
            else
                fprintf(stderr, "projectord: ");
            fprintf(stderr, "projection %s: statement %d does not prepare: %s (SQLSTATE %s)\n",
                    p->name, i, pgconn_error_line(res), pgconn_sqlstate(res));
        }
        PQclear(res);
    }
    return rejected;
}

int cli_check_config(const struct config *cfg)
{
    config_print(cfg, stdout);
    /*
     * With a reachable read-model database, every enabled projection's
     * statements are prepared too, as the daemon would at start: a declared
     * statement the database rejects is reported now, with its file and
     * line, not when its projection starts. Unreachable: the file alone.
     */
    PGconn *conn = connect_quietly(config_target(cfg), NULL);
    if (!conn)
        return 0;
    PGresult *res = PQexec(conn, "SELECT pg_catalog.set_config('search_path', 'read_model, public',"
                                 " false), pg_catalog.set_config('TimeZone', 'UTC', false)");
    PQclear(res);
    int rejected = 0;
    for (size_t i = 0; i < projection_registry_count; i++) {
        const struct projection_config *pc = config_projection(cfg, projection_registry[i]->name);
        if (!pc || pc->enabled)
            rejected += prepare_statements(conn, projection_registry[i]);
    }
    PQfinish(conn);
    return rejected ? EXIT_CONFIG : 0;
}
