/*
 * projectord: command line parsing and dispatch; the work is elsewhere.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "daemon.h"
#include "declared.h"
#include "log.h"
#include "migrate.h"
#include "registry.h"

/*
 * The commands: each one's synopsis and description, for `projectord
 * --help` (all of them) and `projectord COMMAND --help` (that one).
 */
struct command {
    const char *name;
    const char *args; /* after the name, in the synopsis */
    const char *help; /* lines, each indented by two spaces */
};

/* Which of migrate's two is this build's default (CMake's PROJECTORD_EXAMPLES). */
#if PROJECTORD_EXAMPLES
#define MIGRATE_EXAMPLES_HELP_NO  ""
#define MIGRATE_EXAMPLES_HELP_YES " (this build's default)"
#else
#define MIGRATE_EXAMPLES_HELP_NO  " (this build's default)"
#define MIGRATE_EXAMPLES_HELP_YES ""
#endif

static const struct command commands[] = {
    {"run", "",
     "  run the daemon in the foreground (what the systemd unit and the container run)\n"},
    {"status", "[--json] [--check] [--max-lag SECONDS] [NAME...]",
     "  the status table: every projection, or those named (an unknown name: exit 64)\n"
     "  --json              the rows as a JSON array\n"
     "  --check             exit 1 when an enabled projection (of those named) is\n"
     "                      unhealthy or has no status row, naming each on stderr\n"
     "  --max-lag SECONDS   exit 1 also when one lags more than SECONDS behind (the\n"
     "                      age of the oldest event it has still to apply); implies --check\n"},
    {"rebuild", "NAME...|--all",
     "  rebuild projections from scratch; readers keep the old tables until the new\n"
     "  ones are swapped in; a running instance that owns one does it and this waits\n"},
    {"dead-letters", "[--json] [NAME] | --purge NAME [--before POSITION]",
     "  list dead-lettered events (of one projection when named)\n"
     "  --json              as a JSON array, each with its payload and SQLSTATE\n"
     "  --purge NAME        delete NAME's dead letters (one transaction), say how many\n"
     "  --before POSITION   with --purge: only those at positions below POSITION\n"},
    {"replay-dead-letters", "NAME",
     "  re-apply NAME's dead letters in position order after a fix; exit 1 when some\n"
     "  still fail\n"},
    {"resume", "NAME [--timeout SECONDS]",
     "  restart a failed projection; through a running owner, wait for the outcome:\n"
     "  exit 0 when it came back, 1 when it failed again or nothing came in time\n"
     "  --timeout SECONDS   how long to wait (default 30; 0: ask and do not wait)\n"},
    {"adopt-restored-store", "[--dry-run]",
     "  after pg_restore or logical replication into another cluster: rewrite the\n"
     "  events' transaction ids and move the checkpoints so every event is applied\n"
     "  once (run as the event store's owner)\n"},
    {"migrate", "[--dry-run] [--examples|--no-examples] [--sql-dir DIR]",
     "  apply the bundled migrations not yet applied\n"
     "  (default " PROJECTORD_SQL_DIR_DEFAULT ");\n"
     "  adopts the original design's event store\n"
     "  --dry-run           say what would be applied, change nothing\n"
     "  --no-examples       leave out the examples' migrations (DIR/examples.list):\n"
     "                      not applied, not recorded" MIGRATE_EXAMPLES_HELP_NO "\n"
     "  --examples          apply them too" MIGRATE_EXAMPLES_HELP_YES "\n"
     "  --sql-dir DIR       the migrations (also PROJECTORD_SQL_DIR)\n"},
    {"list", "[--names] [--json]",
     "  the projections (compiled-in or declared), their tables and event types\n"
     "  --names             only their names, one a line\n"
     "  --json              as a JSON array\n"},
    {"check-config", "[--json]",
     "  validate the config and print it, secrets masked; with a reachable database,\n"
     "  prepare every enabled projection's statements (exit 78 when one is rejected)\n"
     "  --json              as a JSON object\n"},
    {NULL, NULL, NULL},
};

static const char options_help[] =
    "options:\n"
    "  -c, --config FILE      configuration file (default " CONFIG_DEFAULT_PATH ")\n"
    "  -l, --log-level LEVEL  error, warning, info or debug\n"
    "  -h, --help             this text (COMMAND --help: that command's)\n"
    "  -V, --version          the version\n";

static void usage(FILE *out)
{
    fprintf(out, "usage: projectord [-c FILE] [-l LEVEL] COMMAND [ARGS]\ncommands:\n");
    for (const struct command *c = commands; c->name; c++)
        fprintf(out, "%s%s%s\n%s", c->name, *c->args ? " " : "", c->args, c->help);
    fprintf(out, "%s", options_help);
}

static void command_usage(const struct command *c)
{
    printf("usage: projectord [-c FILE] [-l LEVEL] %s%s%s\n%s%s", c->name, *c->args ? " " : "",
           c->args, c->help, options_help);
}

