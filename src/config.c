/*
 * config: reads the libconfig file, applies the environment overrides and
 * validates everything against one declarative table of keys (name, type,
 * range, default, parser), in the manner of pgbouncer. The same table fills
 * in the defaults, walks the file, prints the effective configuration and
 * frees it, so a key is added in exactly one place. Every problem becomes a
 * single "FILE:LINE: KEY: problem" line; the loader stops at the first one,
 * since a daemon that refuses to start needs one clear reason, not a list.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libconfig.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "metrics.h"

enum key_type {
    KEY_TEXT,        /* owned char *; an empty value is stored as NULL (unset) */
    KEY_ENUM,        /* a word, stored by the key's parse function */
    KEY_INT,         /* int within [min, max] */
    KEY_BOOL,        /* bool */
    KEY_GROUP,       /* fixed sub-keys writing into the same struct */
    KEY_PROJECTIONS, /* one group per compiled-in projection */
};

struct key {
    const char *name;
    enum key_type type;
    size_t offset;        /* of the value in struct config or struct projection_config */
    const char *def_text; /* KEY_TEXT, KEY_ENUM: default */
    int def_int;          /* KEY_INT, KEY_BOOL: default */
    int min, max;         /* KEY_INT */
    const char *expect;   /* KEY_TEXT: "must be <expect>" */
    bool secret;          /* KEY_TEXT: masked when printed, never echoed in errors */
    /* KEY_TEXT: whether text is acceptable; may explain why not in why. */
    bool (*valid)(const char *text, char *why, size_t whylen);
    const char *what;    /* KEY_ENUM: "unknown <what> 'x' (<choices>)" */
    const char *choices; /* KEY_ENUM: the accepted words, for messages */
    int (*parse)(const char *text, void *dest);
    const char *(*name_of)(const void *dest);
    const struct key *children; /* KEY_GROUP */
};

/* What the loader needs to word an error. */
struct loader {
    struct config *cfg;
    const char *path; /* for settings libconfig read without a file name */
    char *err;
    size_t errlen;
    bool exposed; /* a password in a file others can read */
};

static bool channel_valid(const char *text, char *why, size_t whylen);
static bool address_valid(const char *text, char *why, size_t whylen);
static bool conninfo_valid(const char *text, char *why, size_t whylen);
static int parse_level(const char *text, void *dest);
static const char *level_name(const void *dest);
static int parse_format(const char *text, void *dest);
static const char *format_name(const void *dest);
static int parse_on_error(const char *text, void *dest);
static const char *on_error_name(const void *dest);

#define AT(field)       offsetof(struct config, field)
#define PJ(field)       offsetof(struct projection_config, field)
#define CONNINFO_EXPECT "a libpq connection string (key=value pairs or a postgresql:// URI)"

static const struct key database_keys[] = {
    {.name = "conninfo",
     .type = KEY_TEXT,
     .offset = AT(conninfo),
     .expect = CONNINFO_EXPECT,
     .secret = true,
     .valid = conninfo_valid},
    {.name = "target",
     .type = KEY_TEXT,
     .offset = AT(target_conninfo),
     .expect = CONNINFO_EXPECT,
     .secret = true,
     .valid = conninfo_valid},
    {0},
};

static const struct key log_keys[] = {
    {.name = "level",
     .type = KEY_ENUM,
     .offset = AT(log_level),
     .def_text = "info",
     .what = "log level",
     .choices = "error, warning, info, debug",
     .parse = parse_level,
     .name_of = level_name},
    {.name = "format",
     .type = KEY_ENUM,
     .offset = AT(log_format),
     .def_text = "text",
     .what = "log format",
     .choices = "text, json",
     .parse = parse_format,
     .name_of = format_name},
    {0},
};

static const struct key metrics_keys[] = {
    {.name = "listen",
     .type = KEY_TEXT,
     .offset = AT(metrics_listen),
     .valid = address_valid,
     .expect = "HOST:PORT, e.g. \"127.0.0.1:9187\" or \"[::1]:9187\""},
    {0},
};

