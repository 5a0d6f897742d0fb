/*
 * status_cmd: `projectord status [--json] [--check] [--max-lag SECONDS]
 * [NAME...]` (cli.h). One query over the status views (projection_status,
 * projection_health, projection_lag, sql/repeatable/R__status_views.sql);
 * printed as a table sized to its content or as JSON; with --check, judged.
 *
 * Lag in seconds comes from the view; with the read model in another
 * database (database.target) the event store's events are not there, and
 * each projection's is asked of the event store's own database (the same
 * SQL function the view uses).
 */
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pgconn.h"
#include "registry.h"

/* The query's columns, in order. */
enum col {
    C_NAME,
    C_STATUS,
    C_LAST,
    C_HEAD,
    C_LAG,
    C_PROCESSED,
    C_SKIPPED,
    C_IGNORED,
    C_HEALTHY,
    C_HEARTBEAT,
    C_OWNER,
    C_ERROR,
    C_STALLED,
    C_PROGRESSED,
    C_REASON,
    C_LAG_S,
    C_HEARTBEAT_AGE,
    C_REBUILDING,
    C_REBUILD_POS,
    C_REBUILD_TOTAL,
    C_REBUILD_STARTED,
    C_REBUILD_AGE,
    N_COLS
};

#define SQL_ISO(expr) "to_char(" expr " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* $1: the names asked for (text[]), or NULL for all. */
// clang-format off
#define SQL_STATUS                                                                                 \
    "SELECT s.projection_name, s.status, s.last_position, s.head_position, s.lag_events,"          \
    "       s.events_processed, s.events_skipped, s.events_ignored, s.healthy,"                    \
    "       " SQL_ISO("s.heartbeat_at") ", s.owner, s.last_error, h.stalled,"                      \
    "       " SQL_ISO("h.progressed_at") ","                                                       \
    "       CASE h.unhealthy_reason WHEN 'stalled' THEN format("                                   \
    "           'stalled: %s events behind, no progress for %s s (stall_after %s)',"               \
    "           h.lag_events, round(h.seconds_since_progress), h.stall_after)"                     \
    "       ELSE h.unhealthy_reason END,"                                                          \
    "       l.lag_seconds, extract(epoch FROM now() - s.heartbeat_at),"                            \
    "       coalesce(r.status = 'rebuilding', false), s.rebuild_position,"                         \
    "       greatest(s.rebuild_events_total, s.head_position),"                                    \
    "       " SQL_ISO("s.rebuild_started_at") ", extract(epoch FROM now() - s.rebuild_started_at)" \
    "  FROM read_model.projection_status s"                                                        \
    "  JOIN read_model.projection_health h USING (projection_name)"                                \
    "  LEFT JOIN read_model.projection_lag l USING (projection_name)"                              \
    "  LEFT JOIN read_model.projection_rebuild r USING (projection_name)"                          \
    " WHERE $1::text[] IS NULL OR s.projection_name = ANY ($1::text[])"                            \
    " ORDER BY s.projection_name"
// clang-format on

/* $1: a projection's last_position; on the event store's database. */
#define SQL_LAG_SECONDS                                                                            \
    "SELECT greatest(extract(epoch FROM now() - event_time), 0)::double precision"                 \
    "  FROM event_store.projectord_first_event_after($1::bigint)"

struct status_args {
    bool json, check;
    double max_lag; /* < 0: not asked */
    char **names;   /* argv's, borrowed */
    int n_names;
};

struct row_lag {
    bool known;
    double seconds;
};

static const char *val(const PGresult *res, int row, enum col c)
{
    return PQgetisnull(res, row, (int)c) ? NULL : PQgetvalue(res, row, (int)c);
}

static bool is_true(const PGresult *res, int row, enum col c)
{
    const char *v = val(res, row, c);
    return v && strcmp(v, "t") == 0;
}

/* ---- arguments --------------------------------------------------------------- */

