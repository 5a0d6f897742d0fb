/*
 * payload: strict reading of event payload fields (SPEC §4 payload rules).
 *
 * Pure functions over jansson values. On failure they return -1 and write a
 * one-line reason ("field 'price_cents' must be an integer") into err; the
 * caller decides what a bad event means. Strings handed out point into the
 * json value and live as long as it does.
 */
#ifndef PROJECTORD_PAYLOAD_H
#define PROJECTORD_PAYLOAD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Decode event_data text (jsonb as PostgreSQL prints it); the result must
 * be a JSON object. Returns a new reference (caller json_decref()s it) or
 * NULL with err set; then *out_of_memory (when not NULL) says whether the
 * decoding ran out of memory, which is no fault of the event.
 */
/* The JSON type of v as messages name it ("object", "integer", "null", ...). */
const char *payload_type_name(const json_t *v);

json_t *payload_decode(const char *text, size_t len, bool *out_of_memory, char *err, size_t errlen);

/* Required string: present, not null, a JSON string without NUL bytes. */
int payload_string(const json_t *obj, const char *key, const char **out, char *err, size_t errlen);

/* Optional string: absent or null gives *out = NULL and success. */
int payload_opt_string(const json_t *obj, const char *key, const char **out, char *err,
                       size_t errlen);

/*
 * Required integer: a JSON integer, or a real with no fractional part, in
 * bigint range.
 */
int payload_int64(const json_t *obj, const char *key, int64_t *out, char *err, size_t errlen);

/* Required uuid in 8-4-4-4-12 hex form (either case). */
int payload_uuid(const json_t *obj, const char *key, const char **out, char *err, size_t errlen);

/* Optional uuid: absent or null gives *out = NULL and success. */
int payload_opt_uuid(const json_t *obj, const char *key, const char **out, char *err,
                     size_t errlen);

/* Required array. */
int payload_array(const json_t *obj, const char *key, const json_t **out, char *err, size_t errlen);

/* Required object. */
int payload_object(const json_t *obj, const char *key, const json_t **out, char *err,
                   size_t errlen);

/*
 * Element i of array (the field `key`, for messages), which must be an
 * object: "items[2] must be a JSON object (got string)". i below the size.
 */
int payload_object_at(const json_t *array, const char *key, size_t i, const json_t **out, char *err,
                      size_t errlen);

/* True if text is a uuid in 8-4-4-4-12 hex form. */
bool payload_is_uuid(const char *text);

/* a + b and a * b into *out; they return true (and leave *out unset) on bigint overflow. */
bool payload_add_overflows(int64_t a, int64_t b, int64_t *out);
bool payload_mul_overflows(int64_t a, int64_t b, int64_t *out);

#endif