static const struct key top_keys[] = {
    {.name = "database", .type = KEY_GROUP, .children = database_keys},
    {.name = "listen_channel",
     .type = KEY_TEXT,
     .offset = AT(listen_channel),
     .def_text = "domain_event",
     .valid = channel_valid,
     .expect = "a lowercase identifier ([a-z_][a-z0-9_$]*) of at most 63 characters"},
    {.name = "batch_size",
     .type = KEY_INT,
     .offset = AT(batch_size),
     .def_int = 1000,
     .min = 1,
     .max = 100000},
    {.name = "poll_interval_ms",
     .type = KEY_INT,
     .offset = AT(poll_interval_ms),
     .def_int = 1000,
     .min = 10,
     .max = 3600000},
    {.name = "min_read_interval_ms",
     .type = KEY_INT,
     .offset = AT(min_read_interval_ms),
     .def_int = 2,
     .min = 0,
     .max = 1000},
    {.name = "batch_max_bytes",
     .type = KEY_INT,
     .offset = AT(batch_max_bytes),
     .def_int = 16 << 20,
     .min = 1024,
     .max = 1 << 30},
    {.name = "stall_timeout_ms",
     .type = KEY_INT,
     .offset = AT(stall_timeout_ms),
     .def_int = 20000,
     .min = 1000,
     .max = 3600000},
    {.name = "rebuild_on_version_change",
     .type = KEY_BOOL,
     .offset = AT(rebuild_on_version_change),
     .def_int = true},
    {.name = "projection_dir",
     .type = KEY_TEXT,
     .offset = AT(projection_dir),
     .expect = "a directory of declared projections (*.conf)"},
    {.name = "log", .type = KEY_GROUP, .children = log_keys},
    {.name = "metrics", .type = KEY_GROUP, .children = metrics_keys},
    {.name = "projections", .type = KEY_PROJECTIONS},
    {0},
};

static const struct key projection_keys[] = {
    {.name = "enabled", .type = KEY_BOOL, .offset = PJ(enabled), .def_int = true},
    {.name = "on_error",
     .type = KEY_ENUM,
     .offset = PJ(on_error),
     .def_text = "stop",
     .what = "on_error action",
     .choices = "stop, skip",
     .parse = parse_on_error,
     .name_of = on_error_name},
    {0},
};

/* ---- value parsers named in the table ---- */

static bool channel_valid(const char *text, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    size_t len = strlen(text);
    if (len == 0 || len > 63 || strchr("abcdefghijklmnopqrstuvwxyz_", text[0]) == NULL)
        return false;
    return strspn(text, "abcdefghijklmnopqrstuvwxyz0123456789_$") == len;
}

static bool address_valid(const char *text, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    char host[256], port[8];
    return text[0] == '\0' ||
           metrics_parse_address(text, host, sizeof host, port, sizeof port) == 0;
}

static bool looks_like_uri(const char *text)
{
    return strncmp(text, "postgresql://", 13) == 0 || strncmp(text, "postgres://", 11) == 0;
}

/* Whether text mentions a password keyword (password, sslpassword), in any case. */
static bool mentions_password(const char *text)
{
    for (const char *p = text; *p != '\0'; p++)
        if (strncasecmp(p, "password", 8) == 0)
            return true;
    return false;
}

/*
 * Copy libpq's message into dst with every quoted word but "=" masked: the
 * word libpq stumbled on may be part of a password ('password=two words'
 * gives 'missing "=" after "words"').
 */
static void copy_masked(char *dst, size_t size, const char *msg)
{
    size_t n = 0;
    for (const char *p = msg; *p != '\0' && n + 1 < size; p++) {
        const char *end = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (end == NULL) {
            dst[n++] = *p;
            continue;
        }
        const char *word = end == p + 2 && p[1] == '=' ? "\"=\"" : "\"***\"";
        for (const char *m = word; *m != '\0' && n + 1 < size; m++)
            dst[n++] = *m;
        p = end;
    }
    dst[n] = '\0';
}

/*
 * libpq's message is passed on for key=value strings ('invalid connection
 * option "hots"'), with its quoted words masked when the string holds a
 * password, but not for URIs, where it may quote the whole URI, password
 * included.
 */
