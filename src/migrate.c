/*
 * migrate: apply the bundled migrations (see migrate.h).
 *
 * One database at a time (the event store's, then a separate read-model
 * database's, each with its own history), on one blocking connection:
 *
 * 1. pg_advisory_lock(MIGRATE_LOCK, 0): a second `migrate` on the same
 *    database waits here, then finds everything applied.
 * 2. The history (public.flyway_schema_history, Flyway's layout) says what
 *    is applied: a V file whose version has a successful row (or is at or
 *    below a BASELINE row), an R file whose latest row has its checksum.
 *    Every other file is pending; V files are applied by version even when
 *    a higher one is in the history already (Flyway's outOfOrder): the
 *    numbers are handed out to parallel branches, which merge in any order,
 *    and every file is idempotent.
 * 3. Each pending file runs in a transaction of its own, together with its
 *    history row: a failed file leaves no row and nothing of itself.
 *
 * Two states of a database without a history: the schema applied by hand
 * (psql, before this command existed; read_model.projection_metadata is
 * there) gets every file again, recorded, which is the documented psql
 * upgrade and ends in the schema a fresh database gets, whatever release
 * it was at (recording the files without running them would claim an old
 * schema current). The event store of the original CQRS design
 * (domain_event without global_position) is adopted first: sql/adopt/
 * original_event_store.sql, then every pending migration, in ONE
 * transaction, so the application's appends wait on the lock and resume on
 * the safe append_events, and a failure leaves the store as it was.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "migrate.h"

#define HISTORY      "public.flyway_schema_history"
#define ADOPT_SCRIPT "adopt/original_event_store.sql"

/* Flyway's own DDL for PostgreSQL (createMetaDataTable.sql), so Flyway reads and extends it. */
#define SQL_CREATE_HISTORY                                                                         \
    "CREATE TABLE IF NOT EXISTS " HISTORY " ("                                                     \
    "    installed_rank integer NOT NULL,"                                                         \
    "    version varchar(50),"                                                                     \
    "    description varchar(200) NOT NULL,"                                                       \
    "    type varchar(20) NOT NULL,"                                                               \
    "    script varchar(1000) NOT NULL,"                                                           \
    "    checksum integer,"                                                                        \
    "    installed_by varchar(100) NOT NULL,"                                                      \
    "    installed_on timestamp NOT NULL DEFAULT now(),"                                           \
    "    execution_time integer NOT NULL,"                                                         \
    "    success boolean NOT NULL,"                                                                \
    "    CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank));"                       \
    "CREATE INDEX IF NOT EXISTS flyway_schema_history_s_idx ON " HISTORY " (success)"

#define SQL_RECORD                                                                                 \
    "INSERT INTO " HISTORY " (installed_rank, version, description, type, script, checksum,"       \
    "                         installed_by, execution_time, success)"                              \
    " SELECT coalesce(max(installed_rank), 0) + 1, nullif($1, ''), $2, 'SQL', $3, $4::int,"        \
    "        left(current_user, 100), $5::int, true FROM " HISTORY

#define SQL_STATE                                                                                  \
    "SELECT to_regclass('" HISTORY "') IS NOT NULL,"                                               \
    "       to_regclass('read_model.projection_metadata') IS NOT NULL,"                            \
    "       to_regclass('event_store.domain_event') IS NOT NULL AND NOT EXISTS ("                  \
    "           SELECT 1 FROM pg_catalog.pg_attribute"                                             \
    "            WHERE attrelid = to_regclass('event_store.domain_event')"                         \
    "              AND attname = 'global_position' AND NOT attisdropped),"                         \
    "       pg_catalog.current_database()"

struct mfile {
    char kind; /* 'V' or 'R' */
    char version[64];
    char description[256];
    char name[256];
    char *text;
    size_t len;
    int32_t checksum;
    bool pending;
    bool example;  /* named in MIGRATE_EXAMPLES_LIST */
    bool left_out; /* an example, pending, and the examples are left out */
};

/* ---- names and checksums ------------------------------------------------------ */

