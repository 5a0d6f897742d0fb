/*
 * log: leveled, one-line log records on stderr, as text or JSON.
 *
 * Owns no caller memory. Safe to call before log_setup() (defaults: info,
 * text). Never prints secrets by itself: callers pass masked conninfo.
 */
#ifndef PROJECTORD_LOG_H
#define PROJECTORD_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_setup(enum log_level level, enum log_format format);

/* Parse "error" | "warning" | "info" | "debug"; returns 0, or -1 if unknown. */
int log_level_parse(const char *text, enum log_level *out);
/* Parse "text" | "json"; returns 0, or -1 if unknown. */
int log_format_parse(const char *text, enum log_format *out);
const char *log_level_name(enum log_level level);

bool log_enabled(enum log_level level);

/*
 * What a record is about, besides its message. JSON records carry each
 * field that is set as a key of its own (`projection`, `position`,
 * `sqlstate`); text records only the message, which says it in words.
 * Zero-initialise: NULL strings and has_position false are "not set".
 */
struct log_fields {
    const char *projection;
    const char *sqlstate; /* "" counts as not set */
    int64_t position;
    bool has_position;
};

/*
 * The instance every JSON record names (`instance`), e.g. "host:pid";
 * copied. NULL or never set: records carry none (one-shot commands).
 */
void log_set_instance(const char *instance);

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* log_write with fields (NULL: none). */
void log_write_fields(enum log_level level, const char *file, int line,
                      const struct log_fields *fields, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define log_error(...)   log_write(LOG_LEVEL_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define log_warning(...) log_write(LOG_LEVEL_WARNING, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...)    log_write(LOG_LEVEL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, __FILE__, __LINE__, __VA_ARGS__);                           \
    } while (0)

/* With fields: log_error_f(&(struct log_fields){.projection = name}, "...", ...). */
#define log_error_f(f, ...) log_write_fields(LOG_LEVEL_ERROR, __FILE__, __LINE__, f, __VA_ARGS__)
#define log_warning_f(f, ...)                                                                      \
    log_write_fields(LOG_LEVEL_WARNING, __FILE__, __LINE__, f, __VA_ARGS__)
#define log_info_f(f, ...) log_write_fields(LOG_LEVEL_INFO, __FILE__, __LINE__, f, __VA_ARGS__)

#endif