static bool conninfo_valid(const char *text, char *why, size_t whylen)
{
    char *msg = NULL;
    if (text[0] == '\0')
        return true;
    PQconninfoOption *opts = PQconninfoParse(text, &msg);
    if (opts != NULL) {
        PQconninfoFree(opts);
        return true;
    }
    if (msg != NULL && !looks_like_uri(text) && whylen > 2) {
        msg[strcspn(msg, "\n")] = '\0';
        snprintf(why, whylen, ": ");
        if (mentions_password(text))
            copy_masked(why + 2, whylen - 2, msg);
        else
            snprintf(why + 2, whylen - 2, "%s", msg);
    }
    PQfreemem(msg);
    return false;
}

static int parse_level(const char *text, void *dest)
{
    return log_level_parse(text, dest);
}

static const char *level_name(const void *dest)
{
    return log_level_name(*(const enum log_level *)dest);
}

static int parse_format(const char *text, void *dest)
{
    return log_format_parse(text, dest);
}

static const char *format_name(const void *dest)
{
    return *(const enum log_format *)dest == LOG_FORMAT_JSON ? "json" : "text";
}

static int parse_on_error(const char *text, void *dest)
{
    enum on_error *out = dest;
    if (strcasecmp(text, "stop") == 0)
        *out = ON_ERROR_STOP;
    else if (strcasecmp(text, "skip") == 0)
        *out = ON_ERROR_SKIP;
    else
        return -1;
    return 0;
}

static const char *on_error_name(const void *dest)
{
    return config_on_error_name(*(const enum on_error *)dest);
}

const char *config_on_error_name(enum on_error e)
{
    return e == ON_ERROR_SKIP ? "skip" : "stop";
}

/* ---- error reporting ---- */

/* Format the one error line; control characters from values become '?'. */
static int report(struct loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int report(struct loader *ld, const char *fmt, ...)
{
    va_list ap;
    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(ld->err, ld->errlen, fmt, ap);
    va_end(ap);
    for (char *p = ld->err; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return -1;
}

/* The dotted path of a setting, e.g. "projections.orders.on_error". */
static void setting_path(const config_setting_t *s, char *buf, size_t size)
{
    const config_setting_t *parent = config_setting_parent(s);
    const char *name = config_setting_name(s) != NULL ? config_setting_name(s) : "?";
    if (parent == NULL || config_setting_is_root(parent)) {
        snprintf(buf, size, "%s", name);
        return;
    }
    setting_path(parent, buf, size);
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, ".%s", name);
}

static int fail(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
    char key[256], problem[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof(problem), fmt, ap);
    va_end(ap);
    setting_path(s, key, sizeof(key));
    const char *file = config_setting_source_file(s);
    return report(ld, "%s:%u: %s: %s", file != NULL ? file : ld->path,
                  (unsigned)config_setting_source_line(s), key, problem);
}

static const char *type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
        return "an integer";
    case CONFIG_TYPE_INT64:
        return "a 64-bit integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "an unknown type";
    }
}

/* What a valid value of k looks like: the "must be ..." of messages. */
static const char *describe(const struct key *k, char *buf, size_t size)
{
    switch (k->type) {
    case KEY_TEXT:
        return k->expect;
    case KEY_ENUM:
        snprintf(buf, size, "one of %s", k->choices);
        return buf;
    case KEY_INT:
        snprintf(buf, size, "an integer between %d and %d", k->min, k->max);
        return buf;
    case KEY_BOOL:
        return "true or false";
    case KEY_GROUP:
    case KEY_PROJECTIONS:
        break;
    }
    return "a group { ... }";
}

static int fail_type(struct loader *ld, const config_setting_t *s, const struct key *k)
{
    char buf[128];
    return fail(ld, s, "must be %s (got %s)", describe(k, buf, sizeof(buf)), type_name(s));
}

/* "a, b, c" from a key table, for "unknown key" messages. */
static void join_keys(const struct key *keys, char *buf, size_t size)
{
    buf[0] = '\0';
    for (const struct key *k = keys; k->name != NULL; k++) {
        size_t len = strlen(buf);
        snprintf(buf + len, size - len, "%s%s", k == keys ? "" : ", ", k->name);
    }
}