int32_t migrate_checksum(const char *text, size_t len)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    uint32_t crc = 0xFFFFFFFFu;
    for (; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n' || ch == '\r') /* Flyway sums the lines, not the line breaks */
            continue;
        crc = table[(crc ^ ch) & 0xFF] ^ (crc >> 8);
    }
    return (int32_t)(crc ^ 0xFFFFFFFFu);
}

int migrate_parse_name(const char *name, char *kind, char *version, size_t version_len,
                       char *description, size_t description_len)
{
    size_t n = strlen(name);
    if (n < 8 || strcmp(name + n - 4, ".sql") != 0 || (name[0] != 'V' && name[0] != 'R'))
        return -1;
    const char *sep = strstr(name + 1, "__");
    if (!sep || sep + 2 >= name + n - 4)
        return -1;
    size_t vlen = (size_t)(sep - (name + 1));
    if (name[0] == 'R' ? vlen != 0 : vlen == 0 || vlen >= version_len)
        return -1;
    for (size_t i = 0; i < vlen; i++) {
        char c = name[1 + i];
        if (!((c >= '0' && c <= '9') || ((c == '_' || c == '.') && i > 0 && i + 1 < vlen)))
            return -1;
    }
    size_t dlen = (size_t)(name + n - 4 - (sep + 2));
    if (dlen >= description_len)
        return -1;
    *kind = name[0];
    for (size_t i = 0; i < vlen; i++)
        version[i] = name[1 + i] == '_' ? '.' : name[1 + i];
    version[vlen] = '\0';
    for (size_t i = 0; i < dlen; i++)
        description[i] = sep[2 + i] == '_' ? ' ' : sep[2 + i];
    description[dlen] = '\0';
    return 0;
}

int migrate_version_cmp(const char *a, const char *b)
{
    while (*a || *b) {
        while (*a == '0')
            a++;
        while (*b == '0')
            b++;
        size_t la = strcspn(a, "."), lb = strcspn(b, ".");
        if (la != lb)
            return la < lb ? -1 : 1;
        int c = strncmp(a, b, la);
        if (c)
            return c < 0 ? -1 : 1;
        a += la + (a[la] == '.');
        b += lb + (b[lb] == '.');
    }
    return 0;
}

/* ---- the files -------------------------------------------------------------------- */

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 14, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
        }
        buf = bigger;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int file_order(const void *pa, const void *pb)
{
    const struct mfile *a = pa, *b = pb;
    if (a->kind != b->kind)
        return a->kind == 'V' ? -1 : 1; /* every V before every R */
    if (a->kind == 'V') {
        int c = migrate_version_cmp(a->version, b->version);
        if (c)
            return c;
    }
    return strcmp(a->name, b->name);
}

static void free_files(struct mfile *files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i].text);
    free(files);
}

/*
 * Adds the migrations of one directory to *files (the V files of dir, the
 * R__ files of dir/repeatable: an R__ file among the V files would sort
 * first, and `psql -f` over every .sql file of sql/ in lexical order, as SPEC §2 and the
 * postgres image apply them, would run it on an empty database). A missing
 * directory adds nothing when optional. Returns false after one line on stderr.
 */
static bool scan_dir(const char *dir, bool optional, struct mfile **files, size_t *n, size_t *cap)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (optional && errno == ENOENT)
            return true;
        fprintf(stderr,
                "projectord: migrate: cannot read the migrations in %s: %s (--sql-dir DIR or %s)\n",
                dir, strerror(errno), MIGRATE_SQL_DIR_ENV);
        return false;
    }
    bool failed = false;
    struct dirent *e;
    while (!failed && (e = readdir(d))) {
        struct mfile m = {0};
        if (migrate_parse_name(e->d_name, &m.kind, m.version, sizeof m.version, m.description,
                               sizeof m.description) < 0 ||
            strlen(e->d_name) >= sizeof m.name)
            continue;
        snprintf(m.name, sizeof m.name, "%s", e->d_name);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, m.name);
        if (!(m.text = read_text(path, &m.len))) {
            fprintf(stderr, "projectord: migrate: cannot read %s: %s\n", path, strerror(errno));
            failed = true;
            break;
        }
        m.checksum = migrate_checksum(m.text, m.len);
        if (*n == *cap) {
            struct mfile *more = realloc(*files, (*cap = *cap ? 2 * *cap : 64) * sizeof **files);
            if (!more) {
                free(m.text);
                failed = true;
                break;
            }
            *files = more;
        }
        (*files)[(*n)++] = m;
    }
    closedir(d);
    return !failed;
}

