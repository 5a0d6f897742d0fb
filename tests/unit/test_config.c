/*
 * Unit tests for config: loading, defaults, every class of error (checked
 * word for word, with file, line and key), environment overrides, masking,
 * printing, and the documented example etc/projectord.conf.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static const char *const names[] = {"catalog", "event_stats", "orders", "users"};
#define N_NAMES (sizeof(names) / sizeof(names[0]))
/* Room for tmpdir (256) and a file name in it, so snprintf never truncates. */
#define PATH_BUF 1024

static char tmpdir[256];
static int file_counter;

/* ---- helpers ---- */

static void write_conf_mode(const char *text, mode_t mode, char *path, size_t size)
{
    snprintf(path, size, "%s/c%03d.conf", tmpdir, ++file_counter);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void write_conf(const char *text, char *path, size_t size)
{
    write_conf_mode(text, 0600, path, size);
}

static void load_ok(struct config *cfg, const char *text)
{
    char path[PATH_BUF], err[1024] = "";
    write_conf(text, path, sizeof(path));
    int rc = config_load(cfg, path, names, N_NAMES, err, sizeof(err));
    if (rc != 0)
        fail_msg("unexpected error: %s", err);
}

/* Loading text must fail with exactly "FILE:line: problem". */
static void expect_error(const char *text, int line, const char *problem)
{
    char path[PATH_BUF], err[1024] = "", expected[1536];
    struct config cfg;
    write_conf(text, path, sizeof(path));
    snprintf(expected, sizeof(expected), "%s:%d: %s", path, line, problem);
    memset(&cfg, 0xa5, sizeof(cfg)); /* garbage in, so "zeroed on error" means something */
    assert_int_equal(config_load(&cfg, path, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
    assert_null(cfg.projections);
    assert_null(cfg.listen_channel);
    assert_null(cfg.source);
    assert_int_equal(cfg.n_projections, 0);
}

static void assert_defaults(const struct config *cfg)
{
    assert_null(cfg->conninfo);
    assert_null(cfg->target_conninfo);
    assert_string_equal(cfg->listen_channel, "domain_event");
    assert_int_equal(cfg->batch_size, 1000);
    assert_int_equal(cfg->poll_interval_ms, 1000);
    assert_int_equal(cfg->min_read_interval_ms, 2);
    assert_int_equal(cfg->batch_max_bytes, 16 << 20);
    assert_int_equal(cfg->stall_timeout_ms, 20000);
    assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    assert_int_equal(cfg->n_projections, N_NAMES);
    for (size_t i = 0; i < N_NAMES; i++) {
        assert_string_equal(cfg->projections[i].name, names[i]);
        assert_true(cfg->projections[i].enabled);
        assert_int_equal(cfg->projections[i].on_error, ON_ERROR_STOP);
    }
}

/* Run fn with stderr going to a file; return what was written (caller frees). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fileno(tmp), 0, SEEK_END);
    assert_true(size >= 0);
    char *buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(tmp), buf, (size_t)size, 0), size);
    fclose(tmp);
    return buf;
}

/* The tests only create plain files directly in dir. */
static int remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[PATH_BUF];
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return rmdir(dir);
}

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/test_config.XXXXXX", base);
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return remove_dir(tmpdir);
}

/* The developer's shell must not leak into the tests. */
static int clear_env(void **state)
{
    (void)state;
    unsetenv("PROJECTORD_DATABASE_URL");
    unsetenv("PROJECTORD_LOG_LEVEL");
    unsetenv("PROJECTORD_TARGET_DATABASE_URL");
    static const char *const every[] = {"PROJECTORD_DATABASE_CONNINFO",
                                        "PROJECTORD_DATABASE_TARGET",
                                        "PROJECTORD_BATCH_SIZE",
                                        "PROJECTORD_LOG_FORMAT",
                                        "PROJECTORD_METRICS_LISTEN",
                                        "PROJECTORD_PROJECTIONS_ORDERS_ENABLED",
                                        "PROJECTORD_PROJECTIONS_USERS_ON_ERROR",
                                        "PROJECTORD_REBUILD_ON_VERSION_CHANGE",
                                        "PROJECTORD_LISTEN_CHANNEL",
                                        "PROJECTORD_PROJECTION_DIR"};
    for (size_t i = 0; i < sizeof every / sizeof every[0]; i++)
        unsetenv(every[i]);
    return 0;
}

/* ---- loading ---- */

static void test_full_file(void **state)
{
    (void)state;
    struct config cfg;
    load_ok(&cfg, "database = { conninfo = \"host=db1 dbname=events\";\n"
                  "             target = \"host=db2 dbname=reads\"; };\n"
                  "listen_channel = \"events_2$x\";\n"
                  "batch_size = 500;\n"
                  "poll_interval_ms = 250;\n"
                  "log = { level = \"debug\"; format = \"json\"; };\n"
                  "metrics = { listen = \"[::1]:9187\"; };\n"
                  "projections = {\n"
                  "  users = { on_error = \"skip\"; };\n"
                  "  orders = { enabled = false; on_error = \"skip\"; };\n"
                  "};\n");
    assert_string_equal(cfg.conninfo, "host=db1 dbname=events");
    assert_string_equal(cfg.target_conninfo, "host=db2 dbname=reads");
    assert_string_equal(cfg.listen_channel, "events_2$x");
    assert_int_equal(cfg.batch_size, 500);
    assert_int_equal(cfg.poll_interval_ms, 250);
    assert_int_equal(cfg.log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
    assert_string_equal(cfg.metrics_listen, "[::1]:9187");
    assert_non_null(cfg.source);
    assert_non_null(strstr(cfg.source, tmpdir));

    /* Registry order, whatever the file's order; unmentioned ones default. */
    assert_int_equal(cfg.n_projections, N_NAMES);
    for (size_t i = 0; i < N_NAMES; i++)
        assert_string_equal(cfg.projections[i].name, names[i]);
    const struct projection_config *p = config_projection(&cfg, "orders");
    assert_ptr_equal(p, &cfg.projections[2]);
    assert_false(p->enabled);
    assert_int_equal(p->on_error, ON_ERROR_SKIP);
    p = config_projection(&cfg, "users");
    assert_true(p->enabled);
    assert_int_equal(p->on_error, ON_ERROR_SKIP);
    p = config_projection(&cfg, "catalog");
    assert_true(p->enabled);
    assert_int_equal(p->on_error, ON_ERROR_STOP);
    assert_null(config_projection(&cfg, "nope"));

    config_free(&cfg);
    assert_null(cfg.conninfo);
    assert_null(cfg.projections);
    assert_int_equal(cfg.n_projections, 0);
}

static void test_empty_file_gives_defaults(void **state)
{
    (void)state;
    struct config cfg;
    load_ok(&cfg, "# nothing but a comment\n");
    assert_defaults(&cfg);
    assert_non_null(cfg.source);
    config_free(&cfg);
}

static void test_empty_strings_mean_unset(void **state)
{
    (void)state;
    struct config cfg;
    load_ok(&cfg, "database = { conninfo = \"\"; target = \"\"; };\n");
    assert_null(cfg.conninfo);
    assert_null(cfg.target_conninfo);
    config_free(&cfg);
}

static void test_bounds_are_inclusive(void **state)
{
    (void)state;
    struct config cfg;
    load_ok(&cfg, "batch_size = 1; poll_interval_ms = 10; min_read_interval_ms = 0;\n"
                  "batch_max_bytes = 1024; stall_timeout_ms = 1000;\n");
    assert_int_equal(cfg.batch_size, 1);
    assert_int_equal(cfg.poll_interval_ms, 10);
    assert_int_equal(cfg.min_read_interval_ms, 0);
    assert_int_equal(cfg.batch_max_bytes, 1024);
    assert_int_equal(cfg.stall_timeout_ms, 1000);
    config_free(&cfg);
    load_ok(&cfg, "batch_size = 100000; poll_interval_ms = 3600000; min_read_interval_ms = 1000;\n"
                  "batch_max_bytes = 1073741824; stall_timeout_ms = 3600000;\n");
    assert_int_equal(cfg.batch_size, 100000);
    assert_int_equal(cfg.poll_interval_ms, 3600000);
    assert_int_equal(cfg.min_read_interval_ms, 1000);
    assert_int_equal(cfg.batch_max_bytes, 1 << 30);
    assert_int_equal(cfg.stall_timeout_ms, 3600000);
    config_free(&cfg);
}

static void test_words_are_case_insensitive(void **state)
{
    (void)state;
    struct config cfg;
    load_ok(&cfg, "log = { level = \"WARN\"; format = \"Json\"; };\n"
                  "projections = { catalog = { on_error = \"SKIP\"; }; };\n");
    assert_int_equal(cfg.log_level, LOG_LEVEL_WARNING);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
    assert_int_equal(cfg.projections[0].on_error, ON_ERROR_SKIP);
    config_free(&cfg);
}

static void test_channel_names(void **state)
{
    (void)state;
    struct config cfg;
    char text[128];
    /* 63 characters is PostgreSQL's identifier limit: allowed. */
    snprintf(text, sizeof(text), "listen_channel = \"_%062d\";\n", 0);
    load_ok(&cfg, text);
    assert_int_equal(strlen(cfg.listen_channel), 63);
    config_free(&cfg);

    const char *expect = "listen_channel: must be a lowercase identifier ([a-z_][a-z0-9_$]*) "
                         "of at most 63 characters (got '%s')";
    char too_long[80];
    snprintf(too_long, sizeof(too_long), "_%063d", 0);
    const char *bad[] = {"Bad", "bad-channel", "1abc", "", "a b", "$x", too_long};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char conf[256], problem[512];
        snprintf(conf, sizeof(conf), "\nlisten_channel = \"%s\";\n", bad[i]);
        snprintf(problem, sizeof(problem), expect, bad[i]);
        expect_error(conf, 2, problem);
    }
}

static void test_optional_default_file_absent(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[256] = "";
    snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
    assert_int_equal(config_load_path(&cfg, path, false, names, N_NAMES, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_null(cfg.source);
    assert_defaults(&cfg);
    config_free(&cfg);
}

static void test_missing_file_given_explicitly(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[1024], expected[PATH_BUF + 64];
    snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
    snprintf(expected, sizeof(expected), "%s: cannot read: No such file or directory", path);
    assert_int_equal(config_load(&cfg, path, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
    assert_null(cfg.projections);
    assert_int_equal(config_load_path(&cfg, path, true, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_unreadable_paths(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[1024], expected[PATH_BUF + 64];
    /* Only a missing file is optional: a directory is an error either way. */
    snprintf(expected, sizeof(expected), "%s: cannot read: Is a directory", tmpdir);
    assert_int_equal(config_load_path(&cfg, tmpdir, false, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
    assert_int_equal(config_load(&cfg, tmpdir, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, expected);

    write_conf("batch_size = 5;\n", path, sizeof(path));
    strcat(path, "/sub.conf"); /* a regular file used as a directory */
    snprintf(expected, sizeof(expected), "%s: cannot read: Not a directory", path);
    assert_int_equal(config_load_path(&cfg, path, false, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

/* ---- errors: one line, FILE:LINE: KEY: problem ---- */

static void test_syntax_errors(void **state)
{
    (void)state;
    expect_error("batch_size = 10;\n\nlisten_channel = ;\n", 3, "syntax error");
    expect_error("batch_size = 1;\nbatch_size = 2;\n", 2, "duplicate setting name");
    expect_error("batch_size = 10;\nlog = {\n  level = \"info\" ];\n", 3, "syntax error");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error("# c\n\nbatch_size = 0;\n", 3,
                 "batch_size: must be an integer between 1 and 100000 (got 0)");
    expect_error("batch_size = 100001;\n", 1,
                 "batch_size: must be an integer between 1 and 100000 (got 100001)");
    expect_error("batch_size = -5;\n", 1,
                 "batch_size: must be an integer between 1 and 100000 (got -5)");
    expect_error("batch_size = 5;\npoll_interval_ms = 9;\n", 2,
                 "poll_interval_ms: must be an integer between 10 and 3600000 (got 9)");
    expect_error("poll_interval_ms = 3600001;\n", 1,
                 "poll_interval_ms: must be an integer between 10 and 3600000 (got 3600001)");
    expect_error("min_read_interval_ms = 1001;\n", 1,
                 "min_read_interval_ms: must be an integer between 0 and 1000 (got 1001)");
    expect_error("min_read_interval_ms = -1;\n", 1,
                 "min_read_interval_ms: must be an integer between 0 and 1000 (got -1)");
    expect_error("batch_max_bytes = 1023;\n", 1,
                 "batch_max_bytes: must be an integer between 1024 and 1073741824 (got 1023)");
    expect_error("batch_max_bytes = 1073741825;\n", 1,
                 "batch_max_bytes: must be an integer between 1024 and 1073741824 "
                 "(got 1073741825)");
    expect_error("stall_timeout_ms = 999;\n", 1,
                 "stall_timeout_ms: must be an integer between 1000 and 3600000 (got 999)");
    expect_error("stall_timeout_ms = 3600001;\n", 1,
                 "stall_timeout_ms: must be an integer between 1000 and 3600000 (got 3600001)");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error("batch_size = \"10\";\n", 1,
                 "batch_size: must be an integer between 1 and 100000 (got a string)");
    expect_error("\nbatch_size = 10L;\n", 2,
                 "batch_size: must be an integer between 1 and 100000 (got a 64-bit integer)");
    expect_error("poll_interval_ms = 1.5;\n", 1,
                 "poll_interval_ms: must be an integer between 10 and 3600000 (got a float)");
    expect_error("poll_interval_ms = true;\n", 1,
                 "poll_interval_ms: must be an integer between 10 and 3600000 (got a boolean)");
    expect_error("listen_channel = 5;\n", 1,
                 "listen_channel: must be a lowercase identifier ([a-z_][a-z0-9_$]*) of at "
                 "most 63 characters (got an integer)");
    expect_error("database = {\n  conninfo = [\"a\", \"b\"];\n};\n", 2,
                 "database.conninfo: must be a libpq connection string (key=value pairs or a "
                 "postgresql:// URI) (got an array)");
    expect_error("log = {\n  format = \"text\";\n  level = 3;\n};\n", 3,
                 "log.level: must be one of error, warning, info, debug (got an integer)");
    expect_error("projections = {\n  catalog = {\n    enabled = \"yes\";\n  };\n};\n", 3,
                 "projections.catalog.enabled: must be true or false (got a string)");
    expect_error("projections = { orders = { on_error = 1; }; };\n", 1,
                 "projections.orders.on_error: must be one of stop, skip (got an integer)");
}

static void test_group_scalar_mismatch(void **state)
{
    (void)state;
    expect_error("batch_size = { value = 1; };\n", 1,
                 "batch_size: must be an integer between 1 and 100000 (got a group)");
    expect_error("\nlog = \"debug\";\n", 2, "log: must be a group { ... } (got a string)");
    expect_error("database = \"host=x\";\n", 1, "database: must be a group { ... } (got a string)");
    expect_error("projections = ( \"catalog\" );\n", 1,
                 "projections: must be a group { ... } (got a list)");
    expect_error("projections = {\n  catalog = true;\n};\n", 2,
                 "projections.catalog: must be a group { enabled = ...; on_error = ...; } "
                 "(got a boolean)");
    expect_error("log = { level = { x = 1; }; };\n", 1,
                 "log.level: must be one of error, warning, info, debug (got a group)");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_error("batch_size = 5;\nbatchsize = 5;\n", 2,
                 "batchsize: unknown key (valid here: database, listen_channel, batch_size, "
                 "poll_interval_ms, min_read_interval_ms, batch_max_bytes, stall_timeout_ms, "
                 "rebuild_on_version_change, projection_dir, log, metrics, "
                 "projections)");
    expect_error("database = {\n  conninfo = \"\";\n  host = \"x\";\n};\n", 3,
                 "database.host: unknown key (valid here: conninfo, target)");
    expect_error("log = { level = \"info\"; destination = \"syslog\"; };\n", 1,
                 "log.destination: unknown key (valid here: level, format)");
    expect_error("projections = {\n  orders = {\n    enable = false;\n  };\n};\n", 3,
                 "projections.orders.enable: unknown key (valid here: enabled, on_error)");
    /* Keys are case-sensitive, as in libconfig itself. */
    expect_error("Batch_size = 5;\n", 1,
                 "Batch_size: unknown key (valid here: database, listen_channel, batch_size, "
                 "poll_interval_ms, min_read_interval_ms, batch_max_bytes, stall_timeout_ms, "
                 "rebuild_on_version_change, projection_dir, log, metrics, "
                 "projections)");
}

static void test_unknown_projection(void **state)
{
    (void)state;
    expect_error(
        "# projections\n"
        "projections = {\n"
        "  catalog = { enabled = true; };\n"
        "\n"
        "\n"
        "\n"
        "  catalg = { enabled = false; };\n"
        "};\n",
        7,
        "projections.catalg: unknown projection (compiled in or declared: catalog, event_stats, "
        "orders, users)");
}

static void test_unknown_projection_none_compiled_in(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[1024], expected[PATH_BUF + 128];
    write_conf("projections = { users = {}; };\n", path, sizeof(path));
    snprintf(expected, sizeof(expected),
             "%s:1: projections.users: unknown projection "
             "(compiled in or declared: none)",
             path);
    assert_int_equal(config_load(&cfg, path, NULL, 0, err, sizeof(err)), -1);
    assert_string_equal(err, expected);
}

static void test_bad_enum_values(void **state)
{
    (void)state;
    expect_error("log = {\n  level = \"verbose\";\n};\n", 2,
                 "log.level: unknown log level 'verbose' (error, warning, info, debug)");
    expect_error("log = { format = \"xml\"; };\n", 1,
                 "log.format: unknown log format 'xml' (text, json)");
    expect_error("projections = {\n  users = { on_error = \"ignore\"; };\n};\n", 2,
                 "projections.users.on_error: unknown on_error action 'ignore' (stop, skip)");
}

static void test_error_is_one_line(void **state)
{
    (void)state;
    /* A value with a newline must not break the one-line contract. */
    expect_error("log = { level = \"in\\nfo\"; };\n", 1,
                 "log.level: unknown log level 'in?fo' (error, warning, info, debug)");
}

static void test_bad_conninfo(void **state)
{
    (void)state;
    expect_error("database = { target = \"hots=localhost\"; };\n", 1,
                 "database.target: must be a libpq connection string (key=value pairs or a "
                 "postgresql:// URI): invalid connection option \"hots\"");
    /* libpq would quote the whole URI, password included: never echoed. */
    expect_error("\ndatabase = { conninfo = \"postgresql://u:hunter2@[::1/db\"; };\n", 2,
                 "database.conninfo: must be a libpq connection string (key=value pairs or a "
                 "postgresql:// URI)");
}

static void test_no_error_buffer(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF];
    write_conf("batch_size = 0;\n", path, sizeof(path));
    assert_int_equal(config_load(&cfg, path, names, N_NAMES, NULL, 0), -1);
}

/* ---- environment ---- */

static void test_env_overrides_file(void **state)
{
    (void)state;
    struct config cfg;
    setenv("PROJECTORD_DATABASE_URL", "postgresql://app@envhost/envdb", 1);
    setenv("PROJECTORD_LOG_LEVEL", "Error", 1);
    load_ok(&cfg, "database = { conninfo = \"host=filehost\"; target = \"host=t\"; };\n"
                  "log = { level = \"debug\"; };\n");
    assert_string_equal(cfg.conninfo, "postgresql://app@envhost/envdb");
    assert_string_equal(cfg.target_conninfo, "host=t");
    assert_int_equal(cfg.log_level, LOG_LEVEL_ERROR);
    config_free(&cfg);
    clear_env(NULL);
}

static void test_metrics_listen(void **state)
{
    (void)state;
    struct config cfg;
    load_ok(&cfg, "metrics = { listen = \"\"; };\n");
    assert_null(cfg.metrics_listen);
    config_free(&cfg);
    expect_error("metrics = { listen = \"9187\"; };\n", 1,
                 "metrics.listen: must be HOST:PORT, e.g. \"127.0.0.1:9187\" or \"[::1]:9187\" "
                 "(got '9187')");
    expect_error("\nmetrics = { listen = \"localhost:99999\"; };\n", 2,
                 "metrics.listen: must be HOST:PORT, e.g. \"127.0.0.1:9187\" or \"[::1]:9187\" "
                 "(got 'localhost:99999')");
    expect_error("metrics = { listn = \"localhost:9\"; };\n", 1,
                 "metrics.listn: unknown key (valid here: listen)");
}

static void test_env_target(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[1024];
    setenv("PROJECTORD_TARGET_DATABASE_URL", "postgresql://reads@envhost/readmodel", 1);
    load_ok(&cfg, "database = { conninfo = \"host=filehost\"; target = \"host=t\"; };\n");
    assert_string_equal(cfg.conninfo, "host=filehost");
    assert_string_equal(cfg.target_conninfo, "postgresql://reads@envhost/readmodel");
    config_free(&cfg);

    write_conf("batch_size = 5;\n", path, sizeof(path));
    setenv("PROJECTORD_TARGET_DATABASE_URL", "hots=x", 1);
    assert_int_equal(config_load(&cfg, path, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, "PROJECTORD_TARGET_DATABASE_URL: must be a libpq connection string "
                             "(key=value pairs or a postgresql:// URI): invalid connection "
                             "option \"hots\"");
}

static void test_env_without_file(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[256];
    snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
    setenv("PROJECTORD_DATABASE_URL", "host=envhost", 1);
    setenv("PROJECTORD_LOG_LEVEL", "warning", 1);
    assert_int_equal(config_load_path(&cfg, path, false, names, N_NAMES, err, sizeof(err)), 0);
    assert_string_equal(cfg.conninfo, "host=envhost");
    assert_int_equal(cfg.log_level, LOG_LEVEL_WARNING);
    config_free(&cfg);
    clear_env(NULL);
}

/* Every key has its variable, PROJECTORD_<SECTION>_<KEY>, checked like the file's value. */
static void test_env_for_every_key(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[1024];
    setenv("PROJECTORD_BATCH_SIZE", "250", 1);
    setenv("PROJECTORD_LOG_FORMAT", "json", 1);
    setenv("PROJECTORD_METRICS_LISTEN", "127.0.0.1:9187", 1);
    setenv("PROJECTORD_PROJECTIONS_ORDERS_ENABLED", "false", 1);
    setenv("PROJECTORD_PROJECTIONS_USERS_ON_ERROR", "skip", 1);
    setenv("PROJECTORD_REBUILD_ON_VERSION_CHANGE", "no", 1);
    setenv("PROJECTORD_LISTEN_CHANNEL", "events", 1);
    setenv("PROJECTORD_DATABASE_CONNINFO", "host=keyhost", 1);
    setenv("PROJECTORD_DATABASE_URL", "host=urlhost", 1); /* the key's own name wins */
    setenv("PROJECTORD_DATABASE_TARGET", "host=targethost", 1);
    load_ok(&cfg, "batch_size = 5;\nprojections = { orders = { enabled = true; }; };\n");
    assert_int_equal(cfg.batch_size, 250);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
    assert_string_equal(cfg.metrics_listen, "127.0.0.1:9187");
    assert_false(config_projection(&cfg, "orders")->enabled);
    assert_int_equal(config_projection(&cfg, "users")->on_error, ON_ERROR_SKIP);
    assert_int_equal(config_projection(&cfg, "catalog")->on_error, ON_ERROR_STOP);
    assert_false(cfg.rebuild_on_version_change);
    assert_string_equal(cfg.listen_channel, "events");
    assert_string_equal(cfg.conninfo, "host=keyhost");
    assert_string_equal(cfg.target_conninfo, "host=targethost");
    config_free(&cfg);
    clear_env(NULL);

    static const struct {
        const char *name, *value, *error;
    } bad[] = {
        {"PROJECTORD_BATCH_SIZE", "0",
         "PROJECTORD_BATCH_SIZE: must be an integer between 1 and 100000 (got '0')"},
        {"PROJECTORD_BATCH_SIZE", "12x",
         "PROJECTORD_BATCH_SIZE: must be an integer between 1 and 100000 (got '12x')"},
        {"PROJECTORD_PROJECTIONS_ORDERS_ENABLED", "maybe",
         "PROJECTORD_PROJECTIONS_ORDERS_ENABLED: must be true or false (got 'maybe')"},
        {"PROJECTORD_PROJECTIONS_USERS_ON_ERROR", "ignore",
         "PROJECTORD_PROJECTIONS_USERS_ON_ERROR: unknown on_error action 'ignore' (stop, skip)"},
        {"PROJECTORD_LISTEN_CHANNEL", "Bad-Name",
         "PROJECTORD_LISTEN_CHANNEL: must be a lowercase identifier ([a-z_][a-z0-9_$]*) of at "
         "most 63 characters (got 'Bad-Name')"},
        /* a conninfo may hold a password: described, never echoed */
        {"PROJECTORD_DATABASE_CONNINFO", "password=secret hots=x",
         "PROJECTORD_DATABASE_CONNINFO: must be a libpq connection string (key=value pairs or a "
         "postgresql:// URI): invalid connection option \"***\""},
    };
    write_conf("batch_size = 5;\n", path, sizeof(path));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i].name, bad[i].value, 1);
        assert_int_equal(config_load(&cfg, path, names, N_NAMES, err, sizeof(err)), -1);
        assert_string_equal(err, bad[i].error);
        unsetenv(bad[i].name);
    }
}

static void test_empty_env_is_ignored(void **state)
{
    (void)state;
    struct config cfg;
    setenv("PROJECTORD_DATABASE_URL", "", 1);
    setenv("PROJECTORD_LOG_LEVEL", "", 1);
    load_ok(&cfg, "database = { conninfo = \"host=filehost\"; };\n");
    assert_string_equal(cfg.conninfo, "host=filehost");
    assert_int_equal(cfg.log_level, LOG_LEVEL_INFO);
    config_free(&cfg);
    clear_env(NULL);
}

static void test_env_errors(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[1024];
    write_conf("batch_size = 5;\n", path, sizeof(path));

    setenv("PROJECTORD_LOG_LEVEL", "loud", 1);
    assert_int_equal(config_load(&cfg, path, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(
        err, "PROJECTORD_LOG_LEVEL: unknown log level 'loud' (error, warning, info, debug)");
    assert_null(cfg.projections);
    assert_null(cfg.listen_channel);
    clear_env(NULL);

    setenv("PROJECTORD_DATABASE_URL", "postgresql://u:hunter2@[::1", 1);
    assert_int_equal(config_load(&cfg, path, names, N_NAMES, err, sizeof(err)), -1);
    assert_string_equal(err, "PROJECTORD_DATABASE_URL: must be a libpq connection string "
                             "(key=value pairs or a postgresql:// URI)");
    assert_null(cfg.source);
    clear_env(NULL);
}

/* ---- masking ---- */

/* masked must carry every option of original, passwords replaced. */
static void assert_masked_equivalent(const char *original, const char *masked)
{
    PQconninfoOption *a = PQconninfoParse(original, NULL);
    PQconninfoOption *b = PQconninfoParse(masked, NULL);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; a[i].keyword != NULL; i++) {
        assert_string_equal(a[i].keyword, b[i].keyword);
        if (a[i].val == NULL) {
            assert_null(b[i].val);
        } else if (a[i].dispchar[0] == '*') {
            assert_string_equal(b[i].val, "********");
        } else {
            assert_non_null(b[i].val);
            assert_string_equal(a[i].val, b[i].val);
        }
    }
    PQconninfoFree(a);
    PQconninfoFree(b);
}

static void test_mask_key_value(void **state)
{
    (void)state;
    const char *in = "host=localhost dbname=app password=s3cret user=projectord";
    char *m = config_mask_conninfo(in);
    assert_non_null(m);
    assert_null(strstr(m, "s3cret"));
    assert_non_null(strstr(m, "password=********"));
    assert_non_null(strstr(m, "host=localhost"));
    assert_masked_equivalent(in, m);
    free(m);

    m = config_mask_conninfo("host=db port=5433");
    assert_string_equal(m, "host=db port=5433");
    free(m);
}

static void test_mask_uri(void **state)
{
    (void)state;
    const char *in = "postgresql://app:s3cr%40t@db.example:5433/app?sslmode=require";
    char *m = config_mask_conninfo(in);
    assert_non_null(m);
    assert_null(strstr(m, "s3cr"));
    assert_non_null(strstr(m, "password=********"));
    assert_non_null(strstr(m, "user=app"));
    assert_non_null(strstr(m, "host=db.example"));
    assert_non_null(strstr(m, "port=5433"));
    assert_non_null(strstr(m, "sslmode=require"));
    assert_null(strstr(m, "postgresql://"));
    assert_masked_equivalent(in, m);
    free(m);
}

static void test_mask_quoting_and_other_secrets(void **state)
{
    (void)state;
    const char *in = "application_name='my app' options='-c x=\\'y\\'' sslpassword=keypass "
                     "password='with space' host=h";
    char *m = config_mask_conninfo(in);
    assert_non_null(m);
    assert_null(strstr(m, "keypass"));
    assert_null(strstr(m, "with space"));
    assert_non_null(strstr(m, "application_name='my app'"));
    assert_non_null(strstr(m, "options='-c x=\\'y\\''"));
    assert_masked_equivalent(in, m);
    free(m);

    m = config_mask_conninfo("host=h password=''");
    assert_non_null(strstr(m, "password=********"));
    free(m);
}

static void test_mask_edge_cases(void **state)
{
    (void)state;
    char *m = config_mask_conninfo(NULL);
    assert_string_equal(m, "");
    free(m);
    m = config_mask_conninfo("");
    assert_string_equal(m, "");
    free(m);
    m = config_mask_conninfo("host='unterminated password=x");
    assert_string_equal(m, "(unparsable conninfo)");
    free(m);
    m = config_mask_conninfo("postgresql://u:hunter2@[::1/db");
    assert_string_equal(m, "(unparsable conninfo)");
    free(m);
}

/* ---- printing ---- */

static char *print_to_string(const struct config *cfg)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    assert_non_null(out);
    config_print(cfg, out);
    fclose(out);
    return buf;
}

static void test_print_round_trip(void **state)
{
    (void)state;
    struct config cfg, again;
    load_ok(&cfg, "database = { conninfo = \"host=db1 dbname=app password=hunter2\"; };\n"
                  "listen_channel = \"ch$1\";\n"
                  "batch_size = 77;\n"
                  "poll_interval_ms = 123;\n"
                  "log = { level = \"warning\"; format = \"json\"; };\n"
                  "projections = { event_stats = { enabled = false; on_error = \"skip\"; }; };\n");
    char *text = print_to_string(&cfg);

    char header[PATH_BUF + 64];
    snprintf(header, sizeof(header), "# effective configuration (from %s)\n", cfg.source);
    assert_memory_equal(text, header, strlen(header));
    assert_null(strstr(text, "hunter2"));
    assert_non_null(strstr(text, "password=********"));
    assert_non_null(strstr(text, "\nbatch_size = 77;\n"));
    assert_non_null(strstr(text, "target = \"\";"));
    assert_non_null(strstr(text, "event_stats = { enabled = false; on_error = \"skip\"; };"));

    /* What check-config prints can be pasted back as a config file. */
    load_ok(&again, text);
    assert_string_equal(again.listen_channel, cfg.listen_channel);
    assert_int_equal(again.batch_size, 77);
    assert_int_equal(again.poll_interval_ms, 123);
    assert_int_equal(again.log_level, LOG_LEVEL_WARNING);
    assert_int_equal(again.log_format, LOG_FORMAT_JSON);
    assert_null(again.target_conninfo);
    assert_masked_equivalent(cfg.conninfo, again.conninfo);
    for (size_t i = 0; i < N_NAMES; i++) {
        assert_int_equal(again.projections[i].enabled, cfg.projections[i].enabled);
        assert_int_equal(again.projections[i].on_error, cfg.projections[i].on_error);
    }
    free(text);
    config_free(&again);
    config_free(&cfg);
}

static void test_print_defaults(void **state)
{
    (void)state;
    struct config cfg;
    char path[PATH_BUF], err[256];
    snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
    assert_int_equal(config_load_path(&cfg, path, false, names, N_NAMES, err, sizeof(err)), 0);
    char *text = print_to_string(&cfg);
    assert_string_equal(text, "# effective configuration (no file: defaults and environment)\n"
                              "database = { conninfo = \"\"; target = \"\"; };\n"
                              "listen_channel = \"domain_event\";\n"
                              "batch_size = 1000;\n"
                              "poll_interval_ms = 1000;\n"
                              "min_read_interval_ms = 2;\n"
                              "batch_max_bytes = 16777216;\n"
                              "stall_timeout_ms = 20000;\n"
                              "rebuild_on_version_change = true;\n"
                              "projection_dir = \"\";\n"
                              "log = { level = \"info\"; format = \"text\"; };\n"
                              "metrics = { listen = \"\"; };\n"
                              "projections = {\n"
                              "  catalog = { enabled = true; on_error = \"stop\"; };\n"
                              "  event_stats = { enabled = true; on_error = \"stop\"; };\n"
                              "  orders = { enabled = true; on_error = \"stop\"; };\n"
                              "  users = { enabled = true; on_error = \"stop\"; };\n"
                              "};\n");
    free(text);
    config_free(&cfg);
}

/* ---- the password warning ---- */

struct load_args {
    const char *path;
    int rc;
};

static void load_quietly(void *arg)
{
    struct load_args *a = arg;
    struct config cfg;
    char err[256];
    a->rc = config_load(&cfg, a->path, names, N_NAMES, err, sizeof(err));
    if (a->rc == 0)
        config_free(&cfg);
}

static bool warns(const char *text, mode_t mode)
{
    char path[PATH_BUF];
    write_conf_mode(text, mode, path, sizeof(path));
    struct load_args args = {.path = path, .rc = -1};
    char *out = capture_stderr(load_quietly, &args);
    assert_int_equal(args.rc, 0);
    bool warned = strstr(out, "readable by group or others") != NULL;
    if (warned) {
        assert_non_null(strstr(out, path));
        assert_null(strstr(out, "hunter2"));
    }
    free(out);
    return warned;
}

static void test_password_in_readable_file_warns(void **state)
{
    (void)state;
    const char *kv = "database = { conninfo = \"host=h password=hunter2\"; };\n";
    const char *uri = "database = { target = \"postgresql://u:hunter2@h/db\"; };\n";
    const char *none = "database = { conninfo = \"host=h user=u\"; };\n";
    assert_true(warns(kv, 0644));
    assert_true(warns(kv, 0640));
    assert_true(warns(uri, 0604));
    assert_false(warns(kv, 0600));
    assert_false(warns(uri, 0400));
    assert_false(warns(none, 0644));
}

/* ---- the documented example ---- */

static void test_example_config_loads(void **state)
{
    (void)state;
    char path[PATH_BUF], err[1024] = "";
    struct config cfg;
    snprintf(path, sizeof(path), "%s", __FILE__);
    char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(path, sizeof(path), "../../etc/projectord.conf");
    else
        snprintf(slash + 1, sizeof(path) - (size_t)(slash + 1 - path), "../../etc/projectord.conf");
    if (config_load(&cfg, path, names, N_NAMES, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.conninfo, "host=localhost dbname=app user=projectord");
    assert_null(cfg.target_conninfo);
    assert_string_equal(cfg.listen_channel, "domain_event");
    assert_int_equal(cfg.batch_size, 1000);
    assert_int_equal(cfg.poll_interval_ms, 1000);
    assert_int_equal(cfg.log_level, LOG_LEVEL_INFO);
    assert_int_equal(cfg.log_format, LOG_FORMAT_TEXT);
    for (size_t i = 0; i < N_NAMES; i++) {
        assert_true(cfg.projections[i].enabled);
        assert_int_equal(cfg.projections[i].on_error, ON_ERROR_STOP);
    }
    config_free(&cfg);
}

static void test_on_error_names(void **state)
{
    (void)state;
    assert_string_equal(config_on_error_name(ON_ERROR_STOP), "stop");
    assert_string_equal(config_on_error_name(ON_ERROR_SKIP), "skip");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, clear_env, clear_env)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_full_file),
        T(test_empty_file_gives_defaults),
        T(test_empty_strings_mean_unset),
        T(test_bounds_are_inclusive),
        T(test_words_are_case_insensitive),
        T(test_channel_names),
        T(test_optional_default_file_absent),
        T(test_missing_file_given_explicitly),
        T(test_unreadable_paths),
        T(test_syntax_errors),
        T(test_out_of_range),
        T(test_wrong_types),
        T(test_group_scalar_mismatch),
        T(test_unknown_keys),
        T(test_unknown_projection),
        T(test_unknown_projection_none_compiled_in),
        T(test_bad_enum_values),
        T(test_error_is_one_line),
        T(test_bad_conninfo),
        T(test_no_error_buffer),
        T(test_env_overrides_file),
        T(test_env_target),
        T(test_metrics_listen),
        T(test_env_without_file),
        T(test_env_for_every_key),
        T(test_empty_env_is_ignored),
        T(test_env_errors),
        T(test_mask_key_value),
        T(test_mask_uri),
        T(test_mask_quoting_and_other_secrets),
        T(test_mask_edge_cases),
        T(test_print_round_trip),
        T(test_print_defaults),
        T(test_password_in_readable_file_warns),
        T(test_example_config_loads),
        T(test_on_error_names),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
