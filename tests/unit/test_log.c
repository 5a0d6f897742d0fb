/*
 * Unit tests for log: parsing of levels and formats, filtering, and the
 * records themselves, captured from stderr: the text layout with a UTC
 * timestamp, JSON that jansson parses back to the same message, one line per
 * record whatever the message holds, and the length limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* ---- capturing stderr ---- */

static FILE *capture_file;
static int saved_stderr = -1;

static void capture_start(void)
{
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

/* What was written since capture_start(); caller frees. */
static char *capture_end(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    off_t size = lseek(fileno(capture_file), 0, SEEK_END);
    assert_true(size >= 0);
    char *buf = calloc(1, (size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(capture_file), buf, (size_t)size, 0), size);
    fclose(capture_file);
    return buf;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == c;
    return n;
}

static void assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("'%s' does not match /%s/", text, pattern);
}

/* Parse one JSON record line; the caller json_decref()s it. */
static json_t *parse_record(const char *line)
{
    json_error_t error;
    assert_int_equal(count_char(line, '\n'), 1);
    assert_int_equal(line[strlen(line) - 1], '\n');
    json_t *obj = json_loads(line, 0, &error);
    if (obj == NULL)
        fail_msg("not JSON (%s): %s", error.text, line);
    assert_true(json_is_object(obj));
    return obj;
}

static int reset_log(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
    return 0;
}

/* ---- parsing ---- */

/* Must run first: it checks the state before any log_setup(). */
static void test_defaults_before_setup(void **state)
{
    (void)state;
    assert_true(log_enabled(LOG_LEVEL_ERROR));
    assert_true(log_enabled(LOG_LEVEL_INFO));
    assert_false(log_enabled(LOG_LEVEL_DEBUG));
    capture_start();
    log_info("plain %s", "text");
    char *out = capture_end();
    assert_matches(out, "^" TS_RE " INFO plain text\n$");
    free(out);
}

static void test_level_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum log_level level;
    } ok[] = {
        {"error", LOG_LEVEL_ERROR},  {"warning", LOG_LEVEL_WARNING}, {"warn", LOG_LEVEL_WARNING},
        {"info", LOG_LEVEL_INFO},    {"debug", LOG_LEVEL_DEBUG},     {"ERROR", LOG_LEVEL_ERROR},
        {"Warn", LOG_LEVEL_WARNING}, {"DeBuG", LOG_LEVEL_DEBUG},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        enum log_level level = ok[i].level == LOG_LEVEL_DEBUG ? LOG_LEVEL_ERROR : LOG_LEVEL_DEBUG;
        assert_int_equal(log_level_parse(ok[i].text, &level), 0);
        assert_int_equal(level, ok[i].level);
    }
    const char *bad[] = {"", "verbose", "errors", "inf", " info", "warn ", "0", NULL};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum log_level level = LOG_LEVEL_INFO;
        assert_int_equal(log_level_parse(bad[i], &level), -1);
    }
}

static void test_level_names_round_trip(void **state)
{
    (void)state;
    const char *expected[] = {"error", "warning", "info", "debug"};
    for (int l = LOG_LEVEL_ERROR; l <= LOG_LEVEL_DEBUG; l++) {
        enum log_level back;
        assert_string_equal(log_level_name((enum log_level)l), expected[l]);
        assert_int_equal(log_level_parse(log_level_name((enum log_level)l), &back), 0);
        assert_int_equal(back, l);
    }
}

static void test_format_parse(void **state)
{
    (void)state;
    enum log_format f = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("TEXT", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("JSON", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("xml", &f), -1);
    assert_int_equal(log_format_parse("", &f), -1);
    assert_int_equal(log_format_parse(NULL, &f), -1);
}

/* ---- filtering ---- */

static void test_enabled_follows_setup(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_WARNING, LOG_FORMAT_TEXT);
    assert_true(log_enabled(LOG_LEVEL_ERROR));
    assert_true(log_enabled(LOG_LEVEL_WARNING));
    assert_false(log_enabled(LOG_LEVEL_INFO));
    assert_false(log_enabled(LOG_LEVEL_DEBUG));
    log_setup(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    assert_true(log_enabled(LOG_LEVEL_DEBUG));
    log_setup(LOG_LEVEL_ERROR, LOG_FORMAT_TEXT);
    assert_false(log_enabled(LOG_LEVEL_WARNING));
}

static void test_records_below_level_are_dropped(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_WARNING, LOG_FORMAT_TEXT);
    capture_start();
    log_debug("d");
    log_info("i");
    log_warning("w");
    log_error("e");
    char *out = capture_end();
    assert_matches(out, "^" TS_RE " WARNING w\n" TS_RE " ERROR e\n$");
    free(out);
}

