/*
 * declared_load: reads a declared projection's file (libconfig syntax, the
 * format of docs/declared-projections.md) into a struct declared, checking
 * everything that can be checked without a database: every problem is one
 * "FILE:LINE: problem" line, and the loader stops at the first, as the
 * config loader does.
 */
#include "declared.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "registry.h"

struct loader {
    const char *path;
    char *err;
    size_t errlen;
    struct declared *d;
};

static int fail_at(struct loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at(struct loader *ld, int line, const char *fmt, ...)
{
    char problem[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->path, line, problem);
    for (char *p = ld->err; *p; p++) /* one line, whatever the file held */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return -1;
}

static int line_of(const config_setting_t *s)
{
    return s ? (int)config_setting_source_line(s) : 1;
}

#define fail(ld, s, ...) fail_at((ld), line_of(s), __VA_ARGS__)

/* Only the keys in allowed (NULL-terminated) may appear in group g. */
static int known_keys(struct loader *ld, const config_setting_t *g, const char *what,
                      const char *const *allowed)
{
    for (int i = 0; i < config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = name && strcmp(name, *a) == 0;
        if (!ok) {
            char list[256] = "";
            for (const char *const *a = allowed; *a; a++) {
                size_t n = strlen(list);
                snprintf(list + n, sizeof list - n, "%s%s", a == allowed ? "" : ", ", *a);
            }
            return fail(ld, s, "%s: unknown key '%s' (valid here: %s)", what, name ? name : "?",
                        list);
        }
    }
    return 0;
}

static int get_string(struct loader *ld, const config_setting_t *g, const char *key,
                      const char *what, bool required, const char **out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    *out = NULL;
    if (!s)
        return required ? fail(ld, g, "%s: '%s' is missing", what, key) : 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return fail(ld, s, "%s: '%s' must be a string", what, key);
    *out = config_setting_get_string(s);
    return 0;
}

static int get_bool(struct loader *ld, const config_setting_t *g, const char *key, const char *what,
                    bool def, bool *out)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    *out = def;
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return fail(ld, s, "%s: '%s' must be true or false", what, key);
    *out = config_setting_get_bool(s);
    return 0;
}