/* The migrations of dir in the order they are applied; NULL after one line on stderr. */
static struct mfile *load_files(const char *dir, size_t *count)
{
    struct mfile *files = NULL;
    size_t n = 0, cap = 0;
    char repeatable[4096];
    snprintf(repeatable, sizeof repeatable, "%s/" MIGRATE_REPEATABLE_DIR, dir);
    bool failed =
        !scan_dir(dir, false, &files, &n, &cap) || !scan_dir(repeatable, true, &files, &n, &cap);
    if (!failed && n == 0)
        fprintf(stderr,
                "projectord: migrate: no migrations (V*.sql, " MIGRATE_REPEATABLE_DIR
                "/R__*.sql) in %s\n",
                dir);
    if (failed || n == 0) {
        free_files(files, n);
        return NULL;
    }
    qsort(files, n, sizeof *files, file_order);
    for (size_t i = 1; i < n; i++)
        if (files[i].kind == 'V' && files[i - 1].kind == 'V' &&
            migrate_version_cmp(files[i].version, files[i - 1].version) == 0) {
            fprintf(stderr, "projectord: migrate: %s and %s have the same version\n",
                    files[i - 1].name, files[i].name);
            free_files(files, n);
            return NULL;
        }
    *count = n;
    return files;
}

/*
 * Mark the files MIGRATE_EXAMPLES_LIST of dir names: one file name a line,
 * '#' comments and blank lines ignored. The list is data, not code, so a
 * new example migration is one more line there, and a release's old files
 * stay as they were (their checksums are in every history). A missing list
 * is an error only when the examples are to be left out (required): a
 * migration directory of an older release applies everything, as it did.
 * A name that is no migration of dir is an error: a typo would otherwise
 * apply an example to a database that left them out. Returns false after
 * one line on stderr.
 */
static bool mark_examples(const char *dir, bool required, struct mfile *files, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" MIGRATE_EXAMPLES_LIST, dir);
    size_t len;
    char *text = read_text(path, &len);
    if (!text) {
        if (!required && errno == ENOENT)
            return true;
        fprintf(stderr,
                "projectord: migrate: cannot read %s (which migrations are the examples'): %s\n",
                path, strerror(errno));
        return false;
    }
    bool ok = true;
    int lineno = 0;
    for (char *line = text, *next; ok && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == ' ' || line[l - 1] == '\t' || line[l - 1] == '\r'))
            line[--l] = '\0';
        if (!l)
            continue;
        bool found = false;
        for (size_t i = 0; i < n; i++)
            if (strcmp(files[i].name, line) == 0)
                found = files[i].example = true;
        if (!found) {
            fprintf(stderr, "projectord: migrate: %s:%d: %s is no migration of %s\n", path, lineno,
                    line, dir);
            ok = false;
        }
    }
    free(text);
    return ok;
}

/* ---- one database ----------------------------------------------------------------- */