/* ---- text records ---- */

static void test_text_timestamp_is_utc_now(void **state)
{
    (void)state;
    setenv("TZ", "EST5EDT", 1); /* the record must not follow the local zone */
    tzset();
    time_t before = time(NULL);
    capture_start();
    log_error("disk %s at %d%%", "full", 99);
    char *out = capture_end();
    time_t after = time(NULL);
    assert_matches(out, "^" TS_RE " ERROR disk full at 99%\n$");

    struct tm tm = {0};
    assert_int_equal(sscanf(out, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec),
                     6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t logged = timegm(&tm);
    /* time() reads the coarse clock, which may be a tick behind the log's. */
    assert_true(logged >= before - 1 && logged <= after + 1);
    free(out);
    unsetenv("TZ");
    tzset();
}

static void test_text_debug_has_location(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    char pattern[512];
    capture_start();
    int line = __LINE__ + 1;
    log_debug("x=%d", 5);
    log_info("no location");
    char *out = capture_end();
    snprintf(pattern, sizeof(pattern),
             "^" TS_RE " DEBUG test_log\\.c:%d: x=5\n" TS_RE " INFO no location\n$", line);
    assert_matches(out, pattern);
    free(out);
}

static void test_text_is_one_line(void **state)
{
    (void)state;
    capture_start();
    log_error("query failed: ERROR:  boom\nDETAIL:  why\tnot\n");
    char *out = capture_end();
    assert_matches(out, "^" TS_RE " ERROR query failed: ERROR:  boom DETAIL:  why not\n$");
    free(out);
}

static void test_text_long_message_truncated(void **state)
{
    (void)state;
    char *big = malloc(20000);
    assert_non_null(big);
    memset(big, 'x', 19999);
    big[19999] = '\0';
    capture_start();
    log_warning("%s", big);
    char *out = capture_end();
    size_t len = strlen(out);
    assert_true(len <= PIPE_BUF); /* one atomic write to a pipe */
    assert_true(len > 1000);      /* but not needlessly short */
    assert_int_equal(count_char(out, '\n'), 1);
    assert_string_equal(out + len - 5, "x...\n");
    free(out);
    free(big);
}

static void test_text_cut_keeps_utf8_valid(void **state)
{
    (void)state;
    /* 'é' is two bytes; enough of them that the cut lands on one. */
    char big[9001];
    for (size_t i = 0; i + 2 < sizeof(big); i += 2)
        memcpy(big + i, "\xc3\xa9", 2);
    big[sizeof(big) - 2] = '\0';
    big[sizeof(big) - 1] = '\0';
    for (int shift = 0; shift < 2; shift++) {
        capture_start();
        log_error("%.*s%s", shift, "a", big);
        char *out = capture_end();
        json_t *s = json_string(out); /* jansson validates UTF-8 */
        assert_non_null(s);
        json_decref(s);
        free(out);
    }
}

/* ---- JSON records ---- */

static void test_json_record(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    const char *msg = "quote \" backslash \\ tab \t newline \n unicode é ✓ {\"a\":1}";
    capture_start();
    log_error("%s", msg);
    char *out = capture_end();
    json_t *obj = parse_record(out);
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), msg);
    assert_matches(json_string_value(json_object_get(obj, "ts")), "^" TS_RE "$");
    assert_null(json_object_get(obj, "file"));
    assert_int_equal(json_object_size(obj), 3);
    assert_memory_equal(out, "{\"ts\":", 6); /* ts first: sorts and greps well */
    json_decref(obj);
    free(out);
}

