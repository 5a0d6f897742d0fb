/* checkpoint: see checkpoint.h. */
#include "checkpoint.h"

#include <stdlib.h>

static void keep_last(struct checkpoint *cp, int64_t pos)
{
    if (pos > cp->last_position)
        cp->last_position = pos;
}

void checkpoint_after(const struct checkpoint *cur, const struct cp_batch *b,
                      struct checkpoint *next, enum cp_status *status, bool *stops)
{
    *next = *cur;
    *stops = false;
    *status = CP_LIVE;
    if (!b->fetched) {
        /*
         * A deferred write of progress made in memory. The window stays as
         * it is: the runner may be waiting in the middle of it.
         */
        if (b->failed)
            *status = CP_FAILED; /* stopped by a bad event; only counts are written */
        else if (next->window_open)
            *status = CP_CATCHING_UP;
        if (next->window_open)
            keep_last(next, next->window_pos);
        return;
    }
    if (b->cut < b->nevents) {
        /* Cut short at a bad event: the rest of the window is still to come. */
        if (b->stop_on_error) {
            *stops = true;
            *status = CP_FAILED;
        } else {
            *status = CP_CATCHING_UP;
        }
        if (b->cut > 0)
            next->window_pos = b->cut_position;
    } else if (b->more) {
        *status = CP_CATCHING_UP;
        next->window_pos = b->batch_end;
    } else {
        /* Window exhausted: everything visible in hi is applied. */
        next->window_open = false;
        next->window_pos = 0;
        if (b->nevents > 0)
            keep_last(next, b->last_read);
        keep_last(next, cur->window_max);
    }
    if (next->window_open)
        keep_last(next, next->window_pos);
}

void checkpoint_pass(struct checkpoint *cp)
{
    keep_last(cp, cp->window_max);
    cp->window_open = false;
    cp->window_pos = 0;
    cp->window_max = 0;
}

const char *checkpoint_status_name(enum cp_status s)
{
    return s == CP_FAILED ? "failed" : s == CP_CATCHING_UP ? "catching_up" : "live";
}

void checkpoint_free(struct checkpoint *cp)
{
    free(cp->lo);
    free(cp->hi);
    cp->lo = cp->hi = NULL;
}
