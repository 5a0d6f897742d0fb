-- The reference: the four example projections done inside the database
-- by a straightforward PL/pgSQL procedure, as a team without a daemon
-- would write it. It loops over the events in global_position order (a
-- plain `global_position > last`, 1,000 at a time), runs per-event
-- statements with the same semantics as projections/*.c, and commits
-- every 1,000 events together with its own checkpoint row.
--
-- It writes into schema `ref`, whose tables are copies of the read-model
-- tables (LIKE ... INCLUDING ALL: same columns, defaults, checks and
-- indexes, including the unique lower(email) index), so its result can be
-- compared row for row with projectord's.
--
-- It assumes every event is valid (the benchmark's data is): it does not
-- validate payloads, it just casts.
--
--   CALL ref.run_projections();   -- outside a transaction block

CREATE SCHEMA IF NOT EXISTS ref;

CREATE TABLE IF NOT EXISTS ref.categories       (LIKE read_model.categories INCLUDING ALL);
CREATE TABLE IF NOT EXISTS ref.products         (LIKE read_model.products INCLUDING ALL);
CREATE TABLE IF NOT EXISTS ref.users            (LIKE read_model.users INCLUDING ALL);
CREATE TABLE IF NOT EXISTS ref.orders           (LIKE read_model.orders INCLUDING ALL);
CREATE TABLE IF NOT EXISTS ref.daily_sales      (LIKE read_model.daily_sales INCLUDING ALL);
CREATE TABLE IF NOT EXISTS ref.event_type_stats (LIKE read_model.event_type_stats INCLUDING ALL);
CREATE TABLE IF NOT EXISTS ref.checkpoint (
    id            integer PRIMARY KEY,
    last_position bigint NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE OR REPLACE PROCEDURE ref.run_projections(p_commit_every integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
    e          record;
    d          jsonb;
    v_last     bigint;
    v_n        integer;
    v_id       uuid;
    v_cat      uuid;
    v_old_cat  uuid;
    v_status   text;
    v_placed   timestamptz;
    v_total    bigint;
    v_count    bigint;
    v_qty      bigint;
    v_amount   bigint;
BEGIN
    INSERT INTO ref.checkpoint VALUES (1, 0, now()) ON CONFLICT (id) DO NOTHING;
    SELECT last_position INTO v_last FROM ref.checkpoint WHERE id = 1;
    LOOP
        v_n := 0;
        FOR e IN SELECT de.global_position, de.event_type, de.aggregate_version, de.event_data,
                        de.occurred_at, s.aggregate_id
                   FROM event_store.domain_event de
                   JOIN event_store.event_stream s ON s.stream_id = de.stream_id
                  WHERE de.global_position > v_last
                  ORDER BY de.global_position
                  LIMIT p_commit_every
        LOOP
            v_n := v_n + 1;
            v_last := e.global_position;
            v_id := e.aggregate_id;
            d := e.event_data;

            -- event_stats: every event
            INSERT INTO ref.event_type_stats AS s
                   (event_type, event_count, first_position, last_position, last_occurred_at)
            VALUES (e.event_type, 1, e.global_position, e.global_position, e.occurred_at)
            ON CONFLICT (event_type) DO UPDATE
               SET event_count = s.event_count + 1,
                   first_position = least(s.first_position, excluded.first_position),
                   last_position = greatest(s.last_position, excluded.last_position),
                   last_occurred_at = greatest(s.last_occurred_at, excluded.last_occurred_at);

            CASE e.event_type
            -- ---- catalog ---------------------------------------------------
            WHEN 'CategoryCreated' THEN
                INSERT INTO ref.categories (id, name, product_count, created_at, updated_at)
                VALUES (v_id, d->>'name',
                        (SELECT count(*) FROM ref.products
                          WHERE category_id = v_id AND status = 'active'),
                        e.occurred_at, e.occurred_at)
                ON CONFLICT (id) DO NOTHING;
            WHEN 'CategoryRenamed' THEN
                UPDATE ref.categories SET name = d->>'name', updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'ProductCreated' THEN
                v_cat := (d->>'category_id')::uuid;
                INSERT INTO ref.products (id, sku, name, price_cents, category_id, status,
                                          version, created_at, updated_at)
                VALUES (v_id, d->>'sku', d->>'name', (d->>'price_cents')::bigint, v_cat,
                        'active', e.aggregate_version, e.occurred_at, e.occurred_at)
                ON CONFLICT (id) DO NOTHING;
                IF FOUND AND v_cat IS NOT NULL THEN
                    UPDATE ref.categories SET product_count = product_count + 1 WHERE id = v_cat;
                END IF;
            WHEN 'ProductRenamed' THEN
                UPDATE ref.products SET name = d->>'name', version = e.aggregate_version,
                                        updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'ProductPriceChanged' THEN
                UPDATE ref.products SET price_cents = (d->>'price_cents')::bigint,
                                        version = e.aggregate_version, updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'ProductCategorized' THEN
                v_cat := (d->>'category_id')::uuid;
                SELECT category_id, status INTO v_old_cat, v_status
                  FROM ref.products WHERE id = v_id FOR UPDATE;
                IF FOUND THEN
                    UPDATE ref.products SET category_id = v_cat, version = e.aggregate_version,
                                            updated_at = e.occurred_at
                     WHERE id = v_id;
                    IF v_status = 'active' AND v_old_cat IS DISTINCT FROM v_cat THEN
                        UPDATE ref.categories SET product_count = product_count - 1
                         WHERE id = v_old_cat;
                        UPDATE ref.categories SET product_count = product_count + 1
                         WHERE id = v_cat;
                    END IF;
                END IF;
            WHEN 'ProductDiscontinued' THEN
                SELECT category_id, status INTO v_old_cat, v_status
                  FROM ref.products WHERE id = v_id FOR UPDATE;
                IF FOUND THEN
                    UPDATE ref.products SET status = 'discontinued', version = e.aggregate_version,
                                            updated_at = e.occurred_at
                     WHERE id = v_id;
                    IF v_status = 'active' THEN
                        UPDATE ref.categories SET product_count = product_count - 1
                         WHERE id = v_old_cat;
                    END IF;
                END IF;
            -- ---- users -----------------------------------------------------
            WHEN 'UserRegistered' THEN
                INSERT INTO ref.users (id, email, first_name, last_name, role, status,
                                       email_verified, login_count, created_at, updated_at)
                VALUES (v_id, d->>'email', d->>'first_name', d->>'last_name',
                        coalesce(d->>'role', 'user'), 'active', false, 0,
                        e.occurred_at, e.occurred_at)
                ON CONFLICT (id) DO NOTHING;
            WHEN 'UserEmailVerified' THEN
                UPDATE ref.users SET email_verified = true, email_verified_at = e.occurred_at,
                                     updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'UserEmailChanged' THEN
                UPDATE ref.users SET email = d->>'email', email_verified = false,
                                     email_verified_at = NULL, updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'UserLoggedIn' THEN
                UPDATE ref.users SET login_count = login_count + 1,
                                     last_login_at = e.occurred_at, updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'UserRoleChanged' THEN
                UPDATE ref.users SET role = d->>'role', updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'UserDeactivated' THEN
                UPDATE ref.users SET status = 'inactive', updated_at = e.occurred_at
                 WHERE id = v_id;
            WHEN 'UserReactivated' THEN
                UPDATE ref.users SET status = 'active', updated_at = e.occurred_at
                 WHERE id = v_id;
            -- ---- orders ----------------------------------------------------
            WHEN 'OrderPlaced' THEN
                SELECT coalesce(sum((it->>'quantity')::bigint), 0),
                       coalesce(sum((it->>'quantity')::bigint * (it->>'unit_price_cents')::bigint), 0)
                  INTO v_count, v_total
                  FROM jsonb_array_elements(d->'items') AS it;
                INSERT INTO ref.orders (id, customer_id, status, item_count, total_cents,
                                        placed_at, updated_at)
                VALUES (v_id, (d->>'customer_id')::uuid, 'placed', v_count, v_total,
                        e.occurred_at, e.occurred_at)
                ON CONFLICT (id) DO NOTHING;
                IF FOUND THEN
                    INSERT INTO ref.daily_sales AS ds (day, orders_placed, orders_cancelled, revenue_cents)
                    VALUES ((e.occurred_at AT TIME ZONE 'UTC')::date, 1, 0, v_total)
                    ON CONFLICT (day) DO UPDATE
                       SET orders_placed = ds.orders_placed + 1,
                           revenue_cents = ds.revenue_cents + excluded.revenue_cents;
                END IF;
            WHEN 'OrderItemAdded' THEN
                v_qty := (d->>'quantity')::bigint;
                v_amount := v_qty * (d->>'unit_price_cents')::bigint;
                UPDATE ref.orders SET item_count = item_count + v_qty,
                                      total_cents = total_cents + v_amount,
                                      updated_at = e.occurred_at
                 WHERE id = v_id AND status = 'placed'
                RETURNING placed_at INTO v_placed;
                IF FOUND THEN
                    UPDATE ref.daily_sales SET revenue_cents = revenue_cents + v_amount
                     WHERE day = (v_placed AT TIME ZONE 'UTC')::date;
                END IF;
            WHEN 'OrderShipped' THEN
                UPDATE ref.orders SET status = 'shipped', shipped_at = e.occurred_at,
                                      updated_at = e.occurred_at
                 WHERE id = v_id AND status = 'placed';
            WHEN 'OrderCancelled' THEN
                UPDATE ref.orders SET status = 'cancelled', cancelled_at = e.occurred_at,
                                      updated_at = e.occurred_at
                 WHERE id = v_id AND status = 'placed'
                RETURNING placed_at, total_cents INTO v_placed, v_total;
                IF FOUND THEN
                    UPDATE ref.daily_sales SET orders_cancelled = orders_cancelled + 1,
                                               revenue_cents = revenue_cents - v_total
                     WHERE day = (v_placed AT TIME ZONE 'UTC')::date;
                END IF;
            ELSE
                NULL;  -- not handled by any projection but event_stats
            END CASE;
        END LOOP;
        EXIT WHEN v_n = 0;
        UPDATE ref.checkpoint SET last_position = v_last, updated_at = now() WHERE id = 1;
        COMMIT;
    END LOOP;
END;
$$;