static void test_json_levels_and_debug_location(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start();
    int line = __LINE__ + 1;
    log_debug("dbg");
    char *out = capture_end();
    json_t *obj = parse_record(out);
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "debug");
    assert_string_equal(json_string_value(json_object_get(obj, "file")), "test_log.c");
    assert_int_equal(json_integer_value(json_object_get(obj, "line")), line);
    json_decref(obj);
    free(out);

    capture_start();
    log_warning("w");
    out = capture_end();
    obj = parse_record(out);
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "warning");
    json_decref(obj);
    free(out);
}

static void test_json_invalid_utf8_still_valid_json(void **state)
{
    (void)state;
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture_start();
    log_info("bytes \xff\xfe and \xc3 end");
    char *out = capture_end();
    json_t *obj = parse_record(out);
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), "bytes ?? and ? end");
    json_decref(obj);
    free(out);
}

static void test_json_escape_heavy_message_fits(void **state)
{
    (void)state;
    /* Each \x01 becomes six characters in JSON: the line must still fit. */
    char big[5000];
    memset(big, '\x01', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    capture_start();
    log_info("%s", big);
    char *out = capture_end();
    assert_true(strlen(out) <= PIPE_BUF);
    json_t *obj = parse_record(out);
    const char *msg = json_string_value(json_object_get(obj, "msg"));
    size_t len = strlen(msg);
    assert_true(len > 100);
    assert_string_equal(msg + len - 3, "...");
    assert_int_equal(msg[0], '\x01');
    json_decref(obj);
    free(out);
}

/* Fields are keys of their own in JSON; the text form is the message alone. */
static void test_fields(void **state)
{
    (void)state;
    struct log_fields f = {
        .projection = "users", .sqlstate = "40P01", .position = 42, .has_position = true};
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_JSON);
    log_set_instance("host:123");
    capture_start();
    log_error_f(&f, "users: deadlock");
    char *out = capture_end();
    json_t *obj = parse_record(out);
    assert_string_equal(json_string_value(json_object_get(obj, "projection")), "users");
    assert_string_equal(json_string_value(json_object_get(obj, "sqlstate")), "40P01");
    assert_int_equal(json_integer_value(json_object_get(obj, "position")), 42);
    assert_string_equal(json_string_value(json_object_get(obj, "instance")), "host:123");
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), "users: deadlock");
    json_decref(obj);
    free(out);

    /* Unset fields are absent; an empty SQLSTATE is none; plain calls carry the instance. */
    capture_start();
    log_info_f(&(struct log_fields){.projection = "orders", .sqlstate = ""}, "x");
    out = capture_end();
    obj = parse_record(out);
    assert_null(json_object_get(obj, "position"));
    assert_null(json_object_get(obj, "sqlstate"));
    assert_int_equal(json_object_size(obj), 5); /* ts level msg instance projection */
    json_decref(obj);
    free(out);
    capture_start();
    log_info("y");
    out = capture_end();
    obj = parse_record(out);
    assert_int_equal(json_object_size(obj), 4);
    json_decref(obj);
    free(out);

    log_set_instance(NULL);
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
    capture_start();
    log_warning_f(&f, "users: text");
    out = capture_end();
    assert_matches(out, "^" TS_RE " WARNING users: text\n$");
    free(out);
}

static void test_errno_preserved(void **state)
{
    (void)state;
    capture_start();
    close(STDERR_FILENO); /* make write(2) fail with EBADF */
    errno = ENOENT;
    log_error("after a failed open");
    int after = errno;
    char *out = capture_end();
    assert_int_equal(after, ENOENT);
    free(out);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, reset_log, reset_log)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_before_setup),
        T(test_level_parse),
        T(test_level_names_round_trip),
        T(test_format_parse),
        T(test_enabled_follows_setup),
        T(test_records_below_level_are_dropped),
        T(test_text_timestamp_is_utc_now),
        T(test_text_debug_has_location),
        T(test_text_is_one_line),
        T(test_text_long_message_truncated),
        T(test_text_cut_keeps_utf8_valid),
        T(test_json_record),
        T(test_json_levels_and_debug_location),
        T(test_json_invalid_utf8_still_valid_json),
        T(test_json_escape_heavy_message_fits),
        T(test_fields),
        T(test_errno_preserved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