static void join_projections(const struct config *cfg, char *buf, size_t size)
{
    snprintf(buf, size, "%s", cfg->n_projections == 0 ? "none" : "");
    for (size_t i = 0; i < cfg->n_projections; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, size - len, "%s%s", i == 0 ? "" : ", ", cfg->projections[i].name);
    }
}

/* ---- storing values ---- */

static void *field(void *base, const struct key *k)
{
    return (char *)base + k->offset;
}

static const void *cfield(const void *base, const struct key *k)
{
    return (const char *)base + k->offset;
}

/* Replace an owned string; "" means unset. Returns -1 when out of memory. */
static int set_text(char **dest, const char *text)
{
    char *copy = NULL;
    if (text != NULL && text[0] != '\0' && (copy = strdup(text)) == NULL)
        return -1;
    free(*dest);
    *dest = copy;
    return 0;
}

static int set_defaults(const struct key *keys, void *base)
{
    for (const struct key *k = keys; k->name != NULL; k++) {
        void *dest = field(base, k);
        int rc = 0;
        if (k->type == KEY_TEXT)
            rc = set_text(dest, k->def_text);
        else if (k->type == KEY_ENUM)
            rc = k->parse(k->def_text, dest);
        else if (k->type == KEY_INT)
            *(int *)dest = k->def_int;
        else if (k->type == KEY_BOOL)
            *(bool *)dest = k->def_int != 0;
        else if (k->type == KEY_GROUP)
            rc = set_defaults(k->children, base);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static void free_keys(const struct key *keys, void *base)
{
    for (const struct key *k = keys; k->name != NULL; k++) {
        if (k->type == KEY_TEXT) {
            char **p = field(base, k);
            free(*p);
            *p = NULL;
        } else if (k->type == KEY_GROUP) {
            free_keys(k->children, base);
        }
    }
}

/* Every compiled-in projection gets an entry, in registry order. */
static int init_defaults(struct loader *ld, const char *const *names, size_t n)
{
    struct config *cfg = ld->cfg;
    if (set_defaults(top_keys, cfg) != 0)
        return report(ld, "out of memory");
    if (n > CONFIG_MAX_PROJECTIONS)
        return report(ld, "more than %d projections", CONFIG_MAX_PROJECTIONS);
    if ((cfg->projections = calloc(CONFIG_MAX_PROJECTIONS, sizeof(*cfg->projections))) == NULL)
        return report(ld, "out of memory");
    cfg->n_projections = n;
    for (size_t i = 0; i < n; i++) {
        struct projection_config *p = &cfg->projections[i];
        if (strlen(names[i]) >= sizeof(p->name))
            return report(ld, "projection name too long: %s", names[i]);
        strcpy(p->name, names[i]);
        if (set_defaults(projection_keys, p) != 0)
            return report(ld, "out of memory");
    }
    return 0;
}

/* ---- applying the file ---- */

static int apply_group(struct loader *ld, const config_setting_t *group, const struct key *keys,
                       void *base);

/*
 * Whether text is a valid value of text key k; if not, problem says why
 * ("must be ..."), for the file's and the environment's messages alike.
 */
static bool text_valid(const struct key *k, const char *text, char *problem, size_t size)
{
    char why[256] = "";
    if (k->valid == NULL || k->valid(text, why, sizeof(why)))
        return true;
    if (k->secret) /* the value may hold a password: describe, never echo */
        snprintf(problem, size, "must be %s%s", k->expect, why);
    else
        snprintf(problem, size, "must be %s (got '%s')", k->expect, text);
    return false;
}

static int apply_text(struct loader *ld, const config_setting_t *s, const struct key *k, void *dest)
{
    const char *text = config_setting_get_string(s);
    char problem[768];
    if (!text_valid(k, text, problem, sizeof(problem)))
        return fail(ld, s, "%s", problem);
    if (set_text(dest, text) != 0)
        return fail(ld, s, "out of memory");
    return 0;
}

static int apply_scalar(struct loader *ld, const config_setting_t *s, const struct key *k,
                        void *dest)
{
    static const int wanted[] = {[KEY_TEXT] = CONFIG_TYPE_STRING,
                                 [KEY_ENUM] = CONFIG_TYPE_STRING,
                                 [KEY_INT] = CONFIG_TYPE_INT,
                                 [KEY_BOOL] = CONFIG_TYPE_BOOL};
    if (config_setting_type(s) != wanted[k->type])
        return fail_type(ld, s, k);
    if (k->type == KEY_TEXT)
        return apply_text(ld, s, k, dest);
    if (k->type == KEY_BOOL) {
        *(bool *)dest = config_setting_get_bool(s) != 0;
        return 0;
    }
    if (k->type == KEY_ENUM) {
        const char *text = config_setting_get_string(s);
        if (k->parse(text, dest) != 0)
            return fail(ld, s, "unknown %s '%s' (%s)", k->what, text, k->choices);
        return 0;
    }
    int v = config_setting_get_int(s);
    if (v < k->min || v > k->max)
        return fail(ld, s, "must be an integer between %d and %d (got %d)", k->min, k->max, v);
    *(int *)dest = v;
    return 0;
}

static int apply_projections(struct loader *ld, const config_setting_t *group)
{
    struct config *cfg = ld->cfg;
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        struct projection_config *p =
            (struct projection_config *)config_projection(cfg, config_setting_name(s));
        char names[512];
        if (p == NULL) {
            join_projections(cfg, names, sizeof(names));
            return fail(ld, s, "unknown projection (compiled in or declared: %s)", names);
        }
        if (config_setting_type(s) != CONFIG_TYPE_GROUP)
            return fail(ld, s, "must be a group { enabled = ...; on_error = ...; } (got %s)",
                        type_name(s));
        if (apply_group(ld, s, projection_keys, p) != 0)
            return -1;
    }
    return 0;
}

static int apply_setting(struct loader *ld, const config_setting_t *s, const struct key *k,
                         void *base)
{
    bool is_group = config_setting_type(s) == CONFIG_TYPE_GROUP;
    switch (k->type) {
    case KEY_GROUP:
        return is_group ? apply_group(ld, s, k->children, base) : fail_type(ld, s, k);
    case KEY_PROJECTIONS:
        return is_group ? apply_projections(ld, s) : fail_type(ld, s, k);
    default:
        return apply_scalar(ld, s, k, field(base, k));
    }
}

static const struct key *find_key(const struct key *keys, const char *name)
{
    for (const struct key *k = keys; k->name != NULL; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

static int apply_group(struct loader *ld, const config_setting_t *group, const struct key *keys,
                       void *base)
{
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const struct key *k = find_key(keys, config_setting_name(s));
        if (k == NULL) {
            char known[256];
            join_keys(keys, known, sizeof(known));
            return fail(ld, s, "unknown key (valid here: %s)", known);
        }
        if (apply_setting(ld, s, k, base) != 0)
            return -1;
    }
    return 0;
}

/* ---- reading the file ---- */

/* True if conninfo carries a password (key=value or URI user:password@). */
static bool has_password(const char *conninfo)
{
    if (conninfo == NULL)
        return false;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    bool found = false;
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        if (o->dispchar[0] == '*' && o->val != NULL && o->val[0] != '\0')
            found = true;
    PQconninfoFree(opts);
    return found;
}

/* Parse the open file into lc. */
static int parse_file(struct loader *ld, FILE *f, config_t *lc)
{
    struct stat st;
    if (fstat(fileno(f), &st) != 0)
        return report(ld, "%s: cannot read: %s", ld->path, strerror(errno));
    /* libconfig's scanner exits the process when read(2) fails on a directory. */
    if (S_ISDIR(st.st_mode))
        return report(ld, "%s: cannot read: %s", ld->path, strerror(EISDIR));
    if (config_read(lc, f) != CONFIG_TRUE) {
        const char *file = config_error_file(lc);
        if (config_error_type(lc) != CONFIG_ERR_PARSE)
            return report(ld, "%s: cannot read: %s", ld->path, config_error_text(lc));
        return report(ld, "%s:%d: %s", file != NULL ? file : ld->path, config_error_line(lc),
                      config_error_text(lc));
    }
    ld->exposed = (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
    return 0;
}

/* Read and apply the file; an absent optional file leaves the defaults. */
static int load_file(struct loader *ld, bool must_exist)
{
    FILE *f = fopen(ld->path, "r");
    if (f == NULL) {
        if (errno == ENOENT && !must_exist)
            return 0;
        return report(ld, "%s: cannot read: %s", ld->path, strerror(errno));
    }
    config_t lc;
    config_init(&lc);
    int rc = parse_file(ld, f, &lc);
    fclose(f);
    if (rc == 0)
        rc = apply_group(ld, config_root_setting(&lc), top_keys, ld->cfg);
    config_destroy(&lc);
    if (rc != 0)
        return -1;
    if ((ld->cfg->source = strdup(ld->path)) == NULL)
        return report(ld, "out of memory");
    /* Checked before the environment replaces what the file says. */
    ld->exposed =
        ld->exposed && (has_password(ld->cfg->conninfo) || has_password(ld->cfg->target_conninfo));
    return 0;
}

/*
 * PROJECTORD_<PATH> for a key's dotted path ("log.level" ->
 * PROJECTORD_LOG_LEVEL, "projections.orders.on_error" ->
 * PROJECTORD_PROJECTIONS_ORDERS_ON_ERROR).
 */
static void env_name(char *buf, size_t size, const char *path)
{
    snprintf(buf, size, "PROJECTORD_%s", path);
    for (char *p = buf; *p != '\0'; p++)
        *p = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
}

static bool parse_env_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
                                                                                "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0)
            return (*out = true);
        if (strcasecmp(text, no[i]) == 0)
            return !(*out = false);
    }
    return false;
}

/* The value of the environment variable name, when set and not empty, into k's field. */
static int apply_env_key(struct loader *ld, const char *name, const struct key *k, void *dest)
{
    const char *text = getenv(name);
    char problem[768], buf[128];
    if (text == NULL || text[0] == '\0')
        return 0;
    switch (k->type) {
    case KEY_TEXT:
        if (!text_valid(k, text, problem, sizeof problem))
            return report(ld, "%s: %s", name, problem);
        return set_text(dest, text) == 0 ? 0 : report(ld, "out of memory");
    case KEY_ENUM:
        if (k->parse(text, dest) != 0)
            return report(ld, "%s: unknown %s '%s' (%s)", name, k->what, text, k->choices);
        return 0;
    case KEY_BOOL:
        if (!parse_env_bool(text, dest))
            return report(ld, "%s: must be true or false (got '%s')", name, text);
        return 0;
    case KEY_INT: {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || v < k->min || v > k->max)
            return report(ld, "%s: must be %s (got '%s')", name, describe(k, buf, sizeof buf),
                          text);
        *(int *)dest = (int)v;
        return 0;
    }
    case KEY_GROUP:
    case KEY_PROJECTIONS:
        break;
    }
    return 0;
}

