/*
 * cli: one-shot commands (see cli.h).
 */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "declared.h"
#include "log.h"
#include "pgconn.h"
#include "registry.h"
#include "schemagate.h"

#define CONNECT_TIMEOUT "5"

static char application_name[64] = "projectord";

void cli_set_command(const char *command)
{
    snprintf(application_name, sizeof application_name, "projectord/%s", command);
}

PGconn *cli_connect(const struct config *cfg)
{
    return cli_connect_to(config_target(cfg));
}

/* Why the last connect_quietly gave up waiting, or "" when it did not. */
static char timed_out[64];

/*
 * PQconnectdbParams, but with libpq's verbose errors while the session
 * starts, so that a server's refusal names its SQLSTATE (28P01, 3D000, ...;
 * pgconn.c does the same on the loop), and with the effective
 * connect_timeout as the wait for the whole attempt.
 */
static PGconn *connect_verbose(const char *const *keys, const char *const *vals)
{
    timed_out[0] = '\0';
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (!conn || PQstatus(conn) == CONNECTION_BAD)
        return conn;
    PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
    int timeout_s = atoi(CONNECT_TIMEOUT);
    PQconninfoOption *opts = PQconninfo(conn);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
            timeout_s = atoi(o->val) < 2 ? 2 : atoi(o->val); /* libpq's minimum */
    PQconninfoFree(opts);
    struct timespec now, until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_s;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING; /* as the docs say to begin */
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ms = (until.tv_sec - now.tv_sec) * 1000 + (until.tv_nsec - now.tv_nsec) / 1000000;
        struct pollfd p = {.fd = PQsocket(conn),
                           .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = left_ms > 0 ? poll(&p, 1, (int)left_ms) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            snprintf(timed_out, sizeof timed_out, "timeout expired after %d s", timeout_s);
            break;
        }
        st = PQconnectPoll(conn);
    }
    PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
    return conn;
}

/* A one-shot command's connection, or NULL; says nothing (the caller decides). */
static PGconn *connect_quietly(const char *conninfo, PGconn **failed)
{
    /* client_encoding after dbname, so the conninfo cannot override it (pgconn.c says why). */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                          "client_encoding", NULL};
    const char *vals[] = {CONNECT_TIMEOUT, application_name, conninfo ? conninfo : "", "UTF8",
                          NULL};
    PGconn *conn = connect_verbose(keys, vals);
    if (conn && PQstatus(conn) == CONNECTION_OK)
        return conn;
    if (failed)
        *failed = conn;
    else
        PQfinish(conn);
    return NULL;
}

/* The last failed connect's exit code (one-shot commands make one or two connections). */
static int connect_failure = EXIT_UNAVAILABLE;

int cli_connect_failure(void)
{
    return connect_failure;
}

