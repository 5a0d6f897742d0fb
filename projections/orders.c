/*
 * orders: orders and the daily sales they add up to (SPEC §4).
 *
 * The invariant to keep, for each UTC day of placed_at: orders_placed =
 * the orders placed that day (cancelled ones included), orders_cancelled =
 * those of them now cancelled, revenue_cents = the sum of total_cents of
 * the others. So each statement changes the order and its day together,
 * and only when the order really changed: a repeated OrderPlaced, or an
 * event for an order that is no longer 'placed', touches nothing.
 *
 * Item lines are checked and multiplied here, with overflow checks; the
 * running sums are added in SQL, where a result beyond bigint raises
 * numeric_value_out_of_range (22003), which makes the event bad.
 */
#include "projection.h"

#include <inttypes.h>

enum {
    ST_PLACE = PJ_STMT_ID(0, 5),
    ST_ADD_ITEM = PJ_STMT_ID(1, 4),
    ST_SHIP = PJ_STMT_ID(2, 2),
    ST_CANCEL = PJ_STMT_ID(3, 2),
};

static const struct pj_statement statements[] = {
    /*
     * All four are PJ_BULK (projection.h): one element per event in each
     * array. They also change their days in daily_sales, which other keys'
     * events share; sums commute, and held statements go out in this
     * order, so within each send every addition to a day comes before any
     * subtraction. A sum that leaves bigint anywhere in position order
     * therefore leaves it in the send too, which fails, and the batch goes
     * again one event at a time to find the event (SPEC §4: it is bad).
     */
    /* $1 id, $2 customer_id, $3 item_count, $4 total_cents, $5 occurred_at */
    PJ_STATEMENT(
        ST_PLACE, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
        .sql = "WITH new_row AS ("
               "  INSERT INTO orders (id, customer_id, status, item_count, total_cents,"
               "                      placed_at, updated_at)"
               "  SELECT e.id, e.customer_id, 'placed', e.item_count, e.total_cents, e.at, e.at"
               "    FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[],"
               "                $5::timestamptz[]) AS e(id, customer_id, item_count,"
               "                                         total_cents, at)"
               "  ON CONFLICT (id) DO NOTHING"
               "  RETURNING placed_at, total_cents"
               "), sales AS ("
               "  INSERT INTO daily_sales AS d (day, orders_placed, orders_cancelled,"
               "                                revenue_cents)"
               "  SELECT (placed_at AT TIME ZONE 'UTC')::date, count(*), 0, sum(total_cents)"
               "    FROM new_row GROUP BY 1"
               "  ON CONFLICT (day) DO UPDATE"
               "    SET orders_placed = d.orders_placed + excluded.orders_placed,"
               "        revenue_cents = d.revenue_cents + excluded.revenue_cents"
               ")"
               " SELECT 1 FROM new_row"),
    /* $1 id, $2 quantity, $3 quantity * unit_price_cents, $4 occurred_at */
    PJ_STATEMENT(ST_ADD_ITEM, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql = "WITH updated AS ("
                        "  UPDATE orders o SET item_count = o.item_count + e.quantity,"
                        "    total_cents = o.total_cents + e.amount, updated_at = e.at"
                        "  FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::timestamptz[])"
                        "       AS e(id, quantity, amount, at)"
                        "  WHERE o.id = e.id AND o.status = 'placed'"
                        "  RETURNING o.placed_at, e.amount"
                        "), sales AS ("
                        "  UPDATE daily_sales d SET revenue_cents = d.revenue_cents + s.amount"
                        "  FROM (SELECT (placed_at AT TIME ZONE 'UTC')::date AS day,"
                        "               sum(amount) AS amount"
                        "          FROM updated GROUP BY 1) s"
                        "  WHERE d.day = s.day"
                        ")"
                        " SELECT 1 FROM updated"),
    /* $1 id, $2 occurred_at */
    PJ_STATEMENT(ST_SHIP, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql =
                     "UPDATE orders o SET status = 'shipped', shipped_at = e.at, updated_at = e.at"
                     " FROM unnest($1::uuid[], $2::timestamptz[]) AS e(id, at)"
                     " WHERE o.id = e.id AND o.status = 'placed'"),
    /* $1 id, $2 occurred_at; the order keeps its total, its day loses it */
    PJ_STATEMENT(ST_CANCEL, .key = 1, .flags = PJ_BULK | PJ_COUNT_IGNORED,
                 .sql =
                     "WITH updated AS ("
                     "  UPDATE orders o SET status = 'cancelled', cancelled_at = e.at,"
                     "    updated_at = e.at"
                     "  FROM unnest($1::uuid[], $2::timestamptz[]) AS e(id, at)"
                     "  WHERE o.id = e.id AND o.status = 'placed'"
                     "  RETURNING o.placed_at, o.total_cents"
                     "), sales AS ("
                     "  UPDATE daily_sales d SET orders_cancelled = d.orders_cancelled + s.orders,"
                     "    revenue_cents = d.revenue_cents - s.total_cents"
                     "  FROM (SELECT (placed_at AT TIME ZONE 'UTC')::date AS day,"
                     "               count(*) AS orders, sum(total_cents) AS total_cents"
                     "          FROM updated GROUP BY 1) s"
                     "  WHERE d.day = s.day"
                     ")"
                     " SELECT 1 FROM updated"),
    PJ_STATEMENTS_END,
};

