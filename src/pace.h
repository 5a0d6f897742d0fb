/*
 * pace: how long a read of new events waits after the last one while
 * events keep coming (min_read_interval_ms, docs/design.md "Pacing the
 * reads").
 *
 * A window costs the server about the same whether it holds one event or
 * fifty, so the busier the event store, the more events each read should
 * take: the interval is min_read_interval_ms up to 1,000 events/s and grows
 * in proportion to the rate above it, up to PACE_MAX_FACTOR times. The rate
 * comes from the head positions the opens found. Plain values: nothing to
 * free.
 */
#ifndef PROJECTORD_PACE_H
#define PROJECTORD_PACE_H

#include <stdbool.h>
#include <stdint.h>

#define PACE_BASE_RATE  1000.0 /* events/s up to which the interval is min_read_interval_ms */
#define PACE_MAX_FACTOR 10.0
#define PACE_SPAN_S     0.5 /* the rate is a moving average over about this long */

struct pace {
    double at;    /* when head was seen; 0: never */
    int64_t head; /* the event store's last position then */
    double rate;  /* events/s */
    bool moving;  /* the last open found a head past the one before */
};

/* An open found the event store's last position at head, at time now (seconds). */
void pace_note(struct pace *p, double now, int64_t head);

/*
 * Seconds between two opens while events keep coming; min_ms:
 * min_read_interval_ms. 0 when the last open found nothing new (or none was
 * noted): the next event is the first after a quiet spell, and an open
 * that read nothing (a wake-up as the daemon connects, a poll) must not
 * hold it back.
 */
double pace_interval(const struct pace *p, int min_ms);

#endif