struct target {
    PGconn *conn;
    const char *label; /* "" or "event store: " / "read model: " */
    char database[128];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One line for a failed statement: its message and SQLSTATE. */
static void report_error(const struct target *t, const char *what, const PGresult *res)
{
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    char line[768];
    snprintf(line, sizeof line, "%s", msg ? msg : PQerrorMessage(t->conn));
    for (char *c = line; *c; c++)
        if (*c == '\n')
            *c = ' ';
    fprintf(stderr, "projectord: migrate: %s%s: %s%s%s%s\n", t->label, what, line,
            state ? " (SQLSTATE " : "", state ? state : "", state ? ")" : "");
}

static bool exec_ok(const struct target *t, const char *what, const char *sql)
{
    PGresult *res = PQexec(t->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        report_error(t, what, res);
    PQclear(res);
    return ok;
}

/* Mark what the history says is applied; -1 (said) when an applied V file has changed. */
static int read_history(const struct target *t, struct mfile *files, size_t n)
{
    PGresult *res = PQexec(t->conn, "SELECT coalesce(version, ''), description, type,"
                                    "       coalesce(checksum::text, ''), script"
                                    "  FROM " HISTORY " WHERE success ORDER BY installed_rank");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report_error(t, "reading " HISTORY, res);
        PQclear(res);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct mfile *m = &files[i];
        m->pending = true;
        for (int r = 0; r < PQntuples(res); r++) {
            const char *version = PQgetvalue(res, r, 0), *type = PQgetvalue(res, r, 2);
            const char *sum = PQgetvalue(res, r, 3);
            bool has_sum = *sum != '\0';
            int32_t recorded = has_sum ? (int32_t)strtol(sum, NULL, 10) : 0;
            if (m->kind == 'V' && *version && strcmp(type, "BASELINE") == 0 &&
                migrate_version_cmp(m->version, version) <= 0) {
                m->pending = false;
            } else if (m->kind == 'V' && *version &&
                       migrate_version_cmp(m->version, version) == 0) {
                m->pending = false;
                if (has_sum && recorded != m->checksum) {
                    fprintf(stderr,
                            "projectord: migrate: %s%s has changed since it was applied (checksum "
                            "%" PRId32 ", recorded %" PRId32 "): a released migration must stay "
                            "as it was\n",
                            t->label, m->name, m->checksum, recorded);
                    rc = -1;
                }
            } else if (m->kind == 'R' && !*version &&
                       strcmp(PQgetvalue(res, r, 1), m->description) == 0) {
                /* Flyway knows a repeatable migration by its description; the latest row counts. */
                m->pending = !has_sum || recorded != m->checksum;
            }
        }
    }
    PQclear(res);
    return rc;
}

static bool apply_file(const struct target *t, const struct mfile *m)
{
    double start = now_ms();
    /* The server does not take a UTF-8 byte order mark for white space. */
    bool bom = m->len >= 3 && memcmp(m->text, "\xEF\xBB\xBF", 3) == 0;
    if (!exec_ok(t, m->name, m->text + (bom ? 3 : 0)))
        return false;
    char sum[16], ms[16];
    snprintf(sum, sizeof sum, "%" PRId32, m->checksum);
    snprintf(ms, sizeof ms, "%d", (int)(now_ms() - start + 0.5));
    const char *params[] = {m->version, m->description, m->name, sum, ms};
    PGresult *res = PQexecParams(t->conn, SQL_RECORD, 5, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        report_error(t, "recording it in " HISTORY, res);
    PQclear(res);
    if (ok)
        printf("%s%s: applied (%s ms)\n", t->label, m->name, ms);
    return ok;
}

static const char *current_version(const struct mfile *files, size_t n)
{
    const char *v = NULL;
    for (size_t i = 0; i < n; i++)
        if (files[i].kind == 'V' && !files[i].left_out)
            v = files[i].version;
    return v ? v : "?";
}

/*
 * One line naming the example migrations left out on this database, and
 * how to have them later.
 */
static void say_left_out(const struct target *t, const struct mfile *files, size_t n,
                         size_t left_out)
{
    if (!left_out)
        return;
    printf("%s%s: %zu example migration(s) left out, not recorded (a later `projectord migrate "
           "--examples` applies them):",
           t->label, t->database, left_out);
    for (size_t i = 0; i < n; i++)
        if (files[i].left_out)
            printf(" %s", files[i].name);
    printf("\n");
}

static int migrate_one(struct target *t, struct mfile *files, size_t n, const char *sql_dir,
                       bool dry_run, bool no_examples)
{
    /* NOTICEs ("already exists, skipping") are the idempotent files' normal case. */
    if (!exec_ok(t, "setup", "SET client_min_messages = warning"))
        return EXIT_FAILURE_1;
    PGresult *res = PQexec(t->conn, "SELECT pg_catalog.pg_try_advisory_lock(1886546541, 0)");
    bool locked = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!locked) {
        printf("%swaiting for another `projectord migrate` on this database\n", t->label);
        fflush(stdout);
        if (!exec_ok(t, "waiting for the migration lock",
                     "SELECT pg_catalog.pg_advisory_lock(1886546541, 0)"))
            return EXIT_FAILURE_1;
    }
    res = PQexec(t->conn, SQL_STATE);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report_error(t, "looking at the database", res);
        PQclear(res);
        return EXIT_FAILURE_1;
    }
    bool history = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool schema = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    bool original = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    snprintf(t->database, sizeof t->database, "%s", PQgetvalue(res, 0, 3));
    PQclear(res);

