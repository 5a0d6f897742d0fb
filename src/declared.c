/*
 * declared: the interpreter of declared projections (see declared.h).
 *
 * One handler function serves every declared event type: it finds its
 * declaration through ctx->proj, validates the declared fields with
 * payload.c's rules (the same messages as the C projections' accessors),
 * and queues each declared statement with pj_exec, its parameters taken
 * from the fields, the envelope or the metadata. Values are always bound
 * as parameters; nothing is ever put into SQL text.
 */
#include "declared.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "payload.h"
#include "registry.h"

#define DF_ERRLEN 256
#define DF_NUMLEN 40

const struct declared *declared_of(const struct projection *p)
{
    if (p && p->handlers && p->handlers[0].event_type && p->handlers[0].fn == declared_handle)
        return (const struct declared *)p;
    return NULL;
}

/* A field's value as a parameter: text (NULL for SQL NULL), or a JSON value to print. */
struct df_value {
    const char *text;
    const json_t *json; /* DF_OBJECT, DF_ARRAY, DF_JSON: printed when bound */
    char num[DF_NUMLEN];
};

static bool bad(struct pj_ctx *ctx, const char *err)
{
    pj_bad(ctx, "%s", err);
    return false;
}

static bool check_range(struct pj_ctx *ctx, const struct df_field *f, int64_t v)
{
    if (f->has_min && (f->min_exclusive ? v <= f->min : v < f->min)) {
        pj_bad(ctx, "field '%s' must be %s %" PRId64 " (got %" PRId64 ")", f->name,
               f->min_exclusive ? ">" : ">=", f->min, v);
        return false;
    }
    if (f->has_max && (f->max_exclusive ? v >= f->max : v > f->max)) {
        pj_bad(ctx, "field '%s' must be %s %" PRId64 " (got %" PRId64 ")", f->name,
               f->max_exclusive ? "<" : "<=", f->max, v);
        return false;
    }
    return true;
}

static bool read_elements(struct pj_ctx *ctx, const struct df_field *f, const json_t *array);

/*
 * Read field f of obj into *out, by SPEC §4's rules; false after recording
 * why the event is bad.
 */
