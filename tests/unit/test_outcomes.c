/*
 * test_outcomes: what a handler's outcome is (projection.h, enum
 * pj_outcome), run on the compiled-in projections without a database.
 * Running out of memory is PJ_RETRY, never PJ_BAD_EVENT: the event is not
 * at fault, and a bad event is dead-lettered (or stops the projection).
 * Allocation failures are injected: this program links with
 * -Wl,--wrap=realloc,--wrap=calloc (tests/CMakeLists.txt), and jansson
 * takes our allocator through json_set_alloc_funcs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "payload.h"
#include "registry.h"

static bool fail_allocations;

void *__real_realloc(void *p, size_t size);
void *__real_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_calloc(size_t n, size_t size);

void *__wrap_realloc(void *p, size_t size)
{
    return fail_allocations ? NULL : __real_realloc(p, size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_allocations ? NULL : __real_calloc(n, size);
}

static int json_allocations_left; /* jansson's: the next ones fail once this reaches 0 */

static void *json_malloc(size_t size)
{
    return json_allocations_left-- <= 0 ? NULL : malloc(size);
}

/* The envelope fields the example handlers read. */
static const struct pj_event event = {.position_text = "42",
                                      .aggregate_id = "00000000-0000-0000-0000-000000000003",
                                      .occurred_at = "2026-11-21 10:00:00+00"};

/* Run projection name's handler of event_type on payload text (NULL: none). */
static enum pj_outcome run(const char *name, const char *event_type, const char *text,
                           bool out_of_memory, char *err)
{
    const struct projection *p = registry_find(name);
    assert_non_null(p);
    const struct pj_handler *h = registry_handler(p, event_type);
    assert_non_null(h);
    struct pj_ctx ctx;
    assert_int_equal(batch_init(&ctx, p, NULL), 0); /* nothing here reaches the connection */
    json_t *payload =
        text ? payload_decode(text, strlen(text), NULL, ctx.err, sizeof ctx.err) : NULL;
    assert_true(!text || payload);
    struct pj_event ev = event;
    ev.event_type = event_type;
    ctx.event = 0;
    fail_allocations = out_of_memory;
    enum pj_outcome rc = h->fn(&ctx, &ev, payload);
    fail_allocations = false;
    strcpy(err, ctx.err);
    json_decref(payload);
    batch_free(&ctx);
    return rc;
}

/* event_stats collects into arrays that grow: it was "bad event: out of memory". */
static void test_event_stats_out_of_memory_is_retry(void **state)
{
    (void)state;
    char err[BATCH_ERR_MAX];
    assert_int_equal(run("event_stats", "Anything", NULL, false, err), PJ_OK);
    assert_int_equal(run("event_stats", "Anything", NULL, true, err), PJ_RETRY);
    assert_string_equal(err, "");
}

/* A PJ_BULK statement holds the event in arrays, which grow too. */
static void test_a_bulk_statement_out_of_memory_is_retry(void **state)
{
    (void)state;
    char err[BATCH_ERR_MAX];
    assert_int_equal(run("users", "UserLoggedIn", "{}", false, err), PJ_OK);
    assert_int_equal(run("users", "UserLoggedIn", "{}", true, err), PJ_RETRY);
}

/* jansson's own allocator again, also after a failed check. */
static int jansson_allocator(void **state)
{
    (void)state;
    json_set_alloc_funcs(malloc, free);
    return 0;
}

/*
 * jansson 2.14 reports a failed allocation without a reason, or as a syntax
 * error at the token it was reading: fail each allocation in turn.
 */
static void test_a_payload_out_of_memory_is_not_bad_json(void **state)
{
    (void)state;
    const char *text = "{\"a\": [1, \"xx\", {\"b\": 2.5}], \"c\": \"d\"}";
    char err[256] = "";
    bool oom = false;
    json_t *v = NULL;
    json_set_alloc_funcs(json_malloc, free);
    for (int n = 0; !v; n++) {
        json_allocations_left = n;
        v = payload_decode(text, strlen(text), &oom, err, sizeof err);
        assert_true(v || oom);
    }
    json_decref(v);
    json_allocations_left = 1 << 30;
    v = payload_decode("{\"a\": 1e400}", 12, &oom, err, sizeof err);
    assert_null(v);
    assert_false(oom); /* a number jansson can not hold is the event's fault */
}

static void test_a_bad_field_is_a_bad_event_with_its_reason(void **state)
{
    (void)state;
    char err[BATCH_ERR_MAX];
    assert_int_equal(run("users", "UserRoleChanged", "{\"role\": 7}", false, err), PJ_BAD_EVENT);
    assert_string_equal(err, "field 'role' must be a string (got integer)");
}

/* orders reads its nested item lines with projection.h's accessors alone. */
static void test_nested_objects_name_where_they_are(void **state)
{
    (void)state;
    char err[BATCH_ERR_MAX];
    const char *c = "\"customer_id\": \"00000000-0000-0000-0000-000000000009\"";
    char text[512];
    snprintf(text, sizeof text, "{%s, \"items\": [\"x\"]}", c);
    assert_int_equal(run("orders", "OrderPlaced", text, false, err), PJ_BAD_EVENT);
    assert_string_equal(err, "items[0] must be a JSON object (got string)");
    snprintf(text, sizeof text,
             "{%s, \"items\": [{\"product_id\": \"00000000-0000-0000-0000-000000000008\","
             " \"quantity\": 1, \"unit_price_cents\": 5}, {\"product_id\":"
             " \"00000000-0000-0000-0000-000000000008\", \"unit_price_cents\": 5}]}",
             c);
    assert_int_equal(run("orders", "OrderPlaced", text, false, err), PJ_BAD_EVENT);
    assert_string_equal(err, "items[1]: field 'quantity' is missing");
    snprintf(text, sizeof text, "{%s, \"items\": {}}", c);
    assert_int_equal(run("orders", "OrderPlaced", text, false, err), PJ_BAD_EVENT);
    assert_string_equal(err, "field 'items' must be an array (got object)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_stats_out_of_memory_is_retry),
        cmocka_unit_test(test_a_bulk_statement_out_of_memory_is_retry),
        cmocka_unit_test_teardown(test_a_payload_out_of_memory_is_not_bad_json, jansson_allocator),
        cmocka_unit_test(test_a_bad_field_is_a_bad_event_with_its_reason),
        cmocka_unit_test(test_nested_objects_name_where_they_are),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
