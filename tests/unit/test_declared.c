/*
 * test_declared: the loader of declared projections (declared_load.c) and
 * its interpreter (declared.c), without a database. The loader's every
 * refusal is one "FILE:LINE: problem" line; the shipped declared forms of
 * the four examples load; and the interpreter finds the same events bad,
 * with the same reasons, as the compiled-in projections do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "bulk.h"
#include "declared.h"
#include "payload.h"
#include "registry.h"

#ifndef PROJECTORD_SOURCE_DIR
#error "PROJECTORD_SOURCE_DIR comes from tests/CMakeLists.txt"
#endif
#define DECLARED_DIR PROJECTORD_SOURCE_DIR "/projections/declared"

static char tmpdir[] = "/tmp/test_declared.XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* A good file with `handler` as its handlers list. */
#define FILE_WITH(handlers)                                                                        \
    "name = \"widgets\";\n"                                                                        \
    "version = 1;\n"                                                                               \
    "tables = [ \"widgets\" ];\n"                                                                  \
    "handlers = (\n" handlers ");\n"

#define GOOD_HANDLER                                                                               \
    "  { event = \"WidgetSeen\";\n"                                                                \
    "    fields = { colour = \"text\"; };\n"                                                       \
    "    statements = ( { params = [ \"event.aggregate_id\", \"colour\" ];\n"                      \
    "                     sql = \"UPDATE widgets SET colour = $2 WHERE id = $1::uuid\"; } );\n"    \
    "  }\n"

/* Load text as NAME.conf: NULL with the error in err, or the declaration. */
static struct declared *load(const char *text, char *err, size_t errlen)
{
    err[0] = '\0';
    return declared_load_file(write_file("w.conf", text), err, errlen);
}

/* The error of loading text must be "PATH:line: ..." and contain what. */
static void assert_refused(const char *text, int line, const char *what)
{
    char err[1024], want[600];
    struct declared *d = load(text, err, sizeof err);
    if (d)
        fail_msg("loaded, but should fail with line %d: %s", line, what);
    snprintf(want, sizeof want, "%s/w.conf:%d: ", tmpdir, line);
    if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, what))
        fail_msg("expected '%s...%s', got '%s'", want, what, err);
    assert_null(strchr(err, '\n'));
}

/* Back to the compiled-in projections, freeing the declared ones loaded. */
static void reset_registry(void)
{
    struct declared *loaded[64];
    size_t n = 0;
    for (size_t i = 0; i < projection_registry_count && n < 64; i++)
        if (declared_of(projection_registry[i]))
            loaded[n++] = (struct declared *)declared_of(projection_registry[i]);
    registry_reset();
    for (size_t i = 0; i < n; i++)
        declared_free(loaded[i]);
}

static void test_a_good_file_loads(void **state)
{
    (void)state;
    char err[1024];
    struct declared *d = load(FILE_WITH(GOOD_HANDLER), err, sizeof err);
    assert_non_null(d);
    assert_string_equal(d->proj.name, "widgets");
    assert_int_equal(d->proj.version, 1);
    assert_string_equal(d->proj.tables[0], "widgets");
    assert_null(d->proj.tables[1]);
    assert_string_equal(d->proj.handlers[0].event_type, "WidgetSeen");
    assert_ptr_equal(d->proj.handlers[0].fn, declared_handle);
    assert_null(d->proj.handlers[1].event_type);
    assert_int_equal(d->proj.statements[0].nparams, 2);
    assert_int_equal(d->proj.statements[0].key, 1); /* event.aggregate_id */
    assert_null(d->proj.statements[1].sql);
    assert_ptr_equal(declared_of(&d->proj), d);
    assert_int_equal(registry_check(&d->proj, err, sizeof err), 0);
    declared_free(d);
}

