/*
 * migrate: `projectord migrate [--dry-run] [--examples|--no-examples]
 * [--sql-dir DIR]`, the bundled
 * migrations applied in Flyway's order (every versioned V file by version,
 * then every repeatable repeatable/R__ file by name) and recorded in Flyway's history
 * table, public.flyway_schema_history, so projectord and Flyway can take
 * turns on one database (docs/reference.md, "Migrations").
 *
 * Also the pure parts the unit tests check: file names and checksums.
 */
#ifndef PROJECTORD_MIGRATE_H
#define PROJECTORD_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Where the migrations are when neither --sql-dir nor the environment says. */
#ifndef PROJECTORD_SQL_DIR_DEFAULT
#error "PROJECTORD_SQL_DIR_DEFAULT (the installed sql/ directory) comes from CMakeLists.txt"
#endif
#define MIGRATE_SQL_DIR_ENV "PROJECTORD_SQL_DIR"

/*
 * The repeatable R__ files sit in this subdirectory of the sql directory,
 * not among the V files: when every .sql file of sql/ is applied in
 * lexical order (SPEC §2: psql, the postgres image's initdb), an R__ file
 * would come first, on an empty database. Flyway finds them there too (it
 * scans its locations recursively).
 */
#define MIGRATE_REPEATABLE_DIR "repeatable"

/*
 * The example projections' migrations (their tables, and what later
 * migrations change in them) are named in this file of the sql directory,
 * one a line; --no-examples leaves them out (not applied, not recorded).
 * Core migrations never touch the examples' tables (sql/README.md).
 */
#define MIGRATE_EXAMPLES_LIST "examples.list"

/* Whether `migrate` applies the examples' migrations unless told (CMake's PROJECTORD_EXAMPLES). */
#ifndef PROJECTORD_EXAMPLES
#error "PROJECTORD_EXAMPLES (1: the four example projections built in) comes from CMakeLists.txt"
#endif
#define MIGRATE_EXAMPLES_DEFAULT PROJECTORD_EXAMPLES

/* The advisory lock every `migrate` holds while it looks and applies (key2 0). */
#define MIGRATE_LOCK 1886546541 /* "prjm" */

/*
 * Flyway's checksum of a migration: CRC32 over the file's lines without
 * their line breaks (a leading UTF-8 byte order mark left out), as a signed
 * 32-bit value. So \n and \r\n checkouts give the same checksum.
 */
int32_t migrate_checksum(const char *text, size_t len);

/*
 * Parse a migration's file name. "V001__event_store.sql" gives kind 'V',
 * version "001" (Flyway's: '_' between version parts becomes '.'), and
 * description "event store"; "R__status_views.sql" kind 'R', version "",
 * description "status views". Returns 0, or -1 when the name is not a
 * migration's (then nothing is written).
 */
int migrate_parse_name(const char *name, char *kind, char *version, size_t version_len,
                       char *description, size_t description_len);

/* Compare two Flyway versions part by part, numerically ("1.10" > "1.9", "001" = "1"). */
int migrate_version_cmp(const char *a, const char *b);

/* The command. */
int cli_migrate(const struct config *cfg, int argc, char **argv);

#endif