static int parse_seconds(const char *text, double *out)
{
    char *end;
    double v = text && *text ? strtod(text, &end) : -1;
    if (!text || !*text || *end || !isfinite(v) || v < 0) {
        fprintf(stderr, "projectord: status: --max-lag: '%s' is not a number of seconds\n",
                text ? text : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns 0, or EXIT_USAGE after one line. */
static int parse_args(int argc, char **argv, struct status_args *a)
{
    *a = (struct status_args){.max_lag = -1, .names = argv};
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--json") == 0) {
            a->json = true;
        } else if (strcmp(arg, "--check") == 0) {
            a->check = true;
        } else if (strcmp(arg, "--max-lag") == 0 || strncmp(arg, "--max-lag=", 10) == 0) {
            const char *v = arg[9] == '=' ? arg + 10 : i + 1 < argc ? argv[++i] : NULL;
            if (parse_seconds(v, &a->max_lag) < 0)
                return EXIT_USAGE;
            a->check = true; /* --max-lag judges: it implies --check */
        } else if (arg[0] == '-') {
            fprintf(stderr,
                    "projectord: status: unknown option '%s' (see projectord status --help)\n",
                    arg);
            return EXIT_USAGE;
        } else if (!registry_find(arg)) {
            fprintf(stderr, "projectord: status: no projection '%s' (see projectord list)\n", arg);
            return EXIT_USAGE;
        } else {
            a->names[a->n_names++] = argv[i]; /* names are kept in place, in argv's front */
        }
    }
    return 0;
}

static bool asked(const struct status_args *a, const char *name)
{
    if (a->n_names == 0)
        return true;
    for (int i = 0; i < a->n_names; i++)
        if (strcmp(a->names[i], name) == 0)
            return true;
    return false;
}

/* The names as a text[] literal, each quoted (caller frees), or NULL for all. */
static char *names_literal(const struct status_args *a)
{
    if (a->n_names == 0)
        return NULL;
    size_t len = 3;
    for (int i = 0; i < a->n_names; i++)
        len += 2 * strlen(a->names[i]) + 3;
    char *lit = malloc(len), *out = lit;
    if (!lit)
        return NULL;
    *out++ = '{';
    for (int i = 0; i < a->n_names; i++) {
        *out++ = '"';
        for (const char *c = a->names[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *out++ = '\\';
            *out++ = *c;
        }
        *out++ = '"';
        if (i + 1 < a->n_names)
            *out++ = ',';
    }
    *out++ = '}';
    *out = '\0';
    return lit;
}

/* ---- lag in seconds ----------------------------------------------------------- */

/*
 * Each row's lag in seconds: the view's; or, with the read model in
 * another database (database.target), the event store's own answer for
 * the row's last_position: the read model's database holds no events, and
 * its lag_events is only the head the daemon last wrote. Unknown (and
 * said once) when that database cannot be asked: status still prints.
 */
static void lag_seconds(const struct config *cfg, const PGresult *res, struct row_lag *lag)
{
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        const char *v = val(res, i, C_LAG_S);
        lag[i] = (struct row_lag){.known = v != NULL, .seconds = v ? strtod(v, NULL) : 0};
    }
    if (n == 0 || !config_apart(cfg->conninfo, cfg->target_conninfo))
        return;
    PGconn *source = cli_connect_to(cfg->conninfo);
    for (int i = 0; !source && i < n; i++)
        lag[i].known = false;
    for (int i = 0; source && i < n; i++) {
        const char *params[] = {val(res, i, C_LAST)};
        PGresult *r = PQexecParams(source, SQL_LAG_SECONDS, 1, NULL, params, NULL, NULL, 0);
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (ok && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
            lag[i] = (struct row_lag){.known = true, .seconds = strtod(PQgetvalue(r, 0, 0), NULL)};
        else if (ok)
            lag[i] = (struct row_lag){.known = true}; /* nothing after it */
        else
            fprintf(stderr,
                    "projectord: status: cannot ask the event store for the lag: %s (SQLSTATE "
                    "%s)\n",
                    pgconn_error_line(r), *pgconn_sqlstate(r) ? pgconn_sqlstate(r) : "none");
        PQclear(r);
        if (!ok) {
            for (int j = 0; j < n; j++)
                lag[j].known = false;
            break;
        }
    }
    PQfinish(source);
}

/* ---- text -------------------------------------------------------------------- */

/* A duration for humans: "0.4 s", "12 s", "5 min", "3 h", "2 d". */
static void fmt_duration(char *buf, size_t size, double s)
{
    if (s < 10)
        snprintf(buf, size, "%.1f s", s < 0 ? 0 : s);
    else if (s < 120)
        snprintf(buf, size, "%.0f s", s);
    else if (s < 2 * 3600)
        snprintf(buf, size, "%.0f min", s / 60);
    else if (s < 2 * 86400)
        snprintf(buf, size, "%.0f h", s / 3600);
    else
        snprintf(buf, size, "%.0f d", s / 86400);
}

enum {
    T_NAME,
    T_STATUS,
    T_POS,
    T_HEAD,
    T_LAG,
    T_LAG_S,
    T_PROC,
    T_SKIP,
    T_IGN,
    T_OK,
    T_BEAT,
    T_OWNER,
    N_TCOLS
};

static const struct {
    const char *title;
    bool right; /* numbers are right-aligned */
} tcols[N_TCOLS] = {
    [T_NAME] = {"PROJECTION", false}, [T_STATUS] = {"STATUS", false},
    [T_POS] = {"POSITION", true},     [T_HEAD] = {"HEAD", true},
    [T_LAG] = {"LAG", true},          [T_LAG_S] = {"LAG TIME", true},
    [T_PROC] = {"PROCESSED", true},   [T_SKIP] = {"SKIPPED", true},
    [T_IGN] = {"IGNORED", true},      [T_OK] = {"HEALTHY", false},
    [T_BEAT] = {"HEARTBEAT", false},  [T_OWNER] = {"OWNER", false},
};

#define CELL_MAX 72 /* a projection name is at most 63 bytes */

/* Row i's cells (each at most CELL_MAX - 1 bytes; the owner, the last column, may be longer). */
static void row_cells(const PGresult *res, int i, const struct row_lag *lag,
                      char cells[N_TCOLS][CELL_MAX], const char **owner)
{
    static const int plain[][2] = {{T_NAME, C_NAME},    {T_STATUS, C_STATUS}, {T_POS, C_LAST},
                                   {T_HEAD, C_HEAD},    {T_LAG, C_LAG},       {T_PROC, C_PROCESSED},
                                   {T_SKIP, C_SKIPPED}, {T_IGN, C_IGNORED}};
    for (size_t p = 0; p < sizeof plain / sizeof plain[0]; p++) {
        const char *v = val(res, i, (enum col)plain[p][1]);
        snprintf(cells[plain[p][0]], CELL_MAX, "%s", v ? v : "-");
    }
    if (lag[i].known)
        fmt_duration(cells[T_LAG_S], CELL_MAX, lag[i].seconds);
    else
        snprintf(cells[T_LAG_S], CELL_MAX, "?");
    snprintf(cells[T_OK], CELL_MAX, "%s", is_true(res, i, C_HEALTHY) ? "yes" : "no");
    const char *beat = val(res, i, C_HEARTBEAT_AGE);
    if (beat) {
        fmt_duration(cells[T_BEAT], CELL_MAX - 4, strtod(beat, NULL));
        strcat(cells[T_BEAT], " ago");
    } else {
        snprintf(cells[T_BEAT], CELL_MAX, "never");
    }
    *owner = val(res, i, C_OWNER) ? val(res, i, C_OWNER) : "-";
    cells[T_OWNER][0] = '\0';
}

static void print_cell(const char *text, int c, int width)
{
    if (c == N_TCOLS - 1)
        printf("%s\n", text); /* the last column: no padding */
    else
        printf(tcols[c].right ? "%*s  " : "%-*s  ", width, text);
}

/* The details under a row: a rebuild's progress, why it is unhealthy, the last error. */
static void print_details(const PGresult *res, int i)
{
    if (is_true(res, i, C_REBUILDING) && val(res, i, C_REBUILD_POS)) {
        long long done = strtoll(val(res, i, C_REBUILD_POS), NULL, 10);
        long long total =
            val(res, i, C_REBUILD_TOTAL) ? strtoll(val(res, i, C_REBUILD_TOTAL), NULL, 10) : 0;
        char age[CELL_MAX] = "?";
        if (val(res, i, C_REBUILD_AGE))
            fmt_duration(age, sizeof age, strtod(val(res, i, C_REBUILD_AGE), NULL));
        if (total < done)
            total = done;
        printf("    rebuilding: %lld / %lld events (%.0f%%), started %s ago\n", done, total,
               total > 0 ? 100.0 * (double)done / (double)total : 100.0, age);
    }
    if (val(res, i, C_REASON))
        printf("    unhealthy: %s\n", val(res, i, C_REASON));
    if (val(res, i, C_ERROR))
        printf("    last error: %s\n", val(res, i, C_ERROR));
}

static void print_text(const PGresult *res, const struct row_lag *lag)
{
    int n = PQntuples(res);
    int width[N_TCOLS];
    char cells[N_TCOLS][CELL_MAX];
    const char *owner;
    for (int c = 0; c < N_TCOLS; c++)
        width[c] = (int)strlen(tcols[c].title);
    for (int i = 0; i < n; i++) {
        row_cells(res, i, lag, cells, &owner);
        for (int c = 0; c < N_TCOLS; c++)
            if ((int)strlen(cells[c]) > width[c])
                width[c] = (int)strlen(cells[c]);
    }
    for (int c = 0; c < N_TCOLS; c++)
        print_cell(tcols[c].title, c, width[c]);
    for (int i = 0; i < n; i++) {
        row_cells(res, i, lag, cells, &owner);
        for (int c = 0; c < N_TCOLS - 1; c++)
            print_cell(cells[c], c, width[c]);
        print_cell(owner, N_TCOLS - 1, 0);
        print_details(res, i);
    }
}

/* ---- JSON -------------------------------------------------------------------- */

static json_t *j_int(const PGresult *res, int i, enum col c)
{
    const char *v = val(res, i, c);
    return v ? json_integer(strtoll(v, NULL, 10)) : json_null();
}

static json_t *j_real(const PGresult *res, int i, enum col c)
{
    const char *v = val(res, i, c);
    return v ? json_real(strtod(v, NULL)) : json_null();
}

static json_t *j_str(const PGresult *res, int i, enum col c)
{
    const char *v = val(res, i, c);
    return v ? json_string(v) : json_null();
}

static json_t *json_rebuild(const PGresult *res, int i)
{
    if (!is_true(res, i, C_REBUILDING) || !val(res, i, C_REBUILD_POS))
        return json_null();
    return json_pack("{s:o, s:o, s:o}", "position", j_int(res, i, C_REBUILD_POS), "events_total",
                     j_int(res, i, C_REBUILD_TOTAL), "started_at",
                     j_str(res, i, C_REBUILD_STARTED));
}

static void print_json(const PGresult *res, const struct row_lag *lag)
{
    json_t *rows = json_array();
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *row = json_object();
        json_object_set_new(row, "projection_name", j_str(res, i, C_NAME));
        json_object_set_new(row, "status", j_str(res, i, C_STATUS));
        json_object_set_new(row, "last_position", j_int(res, i, C_LAST));
        json_object_set_new(row, "head_position", j_int(res, i, C_HEAD));
        json_object_set_new(row, "lag_events", j_int(res, i, C_LAG));
        json_object_set_new(row, "lag_seconds",
                            lag[i].known ? json_real(lag[i].seconds) : json_null());
        json_object_set_new(row, "events_processed", j_int(res, i, C_PROCESSED));
        json_object_set_new(row, "events_skipped", j_int(res, i, C_SKIPPED));
        json_object_set_new(row, "events_ignored", j_int(res, i, C_IGNORED));
        json_object_set_new(row, "healthy", json_boolean(is_true(res, i, C_HEALTHY)));
        json_object_set_new(row, "heartbeat_at", j_str(res, i, C_HEARTBEAT));
        json_object_set_new(row, "heartbeat_age_seconds", j_real(res, i, C_HEARTBEAT_AGE));
        json_object_set_new(row, "owner", j_str(res, i, C_OWNER));
        json_object_set_new(row, "last_error", j_str(res, i, C_ERROR));
        json_object_set_new(row, "stalled", json_boolean(is_true(res, i, C_STALLED)));
        json_object_set_new(row, "progressed_at", j_str(res, i, C_PROGRESSED));
        json_object_set_new(row, "unhealthy_reason", j_str(res, i, C_REASON));
        json_object_set_new(row, "rebuild", json_rebuild(res, i));
        json_array_append_new(rows, row);
    }
    char *text = json_dumps(rows, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    if (text)
        puts(text);
    free(text);
    json_decref(rows);
}

/* ---- --check --------------------------------------------------------------------- */

/*
 * Whether every enabled projection asked about is healthy (its row says
 * so) and, with --max-lag, lags no more than that; one line on stderr for
 * each that is not.
 */
static bool judge(const struct config *cfg, const struct status_args *a, const PGresult *res,
                  const struct row_lag *lag)
{
    bool ok = true;
    for (size_t p = 0; p < cfg->n_projections; p++) {
        const char *name = cfg->projections[p].name;
        if (!cfg->projections[p].enabled || !asked(a, name))
            continue;
        int i = 0;
        while (i < PQntuples(res) && strcmp(val(res, i, C_NAME), name) != 0)
            i++;
        if (i == PQntuples(res)) {
            fprintf(stderr, "projectord: %s has no status row yet\n", name);
            ok = false;
            continue;
        }
        if (!is_true(res, i, C_HEALTHY)) {
            /* The reason, unless it only says the status again ("failed"). */
            const char *status = val(res, i, C_STATUS), *why = val(res, i, C_REASON);
            bool say_why = why && strcmp(why, status) != 0;
            fprintf(stderr, "projectord: %s is unhealthy (status %s%s%s)\n", name, status,
                    say_why ? ", " : "", say_why ? why : "");
            ok = false;
        }
        if (a->max_lag < 0)
            continue;
        if (!lag[i].known) {
            fprintf(stderr, "projectord: %s: its lag in seconds is unknown (--max-lag %g)\n", name,
                    a->max_lag);
            ok = false;
        } else if (lag[i].seconds > a->max_lag) {
            const char *events = val(res, i, C_LAG);
            fprintf(stderr,
                    "projectord: %s lags %.1f s behind (%s event%s), more than --max-lag %g\n",
                    name, lag[i].seconds, events, strcmp(events, "1") == 0 ? "" : "s", a->max_lag);
            ok = false;
        }
    }
    return ok;
}

/* ---- the command -------------------------------------------------------------------- */

static void say_query_failed(const PGresult *res)
{
    const char *state = pgconn_sqlstate(res);
    fprintf(stderr, "projectord: status: %s%s%s%s\n", pgconn_error_line(res),
            *state ? " (SQLSTATE " : "", state, *state ? ")" : "");
    /* A binary newer than the schema: the views it reads came with a later release. */
    if (strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0)
        fprintf(stderr, "projectord: status: the schema is older than this projectord: run "
                        "`projectord migrate`\n");
}

int cli_status(const struct config *cfg, int argc, char **argv)
{
    struct status_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    PGconn *conn;
    int missing = cli_open(cfg, CLI_SCHEMA, &conn);
    if (missing)
        return missing;
    char *names = names_literal(&a);
    if (a.n_names > 0 && !names) {
        fprintf(stderr, "projectord: status: out of memory\n");
        PQfinish(conn);
        return EXIT_FAILURE_1;
    }
    const char *params[] = {names};
    PGresult *res = PQexecParams(conn, SQL_STATUS, 1, NULL, params, NULL, NULL, 0);
    free(names);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        say_query_failed(res);
        rc = EXIT_FAILURE_1;
    } else {
        struct row_lag *lag = calloc((size_t)PQntuples(res) + 1, sizeof *lag);
        if (!lag) {
            fprintf(stderr, "projectord: status: out of memory\n");
            rc = EXIT_FAILURE_1;
        } else {
            lag_seconds(cfg, res, lag);
            if (a.json)
                print_json(res, lag);
            else
                print_text(res, lag);
            if (a.check && !judge(cfg, &a, res, lag))
                rc = EXIT_FAILURE_1;
        }
        free(lag);
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}
