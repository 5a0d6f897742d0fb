/*
 * event_stats: per event type, how many events, their first and last
 * global_position and the newest occurred_at (SPEC §4), for every event.
 * The payload is not read.
 */
#include "projection.h"

enum {
    ST_COUNT,
};

static const struct pj_statement statements[] = {
    /* $1 event_type, $2 global_position, $3 occurred_at|NULL */
    [ST_COUNT] = {"INSERT INTO event_type_stats AS s (event_type, event_count, first_position,"
                  "                                   last_position, last_occurred_at)"
                  " VALUES ($1::text, 1, $2::bigint, $2::bigint, $3::timestamptz)"
                  " ON CONFLICT (event_type) DO UPDATE SET event_count = s.event_count + 1,"
                  "   first_position = least(s.first_position, excluded.first_position),"
                  "   last_position = greatest(s.last_position, excluded.last_position),"
                  "   last_occurred_at = greatest(s.last_occurred_at, excluded.last_occurred_at)",
                  3},
    {NULL, 0},
};

static int any_event(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    (void)payload;
    const char *params[] = {ev->event_type, ev->position_text, ev->occurred_at};
    return pj_exec(ctx, ST_COUNT, params, 0);
}

static const struct pj_handler handlers[] = {
    {"*", any_event, PJ_NO_PAYLOAD},
    {NULL, NULL, 0},
};

static const char *const tables[] = {"event_type_stats", NULL};

extern const struct projection projection_event_stats;
const struct projection projection_event_stats = {
    .name = "event_stats",
    .version = 1,
    .description = "per event type: count, first and last position, last occurred_at",
    .tables = tables,
    .statements = statements,
    .handlers = handlers,
};
