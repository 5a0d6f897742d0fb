/*
 * payload: see payload.h. The rules are SPEC §4's: a required field must be
 * present, not null and of the right JSON type; integers must be whole and
 * in bigint range; uuids must be in 8-4-4-4-12 hex form (PostgreSQL accepts
 * more forms, the contract does not); strings must not hold a NUL byte,
 * since they travel on as C strings. Every message is one line and names
 * the field.
 */
#include "payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *payload_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* d in the fewest digits (up to 17) that read back as d, for messages. */
static const char *real_text(char buf[32], double d)
{
    snprintf(buf, 32, "%.15g", d);
    if (strtod(buf, NULL) != d)
        snprintf(buf, 32, "%.17g", d);
    return buf;
}

/* Keep err on one line whatever jansson quoted from the input. */
static void one_line(char *err)
{
    for (unsigned char *p = (unsigned char *)err; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

/*
 * jsonb accepts documents nested thousands of levels deep (its limit is the
 * server's stack) but jansson's parser stops at 2048 levels, and the
 * contract only reads a payload's top levels. So a document too deep for
 * jansson is decoded again with every container deeper than PRUNE_DEPTH
 * emptied: the same fields, their deep values [] or {}. The text is
 * event_data as PostgreSQL prints jsonb, so it is valid JSON; any other
 * text is checked by jansson again after pruning.
 */
#define PRUNE_DEPTH 64

/* Index of the bracket that closes the container opened at text[i], or len. */
static size_t container_end(const char *text, size_t len, size_t i)
{
    size_t depth = 0;
    bool in_string = false;
    for (; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if ((c == ']' || c == '}') && --depth == 0) {
            return i;
        }
    }
    return len;
}

/* A copy of text with the containers deeper than PRUNE_DEPTH emptied, or NULL. */
static char *prune_deep(const char *text, size_t len, size_t *outlen)
{
    char *out = malloc(len + 2); /* an unterminated last container grows by one */
    size_t n = 0, depth = 0;
    bool in_string = false;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            out[n++] = c;
            if (c == '\\' && i + 1 < len)
                out[n++] = text[++i];
            else if (c == '"')
                in_string = false;
        } else if ((c == '[' || c == '{') && depth == PRUNE_DEPTH) {
            out[n++] = c;
            out[n++] = c == '[' ? ']' : '}';
            i = container_end(text, len, i);
        } else {
            if (c == '"')
                in_string = true;
            else if (c == '[' || c == '{')
                depth++;
            else if ((c == ']' || c == '}') && depth > 0)
                depth--;
            out[n++] = c;
        }
    }
    *outlen = n;
    return out;
}

/*
 * Whether jansson failed to parse for want of memory. jansson 2.14 says so
 * only sometimes: a failed allocation also comes back without a reason, or
 * as a syntax error at the token it was reading. The text is jsonb as
 * PostgreSQL prints it, so it is valid JSON: a syntax error can only be
 * such a failure. What stays the event's fault is what jansson can not
 * hold (numbers beyond int64 or double, invalid UTF-8 from a SQL_ASCII
 * server).
 */
static bool allocation_failed(const json_error_t *jerr)
{
    switch (json_error_code(jerr)) {
    case json_error_unknown:
    case json_error_out_of_memory:
    case json_error_invalid_syntax:
    case json_error_premature_end_of_input:
    case json_error_end_of_input_expected:
        return true;
    default:
        return false;
    }
}

json_t *payload_decode(const char *text, size_t len, bool *out_of_memory, char *err, size_t errlen)
{
    json_error_t jerr;
    /* JSON_ALLOW_NUL: "\u0000" decodes, and payload_string rejects it by name. */
    const size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    bool pruned_oom = false;
    json_t *v = json_loadb(text, len, flags, &jerr);
    if (v == NULL && json_error_code(&jerr) == json_error_stack_overflow) {
        size_t n;
        char *pruned = prune_deep(text, len, &n);
        if (pruned != NULL)
            v = json_loadb(pruned, n, flags, &jerr);
        pruned_oom = pruned == NULL;
        free(pruned);
    }
    if (out_of_memory)
        *out_of_memory = v == NULL && (pruned_oom || allocation_failed(&jerr));
    if (v == NULL) {
        snprintf(err, errlen, "payload is not valid JSON: %s at line %d column %d", jerr.text,
                 jerr.line, jerr.column);
        one_line(err);
        return NULL;
    }
    if (!json_is_object(v)) {
        snprintf(err, errlen, "payload is not a JSON object (got %s)", payload_type_name(v));
        json_decref(v);
        return NULL;
    }
    return v;
}

/*
 * Find obj[key] into *v. A missing or null field is an error, unless
 * optional: then *v = NULL and success.
 */
