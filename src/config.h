/*
 * config: the daemon's settings, read from a libconfig file, overridden by
 * the environment, validated against the compiled-in projections.
 *
 * Every key is declared once in config.c's key table (name, type, range,
 * default). Unknown keys and projections are errors, so a typo is never
 * silently ignored. A loaded config owns its strings: config_free() them.
 */
#ifndef PROJECTORD_CONFIG_H
#define PROJECTORD_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/*
 * The default file is the one the install put in its sysconfdir
 * (CMakeLists.txt compiles the path in from GNUInstallDirs:
 * /etc/projectord/projectord.conf for --prefix /usr), so that binary, file
 * and systemd unit agree.
 */
#ifndef PROJECTORD_CONFIG_PATH
#error "PROJECTORD_CONFIG_PATH (the default config file) comes from CMakeLists.txt"
#endif
#define CONFIG_DEFAULT_PATH PROJECTORD_CONFIG_PATH
#define CONFIG_NAME_MAX     64
/*
 * The most projections (compiled-in and declared): projections[] always
 * has room for this many, so a reload that declares a new projection adds
 * its settings without moving the others (runners point at theirs).
 */
#define CONFIG_MAX_PROJECTIONS 64

/* Exit code for configuration errors (sysexits EX_CONFIG). */
#define EXIT_CONFIG 78

enum on_error { ON_ERROR_STOP, ON_ERROR_SKIP };

struct projection_config {
    char name[CONFIG_NAME_MAX];
    bool enabled;
    enum on_error on_error;
};

struct config {
    char *source;          /* file the settings came from, or NULL for defaults only */
    char *conninfo;        /* event store (and default read model) database; NULL: PG* vars */
    char *target_conninfo; /* read-model database; NULL: same as conninfo */
    char *listen_channel;
    char *metrics_listen; /* HOST:PORT of the Prometheus endpoint; NULL: none */
    char *projection_dir; /* declared projections (SPEC §8); NULL: none */
    int batch_size;
    int poll_interval_ms;
    int min_read_interval_ms; /* least time between two reads of new events (window opens) */
    int batch_max_bytes;      /* most payload bytes a fetch returns (always at least one event) */
    int stall_timeout_ms;     /* behind the head with no progress this long: unhealthy */
    bool rebuild_on_version_change; /* rebuild a projection whose compiled-in version changed */
    enum log_level log_level;
    enum log_format log_format;
    size_t n_projections; /* one per projection, registry order (room for CONFIG_MAX_PROJECTIONS) */
    struct projection_config *projections;
};

/*
 * Load the configuration.
 *   path:       file to read; NULL means CONFIG_DEFAULT_PATH, which may be
 *               absent (defaults and environment only, as in containers).
 *   names:      the compiled-in projection names, n of them.
 * Then PROJECTORD_DATABASE_URL and PROJECTORD_LOG_LEVEL override the file.
 * Returns 0, or -1 with one line in err ("FILE:LINE: KEY: problem"); on
 * error cfg holds nothing to free.
 */
int config_load(struct config *cfg, const char *path, const char *const *names, size_t n, char *err,
                size_t errlen);

/*
 * config_load() with the file always named: when path does not exist and
 * must_exist is false, defaults and environment apply (cfg->source NULL).
 * config_load(p) is config_load_path(p ? p : CONFIG_DEFAULT_PATH, p != NULL);
 * this lets tests exercise the optional-file case without touching /etc.
 */
int config_load_path(struct config *cfg, const char *path, bool must_exist,
                     const char *const *names, size_t n, char *err, size_t errlen);

/*
 * Only the projection_dir the file (path; NULL: the default, which may be
 * absent) or PROJECTORD_PROJECTION_DIR names, into *dir (NULL: none; the
 * caller frees): the declared projections are loaded before the file is,
 * since its projections.NAME blocks may name them. Returns 0, or -1 with
 * one line in err (the file does not parse: config_load would say the same).
 */
int config_projection_dir(const char *path, char **dir, char *err, size_t errlen);

/* Release what config_load allocated. */
void config_free(struct config *cfg);

/* The projection's settings, or NULL if the name is not compiled in. */
const struct projection_config *config_projection(const struct config *cfg, const char *name);

/* Print the effective configuration in libconfig syntax, secrets masked. */
void config_print(const struct config *cfg, FILE *out);

/*
 * The same as JSON: {"source": file or null, "settings": {key: value,
 * group: {...}, "projections": {name: {...}}}}, secrets masked, unset
 * strings null. The caller json_decref()s it.
 */
json_t *config_json(const struct config *cfg);

/* The read-model database: database.target, or the event store's when unset. */
static inline const char *config_target(const struct config *cfg)
{
    return cfg->target_conninfo ? cfg->target_conninfo : cfg->conninfo;
}

/*
 * Whether target names a database other than conninfo's, so that the event
 * store and the read model are two databases (each with its own schema
 * check, migrations, transaction). The same text twice is one database.
 */
static inline bool config_apart(const char *conninfo, const char *target)
{
    return target && (!conninfo || strcmp(conninfo, target) != 0);
}

/*
 * A copy of conninfo (key=value or URI) safe to log: the password, if any,
 * replaced by "********". Returns NULL only when out of memory; an
 * unparsable conninfo comes back as "(unparsable conninfo)". Caller frees.
 */
char *config_mask_conninfo(const char *conninfo);

const char *config_on_error_name(enum on_error e);

#endif
