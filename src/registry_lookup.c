/*
 * registry lookups over the generated projection list (see registry.h).
 */
#include <string.h>

#include "registry.h"

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