static const struct command *find_command(const char *name)
{
    for (const struct command *c = commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/* Whether the command's arguments ask for its help. */
static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static const char *const *projection_names(void)
{
    static const char *names[CONFIG_MAX_PROJECTIONS];
    for (size_t i = 0; i < projection_registry_count && i < CONFIG_MAX_PROJECTIONS; i++)
        names[i] = projection_registry[i]->name;
    return names;
}

static int load_config(struct config *cfg, const char *path, const char *level)
{
    char err[1024];
    if (config_load(cfg, path, projection_names(), projection_registry_count, err, sizeof err) <
        0) {
        fprintf(stderr, "projectord: %s\n", err);
        return -1;
    }
    if (level && log_level_parse(level, &cfg->log_level) < 0) {
        fprintf(stderr, "projectord: -l: unknown log level '%s' (error, warning, info, debug)\n",
                level);
        config_free(cfg);
        return -1;
    }
    log_setup(cfg->log_level, cfg->log_format);
    return 0;
}

/*
 * The declared projections of projection_dir, into the registry: before the
 * config is loaded, since its projections.NAME blocks may name them.
 * Returns 0, or -1 after one line on stderr (a file that can not be loaded:
 * "FILE:LINE: problem").
 */
static int load_declared(const char *path)
{
    char err[1024], *dir;
    if (config_projection_dir(path, &dir, err, sizeof err) < 0) {
        fprintf(stderr, "projectord: %s\n", err);
        return -1;
    }
    int rc = dir ? declared_load_dir(dir, err, sizeof err) : 0;
    if (rc < 0)
        fprintf(stderr, "projectord: %s\n", err);
    else if (projection_registry_count > CONFIG_MAX_PROJECTIONS) {
        fprintf(stderr, "projectord: %s: more than %d projections\n", dir, CONFIG_MAX_PROJECTIONS);
        rc = -1;
    }
    free(dir);
    return rc;
}

static int dispatch(struct config *cfg, const char *path, const char *level, const char *command,
                    int argc, char **argv)
{
    if (strcmp(command, "run") == 0 && argc == 0)
        return daemon_run(cfg, path, level);
    if (strcmp(command, "status") == 0)
        return cli_status(cfg, argc, argv);
    if (strcmp(command, "rebuild") == 0)
        return cli_rebuild(cfg, argc, argv);
    if (strcmp(command, "replay-dead-letters") == 0)
        return cli_replay_dead_letters(cfg, argc, argv);
    if (strcmp(command, "resume") == 0)
        return cli_resume(cfg, argc, argv);
    if (strcmp(command, "dead-letters") == 0)
        return cli_dead_letters(cfg, argc, argv);
    if (strcmp(command, "adopt-restored-store") == 0)
        return cli_adopt_restored_store(cfg, argc, argv);
    if (strcmp(command, "migrate") == 0)
        return cli_migrate(cfg, argc, argv);
    if (strcmp(command, "check-config") == 0)
        return cli_check_config(cfg, argc, argv);
    fprintf(stderr, "projectord: %s: unexpected arguments from '%s' (see projectord %s --help)\n",
            command, argv[0], command);
    return EXIT_USAGE;
}

/*
 * SIGHUP is held (blocked) from the first instruction until the daemon's
 * watcher takes it (daemon.c): a reload sent while `run` starts is then
 * delivered once the watcher is up, not lost, and never kills the daemon
 * (its default action). One-shot commands get the default back at once.
 */
static void hold_sighup(bool hold)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigprocmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

int main(int argc, char **argv)
{
    hold_sighup(true);
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *level = NULL;
    int opt;
    opterr = 0; /* our own one line instead of getopt's */
    /* "+": stop at the command, so its own options (status --json) stay its own. */
    while ((opt = getopt_long(argc, argv, "+:c:l:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'l':
            level = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("projectord %s\n", PROJECTORD_VERSION);
            return 0;
        case ':':
            fprintf(stderr, "projectord: %s needs a value (see projectord --help)\n",
                    argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "projectord: unknown option '%s' (see projectord --help)\n",
                    argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc || strcmp(argv[optind], "run") != 0)
        hold_sighup(false);
    /* No command is no `run`: a daemon is started on purpose (issue 19). */
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *command = argv[optind++];
    const struct command *c = find_command(command);
    if (!c) {
        fprintf(stderr, "projectord: unknown command '%s' (see projectord --help)\n", command);
        return EXIT_USAGE;
    }
    /* Help needs neither the config nor the declared projections: it works anywhere. */
    if (wants_help(argc - optind, argv + optind)) {
        command_usage(c);
        return 0;
    }
    if (load_declared(path) < 0)
        return EXIT_CONFIG;
    /* A projection whose declarations are wrong would fail mid-batch: refuse it now. */
    char err[512];
    if (registry_check_all(err, sizeof err) < 0) {
        fprintf(stderr, "projectord: %s\n", err);
        return EXIT_FAILURE_1;
    }
    if (strcmp(command, "list") == 0)
        return cli_list(argc - optind, argv + optind);
    struct config cfg;
    if (load_config(&cfg, path, level) < 0)
        return EXIT_CONFIG;
    cli_set_command(command);
    int rc = dispatch(&cfg, path, level, command, argc - optind, argv + optind);
    config_free(&cfg);
    return rc;
}
