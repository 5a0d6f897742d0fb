/*
 * backoff: capped exponential reconnect/retry delays with jitter.
 *
 * Pure arithmetic, no clock and no allocation: the caller owns the struct and
 * supplies the random source, so the sequence is testable.
 */
#ifndef PROJECTORD_BACKOFF_H
#define PROJECTORD_BACKOFF_H

#include <stdint.h>

struct backoff {
    double initial_s; /* first delay */
    double max_s;     /* cap, reached after a few failures */
    unsigned attempts;
};

#define BACKOFF_INIT(initial, max)                                                                 \
    {                                                                                              \
        (initial), (max), 0                                                                        \
    }

/*
 * Delay before the next attempt: min(max, initial * 2^attempts), scaled by a
 * jitter factor in [0.5, 1.0] taken from rnd (any 32-bit value), so that
 * many instances losing the same server do not all come back at once.
 */
double backoff_next(struct backoff *b, uint32_t rnd);

/* Call after a success: the next failure starts from the initial delay. */
void backoff_reset(struct backoff *b);

#endif
