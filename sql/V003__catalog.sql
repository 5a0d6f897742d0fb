-- Read model of the catalog projection (projections/catalog.c).

CREATE TABLE IF NOT EXISTS read_model.categories (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    product_count bigint NOT NULL DEFAULT 0,
    created_at    timestamptz,
    updated_at    timestamptz
);

CREATE TABLE IF NOT EXISTS read_model.products (
    id          uuid PRIMARY KEY,
    sku         text NOT NULL,
    name        text NOT NULL,
    price_cents bigint NOT NULL,
    category_id uuid,
    status      text NOT NULL CHECK (status IN ('active', 'discontinued')),
    version     integer NOT NULL,
    created_at  timestamptz,
    updated_at  timestamptz
);

-- CategoryCreated counts the active products that already name it.
CREATE INDEX IF NOT EXISTS products_active_category_idx
    ON read_model.products (category_id) WHERE status = 'active';
