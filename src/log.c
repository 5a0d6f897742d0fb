/*
 * log: leveled records on stderr, one line each, as text or JSON. A record
 * is built in a stack buffer no longer than PIPE_BUF and sent with a single
 * write(2), so lines from several processes sharing stderr (instances under
 * one supervisor, a container runtime) never interleave. Messages are made
 * valid UTF-8 and cut with "..." when too long; JSON is built by jansson so
 * escaping is never done by hand. Nothing is allocated except by jansson.
 * A JSON record also carries what it is about (struct log_fields) and the
 * instance as keys of their own, so a log pipeline can filter on them
 * without parsing the message; the text form is the message alone, which
 * says the same in words.
 */
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Writes to a pipe up to PIPE_BUF bytes are atomic; stay within that. */
#define LINE_MAX_BYTES PIPE_BUF
/* Room left for the timestamp, level, location and JSON escaping. */
#define MSG_MAX_BYTES (LINE_MAX_BYTES / 2)
#define ELLIPSIS      "..."

static enum log_level current_level = LOG_LEVEL_INFO;
static enum log_format current_format = LOG_FORMAT_TEXT;
static char instance[256]; /* "" until log_set_instance */

static const char *const level_names[] = {"error", "warning", "info", "debug"};
static const char *const level_labels[] = {"ERROR", "WARNING", "INFO", "DEBUG"};
#define N_LEVELS (sizeof(level_names) / sizeof(level_names[0]))

void log_setup(enum log_level level, enum log_format format)
{
    current_level = level;
    current_format = format;
}

void log_set_instance(const char *name)
{
    snprintf(instance, sizeof instance, "%s", name ? name : "");
}

