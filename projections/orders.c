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
#include "payload.h"
#include "projection.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

enum {
    ST_PLACE,
    ST_ADD_ITEM,
    ST_SHIP,
    ST_CANCEL,
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
    [ST_PLACE] = {"WITH new_row AS ("
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
                  " SELECT 1 FROM new_row",
                  5, PJ_BULK},
    /* $1 id, $2 quantity, $3 quantity * unit_price_cents, $4 occurred_at */
    [ST_ADD_ITEM] = {"WITH updated AS ("
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
                     " SELECT 1 FROM updated",
                     4, PJ_BULK},
    /* $1 id, $2 occurred_at */
    [ST_SHIP] = {"UPDATE orders o SET status = 'shipped', shipped_at = e.at, updated_at = e.at"
                 " FROM unnest($1::uuid[], $2::timestamptz[]) AS e(id, at)"
                 " WHERE o.id = e.id AND o.status = 'placed'",
                 2, PJ_BULK},
    /* $1 id, $2 occurred_at; the order keeps its total, its day loses it */
    [ST_CANCEL] = {"WITH updated AS ("
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
                   " SELECT 1 FROM updated",
                   2, PJ_BULK},
    {NULL, 0},
};

struct line {
    const char *product_id;
    int64_t quantity;
    int64_t unit_price_cents;
    int64_t amount; /* quantity * unit_price_cents */
};

/*
 * Read and check one item line of obj. where names it in messages
 * ("items[2]: ", or "" for OrderItemAdded's own payload).
 */
static int read_line(struct pj_ctx *ctx, const json_t *obj, const char *where, struct line *out)
{
    char err[256];
    if (payload_uuid(obj, "product_id", &out->product_id, err, sizeof err) < 0 ||
        payload_int64(obj, "quantity", &out->quantity, err, sizeof err) < 0 ||
        payload_int64(obj, "unit_price_cents", &out->unit_price_cents, err, sizeof err) < 0)
        return pj_bad(ctx, "%s%s", where, err);
    if (out->quantity <= 0)
        return pj_bad(ctx, "%sfield 'quantity' must be > 0 (got %" PRId64 ")", where,
                      out->quantity);
    if (out->unit_price_cents < 0)
        return pj_bad(ctx, "%sfield 'unit_price_cents' must be >= 0 (got %" PRId64 ")", where,
                      out->unit_price_cents);
    if (payload_mul_overflows(out->quantity, out->unit_price_cents, &out->amount))
        return pj_bad(ctx, "%squantity * unit_price_cents is beyond bigint", where);
    return 0;
}

static int order_placed(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *customer_id;
    const json_t *items;
    if (pj_uuid(ctx, payload, "customer_id", &customer_id) < 0 ||
        pj_array(ctx, payload, "items", &items) < 0)
        return -1;
    if (ev->occurred_at == NULL)
        return pj_bad(ctx, "OrderPlaced has no occurred_at, so no placed_at");

    int64_t item_count = 0, total_cents = 0;
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i);
        if (!json_is_object(item))
            return pj_bad(ctx, "items[%zu] must be a JSON object", i);
        char where[32];
        struct line line;
        snprintf(where, sizeof where, "items[%zu]: ", i);
        if (read_line(ctx, item, where, &line) < 0)
            return -1;
        if (payload_add_overflows(item_count, line.quantity, &item_count))
            return pj_bad(ctx, "items: the sum of quantities is beyond bigint");
        if (payload_add_overflows(total_cents, line.amount, &total_cents))
            return pj_bad(ctx, "items: total_cents is beyond bigint");
    }

    char count_buf[21], total_buf[21];
    const char *params[] = {ev->aggregate_id, customer_id, pj_i64(count_buf, item_count),
                            pj_i64(total_buf, total_cents), ev->occurred_at};
    return pj_exec(ctx, ST_PLACE, params, PJ_COUNT_IGNORED);
}

static int order_item_added(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    struct line line;
    if (read_line(ctx, payload, "", &line) < 0)
        return -1;
    char quantity_buf[21], amount_buf[21];
    const char *params[] = {ev->aggregate_id, pj_i64(quantity_buf, line.quantity),
                            pj_i64(amount_buf, line.amount), ev->occurred_at};
    return pj_exec(ctx, ST_ADD_ITEM, params, PJ_COUNT_IGNORED);
}

static int order_shipped(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    (void)payload;
    const char *params[] = {ev->aggregate_id, ev->occurred_at};
    return pj_exec(ctx, ST_SHIP, params, PJ_COUNT_IGNORED);
}

static int order_cancelled(struct pj_ctx *ctx, const struct pj_event *ev, const json_t *payload)
{
    const char *reason; /* required by the contract; the read model does not keep it */
    if (pj_str(ctx, payload, "reason", &reason) < 0)
        return -1;
    const char *params[] = {ev->aggregate_id, ev->occurred_at};
    return pj_exec(ctx, ST_CANCEL, params, PJ_COUNT_IGNORED);
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