struct line {
    const char *product_id;
    int64_t quantity;
    int64_t unit_price_cents;
    int64_t amount; /* quantity * unit_price_cents */
};

/* Read and check one item line: an element of OrderPlaced's items, or OrderItemAdded's payload. */
static enum pj_outcome read_line(struct pj_ctx *ctx, const json_t *obj, struct line *out)
{
    if (!pj_uuid(ctx, obj, "product_id", &out->product_id) ||
        !pj_int64(ctx, obj, "quantity", &out->quantity) ||
        !pj_int64(ctx, obj, "unit_price_cents", &out->unit_price_cents))
        return PJ_BAD_EVENT;
    if (out->quantity <= 0)
        return pj_bad(ctx, "field 'quantity' must be > 0 (got %" PRId64 ")", out->quantity);
    if (out->unit_price_cents < 0)
        return pj_bad(ctx, "field 'unit_price_cents' must be >= 0 (got %" PRId64 ")",
                      out->unit_price_cents);
    if (pj_mul_overflows(out->quantity, out->unit_price_cents, &out->amount))
        return pj_bad(ctx, "quantity * unit_price_cents is beyond bigint");
    return PJ_OK;
}

static enum pj_outcome order_placed(struct pj_ctx *ctx, const struct pj_event *ev,
                                    const json_t *payload)
{
    const char *customer_id;
    const json_t *items;
    if (!pj_uuid(ctx, payload, "customer_id", &customer_id) ||
        !pj_array(ctx, payload, "items", &items))
        return PJ_BAD_EVENT;
    if (ev->occurred_at == NULL)
        return pj_bad(ctx, "OrderPlaced has no occurred_at, so no placed_at");

    int64_t item_count = 0, total_cents = 0;
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item;
        struct line line;
        if (!pj_object_at(ctx, items, "items", i, &item))
            return PJ_BAD_EVENT;
        if (read_line(ctx, item, &line) != PJ_OK)
            return pj_bad_in(ctx, "items[%zu]", i);
        if (pj_add_overflows(item_count, line.quantity, &item_count))
            return pj_bad(ctx, "items: the sum of quantities is beyond bigint");
        if (pj_add_overflows(total_cents, line.amount, &total_cents))
            return pj_bad(ctx, "items: total_cents is beyond bigint");
    }

    char count_buf[21], total_buf[21];
    return PJ_EXEC(ctx, ST_PLACE, ev->aggregate_id, customer_id, pj_i64(count_buf, item_count),
                   pj_i64(total_buf, total_cents), ev->occurred_at);
}

static enum pj_outcome order_item_added(struct pj_ctx *ctx, const struct pj_event *ev,
                                        const json_t *payload)
{
    struct line line;
    if (read_line(ctx, payload, &line) != PJ_OK)
        return PJ_BAD_EVENT;
    char quantity_buf[21], amount_buf[21];
    return PJ_EXEC(ctx, ST_ADD_ITEM, ev->aggregate_id, pj_i64(quantity_buf, line.quantity),
                   pj_i64(amount_buf, line.amount), ev->occurred_at);
}

static enum pj_outcome order_shipped(struct pj_ctx *ctx, const struct pj_event *ev,
                                     const json_t *payload)
{
    (void)payload;
    return PJ_EXEC(ctx, ST_SHIP, ev->aggregate_id, ev->occurred_at);
}

static enum pj_outcome order_cancelled(struct pj_ctx *ctx, const struct pj_event *ev,
                                       const json_t *payload)
{
    const char *reason; /* required by the contract; the read model does not keep it */
    if (!pj_str(ctx, payload, "reason", &reason))
        return PJ_BAD_EVENT;
    return PJ_EXEC(ctx, ST_CANCEL, ev->aggregate_id, ev->occurred_at);
}

static const struct pj_handler handlers[] = {
    {"OrderPlaced", order_placed},
    {"OrderItemAdded", order_item_added},
    {"OrderShipped", order_shipped},
    {"OrderCancelled", order_cancelled},
    {NULL, NULL},
};

static const char *const tables[] = {"orders", "daily_sales", NULL};

extern const struct projection projection_orders;
const struct projection projection_orders = {
    .name = "orders",
    .version = 1,
    .description = "orders with their totals, and sales per UTC day",
    .tables = tables,
    .statements = statements,
    .handlers = handlers,
};
