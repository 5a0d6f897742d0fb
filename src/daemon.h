/*
 * daemon: `projectord run` — one libev loop with a runner per enabled
 * projection, the listener, the fallback poll timer and the signals.
 */
#ifndef PROJECTORD_DAEMON_H
#define PROJECTORD_DAEMON_H

#include "config.h"

/*
 * Run until SIGTERM or SIGINT, then let each runner finish its batch in
 * flight and return the exit code (0 after a clean stop). cfg is borrowed
 * and updated in place by SIGHUP reloads, which read config_path again
 * (NULL: the default path); level_override is -l, which reloads keep.
 */
int daemon_run(struct config *cfg, const char *config_path, const char *level_override);

#endif