static bool read_field(struct pj_ctx *ctx, const json_t *obj, const struct df_field *f,
                       struct df_value *out)
{
    char err[DF_ERRLEN];
    out->text = NULL;
    out->json = NULL;
    if (f->optional && json_is_object(obj)) {
        const json_t *v = json_object_get(obj, f->name);
        if (v == NULL || json_is_null(v))
            return true;
    }
    switch (f->type) {
    case DF_TEXT:
    case DF_TIMESTAMP: /* the statement's ::timestamptz cast judges the text (22007: bad) */
        return payload_string(obj, f->name, &out->text, err, sizeof err) == 0 || bad(ctx, err);
    case DF_UUID:
        return payload_uuid(obj, f->name, &out->text, err, sizeof err) == 0 || bad(ctx, err);
    case DF_INTEGER: {
        int64_t v;
        if (payload_int64(obj, f->name, &v, err, sizeof err) < 0)
            return bad(ctx, err);
        if (!check_range(ctx, f, v))
            return false;
        snprintf(out->num, sizeof out->num, "%" PRId64, v);
        out->text = out->num;
        return true;
    }
    case DF_BOOLEAN:
    case DF_NUMERIC:
    case DF_JSON: {
        const json_t *v = json_is_object(obj) ? json_object_get(obj, f->name) : NULL;
        if (!json_is_object(obj)) {
            snprintf(err, sizeof err, "field '%s' is not inside a JSON object", f->name);
            return bad(ctx, err);
        }
        if (v == NULL || json_is_null(v)) {
            snprintf(err, sizeof err,
                     v == NULL ? "field '%s' is missing" : "field '%s' must not be null", f->name);
            return bad(ctx, err);
        }
        if (f->type == DF_JSON) {
            out->json = v;
            return true;
        }
        if (f->type == DF_BOOLEAN) {
            if (!json_is_boolean(v)) {
                pj_bad(ctx, "field '%s' must be a boolean (got %s)", f->name, payload_type_name(v));
                return false;
            }
            out->text = json_is_true(v) ? "true" : "false";
            return true;
        }
        if (json_is_integer(v))
            snprintf(out->num, sizeof out->num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
            snprintf(out->num, sizeof out->num, "%.17g", json_real_value(v));
        else {
            pj_bad(ctx, "field '%s' must be a number (got %s)", f->name, payload_type_name(v));
            return false;
        }
        out->text = out->num;
        return true;
    }
    case DF_OBJECT:
        if (payload_object(obj, f->name, &out->json, err, sizeof err) < 0)
            return bad(ctx, err);
        return true;
    case DF_ARRAY:
        if (payload_array(obj, f->name, &out->json, err, sizeof err) < 0)
            return bad(ctx, err);
        return read_elements(ctx, f, out->json);
    }
    return bad(ctx, "unknown field type");
}

/* Check the fields of every element of an array field that declares them. */
static bool read_elements(struct pj_ctx *ctx, const struct df_field *f, const json_t *array)
{
    if (f->nelems == 0)
        return true;
    for (size_t i = 0; i < json_array_size(array); i++) {
        const json_t *item;
        if (!pj_object_at(ctx, array, f->name, i, &item))
            return false;
        for (size_t k = 0; k < f->nelems; k++) {
            struct df_value v;
            if (!read_field(ctx, item, &f->elems[k], &v)) {
                pj_bad_in(ctx, "%s[%zu]", f->name, i);
                return false;
            }
        }
    }
    return true;
}

static const char *envelope_value(const struct pj_event *ev, enum df_envelope e,
                                  char num[DF_NUMLEN])
{
    switch (e) {
    case DE_POSITION:
        return ev->position_text;
    case DE_EVENT_ID:
        return ev->event_id;
    case DE_STREAM_ID:
        return ev->stream_id;
    case DE_AGGREGATE_TYPE:
        return ev->aggregate_type;
    case DE_AGGREGATE_ID:
        return ev->aggregate_id;
    case DE_EVENT_TYPE:
        return ev->event_type;
    case DE_EVENT_VERSION:
        snprintf(num, DF_NUMLEN, "%" PRId32, ev->event_version);
        return num;
    case DE_AGGREGATE_VERSION:
        return ev->aggregate_version_text;
    case DE_OCCURRED_AT:
        return ev->occurred_at;
    case DE_CAUSATION_ID:
        return ev->causation_id;
    case DE_CORRELATION_ID:
        return ev->correlation_id;
    case DE_TRANSACTION_ID:
        return ev->transaction_id;
    }
    return NULL;
}

/* What one handler call holds while it builds parameters. */
struct call {
    const struct df_handler *h;
    const struct pj_event *ev;
    struct df_value *values;
    const json_t *metadata;
    char *printed[DF_MAX_PARAMS]; /* JSON printed for this statement, freed after it */
    char nums[DF_MAX_PARAMS][DF_NUMLEN];
};

/* A JSON value as parameter text: strings as they are, the rest printed as JSON. */
static int json_param(struct call *c, int k, const json_t *v, const char **out)
{
    if (v == NULL || json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return 0;
    }
    c->printed[k] = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    *out = c->printed[k];
    return *out ? 0 : -1;
}

/*
 * A sum parameter's value into c->nums[k]; false when it leaves bigint (a
 * bad event, as in the compiled orders projection). The elements were
 * checked by read_field already: each is an object whose factors are
 * integers within bigint.
 */
static bool sum_value(struct pj_ctx *ctx, struct call *c, const struct df_param *p, int k)
{
    const struct df_field *arr = &c->h->fields[p->field];
    const json_t *array = c->values[p->field].json;
    int64_t sum = 0;
    char err[DF_ERRLEN];
    for (size_t i = 0; i < json_array_size(array); i++) {
        const json_t *item = json_array_get(array, i);
        int64_t a, b = 1, term;
        if (payload_int64(item, arr->elems[p->elem].name, &a, err, sizeof err) < 0 ||
            (p->elem2 >= 0 &&
             payload_int64(item, arr->elems[p->elem2].name, &b, err, sizeof err) < 0)) {
            pj_bad(ctx, "%s[%zu]: %s", arr->name, i, err); /* checked already: never */
            return false;
        }
        if (pj_mul_overflows(a, b, &term) || pj_add_overflows(sum, term, &sum)) {
            if (p->elem2 >= 0)
                pj_bad(ctx, "sum(%s.%s * %s.%s) is beyond bigint", arr->name,
                       arr->elems[p->elem].name, arr->name, arr->elems[p->elem2].name);
            else
                pj_bad(ctx, "sum(%s.%s) is beyond bigint", arr->name, arr->elems[p->elem].name);
            return false;
        }
    }
    snprintf(c->nums[k], DF_NUMLEN, "%" PRId64, sum);
    return true;
}

/* Parameter k's text into *out: 0, -1 out of memory (retry), 1 a bad event (recorded). */
static int param_value(struct pj_ctx *ctx, struct call *c, const struct df_param *p, int k,
                       const struct df_value *elem, const char **out)
{
    const struct df_value *v;
    switch (p->source) {
    case DS_SUM:
        *out = c->nums[k];
        return sum_value(ctx, c, p, k) ? 0 : 1;
    case DS_ENVELOPE:
        *out = envelope_value(c->ev, p->envelope, c->nums[k]);
        return 0;
    case DS_METADATA:
        return json_param(c, k, c->metadata ? json_object_get(c->metadata, p->meta_key) : NULL,
                          out);
    case DS_FIELD:
        v = &c->values[p->field];
        break;
    case DS_ELEM:
        v = &elem[p->elem];
        break;
    default:
        return -1;
    }
    if (v->json) {
        c->printed[k] = json_dumps(v->json, JSON_COMPACT | JSON_ENCODE_ANY);
        *out = c->printed[k];
        return *out ? 0 : -1;
    }
    *out = v->text;
    return 0;
}

static void free_printed(struct call *c, int n)
{
    for (int k = 0; k < n; k++) {
        free(c->printed[k]);
        c->printed[k] = NULL;
    }
}

/* Queue statement s once (elem: the for_each element's values, or NULL). */
static enum pj_outcome run_statement(struct pj_ctx *ctx, struct call *c,
                                     const struct df_statement *s, const struct df_value *elem)
{
    const char *params[DF_MAX_PARAMS];
    enum pj_outcome rc = PJ_OK;
    for (int k = 0; k < s->nparams; k++) {
        int got = param_value(ctx, c, &s->params[k], k, elem, &params[k]);
        if (got != 0) {
            free_printed(c, k + 1);
            return got < 0 ? PJ_RETRY : PJ_BAD_EVENT;
        }
    }
    if (s->per_batch) {
        struct df_state *st = pj_state(ctx);
        st->nslots = ((const struct declared *)ctx->proj)->nslots; /* for release */
        for (int k = 0; k < s->nparams && rc == PJ_OK; k++)
            rc = pj_textarr_add(&st->slots[s->slot + k], params[k]);
    } else {
        rc = pj_exec(ctx, PJ_STMT_ID(s->index, s->nparams), params);
    }
    free_printed(c, s->nparams);
    return rc;
}

/* Statement s once per element of its array field. */
static enum pj_outcome run_for_each(struct pj_ctx *ctx, struct call *c,
                                    const struct df_statement *s)
{
    const struct df_field *f = &c->h->fields[s->for_each];
    const json_t *array = c->values[s->for_each].json;
    struct df_value elem[DF_MAX_FIELDS];
    for (size_t i = 0; i < json_array_size(array); i++) {
        const json_t *item = json_array_get(array, i);
        for (size_t k = 0; k < f->nelems; k++)
            if (!read_field(ctx, item, &f->elems[k], &elem[k]))
                return pj_bad_in(ctx, "%s[%zu]", f->name, i); /* checked already: never */
        enum pj_outcome rc = run_statement(ctx, c, s, elem);
        if (rc != PJ_OK)
            return rc;
    }
    return PJ_OK;
}

enum pj_outcome declared_handle(struct pj_ctx *ctx, const struct pj_event *ev,
                                const json_t *payload)
{
    const struct declared *d = (const struct declared *)ctx->proj;
    const struct pj_handler *ph = registry_handler(ctx->proj, ev->event_type);
    if (!ph)
        return PJ_OK;
    const struct df_handler *h = &d->handlers[ph - d->pj_handlers];
    struct df_value values[DF_MAX_FIELDS];
    struct call c = {.h = h, .ev = ev, .values = values};
    for (size_t i = 0; i < h->nfields; i++)
        if (!read_field(ctx, payload, &h->fields[i], &values[i]))
            return PJ_BAD_EVENT;
    json_t *metadata = NULL;
    if (h->metadata && ev->metadata) {
        /* Metadata is the writer's, not the contract's: unreadable metadata names nothing. */
        metadata = json_loads(ev->metadata, JSON_DECODE_ANY, NULL);
        c.metadata = json_is_object(metadata) ? metadata : NULL;
    }
    enum pj_outcome rc = PJ_OK;
    for (size_t i = 0; i < h->nstatements && rc == PJ_OK; i++) {
        const struct df_statement *s = &h->statements[i];
        rc = s->for_each >= 0 ? run_for_each(ctx, &c, s) : run_statement(ctx, &c, s, NULL);
    }
    json_decref(metadata);
    return rc;
}

enum pj_outcome declared_flush(struct pj_ctx *ctx, void *state)
{
    const struct declared *d = (const struct declared *)ctx->proj;
    struct pj_textarr *slots = ((struct df_state *)state)->slots;
    for (size_t i = 0; i < d->nhandlers; i++)
        for (size_t j = 0; j < d->handlers[i].nstatements; j++) {
            const struct df_statement *s = &d->handlers[i].statements[j];
            if (!s->per_batch || slots[s->slot].n == 0)
                continue;
            const char *params[DF_MAX_PARAMS];
            for (int k = 0; k < s->nparams; k++)
                if (!(params[k] = pj_textarr_literal(&slots[s->slot + k])))
                    return PJ_RETRY;
            enum pj_outcome rc = pj_exec(ctx, PJ_STMT_ID(s->index, s->nparams), params);
            if (rc != PJ_OK)
                return rc;
        }
    return PJ_OK;
}

/* Frees what the handlers collected; a state no handler touched holds nothing. */
void declared_release(void *state)
{
    struct df_state *st = state;
    for (size_t i = 0; i < st->nslots; i++)
        pj_textarr_free(&st->slots[i]);
}
