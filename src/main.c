/*
 * projectord: command line parsing and dispatch; the work is elsewhere.
 */
#include <getopt.h>
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

static void usage(FILE *out)
{
    fprintf(out, "usage: projectord [-c FILE] [-l LEVEL] COMMAND [ARGS]\n"
                 "  run                    run the daemon in the foreground (default)\n"
                 "  status [--json] [--check]\n"
                 "                         print the status table; --check exits 1 when an\n"
                 "                         enabled projection is unhealthy\n"
                 "  rebuild NAME...|--all  rebuild projections from scratch; readers keep the\n"
                 "                         old tables until the new ones are swapped in\n"
                 "  dead-letters [NAME]    list dead-lettered events\n"
                 "  replay-dead-letters NAME\n"
                 "                         re-apply them in position order after a fix\n"
                 "  resume NAME            restart a failed projection\n"
                 "  adopt-restored-store [--dry-run]\n"
                 "                         after pg_restore or logical replication into another\n"
                 "                         cluster: rewrite the events' transaction ids and move\n"
                 "                         the checkpoints so every event is applied once (run\n"
                 "                         as the event store's owner)\n"
                 "  migrate [--dry-run] [--sql-dir DIR]\n"
                 "                         apply the bundled migrations not yet applied\n"
                 "                         (default " PROJECTORD_SQL_DIR_DEFAULT ");\n"
                 "                         adopts the original design's event store\n"
                 "  list [--names]         the projections (compiled-in or declared), tables and\n"
                 "                         event types; --names: only their names, one a line\n"
                 "  check-config           validate the config and print it, secrets masked\n"
                 "options:\n"
                 "  -c, --config FILE      configuration file (default " CONFIG_DEFAULT_PATH ")\n"
                 "  -l, --log-level LEVEL  error, warning, info or debug\n"
                 "  -h, --help             this text\n"
                 "  -V, --version          the version\n");
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
    if (strcmp(command, "check-config") == 0 && argc == 0)
        return cli_check_config(cfg);
    fprintf(stderr, "projectord: %s: unexpected arguments\n", command);
    usage(stderr);
    return EXIT_USAGE;
}

static bool known_command(const char *command)
{
    static const char *const commands[] = {"run",
                                           "status",
                                           "list",
                                           "check-config",
                                           "rebuild",
                                           "dead-letters",
                                           "replay-dead-letters",
                                           "resume",
                                           "adopt-restored-store",
                                           "migrate",
                                           NULL};
    for (const char *const *c = commands; *c; c++)
        if (strcmp(command, *c) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *level = NULL;
    int opt;
    /* "+": stop at the command, so its own options (status --json) stay its own. */
    while ((opt = getopt_long(argc, argv, "+c:l:hV", options, NULL)) != -1) {
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
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    const char *command = optind < argc ? argv[optind++] : "run";
    if (!known_command(command)) {
        fprintf(stderr, "projectord: unknown command '%s'\n", command);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (load_declared(path) < 0)
        return EXIT_CONFIG;
    /* A projection whose declarations are wrong would fail mid-batch: refuse it now. */
    char err[512];
    if (registry_check_all(err, sizeof err) < 0) {
        fprintf(stderr, "projectord: %s\n", err);
        return EXIT_FAILURE_1;
    }
    if (strcmp(command, "list") == 0) {
        bool names_only = optind < argc && strcmp(argv[optind], "--names") == 0;
        if (argc - optind > (names_only ? 1 : 0)) {
            fprintf(stderr, "projectord: list: unexpected arguments\n");
            usage(stderr);
            return EXIT_USAGE;
        }
        return cli_list(names_only);
    }
    struct config cfg;
    if (load_config(&cfg, path, level) < 0)
        return EXIT_CONFIG;
    cli_set_command(command);
    int rc = dispatch(&cfg, path, level, command, argc - optind, argv + optind);
    config_free(&cfg);
    return rc;
}