static void test_refusals_name_file_and_line(void **state)
{
    (void)state;
    assert_refused("name = \"widgets\";\nversion = = 1;\n", 2, "syntax error");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\";\n"
                             "    fields = { colour = \"colour\"; };\n"
                             "  }\n"),
                   6, "unknown field type 'colour'");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\";\n"
                             "    fields = { colour = \"text\"; };\n"
                             "    statements = ( { params = [ \"event.aggregate_id\",\n"
                             "                                \"color\" ];\n"
                             "                     sql = \"UPDATE widgets SET c = $2 WHERE id = "
                             "$1::uuid\"; } );\n"
                             "  }\n"),
                   8, "parameter 'color' names no declared field");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\";\n"
                             "    statements = ( { params = [ \"event.aggregate_id\" ];\n"
                             "                     sql = \"UPDATE widgets SET c = $2 WHERE id = "
                             "$1::uuid\"; } );\n"
                             "  }\n"),
                   7, "its SQL uses 2 parameters ($1..$2) but 'params' names 1");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\";\n"
                             "    statements = ( { bulk = true; params = [ \"event.position\" ];\n"
                             "                     sql = \"SELECT $1::bigint[]\"; } );\n"
                             "  }\n"),
                   6, "a bulk statement needs a key");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\"; colour = \"text\"; }\n"), 5,
                   "unknown key 'colour'");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\"; fields = { n = { type = \"text\"; "
                             "min = 1; }; }; }\n"),
                   5, "'min' is for integer fields");
    assert_refused(FILE_WITH(GOOD_HANDLER ", " GOOD_HANDLER), 10, "has a handler already");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\"; statements = ( { params = "
                             "[ \"event.nothing\" ]; sql = \"SELECT $1\"; } ); }\n"),
                   5, "names no envelope value");
    assert_refused("name = \"Widgets\";\nversion = 1;\ntables = [ \"widgets\" ];\n"
                   "handlers = (" GOOD_HANDLER ");\n",
                   1, "a name is 1 to 40 of a-z");
    assert_refused("name = \"widgets\";\nversion = 1;\nhandlers = (" GOOD_HANDLER ");\n", 0,
                   "'tables' is missing");
    assert_refused(FILE_WITH("  { event = \"WidgetSeen\"; fields = { items = \"array\"; };\n"
                             "    statements = ( { for_each = \"items\"; sql = \"SELECT 1\"; } "
                             "); }\n"),
                   6, "for_each 'items' must name a required array field");
    assert_refused(FILE_WITH("  { event = \"*\"; payload = false;\n"
                             "    statements = ( { per_batch = true; sql = \"SELECT 1\"; } ); }\n"),
                   6, "a per_batch statement needs parameters");
}

static void test_a_directory_refuses_a_duplicate_name(void **state)
{
    (void)state;
    char err[1024];
    write_file("a.conf", FILE_WITH(GOOD_HANDLER));
    write_file("b.conf", FILE_WITH(GOOD_HANDLER));
    write_file("notes.txt", "not a projection");
    assert_int_equal(declared_load_dir(tmpdir, err, sizeof err), -1);
    char want[600];
    snprintf(want, sizeof want, "%s/b.conf:1: duplicate name: projection 'widgets' is declared in ",
             tmpdir);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    assert_null(registry_find("widgets")); /* all or nothing */
    unlink(write_file("b.conf", ""));
    unlink(write_file("w.conf", ""));
}