    for (size_t i = 0; i < n; i++)
        files[i].pending = true;
    if (history && read_history(t, files, n) < 0)
        return EXIT_FAILURE_1;
    /*
     * Left out: not applied, not recorded, so a later run with the examples
     * applies them (out of order, as any V file below the highest applied).
     * An example already applied stays as it is.
     */
    size_t pending = 0, left_out = 0;
    for (size_t i = 0; i < n; i++) {
        files[i].left_out = no_examples && files[i].example && files[i].pending;
        if (files[i].left_out)
            files[i].pending = false;
        pending += files[i].pending;
        left_out += files[i].left_out;
    }

    char *adopt = NULL;
    size_t adopt_len = 0;
    if (original) {
        char path[4096];
        snprintf(path, sizeof path, "%s/" ADOPT_SCRIPT, sql_dir);
        if (!(adopt = read_text(path, &adopt_len))) {
            fprintf(stderr, "projectord: migrate: %s: cannot read %s: %s\n", t->database, path,
                    strerror(errno));
            return EXIT_FAILURE_1;
        }
        printf("%s%s: the event store of the original design (domain_event without "
               "global_position): %s adopted first, with its events, in one transaction with "
               "the migrations\n",
               t->label, t->database, dry_run ? "would be" : "is");
    } else if (!history && schema) {
        printf("%s%s: the schema is there without a migration history (applied by hand): every "
               "migration is applied again (each is idempotent) and recorded\n",
               t->label, t->database);
    }

    if (dry_run || (pending == 0 && !original)) {
        for (size_t i = 0; dry_run && i < n; i++)
            if (files[i].pending)
                printf("%s%s: would be applied\n", t->label, files[i].name);
        say_left_out(t, files, n, left_out);
        if (pending == 0 && !original)
            printf("%s%s: up to date at version %s, nothing to apply\n", t->label, t->database,
                   current_version(files, n));
        else
            printf("%s%s: %zu migration(s) to apply (--dry-run: nothing changed)\n", t->label,
                   t->database, pending);
        free(adopt);
        return 0;
    }

