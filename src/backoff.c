/*
 * backoff: see backoff.h.
 */
#include "backoff.h"

double backoff_next(struct backoff *b, uint32_t rnd)
{
    double delay = b->initial_s;
    for (unsigned i = 0; i < b->attempts && delay < b->max_s; i++)
        delay *= 2;
    if (delay > b->max_s)
        delay = b->max_s;
    if (b->attempts < 64)
        b->attempts++;
    double jitter = 0.5 + 0.5 * ((double)rnd / (double)UINT32_MAX);
    return delay * jitter;
}

void backoff_reset(struct backoff *b)
{
    b->attempts = 0;
}