PGconn *cli_connect_to(const char *conninfo)
{
    PGconn *conn = NULL;
    PGconn *ok = connect_quietly(conninfo, &conn);
    if (ok)
        return ok;
    char line[512], sqlstate[6] = "";
    if (!conn)
        snprintf(line, sizeof line, "out of memory");
    else if (timed_out[0])
        snprintf(line, sizeof line, "%s", timed_out);
    else
        pgconn_message_sqlstate(PQerrorMessage(conn), line, sizeof line, sqlstate);
    for (char *s = line; *s; s++)
        if (*s == '\n')
            *s = ' ';
    connect_failure = pgconn_refused(line, sqlstate) ? EXIT_REFUSED : EXIT_UNAVAILABLE;
    /* No code from the server: 08001, the standard's "could not connect" (as `run` logs it). */
    fprintf(stderr, "projectord: cannot connect to the database: %s%s (SQLSTATE %s)\n",
            connect_failure == EXIT_REFUSED ? "refused by the server: " : "", line,
            sqlstate[0] ? sqlstate : "08001");
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

int cli_open(const struct config *cfg, enum cli_need need, PGconn **out)
{
    PGconn *conn = cli_connect(cfg);
    int rc = !conn                ? cli_connect_failure()
             : need == CLI_SCHEMA ? cli_require_schema(cfg, conn)
                                  : cli_require_primary(cfg, conn, need == CLI_PRIMARY_EVENTS);
    if (rc) {
        PQfinish(conn);
        conn = NULL;
    }
    *out = conn;
    return rc;
}

int cli_refuse_standby(PGconn *conn, const char *key, const char *why)
{
    int standby = in_recovery(conn);
    if (standby > 0)
        fprintf(stderr,
                "projectord: %s names a hot standby (the server is in recovery): %s; point %s"
                " at the primary\n",
                key, why, key);
    return standby < 0 ? EXIT_FAILURE_1 : standby ? EXIT_CONFIG : 0;
}

int cli_require_primary(const struct config *cfg, PGconn *target, bool events)
{
    int refused = cfg->target_conninfo
                      ? cli_refuse_standby(target, "database.target",
                                           "the read model cannot be written there")
                      : cli_refuse_standby(target, "database.conninfo",
                                           "the event store must be read and the read model "
                                           "written on the primary");
    if (refused)
        return refused;
    int missing = cli_require_schema(cfg, target);
    if (missing || !events || !cfg->target_conninfo)
        return missing;
    PGconn *source = cli_connect_to(cfg->conninfo);
    if (!source)
        return cli_connect_failure();
    refused = cli_refuse_standby(source, "database.conninfo",
                                 "its snapshots do not list the primary's transactions in "
                                 "progress, so events could be skipped");
    missing = refused ? refused : ask_schema(source, true, false);
    PQfinish(source);
    return missing;
}

/* Projection p as JSON (list --json). */
static json_t *projection_json(const struct projection *p)
{
    const char *origin = registry_origin(p);
    json_t *tables = json_array(), *events = json_array();
    for (const char *const *t = p->tables; *t; t++)
        json_array_append_new(tables, json_sprintf("read_model.%s", *t));
    for (const struct pj_handler *h = p->handlers; h->event_type; h++)
        json_array_append_new(events, json_string(h->event_type));
    return json_pack("{s:s, s:i, s:s, s:s, s:o, s:o, s:o}", "name", p->name, "version", p->version,
                     "description", p->description ? p->description : "", "origin",
                     origin ? "declared" : "compiled-in", "file",
                     origin ? json_string(origin) : json_null(), "tables", tables, "event_types",
                     events);
}

/* Print root as indented JSON and free it. */
static void put_json(json_t *root)
{
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    if (text)
        puts(text);
    free(text);
    json_decref(root);
}

int cli_list(int argc, char **argv)
{
    bool names_only = false, json = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--names") == 0)
            names_only = true;
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "projectord: list: unknown option '%s' (see projectord list --help)\n",
                    argv[i]);
            return EXIT_USAGE;
        } else {
            fprintf(
                stderr,
                "projectord: list: unexpected arguments from '%s' (see projectord list --help)\n",
                argv[i]);
            return EXIT_USAGE;
        }
    }
    if (json) {
        json_t *all = json_array();
        for (size_t i = 0; i < projection_registry_count; i++)
            json_array_append_new(all, names_only ? json_string(projection_registry[i]->name)
                                                  : projection_json(projection_registry[i]));
        put_json(all);
        return 0;
    }
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
 * the declared file and line, and with rejected (not NULL) one object in
 * it. Returns the number rejected.
 */
static int prepare_statements(PGconn *conn, const struct projection *p, json_t *rejected_out)
{
    const struct declared *d = declared_of(p);
    int rejected = 0;
    bool no_table = false;
    for (int i = 0; p->statements[i].sql; i++) {
        PGresult *res = PQprepare(conn, "", p->statements[i].sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            rejected++;
            no_table = no_table || strcmp(pgconn_sqlstate(res), "42P01") == 0;
            if (d)
                fprintf(stderr, "projectord: %s:%d: ", d->file, d->statement_lines[i]);
            else
                fprintf(stderr, "projectord: ");
            fprintf(stderr, "projection %s: statement %d does not prepare: %s (SQLSTATE %s)\n",
                    p->name, i, pgconn_error_line(res), pgconn_sqlstate(res));
            if (rejected_out)
                json_array_append_new(
                    rejected_out,
                    json_pack("{s:s, s:i, s:o, s:o, s:s, s:s}", "projection", p->name, "statement",
                              i, "file", d ? json_string(d->file) : json_null(), "line",
                              d ? json_integer(d->statement_lines[i]) : json_null(), "error",
                              pgconn_error_line(res), "sqlstate", pgconn_sqlstate(res)));
        }
        PQclear(res);
    }
    /* An example whose migrations `migrate --no-examples` left out, most likely: say what to do. */
    if (no_table)
        fprintf(stderr,
                "projectord: projection %s: its tables are not there: apply its migration (an "
                "example's: `projectord migrate --examples`), or disable it "
                "(projections.%s.enabled = false)\n",
                p->name, p->name);
    return rejected;
}

/*
 * Where conninfo leads: host, port, database and user, as the connection
 * conn made with it found them, or else as libpq would take them from
 * conninfo, the PG* environment and its defaults (PQconndefaults), so that
 * a target that comes from PGHOST/PGUSER is shown too. Passwords never.
 */
