/*
 * cli: the one-shot commands (status, list, check-config; the others in
 * ops_cmd.c and migrate.c) and what they share. They may block:
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
#define EXIT_UNAVAILABLE 69 /* the server could not be reached (down, network, timeout) */
#define EXIT_REFUSED     77 /* it answered and refused: password, no such database or role */
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
 * The exit code for the last failed cli_connect/cli_connect_to:
 * EXIT_REFUSED when the server refused, else EXIT_UNAVAILABLE.
 */
int cli_connect_failure(void);

/*
 * Refuse a hot standby (docs: the event store's snapshots there do not list
 * the primary's transactions in progress; nothing can be written there).
 * target: the command's connection (cli_connect); events: the command reads
 * the event store as well (a separate database.conninfo is asked too).
 * Returns 0, or an exit code after printing one line: EXIT_CONFIG for a
 * standby, cli_connect_failure() when the event store cannot be reached,
 * EXIT_FAILURE_1 when the question failed.
 */
int cli_require_primary(const struct config *cfg, PGconn *target, bool events);

/*
 * Refuse a hot standby named by config key `key` (why: what cannot be done
 * there). Returns 0, EXIT_CONFIG after one line, or EXIT_FAILURE_1 when
 * the question failed (printed).
 */
int cli_refuse_standby(PGconn *conn, const char *key, const char *why);

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

/* What a one-shot command needs of its read-model connection (cli_open). */
enum cli_need {
    CLI_SCHEMA,         /* projectord's schema (cli_require_schema) */
    CLI_PRIMARY,        /* and a primary: it writes (cli_require_primary) */
    CLI_PRIMARY_EVENTS, /* and it reads the event store, also a primary */
};

/*
 * cli_connect, then what need asks. Returns 0 with the connection in *out
 * (the caller PQfinish()es it), or an exit code after one line and *out
 * NULL.
 */
int cli_open(const struct config *cfg, enum cli_need need, PGconn **out);

/*
 * status_cmd.c: `status [--json] [--check] [--max-lag SECONDS] [NAME...]`;
 * argv are the command's own arguments (the names are moved to its front).
 */
int cli_status(const struct config *cfg, int argc, char **argv);

/* ops_cmd.c: `rebuild NAME... | --all`, `replay-dead-letters NAME`,
 * `resume NAME`, `dead-letters [--json] [NAME]`,
 * `dead-letters --purge NAME [--before POSITION]`. */
int cli_rebuild(const struct config *cfg, int argc, char **argv);
int cli_replay_dead_letters(const struct config *cfg, int argc, char **argv);
int cli_resume(const struct config *cfg, int argc, char **argv);
int cli_dead_letters(const struct config *cfg, int argc, char **argv);

/* `adopt-restored-store [--dry-run]`: make an event store restored or copied
 * from another cluster readable again (sql/V026). */
int cli_adopt_restored_store(const struct config *cfg, int argc, char **argv);

/* `list [--names] [--json]`: the projections (compiled-in or declared), their
 * tables and event types; --names: their names alone, one a line. */
int cli_list(int argc, char **argv);

/* `check-config [--json]`: print the effective config, secrets masked. */
int cli_check_config(const struct config *cfg, int argc, char **argv);

#endif
