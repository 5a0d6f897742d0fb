/*
 * test_payload: the SPEC §4 payload rules as payload.c implements them.
 * Each case fails if its rule is dropped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"

#define ERRLEN 256

/* Decode text, which the test expects to be a valid JSON object. */
static json_t *object(const char *text)
{
    char err[ERRLEN] = "";
    json_t *v = payload_decode(text, strlen(text), NULL, err, sizeof err);
    if (v == NULL)
        fail_msg("decode failed: %s", err);
    return v;
}

/* payload_int64 of field "n" in text; returns its result, value in *out. */
static int int_of(const char *text, int64_t *out, char *err)
{
    json_t *v = object(text);
    int rc = payload_int64(v, "n", out, err, ERRLEN);
    json_decref(v);
    return rc;
}

static void assert_int_ok(const char *text, int64_t want)
{
    char err[ERRLEN] = "";
    int64_t got = 0;
    if (int_of(text, &got, err) != 0)
        fail_msg("%s: unexpected error: %s", text, err);
    assert_true(got == want);
}

static void assert_int_bad(const char *text, const char *want_err)
{
    char err[ERRLEN] = "";
    int64_t got = 12345;
    if (int_of(text, &got, err) == 0)
        fail_msg("%s: accepted as %lld", text, (long long)got);
    assert_string_equal(err, want_err);
}

/* payload_uuid of field "id" in text: 0 or -1. */
static int uuid_of(const char *text, const char **out, char *err)
{
    json_t *v = object(text);
    int rc = payload_uuid(v, "id", out, err, ERRLEN);
    json_decref(v);
    return rc;
}

static void test_decode_object(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    json_t *v = payload_decode("{\"a\": 1}", 8, NULL, err, sizeof err);
    assert_non_null(v);
    assert_true(json_is_object(v));
    json_decref(v);
}

static void test_decode_uses_len(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    /* Only the first 2 bytes are the payload. */
    json_t *v = payload_decode("{}garbage", 2, NULL, err, sizeof err);
    assert_non_null(v);
    json_decref(v);
}

static void assert_not_object(const char *text, const char *want_err)
{
    char err[ERRLEN] = "";
    json_t *v = payload_decode(text, strlen(text), NULL, err, sizeof err);
    assert_null(v);
    assert_string_equal(err, want_err);
}

static void test_decode_not_object(void **state)
{
    (void)state;
    assert_not_object("[1, 2]", "payload is not a JSON object (got array)");
    assert_not_object("\"text\"", "payload is not a JSON object (got string)");
    assert_not_object("42", "payload is not a JSON object (got integer)");
    assert_not_object("4.5", "payload is not a JSON object (got number)");
    assert_not_object("null", "payload is not a JSON object (got null)");
    assert_not_object("true", "payload is not a JSON object (got boolean)");
}

static void test_decode_invalid(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *text = "{\"a\": }";
    assert_null(payload_decode(text, strlen(text), NULL, err, sizeof err));
    assert_non_null(strstr(err, "payload is not valid JSON: "));
    assert_non_null(strstr(err, " at line 1 column "));

    assert_null(payload_decode("", 0, NULL, err, sizeof err));
    assert_non_null(strstr(err, "payload is not valid JSON: "));
}

static void test_decode_error_is_one_line(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    /* A raw newline inside a string: jansson quotes it back in its message. */
    const char *text = "{\"a\": \"x\ny\"}";
    assert_null(payload_decode(text, strlen(text), NULL, err, sizeof err));
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "payload is not valid JSON: "));
}

static void test_decode_integer_beyond_int64(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *text = "{\"n\": 9223372036854775808}";
    assert_null(payload_decode(text, strlen(text), NULL, err, sizeof err));
    assert_non_null(strstr(err, "payload is not valid JSON: "));
    text = "{\"n\": -9223372036854775809}";
    assert_null(payload_decode(text, strlen(text), NULL, err, sizeof err));
}

