/*
 * registry: the projections this process runs, in name order. It starts as
 * the compiled-in ones (generated at build time from the .c files in
 * projections/, see CMakeLists.txt); declared projections (src/declared.h)
 * are added at start, and one with the name of a compiled-in one replaces it.
 */
#ifndef PROJECTORD_REGISTRY_H
#define PROJECTORD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "projection.h"

/* The compiled-in projections (generated), NULL-terminated. */
extern const struct projection *const projection_compiled[];
extern const size_t projection_compiled_count;

/* The projections in use: the compiled-in ones until registry_add. NULL-terminated. */
extern const struct projection **projection_registry;
extern size_t projection_registry_count;

/*
 * Add p (in name order), or replace the projection of its name. origin is
 * the file it was declared in (kept as a pointer), NULL for compiled-in.
 * Returns 0, or -1 when out of memory.
 */
int registry_add(const struct projection *p, const char *origin);

/*
 * registry_add for a running daemon: replace the projection of p's name in
 * its place, or append p at the end, so the indexes of the others stay.
 */
int registry_put(const struct projection *p, const char *origin);

/* The file p was declared in, or NULL when it is compiled in. */
const char *registry_origin(const struct projection *p);

/* Back to the compiled-in projections alone (tests; a reload that drops files). */
void registry_reset(void);

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