/* Every key of keys (under prefix, e.g. "log") from its environment variable. */
static int apply_env_keys(struct loader *ld, const char *prefix, const struct key *keys, void *base)
{
    for (const struct key *k = keys; k->name != NULL; k++) {
        char path[256], name[300];
        if (snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", k->name) >=
            (int)sizeof path)
            return report(ld, "%s.%s: key path too long", prefix, k->name);
        int rc = 0;
        if (k->type == KEY_GROUP) {
            rc = apply_env_keys(ld, path, k->children, base);
        } else if (k->type == KEY_PROJECTIONS) {
            for (size_t i = 0; i < ld->cfg->n_projections && rc == 0; i++) {
                char sub[256];
                if (snprintf(sub, sizeof sub, "%s.%s", path, ld->cfg->projections[i].name) >=
                    (int)sizeof sub)
                    return report(ld, "%s: projection name too long", ld->cfg->projections[i].name);
                rc = apply_env_keys(ld, sub, projection_keys, &ld->cfg->projections[i]);
            }
        } else {
            env_name(name, sizeof name, path);
            rc = apply_env_key(ld, name, k, field(base, k));
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/*
 * Containers configure through the environment, so it wins over the file:
 * every key has its variable (env_name), and the names of earlier releases
 * stay (PROJECTORD_DATABASE_URL, PROJECTORD_TARGET_DATABASE_URL), below the
 * keys' own names.
 */
static int apply_environment(struct loader *ld)
{
    static const struct {
        const char *name, *key;
    } aliases[] = {{"PROJECTORD_DATABASE_URL", "conninfo"},
                   {"PROJECTORD_TARGET_DATABASE_URL", "target"}};
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        const struct key *k = find_key(database_keys, aliases[i].key);
        if (apply_env_key(ld, aliases[i].name, k, field(ld->cfg, k)) != 0)
            return -1;
    }
    return apply_env_keys(ld, "", top_keys, ld->cfg);
}

int config_load_path(struct config *cfg, const char *path, bool must_exist,
                     const char *const *names, size_t n, char *err, size_t errlen)
{
    struct loader ld = {.cfg = cfg, .path = path, .err = err, .errlen = errlen};
    memset(cfg, 0, sizeof(*cfg));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (init_defaults(&ld, names, n) != 0 || load_file(&ld, must_exist) != 0 ||
        apply_environment(&ld) != 0) {
        config_free(cfg);
        return -1;
    }
    if (ld.exposed)
        log_warning("%s is readable by group or others and contains a database password; "
                    "chmod 600 it, or use PGPASSFILE or PROJECTORD_DATABASE_URL",
                    path);
    return 0;
}

int config_load(struct config *cfg, const char *path, const char *const *names, size_t n, char *err,
                size_t errlen)
{
    if (path == NULL)
        return config_load_path(cfg, CONFIG_DEFAULT_PATH, false, names, n, err, errlen);
    return config_load_path(cfg, path, true, names, n, err, errlen);
}

int config_projection_dir(const char *path, char **dir, char *err, size_t errlen)
{
    *dir = NULL;
    const char *env = getenv("PROJECTORD_PROJECTION_DIR");
    if (env != NULL && env[0] != '\0')
        return (*dir = strdup(env)) ? 0 : -1;
    struct loader ld = {.path = path ? path : CONFIG_DEFAULT_PATH, .err = err, .errlen = errlen};
    FILE *f = fopen(ld.path, "r");
    if (f == NULL) {
        if (errno == ENOENT && path == NULL)
            return 0;
        return report(&ld, "%s: cannot read: %s", ld.path, strerror(errno));
    }
    config_t lc;
    config_init(&lc);
    int rc = parse_file(&ld, f, &lc);
    fclose(f);
    const char *text = NULL;
    if (rc == 0 && config_lookup_string(&lc, "projection_dir", &text) == CONFIG_TRUE && text[0] &&
        (*dir = strdup(text)) == NULL)
        rc = report(&ld, "out of memory");
    config_destroy(&lc);
    return rc;
}

void config_free(struct config *cfg)
{
    free_keys(top_keys, cfg);
    for (size_t i = 0; i < cfg->n_projections; i++)
        free_keys(projection_keys, &cfg->projections[i]);
    free(cfg->projections);
    free(cfg->source);
    memset(cfg, 0, sizeof(*cfg));
}

const struct projection_config *config_projection(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_projections; i++)
        if (strcmp(cfg->projections[i].name, name) == 0)
            return &cfg->projections[i];
    return NULL;
}

/* ---- masking and printing ---- */

/* libpq quoting: single quotes when needed, with \ and ' escaped. */
static void put_conninfo_value(FILE *out, const char *val)
{
    if (val[0] != '\0' && strpbrk(val, " \t\n\r\f\v'\\") == NULL) {
        fputs(val, out);
        return;
    }
    fputc('\'', out);
    for (const char *p = val; *p != '\0'; p++) {
        if (*p == '\'' || *p == '\\')
            fputc('\\', out);
        fputc(*p, out);
    }
    fputc('\'', out);
}

char *config_mask_conninfo(const char *conninfo)
{
    if (conninfo == NULL || conninfo[0] == '\0')
        return strdup("");
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (opts == NULL)
        return strdup("(unparsable conninfo)");
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    if (out == NULL) {
        PQconninfoFree(opts);
        return NULL;
    }
    bool first = true;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        fprintf(out, "%s%s=", first ? "" : " ", o->keyword);
        /* dispchar "*" is libpq's own mark for secrets (password, sslpassword). */
        put_conninfo_value(out, o->dispchar[0] == '*' ? "********" : o->val);
        first = false;
    }
    PQconninfoFree(opts);
    if (ferror(out)) {
        fclose(out);
        free(buf);
        return NULL;
    }
    fclose(out);
    return buf;
}