/* {"a": DEPTH nested arrays, "b": "after"<tail>; caller frees. */
static char *deep_text(int depth, const char *tail, size_t *len)
{
    const char *head = "{\"a\": ", *field = ", \"b\": \"after\"";
    *len = strlen(head) + 2 * (size_t)depth + strlen(field) + strlen(tail);
    char *text = malloc(*len + 1);
    assert_non_null(text);
    char *p = text;
    p += sprintf(p, "%s", head);
    memset(p, '[', (size_t)depth);
    p += depth;
    memset(p, ']', (size_t)depth);
    p += depth;
    sprintf(p, "%s%s", field, tail);
    return text;
}

static void test_decode_deep_nesting(void **state)
{
    (void)state;
    /* jansson stops at 2048 levels, jsonb does not: deeper containers are
     * emptied and the top-level fields still read. */
    size_t len;
    char *text = deep_text(10000, "}", &len);
    char err[ERRLEN] = "";
    json_t *v = payload_decode(text, len, NULL, err, sizeof err);
    assert_non_null(v);
    const char *b;
    assert_int_equal(payload_string(v, "b", &b, err, sizeof err), 0);
    assert_string_equal(b, "after");
    const json_t *a = json_object_get(v, "a");
    int depth = 0;
    for (; json_is_array(a) && json_array_size(a) == 1; a = json_array_get(a, 0))
        depth++;
    assert_true(json_is_array(a) && json_array_size(a) == 0);
    assert_true(depth >= 32 && depth < 2048);
    json_decref(v);
    free(text);

    /* Text that is not JSON stays an error after pruning. */
    text = deep_text(10000, ", }", &len);
    assert_null(payload_decode(text, len, NULL, err, sizeof err));
    assert_non_null(strstr(err, "payload is not valid JSON: "));
    free(text);
    text = deep_text(3000, "", &len); /* unterminated */
    assert_null(payload_decode(text, len, NULL, err, sizeof err));
    free(text);
    /* Brackets inside strings are not nesting. */
    text = deep_text(5000, ", \"c\": \"[[{\\\"]\"}", &len);
    v = payload_decode(text, len, NULL, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(payload_string(v, "c", &b, err, sizeof err), 0);
    assert_string_equal(b, "[[{\"]");
    json_decref(v);
    free(text);
}

static void test_decode_duplicate_keys_last_wins(void **state)
{
    (void)state;
    /* As jsonb does; jsonb text never holds duplicates anyway. */
    json_t *v = object("{\"n\": 1, \"n\": 2}");
    int64_t n = 0;
    char err[ERRLEN];
    assert_int_equal(payload_int64(v, "n", &n, err, sizeof err), 0);
    assert_true(n == 2);
    json_decref(v);
}

static void test_decode_nul_escape_decodes(void **state)
{
    (void)state;
    /* It decodes, so that payload_string can name the field. */
    json_t *v = object("{\"s\": \"a\\u0000b\"}");
    json_decref(v);
}

static void test_int64_whole(void **state)
{
    (void)state;
    assert_int_ok("{\"n\": 5}", 5);
    assert_int_ok("{\"n\": -7}", -7);
    assert_int_ok("{\"n\": 0}", 0);
    assert_int_ok("{\"n\": 5.0}", 5);
    assert_int_ok("{\"n\": 5e2}", 500);
    assert_int_ok("{\"n\": -0.0}", 0);
    assert_int_ok("{\"n\": 9223372036854775807}", INT64_MAX);
    assert_int_ok("{\"n\": -9223372036854775808}", INT64_MIN);
    /* -2^63 as a real is exactly representable and in range. */
    assert_int_ok("{\"n\": -9223372036854775808.0}", INT64_MIN);
    assert_int_ok("{\"n\": -9.223372036854775808e18}", INT64_MIN);
}

static void test_int64_not_whole(void **state)
{
    (void)state;
    assert_int_bad("{\"n\": 5.5}", "field 'n' must be a whole number (got 5.5)");
    assert_int_bad("{\"n\": 0.1}", "field 'n' must be a whole number (got 0.1)");
    assert_int_bad("{\"n\": -0.25}", "field 'n' must be a whole number (got -0.25)");
    assert_int_bad("{\"n\": 1e-300}", "field 'n' must be a whole number (got 1e-300)");
}

static void test_int64_out_of_range(void **state)
{
    (void)state;
    assert_int_bad("{\"n\": 9.3e18}", "field 'n' is out of bigint range (got 9.3e+18)");
    assert_int_bad("{\"n\": -9.3e18}", "field 'n' is out of bigint range (got -9.3e+18)");
    /* 2^63 exactly: one past the largest bigint. */
    assert_int_bad("{\"n\": 9223372036854775808.0}",
                   "field 'n' is out of bigint range (got 9.2233720368547758e+18)");
    assert_int_bad("{\"n\": 1e300}", "field 'n' is out of bigint range (got 1e+300)");
}

static void test_int64_wrong_type(void **state)
{
    (void)state;
    assert_int_bad("{\"n\": \"5\"}", "field 'n' must be an integer (got string)");
    assert_int_bad("{\"n\": true}", "field 'n' must be an integer (got boolean)");
    assert_int_bad("{\"n\": [5]}", "field 'n' must be an integer (got array)");
    assert_int_bad("{\"n\": {}}", "field 'n' must be an integer (got object)");
}

static void test_int64_missing_or_null(void **state)
{
    (void)state;
    assert_int_bad("{\"n\": null}", "field 'n' must not be null");
    assert_int_bad("{}", "field 'n' is missing");
    assert_int_bad("{\"N\": 1}", "field 'n' is missing");
}

static void test_string(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *s = NULL;
    json_t *v = object("{\"s\": \"h\\u00e9llo\", \"e\": \"\", \"i\": 3, \"z\": null,"
                       " \"nul\": \"a\\u0000b\", \"nul0\": \"\\u0000\"}");

    assert_int_equal(payload_string(v, "s", &s, err, sizeof err), 0);
    assert_string_equal(s, "h\xc3\xa9llo");
    assert_int_equal(payload_string(v, "e", &s, err, sizeof err), 0);
    assert_string_equal(s, "");

    assert_int_equal(payload_string(v, "i", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'i' must be a string (got integer)");
    assert_int_equal(payload_string(v, "z", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'z' must not be null");
    assert_int_equal(payload_string(v, "absent", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'absent' is missing");
    assert_int_equal(payload_string(v, "nul", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'nul' contains a NUL character");
    assert_int_equal(payload_string(v, "nul0", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'nul0' contains a NUL character");
    json_decref(v);
}

static void test_opt_string(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *s = "untouched";
    json_t *v = object("{\"s\": \"x\", \"z\": null, \"i\": 1.5, \"nul\": \"\\u0000\"}");

    assert_int_equal(payload_opt_string(v, "s", &s, err, sizeof err), 0);
    assert_string_equal(s, "x");
    assert_int_equal(payload_opt_string(v, "z", &s, err, sizeof err), 0);
    assert_null(s);
    s = "untouched";
    assert_int_equal(payload_opt_string(v, "absent", &s, err, sizeof err), 0);
    assert_null(s);

    assert_int_equal(payload_opt_string(v, "i", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'i' must be a string (got number)");
    assert_int_equal(payload_opt_string(v, "nul", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'nul' contains a NUL character");
    json_decref(v);
}

static void assert_uuid_ok(const char *text)
{
    char err[ERRLEN] = "";
    const char *s = NULL;
    if (uuid_of(text, &s, err) != 0)
        fail_msg("%s: unexpected error: %s", text, err);
}

static void assert_uuid_bad(const char *text, const char *want_err)
{
    char err[ERRLEN] = "";
    const char *s = NULL;
    if (uuid_of(text, &s, err) == 0)
        fail_msg("%s: accepted", text);
    assert_string_equal(err, want_err);
}

static void test_uuid(void **state)
{
    (void)state;
    const char *form = "field 'id' is not a uuid in 8-4-4-4-12 form";
    assert_uuid_ok("{\"id\": \"123e4567-e89b-12d3-a456-426614174000\"}");
    assert_uuid_ok("{\"id\": \"123E4567-E89B-12D3-A456-426614174ABC\"}");
    assert_uuid_ok("{\"id\": \"00000000-0000-0000-0000-000000000000\"}");

    /* Forms PostgreSQL accepts and the contract does not. */
    assert_uuid_bad("{\"id\": \"{123e4567-e89b-12d3-a456-426614174000}\"}", form);
    assert_uuid_bad("{\"id\": \"123e4567e89b12d3a456426614174000\"}", form);
    assert_uuid_bad("{\"id\": \"123e-4567-e89b-12d3-a456-4266-1417-4000\"}", form);
    assert_uuid_bad("{\"id\": \"urn:uuid:123e4567-e89b-12d3-a456-426614174000\"}", form);
    /* Lengths 35 and 37. */
    assert_uuid_bad("{\"id\": \"123e4567-e89b-12d3-a456-42661417400\"}", form);
    assert_uuid_bad("{\"id\": \"123e4567-e89b-12d3-a456-4266141740000\"}", form);
    /* Non-hex, a hyphen out of place, blanks. */
    assert_uuid_bad("{\"id\": \"123e4567-e89b-12d3-a456-42661417400g\"}", form);
    assert_uuid_bad("{\"id\": \"123e456-7e89b-12d3-a456-426614174000\"}", form);
    assert_uuid_bad("{\"id\": \" 123e4567-e89b-12d3-a456-42661417400\"}", form);
    assert_uuid_bad("{\"id\": \"123e4567-e89b-12d3-a456-426614174000 \"}", form);
    assert_uuid_bad("{\"id\": \"\"}", form);

    assert_uuid_bad("{\"id\": 5}", "field 'id' must be a uuid string (got integer)");
    assert_uuid_bad("{\"id\": null}", "field 'id' must not be null");
    assert_uuid_bad("{}", "field 'id' is missing");
    assert_uuid_bad("{\"id\": \"123e4567-e89b-12d3-a456-42661417400\\u0000\"}",
                    "field 'id' contains a NUL character");
}

static void test_uuid_value_pointer(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *s = NULL;
    json_t *v = object("{\"id\": \"123E4567-E89B-12D3-A456-426614174ABC\"}");
    assert_int_equal(payload_uuid(v, "id", &s, err, sizeof err), 0);
    assert_string_equal(s, "123E4567-E89B-12D3-A456-426614174ABC");
    json_decref(v);
}

static void test_is_uuid(void **state)
{
    (void)state;
    assert_true(payload_is_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_true(payload_is_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"));
    assert_false(payload_is_uuid("a0eebc999c0b4ef8bb6d6bb9bd380a11"));
    assert_false(payload_is_uuid("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"));
    assert_false(payload_is_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"));
    assert_false(payload_is_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111"));
    assert_false(payload_is_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1z"));
    assert_false(payload_is_uuid("a0eebc99_9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_false(payload_is_uuid("a0eebc99-9c0b-4ef8-bb6d"));
    assert_false(payload_is_uuid(""));
}

static void test_opt_uuid(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *s = "untouched";
    json_t *v = object("{\"a\": \"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\", \"z\": null,"
                       " \"b\": \"a0eebc99\", \"i\": 1}");
    assert_int_equal(payload_opt_uuid(v, "a", &s, err, sizeof err), 0);
    assert_string_equal(s, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_int_equal(payload_opt_uuid(v, "z", &s, err, sizeof err), 0);
    assert_null(s);
    s = "untouched";
    assert_int_equal(payload_opt_uuid(v, "absent", &s, err, sizeof err), 0);
    assert_null(s);
    assert_int_equal(payload_opt_uuid(v, "b", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'b' is not a uuid in 8-4-4-4-12 form");
    assert_int_equal(payload_opt_uuid(v, "i", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 'i' must be a uuid string (got integer)");
    json_decref(v);
}

static void test_array(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const json_t *a = NULL;
    json_t *v = object("{\"items\": [1, 2], \"empty\": [], \"o\": {}, \"z\": null}");
    assert_int_equal(payload_array(v, "items", &a, err, sizeof err), 0);
    assert_int_equal(json_array_size(a), 2);
    assert_int_equal(payload_array(v, "empty", &a, err, sizeof err), 0);
    assert_int_equal(json_array_size(a), 0);
    assert_int_equal(payload_array(v, "o", &a, err, sizeof err), -1);
    assert_string_equal(err, "field 'o' must be an array (got object)");
    assert_int_equal(payload_array(v, "z", &a, err, sizeof err), -1);
    assert_string_equal(err, "field 'z' must not be null");
    assert_int_equal(payload_array(v, "absent", &a, err, sizeof err), -1);
    assert_string_equal(err, "field 'absent' is missing");
    json_decref(v);
}

static void test_field_of_non_object(void **state)
{
    (void)state;
    char err[ERRLEN] = "";
    const char *s = NULL;
    json_t *v = json_pack("[s]", "x");
    assert_int_equal(payload_string(v, "s", &s, err, sizeof err), -1);
    assert_string_equal(err, "field 's' is not inside a JSON object");
    assert_int_equal(payload_opt_string(v, "s", &s, err, sizeof err), -1);
    json_decref(v);
}

static void test_small_err_buffer(void **state)
{
    (void)state;
    char err[8];
    int64_t n;
    json_t *v = object("{\"n\": \"x\"}");
    assert_int_equal(payload_int64(v, "n", &n, err, sizeof err), -1);
    assert_int_equal(strlen(err), sizeof err - 1);
    json_decref(v);
}

static void test_add_overflow(void **state)
{
    (void)state;
    int64_t r = 77;
    assert_false(payload_add_overflows(2, 3, &r));
    assert_true(r == 5);
    assert_false(payload_add_overflows(INT64_MAX - 1, 1, &r));
    assert_true(r == INT64_MAX);
    assert_false(payload_add_overflows(INT64_MIN, INT64_MAX, &r));
    assert_true(r == -1);

    r = 77;
    assert_true(payload_add_overflows(INT64_MAX, 1, &r));
    assert_true(payload_add_overflows(INT64_MIN, -1, &r));
    assert_true(payload_add_overflows(INT64_MAX, INT64_MAX, &r));
    assert_true(r == 77); /* left unset */
}

static void test_mul_overflow(void **state)
{
    (void)state;
    int64_t r = 77;
    assert_false(payload_mul_overflows(3037000499, 3037000499, &r));
    assert_true(r == INT64_C(9223372030926249001));
    assert_false(payload_mul_overflows(-(INT64_C(1) << 62), 2, &r));
    assert_true(r == INT64_MIN);
    assert_false(payload_mul_overflows(0, INT64_MAX, &r));
    assert_true(r == 0);

    r = 77;
    assert_true(payload_mul_overflows(3037000500, 3037000500, &r));
    assert_true(payload_mul_overflows(INT64_C(1) << 32, INT64_C(1) << 31, &r));
    assert_true(payload_mul_overflows(INT64_MIN, -1, &r));
    assert_true(payload_mul_overflows(INT64_MAX, 2, &r));
    assert_true(r == 77); /* left unset */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_object),
        cmocka_unit_test(test_decode_uses_len),
        cmocka_unit_test(test_decode_not_object),
        cmocka_unit_test(test_decode_invalid),
        cmocka_unit_test(test_decode_error_is_one_line),
        cmocka_unit_test(test_decode_integer_beyond_int64),
        cmocka_unit_test(test_decode_deep_nesting),
        cmocka_unit_test(test_decode_duplicate_keys_last_wins),
        cmocka_unit_test(test_decode_nul_escape_decodes),
        cmocka_unit_test(test_int64_whole),
        cmocka_unit_test(test_int64_not_whole),
        cmocka_unit_test(test_int64_out_of_range),
        cmocka_unit_test(test_int64_wrong_type),
        cmocka_unit_test(test_int64_missing_or_null),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_opt_string),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_uuid_value_pointer),
        cmocka_unit_test(test_is_uuid),
        cmocka_unit_test(test_opt_uuid),
        cmocka_unit_test(test_array),
        cmocka_unit_test(test_field_of_non_object),
        cmocka_unit_test(test_small_err_buffer),
        cmocka_unit_test(test_add_overflow),
        cmocka_unit_test(test_mul_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
