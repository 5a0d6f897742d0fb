-- Read model of the orders projection (projections/orders.c).

CREATE TABLE IF NOT EXISTS read_model.orders (
    id           uuid PRIMARY KEY,
    customer_id  uuid NOT NULL,
    status       text NOT NULL CHECK (status IN ('placed', 'shipped', 'cancelled')),
    item_count   bigint NOT NULL DEFAULT 0,
    total_cents  bigint NOT NULL DEFAULT 0,
    placed_at    timestamptz NOT NULL,
    shipped_at   timestamptz,
    cancelled_at timestamptz,
    updated_at   timestamptz
);

CREATE TABLE IF NOT EXISTS read_model.daily_sales (
    day              date PRIMARY KEY,
    orders_placed    bigint NOT NULL DEFAULT 0,
    orders_cancelled bigint NOT NULL DEFAULT 0,
    revenue_cents    bigint NOT NULL DEFAULT 0
);