static void test_the_shipped_examples_load_and_replace_the_compiled_ones(void **state)
{
    (void)state;
    char err[1024] = "";
    const struct projection *compiled = registry_find("orders");
    size_t before = projection_registry_count;
    assert_int_equal(declared_load_dir(DECLARED_DIR, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(projection_registry_count, before);
    const struct projection *orders = registry_find("orders");
    assert_ptr_not_equal(orders, compiled);
    assert_non_null(declared_of(orders));
    assert_non_null(strstr(registry_origin(orders), "projections/declared/orders.conf"));
    assert_null(registry_origin(compiled));
    assert_int_equal(registry_check_all(err, sizeof err), 0);
    reset_registry();
    assert_ptr_equal(registry_find("orders"), compiled);
}

/* Run p's handler of event_type on payload text; outcome and err. */
static enum pj_outcome run(const struct projection *p, const char *event_type, const char *text,
                           char *err, size_t *held)
{
    static const struct pj_event event = {.position_text = "42",
                                          .aggregate_id = "00000000-0000-0000-0000-000000000003",
                                          .aggregate_version_text = "3",
                                          .occurred_at = "2026-11-21 10:00:00+00"};
    const struct pj_handler *h = registry_handler(p, event_type);
    assert_non_null(h);
    struct pj_ctx ctx;
    assert_int_equal(batch_init(&ctx, p, NULL), 0); /* bulk statements only: no connection */
    json_t *payload = payload_decode(text, strlen(text), NULL, ctx.err, sizeof ctx.err);
    assert_non_null(payload);
    struct pj_event ev = event;
    ev.event_type = event_type;
    ctx.event = 0;
    enum pj_outcome rc = h->fn(&ctx, &ev, (h->flags & PJ_NO_PAYLOAD) ? NULL : payload);
    strcpy(err, ctx.err);
    if (held)
        *held = ctx.bulk.held;
    json_decref(payload);
    batch_free(&ctx);
    return rc;
}

/*
 * Bad payloads, and good ones of bulk statements (which are only held):
 * the compiled-in and the declared form must say the same.
 */
static void test_declared_and_compiled_judge_payloads_alike(void **state)
{
    (void)state;
    static const struct {
        const char *projection, *event_type, *payload;
    } cases[] = {
        {"catalog", "CategoryCreated", "{}"},
        {"catalog", "CategoryCreated", "{\"name\": null}"},
        {"catalog", "CategoryCreated", "{\"name\": 5}"},
        {"catalog", "ProductCreated", "{\"sku\": \"a\", \"name\": \"b\", \"price_cents\": 1.5}"},
        {"catalog", "ProductCreated", "{\"sku\": \"a\", \"name\": \"b\", \"price_cents\": 1e19}"},
        {"catalog", "ProductCreated",
         "{\"sku\": \"a\", \"name\": \"b\", \"price_cents\": 1, \"category_id\": \"nope\"}"},
        {"catalog", "ProductCreated", "{\"sku\": \"a\", \"name\": \"b\", \"price_cents\": \"1\"}"},
        {"catalog", "ProductRenamed", "{\"name\": \"x\"}"},
        {"catalog", "ProductRenamed", "{\"name\": \"x\\u0000y\"}"},
        {"catalog", "ProductPriceChanged", "{\"price_cents\": 2.0}"},
        {"catalog", "ProductCategorized", "{\"category_id\": 7}"},
        {"users", "UserRegistered", "{\"email\": \"a@b\", \"first_name\": \"a\"}"},
        {"users", "UserRegistered",
         "{\"email\": \"a@b\", \"first_name\": \"a\", \"last_name\": \"b\", \"role\": 1}"},
        {"users", "UserEmailChanged", "{\"email\": []}"},
        {"users", "UserRoleChanged", "{\"role\": \"admin\"}"},
        {"users", "UserRoleChanged", "{}"},
        {"users", "UserLoggedIn", "{\"anything\": 1}"},
        {"orders", "OrderPlaced", "{\"customer_id\": \"00000000-0000-0000-0000-000000000001\"}"},
        {"orders", "OrderPlaced",
         "{\"customer_id\": \"00000000-0000-0000-0000-000000000001\", \"items\": {}}"},
        {"orders", "OrderPlaced",
         "{\"customer_id\": \"00000000-0000-0000-0000-000000000001\", \"items\": [1]}"},
        {"orders", "OrderPlaced",
         "{\"customer_id\": \"00000000-0000-0000-0000-000000000001\", \"items\": "
         "[{\"product_id\": \"00000000-0000-0000-0000-000000000002\", \"quantity\": 1, "
         "\"unit_price_cents\": 1}, {\"quantity\": 1}]}"},
        {"orders", "OrderPlaced",
         "{\"customer_id\": \"00000000-0000-0000-0000-000000000001\", \"items\": "
         "[{\"product_id\": \"00000000-0000-0000-0000-000000000002\", \"quantity\": 0, "
         "\"unit_price_cents\": 1}]}"},
        {"orders", "OrderPlaced",
         "{\"customer_id\": \"00000000-0000-0000-0000-000000000001\", \"items\": "
         "[{\"product_id\": \"00000000-0000-0000-0000-000000000002\", \"quantity\": 2, "
         "\"unit_price_cents\": 150}]}"},
        {"orders", "OrderItemAdded",
         "{\"product_id\": \"00000000-0000-0000-0000-000000000002\", \"quantity\": 1, "
         "\"unit_price_cents\": -1}"},
        {"orders", "OrderItemAdded",
         "{\"product_id\": \"00000000-0000-0000-0000-000000000002\", \"quantity\": 0, "
         "\"unit_price_cents\": 1}"},
        {"orders", "OrderItemAdded",
         "{\"product_id\": \"00000000-0000-0000-0000-000000000002\", \"quantity\": 3, "
         "\"unit_price_cents\": 1}"},
        {"orders", "OrderCancelled", "{}"},
        {"orders", "OrderCancelled", "{\"reason\": \"late\"}"},
        {"orders", "OrderShipped", "{}"},
    };
    const struct projection *compiled[sizeof cases / sizeof cases[0]];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        compiled[i] = registry_find(cases[i].projection);
    char err[1024] = "";
    assert_int_equal(declared_load_dir(DECLARED_DIR, err, sizeof err), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cerr[BATCH_ERR_MAX], derr[BATCH_ERR_MAX];
        size_t cheld, dheld;
        const struct projection *declared = registry_find(cases[i].projection);
        assert_non_null(declared_of(declared));
        enum pj_outcome crc = run(compiled[i], cases[i].event_type, cases[i].payload, cerr, &cheld);
        enum pj_outcome drc = run(declared, cases[i].event_type, cases[i].payload, derr, &dheld);
        if (crc != drc || strcmp(cerr, derr) != 0 || cheld != dheld)
            fail_msg("%s %s %s: compiled %d '%s' (%zu held), declared %d '%s' (%zu held)",
                     cases[i].projection, cases[i].event_type, cases[i].payload, crc, cerr, cheld,
                     drc, derr, dheld);
    }
    reset_registry();
}

/* for_each: a statement once per element, its element fields as parameters. */
static void test_for_each_runs_once_per_element(void **state)
{
    (void)state;
    char err[1024];
    struct declared *d = load(
        FILE_WITH("  { event = \"Placed\";\n"
                  "    fields = { items = { type = \"array\"; fields = {\n"
                  "      product_id = \"uuid\"; quantity = { type = \"integer\"; above = 0; };\n"
                  "      note = \"text?\"; }; }; };\n"
                  "    statements = ( { for_each = \"items\"; bulk = true; key = 1;\n"
                  "      params = [ \"items.product_id\", \"items.quantity\", \"items.note\",\n"
                  "                 \"event.aggregate_id\", \"metadata.user\" ];\n"
                  "      sql = \"SELECT $1::uuid[], $2::bigint[], $3::text[], $4::uuid[],"
                  " $5::text[]\"; } );\n"
                  "  }\n"),
        err, sizeof err);
    if (!d)
        fail_msg("%s", err);
    size_t held;
    assert_int_equal(run(&d->proj, "Placed",
                         "{\"items\": [{\"product_id\": \"00000000-0000-0000-0000-00000000000a\","
                         " \"quantity\": 1}, {\"product_id\": "
                         "\"00000000-0000-0000-0000-00000000000b\", \"quantity\": 2, \"note\": "
                         "\"x\"}, {\"product_id\": \"00000000-0000-0000-0000-00000000000c\", "
                         "\"quantity\": 3}]}",
                         err, &held),
                     PJ_OK);
    assert_int_equal(held, 3);
    assert_int_equal(run(&d->proj, "Placed",
                         "{\"items\": [{\"product_id\": \"00000000-0000-0000-0000-00000000000a\","
                         " \"quantity\": 1}, {\"product_id\": "
                         "\"00000000-0000-0000-0000-00000000000b\", \"quantity\": -2}]}",
                         err, &held),
                     PJ_BAD_EVENT);
    assert_string_equal(err, "items[1]: field 'quantity' must be > 0 (got -2)");
    assert_int_equal(held, 0); /* checked before anything is queued */
    declared_free(d);
}

/*
 * Run p's handler for event_type on text like run(), and copy the held
 * events' parameter i of statement 0 (an array literal) into out.
 */
static enum pj_outcome run_held(const struct projection *p, const char *event_type,
                                const char *text, int i, char *err, char *out, size_t outlen)
{
    const struct pj_handler *h = registry_handler(p, event_type);
    assert_non_null(h);
    struct pj_ctx ctx;
    assert_int_equal(batch_init(&ctx, p, NULL), 0);
    json_t *payload = payload_decode(text, strlen(text), NULL, ctx.err, sizeof ctx.err);
    assert_non_null(payload);
    struct pj_event ev = {.position_text = "42",
                          .aggregate_id = "00000000-0000-0000-0000-000000000003",
                          .aggregate_version_text = "3",
                          .occurred_at = "2026-11-21 10:00:00+00",
                          .event_type = event_type};
    ctx.event = 0;
    enum pj_outcome rc = h->fn(&ctx, &ev, payload);
    strcpy(err, ctx.err);
    snprintf(out, outlen, "%s", ctx.bulk.held ? bulk_param(&ctx.bulk, 0, i) : "");
    json_decref(payload);
    batch_free(&ctx);
    return rc;
}

/*
 * sum(ARRAY.FIELD) and sum(ARRAY.A * ARRAY.B): added up in the daemon with
 * bigint overflow checks (a bad event), 0 for an empty array; the loader
 * takes only required integer fields of one required array.
 */
static void test_sum_parameters(void **state)
{
    (void)state;
#define SUM_HANDLER(fields, params, sql)                                                           \
    FILE_WITH("  { event = \"Placed\";\n"                                                          \
              "    fields = { " fields " };\n"                                                     \
              "    statements = ( { bulk = true; params = [ \"event.aggregate_id\", " params       \
              " ];\n"                                                                              \
              "      sql = \"" sql "\"; } );\n"                                                    \
              "  }\n")
#define LINES                                                                                      \
    "items = { type = \"array\"; fields = { q = \"integer\"; p = \"integer\"; n = \"integer?\"; "  \
    "t = \"text\"; }; }; other = { type = \"array\"; fields = { q = \"integer\"; }; };"
    char err[1024], got[256];
    struct declared *d = load(
        SUM_HANDLER(LINES, "\"sum(items.q)\", \"sum( items.q * items.p )\"", "SELECT $1, $2, $3"),
        err, sizeof err);
    if (!d)
        fail_msg("%s", err);
    assert_int_equal(
        run_held(&d->proj, "Placed",
                 "{\"items\": [{\"q\": 2, \"p\": 150, \"t\": \"a\"}, {\"q\": 3, \"p\": "
                 "-7, \"t\": \"b\"}], \"other\": []}",
                 1, err, got, sizeof got),
        PJ_OK);
    assert_string_equal(got, "{\"5\"}");
    run_held(&d->proj, "Placed",
             "{\"items\": [{\"q\": 2, \"p\": 150, \"t\": \"a\"}, {\"q\": 3, \"p\": -7, \"t\": "
             "\"b\"}], \"other\": []}",
             2, err, got, sizeof got);
    assert_string_equal(got, "{\"279\"}");
    assert_int_equal(
        run_held(&d->proj, "Placed", "{\"items\": [], \"other\": []}", 2, err, got, sizeof got),
        PJ_OK);
    assert_string_equal(got, "{\"0\"}");
    /* A product beyond bigint, and a sum beyond it: bad events, nothing held. */
    assert_int_equal(run_held(&d->proj, "Placed",
                              "{\"items\": [{\"q\": 4611686018427387904, \"p\": 2, \"t\": \"a\"}], "
                              "\"other\": []}",
                              1, err, got, sizeof got),
                     PJ_BAD_EVENT);
    assert_string_equal(err, "sum(items.q * items.p) is beyond bigint");
    assert_string_equal(got, "");
    assert_int_equal(run_held(&d->proj, "Placed",
                              "{\"items\": [{\"q\": 9223372036854775807, \"p\": 0, \"t\": \"a\"}, "
                              "{\"q\": 1, \"p\": 0, \"t\": \"a\"}], \"other\": []}",
                              1, err, got, sizeof got),
                     PJ_BAD_EVENT);
    assert_string_equal(err, "sum(items.q) is beyond bigint");
    declared_free(d);

    const char *wants = "a sum takes required integer fields of one required array";
    assert_refused(SUM_HANDLER(LINES, "\"sum(items.t)\"", "SELECT $1, $2"), 7, wants);
    assert_refused(SUM_HANDLER(LINES, "\"sum(items.n)\"", "SELECT $1, $2"), 7, wants);
    assert_refused(SUM_HANDLER(LINES, "\"sum(items.x)\"", "SELECT $1, $2"), 7, wants);
    assert_refused(SUM_HANDLER(LINES, "\"sum(items.q * other.q)\"", "SELECT $1, $2"), 7, wants);
    assert_refused(SUM_HANDLER(LINES, "\"sum(q)\"", "SELECT $1, $2"), 7, wants);
    assert_refused(SUM_HANDLER(LINES, "\"sum(items.q\"", "SELECT $1, $2"), 7, "a sum is sum(");
    assert_refused(SUM_HANDLER("items = \"array?\";", "\"sum(items.q)\"", "SELECT $1, $2"), 7,
                   wants);
#undef SUM_HANDLER
#undef LINES
}

/* Types beyond the examples': boolean, numeric, timestamp, object, json. */
static void test_field_types(void **state)
{
    (void)state;
    char err[1024];
    struct declared *d = load(
        FILE_WITH("  { event = \"T\";\n"
                  "    fields = { b = \"boolean\"; n = \"numeric\"; t = \"timestamp\"; "
                  "o = \"object?\"; j = \"json\"; };\n"
                  "    statements = ( { bulk = true;\n"
                  "      params = [ \"event.aggregate_id\", \"b\", \"n\", \"t\", \"o\", \"j\" ];\n"
                  "      sql = \"SELECT $1, $2, $3, $4, $5, $6\"; } );\n"
                  "  }\n"),
        err, sizeof err);
    if (!d)
        fail_msg("%s", err);
    assert_int_equal(run(&d->proj, "T",
                         "{\"b\": true, \"n\": 1.25, \"t\": \"2026-01-01\", \"j\": [1]}", err,
                         NULL),
                     PJ_OK);
    assert_int_equal(run(&d->proj, "T", "{\"b\": 1, \"n\": 1, \"t\": \"x\", \"j\": 1}", err, NULL),
                     PJ_BAD_EVENT);
    assert_string_equal(err, "field 'b' must be a boolean (got integer)");
    assert_int_equal(
        run(&d->proj, "T", "{\"b\": false, \"n\": \"1\", \"t\": \"x\", \"j\": 1}", err, NULL),
        PJ_BAD_EVENT);
    assert_string_equal(err, "field 'n' must be a number (got string)");
    assert_int_equal(run(&d->proj, "T",
                         "{\"b\": false, \"n\": 1, \"t\": \"x\", \"o\": [], \"j\": 1}", err, NULL),
                     PJ_BAD_EVENT);
    assert_string_equal(err, "field 'o' must be an object (got array)");
    assert_int_equal(
        run(&d->proj, "T", "{\"b\": false, \"n\": 1, \"t\": \"x\", \"j\": null}", err, NULL),
        PJ_BAD_EVENT);
    assert_string_equal(err, "field 'j' must not be null");
    declared_free(d);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_good_file_loads),
        cmocka_unit_test(test_refusals_name_file_and_line),
        cmocka_unit_test(test_a_directory_refuses_a_duplicate_name),
        cmocka_unit_test(test_the_shipped_examples_load_and_replace_the_compiled_ones),
        cmocka_unit_test(test_declared_and_compiled_judge_payloads_alike),
        cmocka_unit_test(test_for_each_runs_once_per_element),
        cmocka_unit_test(test_field_types),
        cmocka_unit_test(test_sum_parameters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
