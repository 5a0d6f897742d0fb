/*
 * test_registry_check: what the start refuses in a projection's
 * declarations (registry.h), and the $N count it compares with each
 * statement's declared parameters. Each case fails if its check is dropped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "registry.h"

static enum pj_outcome handle(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    (void)ctx;
    (void)ev;
    (void)payload;
    return PJ_OK;
}

static const struct pj_handler handlers[] = {{"Seen", handle, 0}, {NULL, NULL, 0}};
static const char *const tables[] = {"widgets", NULL};

enum { ST_SEEN = PJ_STMT_ID(0, 2), ST_GONE = PJ_STMT_ID(1, 1) };

/* A projection with statements s and the good rest; err gets the check's line. */
static int check(const struct pj_statement *s, char *err, size_t errlen)
{
    const struct projection p = {
        .name = "widgets", .version = 1, .tables = tables, .statements = s, .handlers = handlers};
    err[0] = '\0';
    return registry_check(&p, err, errlen);
}

static void test_the_compiled_in_projections_pass(void **state)
{
    (void)state;
    char err[512] = "";
    assert_int_equal(registry_check_all(err, sizeof err), 0);
    assert_string_equal(err, "");
}

static void test_a_good_projection_passes(void **state)
{
    (void)state;
    static const struct pj_statement s[] = {
        PJ_STATEMENT(ST_SEEN, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                     .sql = "UPDATE widgets w SET at = e.at"
                            " FROM unnest($1::uuid[], $2::timestamptz[]) e(id, at)"
                            " WHERE w.id = e.id"),
        PJ_STATEMENT(ST_GONE, .sql = "DELETE FROM widgets WHERE id = $1::uuid"),
        PJ_STATEMENTS_END,
    };
    char err[512];
    assert_int_equal(check(s, err, sizeof err), 0);
}

/* What the start refuses, each with the line it says (a part of it). */
#define STATEMENTS(...) ((const struct pj_statement[]){__VA_ARGS__, PJ_STATEMENTS_END})
static const struct {
    const struct pj_statement *statements;
    const char *error;
} refused[] = {
    /* The id says 2, the SQL uses $3: every event would fail to bind, for ever. */
    {STATEMENTS(
         PJ_STATEMENT(ST_SEEN, .key = 1, .sql = "UPDATE widgets SET a = $2, b = $3 WHERE id = $1")),
     "projection widgets: statement 0: its SQL uses 3 parameters ($1..$3) but its id declares 2 "
     "(PJ_STMT_ID(0, 2))"},
    {STATEMENTS(PJ_STATEMENT(ST_SEEN, .key = 1, .sql = "DELETE FROM widgets WHERE id = $1")),
     "its SQL uses 1 parameters ($1..$1) but its id declares 2"},
    {STATEMENTS(PJ_STATEMENT(ST_SEEN, .flags = PJ_BULK,
                             .sql = "UPDATE widgets w SET at = e.at"
                                    " FROM unnest($1::uuid[], $2::timestamptz[]) e(id, at)"
                                    " WHERE w.id = e.id")),
     "statement 0 is PJ_BULK without a key"},
    {STATEMENTS(PJ_STATEMENT(ST_SEEN, .key = 3, .sql = "UPDATE widgets SET at = $2 WHERE id = $1")),
     ".key = 3 but it has 2 parameters"},
    {STATEMENTS(PJ_STATEMENT(ST_SEEN, .key = 1, .flags = 0x40,
                             .sql = "UPDATE widgets SET at = $2 WHERE id = $1")),
     "unknown flags 0x40"},
    /* Index 0 never given a statement: the list would look empty, and ST_GONE unknown. */
    {STATEMENTS(PJ_STATEMENT(ST_GONE, .key = 1, .sql = "DELETE FROM widgets WHERE id = $1")),
     "no statement 0: number the statement ids 0, 1, 2"},
    /* The old terminator: a missing index would look the same. */
    {(const struct pj_statement[]){
         PJ_STATEMENT(ST_SEEN, .key = 1, .sql = "UPDATE widgets SET at = $2 WHERE id = $1"),
         {NULL, 0}},
     "end with PJ_STATEMENTS_END"},
};

static void test_what_the_start_refuses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char err[512];
        assert_int_equal(check(refused[i].statements, err, sizeof err), -1);
        if (!strstr(err, refused[i].error))
            fail_msg("case %zu: got \"%s\", wanted \"%s\"", i, err, refused[i].error);
    }
}

static void test_names_the_shadow_schema_can_take(void **state)
{
    (void)state;
    static const struct pj_statement s[] = {PJ_STATEMENTS_END};
    const char *bad[] = {
        "", "Widgets", "2widgets", "wid-gets", "a_name_longer_than_forty_characters_in_all", NULL};
    for (const char **name = bad; *name; name++) {
        const struct projection p = {
            .name = *name, .tables = tables, .statements = s, .handlers = handlers};
        char err[512];
        assert_int_equal(registry_check(&p, err, sizeof err), -1);
        assert_non_null(strstr(err, "a name is 1 to 40 of a-z, 0-9 and _"));
    }
}

static void test_placeholders_outside_quotes_and_comments(void **state)
{
    (void)state;
    assert_int_equal(registry_max_placeholder("SELECT 1"), 0);
    assert_int_equal(registry_max_placeholder("SELECT $1, $12, $3"), 12);
    assert_int_equal(registry_max_placeholder("SELECT $2::int[] -- $9\n"), 2);
    assert_int_equal(registry_max_placeholder("SELECT $1 /* $7 */"), 1);
    assert_int_equal(registry_max_placeholder("SELECT '$5', E'it''s $6', $1"), 1);
    assert_int_equal(registry_max_placeholder("SELECT \"col$4\", $2"), 2);
    assert_int_equal(registry_max_placeholder("SELECT $$ $8 $$, $tag$ $9 $tag$, $3"), 3);
    assert_int_equal(registry_max_placeholder("SELECT a$5 FROM t WHERE x = $1"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_compiled_in_projections_pass),
        cmocka_unit_test(test_a_good_projection_passes),
        cmocka_unit_test(test_what_the_start_refuses),
        cmocka_unit_test(test_names_the_shadow_schema_can_take),
        cmocka_unit_test(test_placeholders_outside_quotes_and_comments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
