/*
 * registry lookups over the projections in use (see registry.h): the
 * generated list of compiled-in ones, plus the declared ones added at start.
 */
#include <stdlib.h>
#include <string.h>

#include "registry.h"

static const struct projection **owned; /* the list, once registry_add copied it */
static const char **origins;            /* parallel to owned: file or NULL */

static int own_list(size_t room)
{
    const struct projection **list = calloc(room + 1, sizeof *list);
    const char **org = calloc(room + 1, sizeof *org);
    if (!list || !org) {
        free(list);
        free(org);
        return -1;
    }
    for (size_t i = 0; i < projection_registry_count; i++) {
        list[i] = projection_registry[i];
        org[i] = origins ? origins[i] : NULL;
    }
    free(owned);
    free(origins);
    owned = list;
    origins = org;
    projection_registry = owned;
    return 0;
}

static int registry_insert(const struct projection *p, const char *origin, bool sorted)
{
    for (size_t i = 0; i < projection_registry_count; i++)
        if (strcmp(projection_registry[i]->name, p->name) == 0) {
            if (!owned && own_list(projection_registry_count) < 0)
                return -1;
            owned[i] = p;
            origins[i] = origin;
            return 0;
        }
    if (own_list(projection_registry_count + 1) < 0)
        return -1;
    size_t at = projection_registry_count;
    while (sorted && at > 0 && strcmp(owned[at - 1]->name, p->name) > 0) {
        owned[at] = owned[at - 1];
        origins[at] = origins[at - 1];
        at--;
    }
    owned[at] = p;
    origins[at] = origin;
    projection_registry_count++;
    owned[projection_registry_count] = NULL;
    return 0;
}

int registry_add(const struct projection *p, const char *origin)
{
    return registry_insert(p, origin, true);
}

int registry_put(const struct projection *p, const char *origin)
{
    return registry_insert(p, origin, false);
}

const char *registry_origin(const struct projection *p)
{
    for (size_t i = 0; origins && i < projection_registry_count; i++)
        if (projection_registry[i] == p)
            return origins[i];
    return NULL;
}

void registry_reset(void)
{
    free(owned);
    free(origins);
    owned = NULL;
    origins = NULL;
    projection_registry = (const struct projection **)projection_compiled;
    projection_registry_count = projection_compiled_count;
}

const struct projection *registry_find(const char *name)
{
    for (size_t i = 0; i < projection_registry_count; i++)
        if (strcmp(projection_registry[i]->name, name) == 0)
            return projection_registry[i];
    return NULL;
}

const struct pj_handler *registry_handler(const struct projection *p, const char *event_type)
{
    for (const struct pj_handler *h = p->handlers; h->event_type; h++)
        if (strcmp(h->event_type, "*") == 0 || strcmp(h->event_type, event_type) == 0)
            return h;
    return NULL;
}

bool registry_handles_all(const struct projection *p)
{
    for (const struct pj_handler *h = p->handlers; h->event_type; h++)
        if (strcmp(h->event_type, "*") == 0)
            return true;
    return false;
}
