/*
 * event_stats: per event type, how many events, their first and last
 * global_position and the newest occurred_at (SPEC §4), for every event.
 *
 * Set-based: a batch touches a few rows many times, so the handler only
 * collects (type, position, occurred_at) and flush writes the whole batch
 * with one statement that aggregates in SQL. The payload is not read.
 */
#include "projection.h"

enum {
    ST_COUNT = PJ_STMT_ID(0, 3),
};

static const struct pj_statement statements[] = {
    /* $1 event types, $2 positions, $3 occurred_at (NULLs allowed): one element per event */
    PJ_STATEMENT(
        ST_COUNT,
        .sql = "INSERT INTO event_type_stats AS s (event_type, event_count, first_position,"
               "                                   last_position, last_occurred_at)"
               " SELECT t, count(*), min(p), max(p), max(o)"
               "   FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS e(t, p, o)"
               "  GROUP BY t"
               " ON CONFLICT (event_type) DO UPDATE"
               "   SET event_count = s.event_count + excluded.event_count,"
               "       first_position = least(s.first_position, excluded.first_position),"
               "       last_position = greatest(s.last_position, excluded.last_position),"
               "       last_occurred_at = greatest(s.last_occurred_at, excluded.last_occurred_at)"),
    PJ_STATEMENTS_END,
};

struct batch {
    struct pj_textarr types, positions, occurred;
};

static enum pj_outcome any_event(struct pj_ctx *ctx, const struct pj_event *ev,
                                 const json_t *payload)
{
    (void)payload;
    struct batch *b = pj_state(ctx);
    /* Out of memory is no fault of the event: the batch goes again later. */
    if (pj_textarr_add(&b->types, ev->event_type) != PJ_OK ||
        pj_textarr_add(&b->positions, ev->position_text) != PJ_OK ||
        pj_textarr_add(&b->occurred, ev->occurred_at) != PJ_OK)
        return PJ_RETRY;
    return PJ_OK;
}

static enum pj_outcome flush(struct pj_ctx *ctx, void *state)
{
    struct batch *b = state;
    if (b->types.n == 0)
        return PJ_OK;
    const char *types = pj_textarr_literal(&b->types);
    const char *positions = pj_textarr_literal(&b->positions);
    const char *occurred = pj_textarr_literal(&b->occurred);
    if (!types || !positions || !occurred)
        return PJ_RETRY;
    return PJ_EXEC(ctx, ST_COUNT, types, positions, occurred);
}

static void release(void *state)
{
    struct batch *b = state;
    pj_textarr_free(&b->types);
    pj_textarr_free(&b->positions);
    pj_textarr_free(&b->occurred);
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
    .state_size = sizeof(struct batch),
    .flush = flush,
    .release = release,
};
