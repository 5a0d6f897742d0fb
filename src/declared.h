/*
 * declared: projections declared in files (SPEC §8, docs/declared-projections.md).
 *
 * A declared projection is data: the loader (declared_load.c) reads one
 * libconfig file into a struct declared, whose first member is the struct
 * projection the runner runs like any compiled-in one. Every handler of it
 * is the one interpreter in declared.c, which finds the declaration through
 * ctx->proj (the struct projection is the declaration's first member), so
 * the projection API (projection.h) needs no data pointer: validation goes
 * through payload.c's rules, statements through pj_exec, per-batch
 * statements through the state and flush hooks.
 */
#ifndef PROJECTORD_DECLARED_H
#define PROJECTORD_DECLARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "projection.h"

#define DF_MAX_FIELDS 64 /* per handler, and per array element */
#define DF_MAX_PARAMS 64 /* per statement (projection.h's limit) */

enum df_type {
    DF_TEXT,
    DF_INTEGER,
    DF_UUID,
    DF_BOOLEAN,
    DF_TIMESTAMP,
    DF_NUMERIC,
    DF_OBJECT,
    DF_ARRAY,
    DF_JSON,
};

/* A typed payload field (or a field of the objects in an array field). */
struct df_field {
    char *name; /* the JSON key */
    enum df_type type;
    bool optional;
    bool has_min, has_max; /* DF_INTEGER bounds, inclusive */
    int64_t min, max;
    bool min_exclusive, max_exclusive; /* "above" / "below" */
    struct df_field *elems;            /* DF_ARRAY: fields of each element (objects), or NULL */
    size_t nelems;
};

/* Where a statement parameter comes from. */
enum df_source {
    DS_FIELD,    /* a payload field: fields[field] */
    DS_ELEM,     /* a field of the for_each array's element: fields[field].elems[elem] */
    DS_ENVELOPE, /* an envelope column: envelope */
    DS_METADATA, /* a key of the metadata object */
    DS_SUM,      /* sum(ARRAY.A) or sum(ARRAY.A * ARRAY.B) over fields[field]'s elements */
};

enum df_envelope {
    DE_POSITION,
    DE_EVENT_ID,
    DE_STREAM_ID,
    DE_AGGREGATE_TYPE,
    DE_AGGREGATE_ID,
    DE_EVENT_TYPE,
    DE_EVENT_VERSION,
    DE_AGGREGATE_VERSION,
    DE_OCCURRED_AT,
    DE_CAUSATION_ID,
    DE_CORRELATION_ID,
    DE_TRANSACTION_ID,
};

struct df_param {
    enum df_source source;
    int field, elem;
    int elem2; /* DS_SUM: the second factor's element field, or -1 */
    enum df_envelope envelope;
    char *meta_key;
};

struct df_statement {
    int index; /* in the projection's statements */
    struct df_param *params;
    int nparams;
    int for_each;   /* index of the array field it runs once per element of, or -1 */
    bool per_batch; /* its parameters collect the batch's values; run once by flush */
    int slot;       /* per_batch: its first pj_textarr in the state */
};

struct df_handler {
    char *event_type; /* "*" for every type */
    bool payload;     /* false: event_data is never read (PJ_NO_PAYLOAD) */
    bool metadata;    /* a parameter names a metadata key */
    struct df_field *fields;
    size_t nfields;
    struct df_statement *statements;
    size_t nstatements;
};

struct declared {
    struct projection proj; /* first: the runner's ctx->proj points at it */
    char *file;
    char *text; /* the file's content: a reload tells a changed file by it */
    struct df_handler *handlers;
    size_t nhandlers;
    struct pj_handler *pj_handlers;
    struct pj_statement *statements;
    int nstatements;
    int *statement_lines; /* the line of each statement in file, for messages */
    char **tables;
    int name_line; /* of `name`, for a duplicate name */
    int nslots;    /* pj_textarr slots of the per-batch statements */
};

/*
 * The per-batch state of a declared projection with per_batch statements:
 * one text[] being collected per parameter of each. The state is zeroed
 * before each try of a batch, so the handler sets nslots when it first
 * adds, for release, which gets no ctx.
 */
struct df_state {
    size_t nslots;
    struct pj_textarr slots[];
};

/* The interpreter: every declared handler's function, and the per-batch hooks. */
enum pj_outcome declared_handle(struct pj_ctx *ctx, const struct pj_event *ev,
                                const json_t *payload);
enum pj_outcome declared_flush(struct pj_ctx *ctx, void *state);
void declared_release(void *state);

/* The declaration behind p, or NULL when p is compiled in. */
const struct declared *declared_of(const struct projection *p);

/*
 * Load one file. Returns the declaration, or NULL with "FILE:LINE: problem"
 * (one line) in err.
 */
struct declared *declared_load_file(const char *path, char *err, size_t errlen);

/*
 * Load every regular *.conf file in dir (in name order) and add each to the
 * registry (registry_add): a declared projection replaces the compiled-in
 * one of its name. Returns 0, or -1 with "FILE:LINE: problem" in err (two
 * files declaring one name, too: the second is the problem).
 */
int declared_load_dir(const char *dir, char *err, size_t errlen);

/*
 * Load every regular *.conf file in dir, in name order, into *out (*n of
 * them; the caller frees each and the array), without touching the
 * registry. Returns 0, or -1 with "FILE:LINE: problem" in err and nothing
 * to free.
 */
int declared_load_list(const char *dir, struct declared ***out, size_t *n, char *err,
                       size_t errlen);

void declared_free(struct declared *d);

#endif