static bool is_int(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

static char *dup_or_fail(struct loader *ld, const config_setting_t *s, const char *text)
{
    char *copy = strdup(text);
    if (!copy)
        fail(ld, s, "out of memory");
    return copy;
}

/* ---- fields ---- */

static const struct {
    const char *name;
    enum df_type type;
} field_types[] = {
    {"text", DF_TEXT},       {"integer", DF_INTEGER},     {"uuid", DF_UUID},
    {"boolean", DF_BOOLEAN}, {"timestamp", DF_TIMESTAMP}, {"numeric", DF_NUMERIC},
    {"object", DF_OBJECT},   {"array", DF_ARRAY},         {"json", DF_JSON},
};

#define TYPE_NAMES "text, integer, uuid, boolean, timestamp, numeric, object, array, json"

static int parse_type(struct loader *ld, const config_setting_t *s, const char *field,
                      const char *text, struct df_field *f)
{
    size_t len = strlen(text);
    if (len > 0 && text[len - 1] == '?') {
        f->optional = true;
        len--;
    }
    for (size_t i = 0; i < sizeof field_types / sizeof field_types[0]; i++)
        if (strlen(field_types[i].name) == len && strncmp(field_types[i].name, text, len) == 0) {
            f->type = field_types[i].type;
            return 0;
        }
    return fail(ld, s, "field '%s': unknown field type '%s' (" TYPE_NAMES ", with ? for optional)",
                field, text);
}

static int parse_fields(struct loader *ld, const config_setting_t *g, const char *what,
                        struct df_field **out, size_t *n);

static int parse_bound(struct loader *ld, const config_setting_t *g, const struct df_field *f,
                       const char *key, bool *has, int64_t *v, bool exclusive, bool *excl)
{
    const config_setting_t *s = config_setting_get_member(g, key);
    if (!s)
        return 0;
    if (!is_int(s))
        return fail(ld, s, "field '%s': '%s' must be an integer", f->name, key);
    if (f->type != DF_INTEGER)
        return fail(ld, s, "field '%s': '%s' is for integer fields", f->name, key);
    if (*has)
        return fail(ld, s, "field '%s': one lower and one upper bound at most", f->name);
    *has = true;
    *v = config_setting_get_int64(s);
    *excl = exclusive;
    return 0;
}

static int parse_field(struct loader *ld, const config_setting_t *s, struct df_field *f)
{
    const char *name = config_setting_name(s);
    if (!(f->name = dup_or_fail(ld, s, name ? name : "")))
        return -1;
    if (config_setting_type(s) == CONFIG_TYPE_STRING)
        return parse_type(ld, s, f->name, config_setting_get_string(s), f);
    if (config_setting_type(s) != CONFIG_TYPE_GROUP)
        return fail(ld, s,
                    "field '%s': must be a type (\"text\", \"uuid?\", ...) or a group "
                    "{ type = ...; ... }",
                    f->name);
    static const char *const keys[] = {"type",  "optional", "key",    "min", "max",
                                       "above", "below",    "fields", NULL};
    const char *type, *key;
    char what[128];
    snprintf(what, sizeof what, "field '%s'", f->name);
    if (known_keys(ld, s, what, keys) < 0 || get_string(ld, s, "type", what, true, &type) < 0 ||
        parse_type(ld, config_setting_get_member(s, "type"), f->name, type, f) < 0 ||
        get_string(ld, s, "key", what, false, &key) < 0)
        return -1;
    bool optional;
    if (get_bool(ld, s, "optional", what, f->optional, &optional) < 0)
        return -1;
    f->optional = optional;
    if (key) {
        free(f->name);
        if (!(f->name = dup_or_fail(ld, s, key)))
            return -1;
    }
    if (parse_bound(ld, s, f, "min", &f->has_min, &f->min, false, &f->min_exclusive) < 0 ||
        parse_bound(ld, s, f, "above", &f->has_min, &f->min, true, &f->min_exclusive) < 0 ||
        parse_bound(ld, s, f, "max", &f->has_max, &f->max, false, &f->max_exclusive) < 0 ||
        parse_bound(ld, s, f, "below", &f->has_max, &f->max, true, &f->max_exclusive) < 0)
        return -1;
    const config_setting_t *elems = config_setting_get_member(s, "fields");
    if (elems) {
        if (f->type != DF_ARRAY)
            return fail(ld, elems, "field '%s': 'fields' is for array fields (of objects)",
                        f->name);
        if (parse_fields(ld, elems, what, &f->elems, &f->nelems) < 0)
            return -1;
        if (f->nelems == 0)
            return fail(ld, elems, "field '%s': 'fields' declares no field", f->name);
    }
    return 0;
}

static int parse_fields(struct loader *ld, const config_setting_t *g, const char *what,
                        struct df_field **out, size_t *n)
{
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return fail(ld, g, "%s: 'fields' must be a group { NAME = \"TYPE\"; ... }", what);
    int len = config_setting_length(g);
    if (len > DF_MAX_FIELDS)
        return fail(ld, g, "%s: more than %d fields", what, DF_MAX_FIELDS);
    *n = 0;
    if (len == 0)
        return 0;
    if (!(*out = calloc((size_t)len, sizeof **out)))
        return fail(ld, g, "out of memory");
    for (int i = 0; i < len; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        (*n)++;
        if (parse_field(ld, s, &(*out)[i]) < 0)
            return -1;
        for (int k = 0; k < i; k++)
            if (strcmp((*out)[k].name, (*out)[i].name) == 0)
                return fail(ld, s, "%s: field '%s' is declared twice", what, (*out)[i].name);
    }
    return 0;
}

/* ---- statements ---- */

static const struct {
    const char *name;
    enum df_envelope e;
} envelope_names[] = {
    {"position", DE_POSITION},
    {"event_id", DE_EVENT_ID},
    {"stream_id", DE_STREAM_ID},
    {"aggregate_type", DE_AGGREGATE_TYPE},
    {"aggregate_id", DE_AGGREGATE_ID},
    {"event_type", DE_EVENT_TYPE},
    {"event_version", DE_EVENT_VERSION},
    {"aggregate_version", DE_AGGREGATE_VERSION},
    {"occurred_at", DE_OCCURRED_AT},
    {"causation_id", DE_CAUSATION_ID},
    {"correlation_id", DE_CORRELATION_ID},
    {"transaction_id", DE_TRANSACTION_ID},
};

static int find_field(const struct df_field *fields, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(fields[i].name) == len && strncmp(fields[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

/* The integer field of arr's elements named by name[0..len), or -1 after failing. */
static int sum_factor(struct loader *ld, const config_setting_t *s, const struct df_handler *h,
                      const char *param, const char *name, size_t len, int *array)
{
    while (len > 0 && name[0] == ' ')
        name++, len--;
    while (len > 0 && name[len - 1] == ' ')
        len--;
    const char *dot = memchr(name, '.', len);
    int a = dot ? find_field(h->fields, h->nfields, name, (size_t)(dot - name)) : -1;
    const struct df_field *arr = a >= 0 ? &h->fields[a] : NULL;
    int e = arr && arr->type == DF_ARRAY && !arr->optional
                ? find_field(arr->elems, arr->nelems, dot + 1, len - (size_t)(dot + 1 - name))
                : -1;
    if (e < 0 || arr->elems[e].type != DF_INTEGER || arr->elems[e].optional ||
        (*array >= 0 && a != *array)) {
        fail(ld, s,
             "%s: parameter '%s': a sum takes required integer fields of one required array "
             "field's elements: sum(ARRAY.FIELD) or sum(ARRAY.FIELD * ARRAY.FIELD)",
             h->event_type, param);
        return -1;
    }
    *array = a;
    return e;
}

/*
 * sum(ARRAY.A) or sum(ARRAY.A * ARRAY.B): the sum over an array field's
 * elements, computed in the daemon with bigint overflow checks, so a
 * statement gets one number per event (bulk-friendly) instead of walking
 * the array in SQL.
 */
static int parse_sum(struct loader *ld, const config_setting_t *s, const struct df_handler *h,
                     const char *name, struct df_param *p)
{
    size_t len = strlen(name);
    if (len < 6 || name[len - 1] != ')')
        return fail(ld, s,
                    "%s: parameter '%s': a sum is sum(ARRAY.FIELD) or "
                    "sum(ARRAY.FIELD * ARRAY.FIELD)",
                    h->event_type, name);
    const char *in = name + 4;
    size_t inlen = len - 5;
    const char *star = memchr(in, '*', inlen);
    int array = -1;
    p->source = DS_SUM;
    p->elem2 = -1;
    p->elem = sum_factor(ld, s, h, name, in, star ? (size_t)(star - in) : inlen, &array);
    if (p->elem < 0)
        return -1;
    if (star && (p->elem2 = sum_factor(ld, s, h, name, star + 1, inlen - (size_t)(star + 1 - in),
                                       &array)) < 0)
        return -1;
    p->field = array;
    return 0;
}

static int parse_param(struct loader *ld, const config_setting_t *s, const struct df_handler *h,
                       int for_each, struct df_param *p)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return fail(ld, s, "%s: a parameter must be a string naming a field", h->event_type);
    const char *name = config_setting_get_string(s);
    if (strncmp(name, "sum(", 4) == 0)
        return parse_sum(ld, s, h, name, p);
    if (strncmp(name, "event.", 6) == 0) {
        for (size_t i = 0; i < sizeof envelope_names / sizeof envelope_names[0]; i++)
            if (strcmp(name + 6, envelope_names[i].name) == 0) {
                p->source = DS_ENVELOPE;
                p->envelope = envelope_names[i].e;
                return 0;
            }
        return fail(ld, s,
                    "%s: parameter '%s' names no envelope value (event.position, event_id, "
                    "stream_id, aggregate_type, aggregate_id, event_type, event_version, "
                    "aggregate_version, occurred_at, causation_id, correlation_id, "
                    "transaction_id)",
                    h->event_type, name);
    }
    if (strncmp(name, "metadata.", 9) == 0 && name[9]) {
        p->source = DS_METADATA;
        return (p->meta_key = dup_or_fail(ld, s, name + 9)) ? 0 : -1;
    }
    int f = find_field(h->fields, h->nfields, name, strlen(name));
    if (f >= 0) {
        p->source = DS_FIELD;
        p->field = f;
        return 0;
    }
    const char *dot = strchr(name, '.');
    if (dot && for_each >= 0 &&
        find_field(h->fields, h->nfields, name, (size_t)(dot - name)) == for_each) {
        const struct df_field *arr = &h->fields[for_each];
        int e = find_field(arr->elems, arr->nelems, dot + 1, strlen(dot + 1));
        if (e >= 0) {
            p->source = DS_ELEM;
            p->field = for_each;
            p->elem = e;
            return 0;
        }
    }
    return fail(ld, s,
                "%s: parameter '%s' names no declared field (a field of 'fields', "
                "ARRAY.FIELD of the for_each array, sum(ARRAY.FIELD), event.NAME or "
                "metadata.KEY)",
                h->event_type, name);
}

static int parse_statement(struct loader *ld, const config_setting_t *s, struct df_handler *h,
                           struct df_statement *st)
{
    struct declared *d = ld->d;
    char what[160];
    snprintf(what, sizeof what, "%s: statement", h->event_type);
    static const char *const keys[] = {"sql",  "params",   "key",       "count_ignored",
                                       "bulk", "for_each", "per_batch", NULL};
    if (config_setting_type(s) != CONFIG_TYPE_GROUP)
        return fail(ld, s, "%s must be a group { sql = \"...\"; params = [...]; }", what);
    const char *sql, *for_each;
    bool count_ignored, bulk, per_batch;
    if (known_keys(ld, s, what, keys) < 0 || get_string(ld, s, "sql", what, true, &sql) < 0 ||
        get_string(ld, s, "for_each", what, false, &for_each) < 0 ||
        get_bool(ld, s, "count_ignored", what, false, &count_ignored) < 0 ||
        get_bool(ld, s, "bulk", what, false, &bulk) < 0 ||
        get_bool(ld, s, "per_batch", what, false, &per_batch) < 0)
        return -1;
    st->for_each = -1;
    if (for_each) {
        st->for_each = find_field(h->fields, h->nfields, for_each, strlen(for_each));
        if (st->for_each < 0 || h->fields[st->for_each].type != DF_ARRAY ||
            h->fields[st->for_each].nelems == 0 || h->fields[st->for_each].optional)
            return fail(ld, config_setting_get_member(s, "for_each"),
                        "%s: for_each '%s' must name a required array field that declares its "
                        "elements' fields",
                        what, for_each);
    }
    const config_setting_t *params = config_setting_get_member(s, "params");
    int n = 0;
    if (params) {
        if (config_setting_type(params) != CONFIG_TYPE_ARRAY &&
            config_setting_type(params) != CONFIG_TYPE_LIST)
            return fail(ld, params, "%s: 'params' must be an array [ \"field\", ... ]", what);
        n = config_setting_length(params);
    }
    if (n > DF_MAX_PARAMS)
        return fail(ld, params, "%s: more than %d parameters", what, DF_MAX_PARAMS);
    if (n > 0 && !(st->params = calloc((size_t)n, sizeof *st->params)))
        return fail(ld, s, "out of memory");
    int key = 0;
    for (int k = 0; k < n; k++) {
        st->nparams = k + 1;
        if (parse_param(ld, config_setting_get_elem(params, (unsigned)k), h, st->for_each,
                        &st->params[k]) < 0)
            return -1;
        if (st->params[k].source == DS_METADATA)
            h->metadata = true;
        if (!key && st->params[k].source == DS_ENVELOPE &&
            st->params[k].envelope == DE_AGGREGATE_ID)
            key = k + 1;
    }
    st->nparams = n;
    int used = registry_max_placeholder(sql);
    if (used != n)
        return fail(ld, config_setting_get_member(s, "sql"),
                    "%s: its SQL uses %d parameters ($1..$%d) but 'params' names %d", what, used,
                    used, n);
    const config_setting_t *ks = config_setting_get_member(s, "key");
    if (ks) {
        if (!is_int(ks) || config_setting_get_int(ks) < 0 || config_setting_get_int(ks) > n)
            return fail(ld, ks, "%s: 'key' must be a parameter number from 1 to %d, or 0 for none",
                        what, n);
        key = config_setting_get_int(ks);
    }
    if (per_batch) {
        if (bulk || for_each || count_ignored)
            return fail(ld, s,
                        "%s: a per_batch statement can not be bulk, for_each or "
                        "count_ignored (it belongs to no single event)",
                        what);
        if (n == 0)
            return fail(ld, s, "%s: a per_batch statement needs parameters (the batch's values)",
                        what);
        key = 0;
        st->per_batch = true;
        st->slot = d->nslots;
        d->nslots += n;
    }
    if (bulk && key == 0)
        return fail(ld, s,
                    "%s: a bulk statement needs a key: pass event.aggregate_id, or say which "
                    "parameter names its row (key = 1 for $1)",
                    what);
    /* Room was made for every statement of the file before parsing. */
    st->index = d->nstatements++;
    struct pj_statement *ps = &d->statements[st->index];
    if (!(ps->sql = dup_or_fail(ld, s, sql)))
        return -1;
    ps->nparams = n;
    ps->key = key;
    ps->flags = (bulk ? PJ_BULK : 0) | (count_ignored ? PJ_COUNT_IGNORED : 0);
    d->statement_lines[st->index] = line_of(s);
    return 0;
}

/* ---- handlers ---- */

static int parse_handler(struct loader *ld, const config_setting_t *s, struct df_handler *h)
{
    static const char *const keys[] = {"event", "payload", "fields", "statements", NULL};
    if (config_setting_type(s) != CONFIG_TYPE_GROUP)
        return fail(ld, s, "a handler must be a group { event = \"Type\"; ... }");
    const char *event;
    if (known_keys(ld, s, "handler", keys) < 0 ||
        get_string(ld, s, "event", "handler", true, &event) < 0)
        return -1;
    if (!*event)
        return fail(ld, s, "handler: 'event' is empty (an event type, or \"*\" for every type)");
    if (!(h->event_type = dup_or_fail(ld, s, event)) ||
        get_bool(ld, s, "payload", event, true, &h->payload) < 0)
        return -1;
    const config_setting_t *fields = config_setting_get_member(s, "fields");
    if (fields && parse_fields(ld, fields, event, &h->fields, &h->nfields) < 0)
        return -1;
    if (!h->payload && h->nfields > 0)
        return fail(ld, fields, "%s: payload = false, yet it declares fields", event);
    const config_setting_t *stmts = config_setting_get_member(s, "statements");
    if (!stmts)
        return 0;
    if (config_setting_type(stmts) != CONFIG_TYPE_LIST)
        return fail(ld, stmts, "%s: 'statements' must be a list ( { sql = ...; }, ... )", event);
    int n = config_setting_length(stmts);
    if (n > 0 && !(h->statements = calloc((size_t)n, sizeof *h->statements)))
        return fail(ld, stmts, "out of memory");
    for (int i = 0; i < n; i++) {
        h->nstatements++;
        if (parse_statement(ld, config_setting_get_elem(stmts, (unsigned)i), h, &h->statements[i]) <
            0)
            return -1;
    }
    return 0;
}

/* Every statement in the file, to size the statement table before parsing. */
static int count_statements(const config_setting_t *handlers)
{
    int n = 0;
    for (int i = 0; i < config_setting_length(handlers); i++) {
        const config_setting_t *h = config_setting_get_elem(handlers, (unsigned)i);
        const config_setting_t *s = config_setting_type(h) == CONFIG_TYPE_GROUP
                                        ? config_setting_get_member(h, "statements")
                                        : NULL;
        if (s && config_setting_type(s) == CONFIG_TYPE_LIST)
            n += config_setting_length(s);
    }
    return n;
}

static int parse_tables(struct loader *ld, const config_setting_t *root)
{
    struct declared *d = ld->d;
    const config_setting_t *t = config_setting_get_member(root, "tables");
    if (!t)
        return fail(ld, root, "'tables' is missing (the tables the projection owns)");
    if (config_setting_type(t) != CONFIG_TYPE_ARRAY && config_setting_type(t) != CONFIG_TYPE_LIST)
        return fail(ld, t, "'tables' must be an array [ \"table\", ... ]");
    int n = config_setting_length(t);
    if (n == 0)
        return fail(ld, t, "'tables' names no table");
    if (!(d->tables = calloc((size_t)n + 1, sizeof *d->tables)))
        return fail(ld, t, "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(t, (unsigned)i);
        const char *name = config_setting_get_string(s);
        if (!name || !*name || strlen(name) > 63 ||
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name) ||
            isdigit((unsigned char)name[0]))
            return fail(ld, s,
                        "'tables': a table is a lowercase unqualified name "
                        "([a-z_][a-z0-9_]*, at most 63)");
        if (!(d->tables[i] = dup_or_fail(ld, s, name)))
            return -1;
    }
    return 0;
}

static int parse_root(struct loader *ld, const config_setting_t *root)
{
    struct declared *d = ld->d;
    static const char *const keys[] = {"name",   "version",  "description",
                                       "tables", "handlers", NULL};
    const char *name, *description;
    if (known_keys(ld, root, "projection", keys) < 0 ||
        get_string(ld, root, "name", "projection", true, &name) < 0 ||
        get_string(ld, root, "description", "projection", false, &description) < 0)
        return -1;
    const config_setting_t *v = config_setting_get_member(root, "version");
    if (!v)
        return fail(ld, root, "'version' is missing (bump it when the read model must be rebuilt)");
    if (!is_int(v) || config_setting_get_int64(v) < 0 || config_setting_get_int64(v) > 1000000000)
        return fail(ld, v, "'version' must be an integer from 0 to 1000000000");
    if (!(d->proj.name = dup_or_fail(ld, root, name)) ||
        !(d->proj.description = dup_or_fail(ld, root, description ? description : "")))
        return -1;
    d->proj.version = config_setting_get_int(v);
    d->name_line = line_of(config_setting_get_member(root, "name"));
    if (parse_tables(ld, root) < 0)
        return -1;
    d->proj.tables = (const char *const *)d->tables;
    const config_setting_t *hs = config_setting_get_member(root, "handlers");
    if (!hs)
        return fail(ld, root, "'handlers' is missing");
    if (config_setting_type(hs) != CONFIG_TYPE_LIST || config_setting_length(hs) == 0)
        return fail(ld, hs, "'handlers' must be a non-empty list ( { event = ...; }, ... )");
    int nh = config_setting_length(hs), ns = count_statements(hs);
    d->handlers = calloc((size_t)nh, sizeof *d->handlers);
    d->pj_handlers = calloc((size_t)nh + 1, sizeof *d->pj_handlers);
    d->statements = calloc((size_t)ns + 1, sizeof *d->statements);
    d->statement_lines = calloc((size_t)ns + 1, sizeof *d->statement_lines);
    if (!d->handlers || !d->pj_handlers || !d->statements || !d->statement_lines)
        return fail(ld, hs, "out of memory");
    d->statements[0] = (struct pj_statement)PJ_STATEMENTS_END;
    for (int i = 0; i < nh; i++) {
        const config_setting_t *s = config_setting_get_elem(hs, (unsigned)i);
        struct df_handler *h = &d->handlers[i];
        d->nhandlers++;
        if (parse_handler(ld, s, h) < 0)
            return -1;
        for (int k = 0; k < i; k++)
            if (strcmp(d->handlers[k].event_type, h->event_type) == 0)
                return fail(ld, s, "handler: event type '%s' has a handler already", h->event_type);
        d->pj_handlers[i] = (struct pj_handler){.event_type = h->event_type,
                                                .fn = declared_handle,
                                                .flags = h->payload ? 0 : PJ_NO_PAYLOAD};
    }
    d->statements[d->nstatements] = (struct pj_statement)PJ_STATEMENTS_END;
    d->proj.statements = d->statements;
    d->proj.handlers = d->pj_handlers;
    if (d->nslots > 0) {
        d->proj.state_size =
            sizeof(struct df_state) + (size_t)d->nslots * sizeof(struct pj_textarr);
        d->proj.flush = declared_flush;
        d->proj.release = declared_release;
    }
    char err[512];
    if (registry_check(&d->proj, err, sizeof err) < 0)
        return fail(ld, config_setting_get_member(root, "name"), "%s", err);
    return 0;
}

/* The whole file (size bytes, as stat said), NUL-terminated; NULL with err set. */
static char *read_text(const char *path, size_t size, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s:0: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    char *text = malloc(size + 1);
    size_t n = text ? fread(text, 1, size, f) : 0;
    bool failed = ferror(f);
    fclose(f);
    if (!text || failed) {
        snprintf(err, errlen, "%s:0: cannot read: %s", path,
                 text ? strerror(EIO) : "out of memory");
        free(text);
        return NULL;
    }
    text[n] = '\0';
    if (strlen(text) != n) {
        snprintf(err, errlen, "%s:0: cannot read: it holds a NUL byte", path);
        free(text);
        return NULL;
    }
    return text;
}

struct declared *declared_load_file(const char *path, char *err, size_t errlen)
{
    struct loader ld = {.path = path, .err = err, .errlen = errlen};
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s:0: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) { /* libconfig's scanner exits the process on a directory */
        snprintf(err, errlen, "%s:0: cannot read: not a regular file", path);
        return NULL;
    }
    char *text = read_text(path, (size_t)st.st_size, err, errlen);
    if (!text)
        return NULL;
    config_t lc;
    config_init(&lc);
    if (config_read_string(&lc, text) != CONFIG_TRUE) {
        fail_at(&ld, config_error_line(&lc), "%s", config_error_text(&lc));
        config_destroy(&lc);
        free(text);
        return NULL;
    }
    if (!(ld.d = calloc(1, sizeof *ld.d)) || !(ld.d->file = strdup(path))) {
        snprintf(err, errlen, "%s:0: out of memory", path);
        config_destroy(&lc);
        free(text);
        declared_free(ld.d);
        return NULL;
    }
    ld.d->text = text;
    int rc = parse_root(&ld, config_root_setting(&lc));
    config_destroy(&lc);
    if (rc < 0) {
        declared_free(ld.d);
        return NULL;
    }
    return ld.d;
}

static void free_fields(struct df_field *fields, size_t n)
{
    for (size_t i = 0; fields && i < n; i++) {
        free(fields[i].name);
        free_fields(fields[i].elems, fields[i].nelems);
    }
    free(fields);
}

void declared_free(struct declared *d)
{
    if (!d)
        return;
    for (size_t i = 0; d->handlers && i < d->nhandlers; i++) {
        struct df_handler *h = &d->handlers[i];
        free(h->event_type);
        free_fields(h->fields, h->nfields);
        for (size_t k = 0; k < h->nstatements; k++) {
            for (int p = 0; p < h->statements[k].nparams; p++)
                free(h->statements[k].params[p].meta_key);
            free(h->statements[k].params);
        }
        free(h->statements);
    }
    free(d->handlers);
    free(d->pj_handlers);
    for (int i = 0; d->statements && i < d->nstatements; i++)
        free((char *)d->statements[i].sql);
    free(d->statements);
    free(d->statement_lines);
    for (size_t i = 0; d->tables && d->tables[i]; i++)
        free(d->tables[i]);
    free(d->tables);
    free((char *)d->proj.name);
    free((char *)d->proj.description);
    free(d->file);
    free(d->text);
    free(d);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_conf(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && name[0] != '.' && strcmp(name + n - 5, ".conf") == 0;
}

int declared_load_list(const char *dir, struct declared ***out, size_t *count, char *err,
                       size_t errlen)
{
    DIR *dh = opendir(dir);
    *out = NULL;
    *count = 0;
    if (!dh) {
        snprintf(err, errlen, "%s:0: projection_dir: cannot read: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(dh)) != NULL;) {
        if (!is_conf(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                rc = -1;
                break;
            }
            names = grown;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        if (!(names[n] = malloc(len))) {
            rc = -1;
            break;
        }
        snprintf(names[n++], len, "%s/%s", dir, e->d_name);
    }
    closedir(dh);
    if (n > 0)
        qsort(names, n, sizeof *names, by_name);
    struct declared **loaded = calloc(n + 1, sizeof *loaded);
    if (rc < 0 || !loaded) {
        snprintf(err, errlen, "%s:0: out of memory", dir);
        rc = -1;
    }
    size_t nloaded = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && !S_ISREG(st.st_mode))
            continue; /* only regular files declare projections (SPEC §8) */
        struct declared *d = declared_load_file(names[i], err, errlen);
        if (!d) {
            rc = -1;
            break;
        }
        loaded[nloaded++] = d;
        for (size_t k = 0; k + 1 < nloaded; k++)
            if (strcmp(loaded[k]->proj.name, d->proj.name) == 0) {
                snprintf(err, errlen,
                         "%s:%d: duplicate name: projection '%s' is declared in %s already",
                         names[i], d->name_line, d->proj.name, loaded[k]->file);
                rc = -1;
            }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc < 0) {
        for (size_t i = 0; i < nloaded; i++)
            declared_free(loaded[i]);
        free(loaded);
        return -1;
    }
    *out = loaded;
    *count = nloaded;
    return 0;
}

int declared_load_dir(const char *dir, char *err, size_t errlen)
{
    struct declared **loaded;
    size_t n;
    if (declared_load_list(dir, &loaded, &n, err, errlen) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if (rc == 0 && registry_add(&loaded[i]->proj, loaded[i]->file) < 0) {
            snprintf(err, errlen, "%s:0: out of memory", loaded[i]->file);
            rc = -1;
        }
    /* A failed registry_add leaves the ones added in use: they stay (the process exits). */
    free(loaded);
    return rc;
}
