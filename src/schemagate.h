/*
 * schemagate: is projectord's schema there? Asked by the one-shot commands
 * (cli_require_schema) and by `run` before it starts its listener and
 * runners: a database without the schema, or holding the original design's
 * event store, is said so in one line naming `projectord migrate`, instead
 * of a raw "relation ... does not exist" from every runner, forever.
 *
 * `run` asks on connections of its own (async, pgconn): the event store
 * (database.conninfo) and, when it is another database, the read model
 * (database.target). A missing schema is logged once at ERROR, and again
 * only when the answer changes; the question is asked again with growing
 * backoff (1 s to 30 s) until the schema is there, then the gate reports
 * ready once and the daemon starts. Connection failures are pgconn's to
 * report and retry.
 */
#ifndef PROJECTORD_SCHEMAGATE_H
#define PROJECTORD_SCHEMAGATE_H

#include <ev.h>

/*
 * One row, one column: NULL when the schema is there, else the one line to
 * say. $1: look for the event store; $2: look for the read model. Reads
 * only the catalogs (not to_regclass: it needs USAGE on the schema), so
 * any role may ask.
 */
#define SCHEMAGATE_SQL                                                                             \
    "SELECT CASE"                                                                                  \
    "  WHEN $1::bool AND NOT s.events THEN format('database %s has no projectord schema (no "      \
    "event_store.domain_event): run `projectord migrate`', quote_ident(current_database()))"       \
    "  WHEN $1::bool AND NOT s.adopted THEN format('database %s holds the event store of the "     \
    "original design (domain_event without global_position): run `projectord migrate` to "         \
    "adopt it', quote_ident(current_database()))"                                                  \
    "  WHEN $2::bool AND NOT s.status THEN format('database %s has no projectord schema (no "      \
    "read_model.projection_metadata): run `projectord migrate`', "                                 \
    "quote_ident(current_database()))"                                                             \
    "  END"                                                                                        \
    "  FROM (SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"                                   \
    "                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"            \
    "                        WHERE n.nspname = 'event_store' AND c.relname = 'domain_event')"      \
    "                   AS events,"                                                                \
    "               EXISTS (SELECT 1 FROM pg_catalog.pg_class c"                                   \
    "                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"            \
    "                         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid"                \
    "                        WHERE n.nspname = 'event_store' AND c.relname = 'domain_event'"       \
    "                          AND a.attname = 'global_position' AND NOT a.attisdropped)"          \
    "                   AS adopted,"                                                               \
    "               EXISTS (SELECT 1 FROM pg_catalog.pg_class c"                                   \
    "                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"            \
    "                        WHERE n.nspname = 'read_model' AND c.relname = "                      \
    "'projection_metadata')"                                                                       \
    "                   AS status) s"

struct schemagate;

typedef void (*schemagate_ready_cb)(void *arg);

/*
 * A gate on conninfo (the event store) and target (the read model; NULL or
 * the same text: one database). ready(arg) is called once, from the loop,
 * when both have the schema; the caller may free the gate there. NULL when
 * out of memory.
 */
struct schemagate *schemagate_new(struct ev_loop *loop, const char *conninfo, const char *target,
                                  schemagate_ready_cb ready, void *arg);
void schemagate_start(struct schemagate *g);
void schemagate_free(struct schemagate *g);

#endif
