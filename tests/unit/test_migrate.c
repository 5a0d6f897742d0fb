/*
 * migrate's pure parts: Flyway's checksum, migration file names, versions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "migrate.h"

static int32_t sum(const char *text)
{
    return migrate_checksum(text, strlen(text));
}

static void test_checksum_is_crc32_of_the_lines(void **state)
{
    (void)state;
    /* The CRC-32 check value: 0xCBF43926 as a signed int, as Flyway stores it. */
    assert_int_equal(sum("123456789"), (int32_t)0xCBF43926u);
    assert_int_equal(sum(""), 0);
    /* Line breaks do not count, whichever they are; a BOM does not either. */
    assert_int_equal(sum("1234\n56789\n"), sum("123456789"));
    assert_int_equal(sum("1234\r\n56789\r\n\r\n"), sum("123456789"));
    assert_int_equal(sum("\xEF\xBB\xBF"
                         "123456789"),
                     sum("123456789"));
    /* Everything else does: spaces, case. */
    assert_int_not_equal(sum("123456789 "), sum("123456789"));
}

static void test_names(void **state)
{
    (void)state;
    char kind, version[16], desc[64];
    assert_int_equal(migrate_parse_name("V001__event_store.sql", &kind, version, sizeof version,
                                        desc, sizeof desc),
                     0);
    assert_int_equal(kind, 'V');
    assert_string_equal(version, "001");
    assert_string_equal(desc, "event store");
    assert_int_equal(
        migrate_parse_name("V1_2__a_b.sql", &kind, version, sizeof version, desc, sizeof desc), 0);
    assert_string_equal(version, "1.2");
    assert_string_equal(desc, "a b");
    assert_int_equal(migrate_parse_name("R__status_views.sql", &kind, version, sizeof version, desc,
                                        sizeof desc),
                     0);
    assert_int_equal(kind, 'R');
    assert_string_equal(version, "");
    assert_string_equal(desc, "status views");
    static const char *const not_migrations[] = {
        "V001_event_store.sql",
        "V__x.sql",
        "R1__x.sql",
        "V001__.sql",
        "V0a1__x.sql",
        "V001__x.sql.orig",
        "README.md",
        "U001__x.sql",
        "V_1__x.sql",
        "original_event_store.sql",
    };
    for (size_t i = 0; i < sizeof not_migrations / sizeof *not_migrations; i++)
        assert_int_equal(migrate_parse_name(not_migrations[i], &kind, version, sizeof version, desc,
                                            sizeof desc),
                         -1);
}

static void test_versions_compare_as_numbers(void **state)
{
    (void)state;
    assert_int_equal(migrate_version_cmp("001", "1"), 0);
    assert_true(migrate_version_cmp("009", "010") < 0);
    assert_true(migrate_version_cmp("1.10", "1.9") > 0);
    assert_true(migrate_version_cmp("1", "1.0.1") < 0);
    assert_true(migrate_version_cmp("100", "99") > 0);
    assert_int_equal(migrate_version_cmp("2.0", "2.0"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_is_crc32_of_the_lines),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_versions_compare_as_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
