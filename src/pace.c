/*
 * pace: the read interval from the recent event rate (see pace.h).
 */
#include "pace.h"

void pace_note(struct pace *p, double now, int64_t head)
{
    double dt = now - p->at;
    if (p->at > 0 && dt == 0 && head >= p->head) {
        p->moving |= head > p->head;
        return; /* the same moment: counted with the next */
    }
    p->moving = p->at > 0 && head > p->head;
    if (p->at > 0 && dt > 0 && head >= p->head) {
        /* a first-order moving average: a quiet spell brings the rate down at once */
        double keep = PACE_SPAN_S / (PACE_SPAN_S + dt);
        p->rate = keep * p->rate + (1 - keep) * (double)(head - p->head) / dt;
    } else if (p->at > 0 && head < p->head) {
        p->rate = 0; /* the table was emptied and filled again: start over */
    }
    /* (and a wall clock stepped back starts over from now, keeping the rate) */
    p->at = now;
    p->head = head;
}

double pace_interval(const struct pace *p, int min_ms)
{
    if (!p->moving)
        return 0;
    double factor = p->rate / PACE_BASE_RATE;
    if (factor < 1)
        factor = 1;
    else if (factor > PACE_MAX_FACTOR)
        factor = PACE_MAX_FACTOR;
    return min_ms / 1000.0 * factor;
}