static int field(const json_t *obj, const char *key, bool optional, json_t **v, char *err,
                 size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "field '%s' is not inside a JSON object", key);
        return -1;
    }
    *v = json_object_get(obj, key);
    if (*v != NULL && !json_is_null(*v))
        return 0;
    if (!optional) {
        snprintf(err, errlen, *v == NULL ? "field '%s' is missing" : "field '%s' must not be null",
                 key);
        return -1;
    }
    *v = NULL;
    return 0;
}

static int string_value(const json_t *v, const char *key, const char *what, const char **out,
                        char *err, size_t errlen)
{
    if (!json_is_string(v)) {
        snprintf(err, errlen, "field '%s' must be %s (got %s)", key, what, payload_type_name(v));
        return -1;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        snprintf(err, errlen, "field '%s' contains a NUL character", key);
        return -1;
    }
    *out = s;
    return 0;
}

static int uuid_value(const json_t *v, const char *key, const char **out, char *err, size_t errlen)
{
    const char *s;
    if (string_value(v, key, "a uuid string", &s, err, errlen) < 0)
        return -1;
    if (!payload_is_uuid(s)) {
        snprintf(err, errlen, "field '%s' is not a uuid in 8-4-4-4-12 form", key);
        return -1;
    }
    *out = s;
    return 0;
}

int payload_string(const json_t *obj, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v;
    if (field(obj, key, false, &v, err, errlen) < 0)
        return -1;
    return string_value(v, key, "a string", out, err, errlen);
}

int payload_opt_string(const json_t *obj, const char *key, const char **out, char *err,
                       size_t errlen)
{
    json_t *v;
    *out = NULL;
    if (field(obj, key, true, &v, err, errlen) < 0)
        return -1;
    if (v == NULL)
        return 0;
    return string_value(v, key, "a string", out, err, errlen);
}

int payload_int64(const json_t *obj, const char *key, int64_t *out, char *err, size_t errlen)
{
    json_t *v;
    if (field(obj, key, false, &v, err, errlen) < 0)
        return -1;
    if (json_is_integer(v)) {
        /* jansson refuses integer literals beyond json_int_t (int64) when decoding. */
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_real(v)) {
        snprintf(err, errlen, "field '%s' must be an integer (got %s)", key, payload_type_name(v));
        return -1;
    }
    double d = json_real_value(v);
    char text[32];
    /* Written so that NaN fails too; -2^63 is in range, 2^63 is not. */
    if (!(d >= -0x1p63 && d < 0x1p63)) {
        snprintf(err, errlen, "field '%s' is out of bigint range (got %s)", key,
                 real_text(text, d));
        return -1;
    }
    int64_t i = (int64_t)d; /* defined: d is in range; truncates toward zero */
    if ((double)i != d) {
        snprintf(err, errlen, "field '%s' must be a whole number (got %s)", key,
                 real_text(text, d));
        return -1;
    }
    *out = i;
    return 0;
}

int payload_uuid(const json_t *obj, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v;
    if (field(obj, key, false, &v, err, errlen) < 0)
        return -1;
    return uuid_value(v, key, out, err, errlen);
}

int payload_opt_uuid(const json_t *obj, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v;
    *out = NULL;
    if (field(obj, key, true, &v, err, errlen) < 0)
        return -1;
    if (v == NULL)
        return 0;
    return uuid_value(v, key, out, err, errlen);
}

/* A required field of one container type (what: "an array", "an object"). */
static int container(const json_t *obj, const char *key, json_type type, const char *what,
                     const json_t **out, char *err, size_t errlen)
{
    json_t *v;
    if (field(obj, key, false, &v, err, errlen) < 0)
        return -1;
    if (json_typeof(v) != type) {
        snprintf(err, errlen, "field '%s' must be %s (got %s)", key, what, payload_type_name(v));
        return -1;
    }
    *out = v;
    return 0;
}

int payload_array(const json_t *obj, const char *key, const json_t **out, char *err, size_t errlen)
{
    return container(obj, key, JSON_ARRAY, "an array", out, err, errlen);
}

int payload_object(const json_t *obj, const char *key, const json_t **out, char *err, size_t errlen)
{
    return container(obj, key, JSON_OBJECT, "an object", out, err, errlen);
}

int payload_object_at(const json_t *array, const char *key, size_t i, const json_t **out, char *err,
                      size_t errlen)
{
    const json_t *v = json_array_get(array, i);
    if (!json_is_object(v)) {
        snprintf(err, errlen, "%s[%zu] must be a JSON object (got %s)", key, i,
                 v ? payload_type_name(v) : "nothing");
        return -1;
    }
    *out = v;
    return 0;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool payload_is_uuid(const char *text)
{
    for (int i = 0; i < 36; i++) {
        bool hyphen = i == 8 || i == 13 || i == 18 || i == 23;
        if (hyphen ? text[i] != '-' : !is_hex(text[i]))
            return false; /* also stops at a short string's terminating NUL */
    }
    return text[36] == '\0';
}

bool payload_add_overflows(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return true;
    *out = r;
    return false;
}

bool payload_mul_overflows(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return true;
    *out = r;
    return false;
}