/* A libconfig string literal that reads back as s. */
static void put_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void print_value(FILE *out, const struct key *k, const void *base)
{
    const void *v = cfield(base, k);
    if (k->type == KEY_INT) {
        fprintf(out, "%d", *(const int *)v);
    } else if (k->type == KEY_BOOL) {
        fputs(*(const bool *)v ? "true" : "false", out);
    } else if (k->type == KEY_ENUM) {
        put_string(out, k->name_of(v));
    } else {
        const char *text = *(char *const *)v;
        char *masked = NULL;
        if (k->secret)
            text = masked = config_mask_conninfo(text);
        put_string(out, text != NULL ? text : "");
        free(masked);
    }
}

/* "{ a = 1; b = "x"; }" on one line: these groups are short. */
static void print_inline_group(FILE *out, const struct key *keys, const void *base)
{
    fputs("{ ", out);
    for (const struct key *k = keys; k->name != NULL; k++) {
        fprintf(out, "%s = ", k->name);
        print_value(out, k, base);
        fputs("; ", out);
    }
    fputc('}', out);
}

static void print_projections(FILE *out, const struct config *cfg)
{
    fputs("{\n", out);
    for (size_t i = 0; i < cfg->n_projections; i++) {
        fprintf(out, "  %s = ", cfg->projections[i].name);
        print_inline_group(out, projection_keys, &cfg->projections[i]);
        fputs(";\n", out);
    }
    fputc('}', out);
}