int log_level_parse(const char *text, enum log_level *out)
{
    if (text == NULL)
        return -1;
    if (strcasecmp(text, "warn") == 0) {
        *out = LOG_LEVEL_WARNING;
        return 0;
    }
    for (size_t i = 0; i < N_LEVELS; i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *text, enum log_format *out)
{
    if (text != NULL && strcasecmp(text, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (text != NULL && strcasecmp(text, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

const char *log_level_name(enum log_level level)
{
    return (size_t)level < N_LEVELS ? level_names[level] : "unknown";
}

bool log_enabled(enum log_level level)
{
    return level <= current_level;
}

/* Length of the valid UTF-8 sequence at s, or 0 if it is not one (the same
 * rules jansson applies: no overlongs, surrogates or code points > U+10FFFF). */
static size_t utf8_sequence_length(const unsigned char *s)
{
    size_t n;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++) /* stops at the terminating NUL too */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/*
 * Make msg one clean line: invalid UTF-8 (from data, or from cutting a long
 * message mid-character) becomes '?', trailing newlines (libpq's messages end
 * with one) go, and in text format other control characters become spaces so
 * a record is always exactly one line. JSON keeps them: jansson escapes them.
 */
static void clean_message(char *msg, bool keep_controls)
{
    unsigned char *s = (unsigned char *)msg;
    size_t len = strlen(msg);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' '))
        s[--len] = '\0';
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence_length(s + i);
        if (n == 0) {
            s[i] = '?';
            n = 1;
        } else if (!keep_controls && n == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
            s[i] = ' ';
        }
        i += n;
    }
}

/* End msg with "..." so that it fits in size bytes; msg is at least that long. */
static void shorten(char *msg, size_t size)
{
    strcpy(msg + size - sizeof(ELLIPSIS), ELLIPSIS);
}

static void format_message(char *msg, size_t size, const char *fmt, va_list ap)
{
    int n = vsnprintf(msg, size, fmt, ap);
    if (n < 0)
        snprintf(msg, size, "(unformattable log message: %s)", fmt);
    else if ((size_t)n >= size)
        shorten(msg, size);
}

static void format_time(char *buf, size_t size)
{
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03ldZ", now.tv_nsec / 1000000L);
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

static size_t text_line(char *line, size_t size, const char *ts, enum log_level level,
                        const char *file, int lineno, const char *msg)
{
    int n;
    if (level == LOG_LEVEL_DEBUG && file != NULL)
        n = snprintf(line, size, "%s %s %s:%d: %s\n", ts, level_labels[level], base_name(file),
                     lineno, msg);
    else
        n = snprintf(line, size, "%s %s %s\n", ts, level_labels[level], msg);
    if (n < 0)
        return 0;
    if ((size_t)n >= size) { /* only with an absurd file name; still end the line */
        line[size - 2] = '\n';
        return size - 1;
    }
    return (size_t)n;
}

/*
 * The keys that say what the record is about (log.h), where set. A value
 * jansson refuses (not UTF-8) is left out rather than losing the record.
 */
static void add_fields(json_t *obj, const struct log_fields *f)
{
    if (instance[0])
        json_object_set_new(obj, "instance", json_string(instance));
    if (!f)
        return;
    if (f->projection)
        json_object_set_new(obj, "projection", json_string(f->projection));
    if (f->has_position)
        json_object_set_new(obj, "position", json_integer((json_int_t)f->position));
    if (f->sqlstate && f->sqlstate[0])
        json_object_set_new(obj, "sqlstate", json_string(f->sqlstate));
}

/* Dump the record into line; 0 if it does not fit or jansson failed. */
static size_t json_dump_record(char *line, size_t size, const char *ts, enum log_level level,
                               const char *file, int lineno, const struct log_fields *fields,
                               const char *msg)
{
    json_t *obj;
    if (level == LOG_LEVEL_DEBUG && file != NULL)
        obj = json_pack("{s:s, s:s, s:s, s:s, s:i}", "ts", ts, "level", level_names[level], "msg",
                        msg, "file", base_name(file), "line", lineno);
    else
        obj = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", level_names[level], "msg", msg);
    if (obj == NULL)
        return 0;
    add_fields(obj, fields);
    size_t n = json_dumpb(obj, line, size - 1, JSON_COMPACT);
    json_decref(obj);
    if (n == 0 || n > size - 1)
        return 0;
    line[n] = '\n';
    return n + 1;
}

/* Escaping can make a message up to six times longer: shorten until it fits. */
static size_t json_line(char *line, size_t size, const char *ts, enum log_level level,
                        const char *file, int lineno, const struct log_fields *fields, char *msg)
{
    for (size_t limit = MSG_MAX_BYTES;; limit /= 2) {
        size_t n = json_dump_record(line, size, ts, level, file, lineno, fields, msg);
        if (n > 0 || limit < 4 * sizeof(ELLIPSIS))
            return n;
        if (strlen(msg) >= limit / 2)
            shorten(msg, limit / 2);
        clean_message(msg, true);
    }
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nowhere left to report it */
        buf += n;
        len -= (size_t)n;
    }
}

static void log_vwrite(enum log_level level, const char *file, int line,
                       const struct log_fields *fields, const char *fmt, va_list ap)
{
    int saved_errno = errno; /* callers log, then look at errno */
    char msg[MSG_MAX_BYTES];
    char ts[40];
    char buf[LINE_MAX_BYTES];

    format_message(msg, sizeof(msg), fmt, ap);
    format_time(ts, sizeof(ts));
    bool json = current_format == LOG_FORMAT_JSON;
    clean_message(msg, json);
    size_t len = json ? json_line(buf, sizeof(buf), ts, level, file, line, fields, msg)
                      : text_line(buf, sizeof(buf), ts, level, file, line, msg);
    write_all(buf, len);
    errno = saved_errno;
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    if ((size_t)level >= N_LEVELS || !log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, file, line, NULL, fmt, ap);
    va_end(ap);
}

void log_write_fields(enum log_level level, const char *file, int line,
                      const struct log_fields *fields, const char *fmt, ...)
{
    if ((size_t)level >= N_LEVELS || !log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, file, line, fields, fmt, ap);
    va_end(ap);
}