    int rc = 0;
    size_t applied = 0;
    if (!adopt && !history && !exec_ok(t, "creating " HISTORY, SQL_CREATE_HISTORY))
        rc = EXIT_FAILURE_1;
    if (adopt) {
        /* All or nothing, the history table too: see the top of this file. */
        bool ok = exec_ok(t, "BEGIN", "BEGIN") &&
                  (history || exec_ok(t, "creating " HISTORY, SQL_CREATE_HISTORY)) &&
                  exec_ok(t, ADOPT_SCRIPT, adopt);
        if (ok)
            printf("%s%s: applied (the original event store adopted)\n", t->label, ADOPT_SCRIPT);
        for (size_t i = 0; ok && i < n; i++)
            if (files[i].pending)
                ok = apply_file(t, &files[i]) && ++applied;
        if (ok && exec_ok(t, "COMMIT", "COMMIT")) {
            printf("%s%s: committed\n", t->label, t->database);
        } else {
            fprintf(stderr,
                    "projectord: migrate: %s%s: rolled back, the event store is as it "
                    "was\n",
                    t->label, t->database);
            PQclear(PQexec(t->conn, "ROLLBACK"));
            applied = 0;
            rc = EXIT_FAILURE_1;
        }
    }
    for (size_t i = 0; !rc && !adopt && i < n; i++) {
        if (!files[i].pending)
            continue;
        bool ok = exec_ok(t, "BEGIN", "BEGIN") && apply_file(t, &files[i]) &&
                  exec_ok(t, "COMMIT", "COMMIT");
        if (!ok) {
            PQclear(PQexec(t->conn, "ROLLBACK"));
            fprintf(stderr,
                    "projectord: migrate: %s%s: %zu migration(s) applied before it stay "
                    "applied; fix the cause and run `projectord migrate` again\n",
                    t->label, files[i].name, applied);
            rc = EXIT_FAILURE_1;
            break;
        }
        applied++;
    }
    free(adopt);
    if (!rc) {
        say_left_out(t, files, n, left_out);
        printf("%s%s: %zu migration(s) applied, at version %s\n", t->label, t->database, applied,
               current_version(files, n));
    }
    return rc;
}

/* ---- the command ------------------------------------------------------------------- */

int cli_migrate(const struct config *cfg, int argc, char **argv)
{
    bool dry_run = false, examples = false, no_examples = false;
    const char *dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0)
            dry_run = true;
        else if (strcmp(argv[i], "--examples") == 0)
            examples = true;
        else if (strcmp(argv[i], "--no-examples") == 0)
            no_examples = true;
        else if (strcmp(argv[i], "--sql-dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strncmp(argv[i], "--sql-dir=", 10) == 0)
            dir = argv[i] + 10;
        else {
            fprintf(stderr,
                    "projectord: migrate: unexpected argument '%s' (--dry-run, --examples, "
                    "--no-examples, --sql-dir DIR)\n",
                    argv[i]);
            return EXIT_USAGE;
        }
    }
    if (examples && no_examples) {
        fprintf(stderr, "projectord: migrate: --examples and --no-examples: one or the other\n");
        return EXIT_USAGE;
    }
    /* The build's default (CMake's PROJECTORD_EXAMPLES) unless said. */
    if (!examples && !no_examples)
        no_examples = !MIGRATE_EXAMPLES_DEFAULT;
    if (!dir || !*dir)
        dir = getenv(MIGRATE_SQL_DIR_ENV);
    if (!dir || !*dir)
        dir = PROJECTORD_SQL_DIR_DEFAULT;
    size_t n = 0;
    struct mfile *files = load_files(dir, &n);
    if (!files)
        return EXIT_CONFIG;
    if (!mark_examples(dir, no_examples, files, n)) {
        free_files(files, n);
        return EXIT_CONFIG;
    }

    bool apart = config_apart(cfg->conninfo, cfg->target_conninfo);
    struct target targets[2] = {{.label = apart ? "event store: " : ""}, {.label = "read model: "}};
    int rc = 0, nt = apart ? 2 : 1;
    /* Both connections and checks first: nothing is applied to one when the other is refused. */
    for (int i = 0; !rc && i < nt; i++) {
        const char *key =
            (i == 0 && apart) || !cfg->target_conninfo ? "database.conninfo" : "database.target";
        targets[i].conn = i == 0 && apart ? cli_connect_to(cfg->conninfo) : cli_connect(cfg);
        rc = !targets[i].conn ? cli_connect_failure()
                              : cli_refuse_standby(targets[i].conn, key,
                                                   "migrations are applied on the primary");
    }
    for (int i = 0; !rc && i < nt; i++)
        rc = migrate_one(&targets[i], files, n, dir, dry_run, no_examples);
    for (int i = 0; i < nt; i++)
        PQfinish(targets[i].conn); /* the advisory lock goes with the session */
    free_files(files, n);
    return rc;
}
