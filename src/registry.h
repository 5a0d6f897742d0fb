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

#endif
