/*
 * registry: the compiled-in projections, in name order. The list is
 * generated at build time from the .c files in projections/ (see CMakeLists.txt).
 */
#ifndef PROJECTORD_REGISTRY_H
#define PROJECTORD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "projection.h"

extern const struct projection *const projection_registry[]; /* NULL-terminated */
extern const size_t projection_registry_count;

/* The projection called name, or NULL. */
const struct projection *registry_find(const char *name);

/* The handler for event_type (a "*" handler matches all), or NULL. */
const struct pj_handler *registry_handler(const struct projection *p, const char *event_type);

/* True if the projection has a "*" handler (it sees every event type). */
bool registry_handles_all(const struct projection *p);

/*
 * What the build can not check about a projection's declarations
 * (projection.h): a name the shadow schema can take, statements numbered
 * 0, 1, 2, ... up to PJ_STATEMENTS_END, each statement's SQL using $1..$N
 * for its declared N parameters, a key within them and one on each PJ_BULK
 * statement, known flags, a handler function for each event type, at least
 * one table. Returns 0, or -1 with one line in err naming the projection
 * and what is wrong. Called once at start, before any command runs.
 */
int registry_check(const struct projection *p, char *err, size_t errlen);

/* registry_check for every compiled-in projection: 0, or -1 for the first that fails. */
int registry_check_all(char *err, size_t errlen);

/*
 * The highest $N placeholder in sql (0 without any), outside quoted
 * strings, quoted identifiers, dollar quotes and comments.
 */
int registry_max_placeholder(const char *sql);

#endif
