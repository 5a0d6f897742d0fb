/*
 * cli: the one-shot commands (status, list, check-config). They may block:
 * they run outside the daemon's loop, with a connect timeout so an
 * unreachable database gives exit 69 instead of a hang.
 */
#ifndef PROJECTORD_CLI_H
#define PROJECTORD_CLI_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "config.h"

/* Exit codes (SPEC §6; sysexits). */
#define EXIT_FAILURE_1   1
#define EXIT_USAGE       64
#define EXIT_UNAVAILABLE 69
/* The database has no projectord schema (or the original design's event
 * store): the line names `projectord migrate`. A failure like any other. */
#define EXIT_NO_SCHEMA 1

/*
 * The command the one-shot connections work for: their application_name
 * becomes "projectord/COMMAND" (pg_stat_activity), unless the conninfo or
 * PGAPPNAME sets one. Before: "projectord". command is borrowed.
 */
void cli_set_command(const char *command);

/*
 * Connect to the read-model database (config_target) with a bounded wait (connect_timeout, unless
 * the conninfo sets one); on failure print one line and return NULL. Caller PQfinish()es.
 */
PGconn *cli_connect(const struct config *cfg);

/* The same for another database (NULL or "": libpq's PG* variables). */
PGconn *cli_connect_to(const char *conninfo);

/*
 * Refuse a hot standby (docs: the event store's snapshots there do not list
 * the primary's transactions in progress; nothing can be written there).
 * target: the command's connection (cli_connect); events: the command reads
 * the event store as well (a separate database.conninfo is asked too).
 * Returns 0, or an exit code after printing one line: EXIT_CONFIG for a
 * standby, EXIT_UNAVAILABLE when the event store cannot be reached,
 * EXIT_FAILURE_1 when the question failed.
 */
int cli_require_primary(const struct config *cfg, PGconn *target, bool events);

/*
 * Refuse a database without projectord's schema (schemagate.h's question):
 * the read model on conn, and the event store there too unless it is in
 * another database (database.target): an original design's event store
 * is named as such, whatever the command reads. Returns 0, or an exit code after printing one
 * line: EXIT_NO_SCHEMA naming `projectord migrate`, EXIT_FAILURE_1 when the
 * question failed. cli_require_primary asks it as well (of the event
 * store's own database too, with database.target).
 */
int cli_require_schema(const struct config *cfg, PGconn *conn);

/* `status [--json] [--check]`: argv are the command's own arguments. */
int cli_status(const struct config *cfg, int argc, char **argv);

/* ops_cmd.c: `rebuild NAME... | --all`, `replay-dead-letters NAME`,
 * `resume NAME`, `dead-letters [NAME]`. */
int cli_rebuild(const struct config *cfg, int argc, char **argv);
int cli_replay_dead_letters(const struct config *cfg, int argc, char **argv);
int cli_resume(const struct config *cfg, int argc, char **argv);
int cli_dead_letters(const struct config *cfg, int argc, char **argv);

/* `adopt-restored-store [--dry-run]`: make an event store restored or copied
 * from another cluster readable again (sql/V026). */
int cli_adopt_restored_store(const struct config *cfg, int argc, char **argv);

/* `list [--names]`: the projections (compiled-in or declared), their tables
 * and event types; names_only: their names alone, one a line. */
int cli_list(bool names_only);

/* `check-config`: print the effective config, secrets masked. */
int cli_check_config(const struct config *cfg);

#endif