static json_t *effective_target(const char *conninfo, PGconn *conn)
{
    static const char *const keys[] = {"host", "port", "dbname", "user"};
    json_t *out = json_object();
    if (conn) {
        const char *vals[] = {PQhost(conn), PQport(conn), PQdb(conn), PQuser(conn)};
        for (size_t k = 0; k < 4; k++)
            json_object_set_new(out, keys[k], vals[k] ? json_string(vals[k]) : json_null());
        json_object_set_new(out, "from", json_string("connected"));
        return out;
    }
    PQconninfoOption *defaults = PQconndefaults();
    PQconninfoOption *given = PQconninfoParse(conninfo ? conninfo : "", NULL);
    for (size_t k = 0; k < 4; k++) {
        const char *val = NULL;
        for (PQconninfoOption *o = given; o && o->keyword && !val; o++)
            if (strcmp(o->keyword, keys[k]) == 0 && o->val && *o->val)
                val = o->val;
        for (PQconninfoOption *o = defaults; o && o->keyword && !val; o++)
            if (strcmp(o->keyword, keys[k]) == 0 && o->val && *o->val)
                val = o->val;
        json_object_set_new(out, keys[k], val ? json_string(val) : json_null());
    }
    /* The database defaults to the user's name (known only after the loop: user comes last). */
    if (!json_is_string(json_object_get(out, "dbname")))
        json_object_set(out, "dbname", json_object_get(out, "user"));
    json_object_set_new(out, "from", json_string("configuration and environment"));
    PQconninfoFree(given);
    PQconninfoFree(defaults);
    return out;
}

static void print_target(const char *what, json_t *t)
{
    const char *host = json_string_value(json_object_get(t, "host"));
    printf("# %s: host=%s port=%s dbname=%s user=%s (%s)\n", what,
           host ? host : "(the default Unix socket)",
           json_string_value(json_object_get(t, "port")) ?: "?",
           json_string_value(json_object_get(t, "dbname")) ?: "?",
           json_string_value(json_object_get(t, "user")) ?: "?",
           json_string_value(json_object_get(t, "from")));
}

int cli_check_config(const struct config *cfg, int argc, char **argv)
{
    bool json = argc == 1 && strcmp(argv[0], "--json") == 0;
    if (argc > 1 || (argc == 1 && !json)) {
        fprintf(stderr,
                "projectord: check-config: unknown argument '%s' (see projectord check-config "
                "--help)\n",
                argv[argc > 1 && json ? 1 : 0]);
        return EXIT_USAGE;
    }
    json_t *doc = json ? config_json(cfg) : NULL, *rejected_out = json ? json_array() : NULL;
    if (!json)
        config_print(cfg, stdout);
    /*
     * With a reachable read-model database, every enabled projection's
     * statements are prepared too, as the daemon would at start: a declared
     * statement the database rejects is reported now, with its file and
     * line, not when its projection starts. Unreachable: the file alone.
     */
    PGconn *conn = connect_quietly(config_target(cfg), NULL);
    bool apart = config_apart(cfg->conninfo, cfg->target_conninfo);
    json_t *targets = json_object();
    if (apart)
        json_object_set_new(targets, "event_store", effective_target(cfg->conninfo, NULL));
    json_object_set_new(targets, apart ? "read_model" : "database",
                        effective_target(config_target(cfg), conn));
    if (json) {
        json_object_set(doc, "effective_target", targets);
    } else {
        const char *key;
        json_t *t;
        json_object_foreach(targets, key, t)
            print_target(strcmp(key, "database") == 0      ? "database"
                         : strcmp(key, "event_store") == 0 ? "event store (database.conninfo)"
                                                           : "read model (database.target)",
                         t);
    }
    json_decref(targets);
    int rejected = 0;
    if (conn) {
        PGresult *res =
            PQexec(conn, "SELECT pg_catalog.set_config('search_path', 'read_model, public',"
                         " false), pg_catalog.set_config('TimeZone', 'UTC', false)");
        PQclear(res);
        for (size_t i = 0; i < projection_registry_count; i++) {
            const struct projection_config *pc =
                config_projection(cfg, projection_registry[i]->name);
            if (!pc || pc->enabled)
                rejected += prepare_statements(conn, projection_registry[i], rejected_out);
        }
        PQfinish(conn);
    }
    if (json) {
        json_object_set_new(doc, "statements_checked", json_boolean(conn != NULL));
        json_object_set_new(doc, "rejected_statements", rejected_out);
        put_json(doc);
    }
    return rejected ? EXIT_CONFIG : 0;
}