void config_print(const struct config *cfg, FILE *out)
{
    if (cfg->source != NULL)
        fprintf(out, "# effective configuration (from %s)\n", cfg->source);
    else
        fputs("# effective configuration (no file: defaults and environment)\n", out);
    for (const struct key *k = top_keys; k->name != NULL; k++) {
        fprintf(out, "%s = ", k->name);
        if (k->type == KEY_GROUP)
            print_inline_group(out, k->children, cfg);
        else if (k->type == KEY_PROJECTIONS)
            print_projections(out, cfg);
        else
            print_value(out, k, cfg);
        fputs(";\n", out);
    }
}

/* ---- the same as JSON (check-config --json) ---- */

static json_t *json_value_of(const struct key *k, const void *base)
{
    const void *v = cfield(base, k);
    if (k->type == KEY_INT)
        return json_integer(*(const int *)v);
    if (k->type == KEY_BOOL)
        return json_boolean(*(const bool *)v);
    if (k->type == KEY_ENUM)
        return json_string(k->name_of(v));
    const char *text = *(char *const *)v;
    if (text == NULL)
        return json_null();
    if (!k->secret)
        return json_string(text);
    char *masked = config_mask_conninfo(text);
    json_t *out = masked ? json_string(masked) : json_null();
    free(masked);
    return out;
}

static json_t *json_group(const struct key *keys, const void *base)
{
    json_t *obj = json_object();
    for (const struct key *k = keys; k->name != NULL; k++)
        json_object_set_new(obj, k->name, json_value_of(k, base));
    return obj;
}

json_t *config_json(const struct config *cfg)
{
    json_t *settings = json_object();
    for (const struct key *k = top_keys; k->name != NULL; k++) {
        json_t *v;
        if (k->type == KEY_GROUP) {
            v = json_group(k->children, cfg);
        } else if (k->type == KEY_PROJECTIONS) {
            v = json_object();
            for (size_t i = 0; i < cfg->n_projections; i++)
                json_object_set_new(v, cfg->projections[i].name,
                                    json_group(projection_keys, &cfg->projections[i]));
        } else {
            v = json_value_of(k, cfg);
        }
        json_object_set_new(settings, k->name, v);
    }
    return json_pack("{s:o, s:o}", "source", cfg->source ? json_string(cfg->source) : json_null(),
                     "settings", settings);
}
