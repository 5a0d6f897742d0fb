-- Benchmark data: a realistic mix of valid events for the four example
-- projections (SPEC §4), generated set-based and written straight into
-- event_store.event_stream and event_store.domain_event (append_events row
-- by row would take far longer than the thing being measured).
--
-- What holds, as if every stream had been written through append_events:
--   * each stream's aggregate_version runs 1..n with no gap, and
--     event_stream.version = n;
--   * global_position follows occurred_at, so within a stream positions
--     increase with aggregate_version;
--   * every payload is valid (no bad event): emails are unique
--     case-insensitively at all times (registration: UserNNN@Example.com,
--     changes: userNNN+vV@example.com), quantities > 0, prices >= 0,
--     OrderPlaced always has occurred_at.
-- Events are inserted in chunks of p_chunk positions, one transaction each,
-- so they carry several transaction ids, like a history written over time.
--
-- Mix (fractions of the events, roughly): orders ~50 %, users ~35 %,
-- products ~14 %, categories ~0.2 %. Streams start anywhere in a year
-- (2024, UTC), so orders spread over ~370 UTC days; categories mostly start
-- early, so most products name an existing category and some name one
-- created later (or, 1 %, one never created).
--
--   CALL bench.generate_events(1000000);          -- then VACUUM ANALYZE

CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE PROCEDURE bench.generate_events(p_target bigint,
                                                  p_chunk integer DEFAULT 100000,
                                                  p_seed double precision DEFAULT 0.42)
LANGUAGE plpgsql
AS $$
DECLARE
    -- Streams per kind, scaled so that the total comes out a little above
    -- p_target; the latest events (by occurred_at) are cut to hit it exactly.
    n_cat   integer := greatest(10, ceil(p_target * 0.0010 * 1.04))::integer;
    n_prod  integer := greatest(10, ceil(p_target * 0.0390 * 1.04))::integer;
    n_user  integer := greatest(10, ceil(p_target * 0.0405 * 1.04))::integer;
    n_order integer := greatest(10, ceil(p_target * 0.2200 * 1.04))::integer;
    base    timestamptz := '2024-01-01 00:00:00+00';
    span    double precision := 365 * 86400;  -- seconds
    v_total bigint;
    v_from  bigint;
BEGIN
    PERFORM setseed(p_seed);

    DROP TABLE IF EXISTS bench.cat_ids, bench.prod_ids, bench.user_ids, bench.order_ids,
                         bench.gen, bench.ordered;

    -- ---- streams and their per-stream choices --------------------------
    CREATE UNLOGGED TABLE bench.cat_ids AS
    SELECT i, gen_random_uuid() AS id,
           base + make_interval(secs => span * random() ^ 3) AS t0,
           floor(random() * 3)::int AS nrenames
      FROM generate_series(1, n_cat) i;
    ALTER TABLE bench.cat_ids ADD PRIMARY KEY (i);

    CREATE UNLOGGED TABLE bench.prod_ids AS
    SELECT i, gen_random_uuid() AS id,
           base + make_interval(secs => span * random()) AS t0,
           floor(random() * 6)::int AS nupd,            -- 0..5 updates
           (random() < 0.10) AS disc,                   -- discontinued at the end
           random() AS rcat,
           1 + floor(random() * n_cat)::int AS cat_i,
           100 + floor(random() * 100000)::bigint AS price
      FROM generate_series(1, n_prod) i;
    ALTER TABLE bench.prod_ids ADD PRIMARY KEY (i);

    CREATE UNLOGGED TABLE bench.user_ids AS
    SELECT i, gen_random_uuid() AS id,
           base + make_interval(secs => span * random()) AS t0,
           (random() < 0.70) AS verified,
           floor(random() * 15)::int AS nact,           -- 0..14 later events
           random() AS rrole
      FROM generate_series(1, n_user) i;
    ALTER TABLE bench.user_ids ADD PRIMARY KEY (i);

    CREATE UNLOGGED TABLE bench.order_ids AS
    SELECT i, gen_random_uuid() AS id,
           base + make_interval(secs => span * random()) AS t0,
           1 + floor(random() * n_user)::int AS cust_i,
           1 + floor(random() * 5)::int AS nitems,      -- 1..5 items
           CASE WHEN r1 < 0.70 THEN 0 WHEN r1 < 0.90 THEN 1 ELSE 2 END AS nadd,
           CASE WHEN r2 < 0.70 THEN 'ship' WHEN r2 < 0.82 THEN 'cancel' ELSE 'none' END AS fin,
           (random() < 0.03) AS late_add                -- an item after ship/cancel: ignored
      FROM (SELECT i, random() AS r1, random() AS r2 FROM generate_series(1, n_order) i) x;
    ALTER TABLE bench.order_ids ADD PRIMARY KEY (i);

    CREATE UNLOGGED TABLE bench.gen (
        t          timestamptz NOT NULL,
        agg_type   text NOT NULL,
        agg_id     uuid NOT NULL,
        version    integer NOT NULL,
        event_type text NOT NULL,
        data       jsonb NOT NULL
    );

    -- ---- categories: created, renamed 0..2 times ------------------------
    -- Event k of a stream happens at t0 + (k + jitter) * gap, jitter < 0.9,
    -- so occurred_at strictly increases with the version.
    INSERT INTO bench.gen
    SELECT c.t0 + make_interval(secs => (k + CASE WHEN k = 0 THEN 0 ELSE 0.9 * random() END) * 20 * 86400),
           'Category', c.id, k + 1,
           CASE WHEN k = 0 THEN 'CategoryCreated' ELSE 'CategoryRenamed' END,
           jsonb_build_object('name', 'Category ' || c.i || CASE WHEN k > 0 THEN ' (' || k || ')' ELSE '' END)
      FROM bench.cat_ids c, generate_series(0, c.nrenames) k;

    -- ---- products --------------------------------------------------------
    WITH ev AS MATERIALIZED (
        SELECT p.*, k, random() AS r, random() AS r2,
               1 + floor(random() * n_cat)::int AS other_cat_i
          FROM bench.prod_ids p, generate_series(0, p.nupd + p.disc::int) k
    )
    INSERT INTO bench.gen
    SELECT ev.t0 + make_interval(secs => (ev.k + CASE WHEN ev.k = 0 THEN 0 ELSE 0.9 * ev.r2 END) * 10 * 86400),
           'Product', ev.id, ev.k + 1,
           x.event_type, x.data
      FROM ev
      LEFT JOIN bench.cat_ids c1 ON c1.i = ev.cat_i
      LEFT JOIN bench.cat_ids c2 ON c2.i = ev.other_cat_i
     CROSS JOIN LATERAL (
        SELECT CASE
                 WHEN ev.k = 0 THEN 'ProductCreated'
                 WHEN ev.disc AND ev.k = ev.nupd + 1 THEN 'ProductDiscontinued'
                 WHEN ev.r < 0.20 THEN 'ProductRenamed'
                 WHEN ev.r < 0.80 THEN 'ProductPriceChanged'
                 ELSE 'ProductCategorized'
               END AS event_type) et
     CROSS JOIN LATERAL (
        SELECT et.event_type,
               CASE et.event_type
                 WHEN 'ProductCreated' THEN
                   jsonb_build_object('sku', 'SKU-' || lpad(ev.i::text, 8, '0'),
                                      'name', 'Product ' || ev.i,
                                      'price_cents', ev.price,
                                      'category_id',
                                      CASE WHEN ev.rcat < 0.05 THEN NULL
                                           WHEN ev.rcat < 0.06 THEN gen_random_uuid()  -- never created
                                           ELSE c1.id END)
                 WHEN 'ProductDiscontinued' THEN '{}'::jsonb
                 WHEN 'ProductRenamed' THEN
                   jsonb_build_object('name', 'Product ' || ev.i || ' mk' || ev.k)
                 WHEN 'ProductPriceChanged' THEN
                   jsonb_build_object('price_cents', 100 + floor(ev.r2 * 100000)::bigint)
                 ELSE
                   jsonb_build_object('category_id',
                                      CASE WHEN ev.r2 < 0.10 THEN NULL ELSE c2.id END)
               END AS data) x;

    -- ---- users -----------------------------------------------------------
    -- v1 registered; v2 verified (70 %); then 0..14 of: login 75 %, email
    -- change 7 %, verify 4 %, role change 4 %, deactivate 5 %, reactivate 5 %.
    WITH ev AS MATERIALIZED (
        SELECT u.*, v, random() AS r, random() AS r2
          FROM bench.user_ids u, generate_series(1, 1 + u.verified::int + u.nact) v
    )
    INSERT INTO bench.gen
    SELECT ev.t0 + make_interval(secs => (ev.v - 1 + CASE WHEN ev.v = 1 THEN 0 ELSE 0.9 * ev.r2 END) * 3 * 86400),
           'User', ev.id, ev.v,
           et.event_type,
           CASE et.event_type
             WHEN 'UserRegistered' THEN
               CASE WHEN ev.rrole < 0.40 THEN
                      jsonb_build_object('email', 'User' || ev.i || '@Example.com',
                                         'first_name', 'First' || ev.i, 'last_name', 'Last' || ev.i)
                    ELSE
                      jsonb_build_object('email', 'User' || ev.i || '@Example.com',
                                         'first_name', 'First' || ev.i, 'last_name', 'Last' || ev.i,
                                         'role', CASE WHEN ev.rrole < 0.50 THEN NULL
                                                      WHEN ev.rrole < 0.90 THEN 'customer'
                                                      ELSE 'admin' END)
               END
             WHEN 'UserEmailChanged' THEN
               jsonb_build_object('email', 'user' || ev.i || '+v' || ev.v || '@example.com')
             WHEN 'UserRoleChanged' THEN
               jsonb_build_object('role', (ARRAY['customer', 'support', 'admin'])[1 + floor(ev.r2 * 3)::int])
             ELSE '{}'::jsonb
           END
      FROM ev
     CROSS JOIN LATERAL (
        SELECT CASE
                 WHEN ev.v = 1 THEN 'UserRegistered'
                 WHEN ev.v = 2 AND ev.verified THEN 'UserEmailVerified'
                 WHEN ev.r < 0.75 THEN 'UserLoggedIn'
                 WHEN ev.r < 0.82 THEN 'UserEmailChanged'
                 WHEN ev.r < 0.86 THEN 'UserEmailVerified'
                 WHEN ev.r < 0.90 THEN 'UserRoleChanged'
                 WHEN ev.r < 0.95 THEN 'UserDeactivated'
                 ELSE 'UserReactivated'
               END AS event_type) et;

    -- ---- orders ----------------------------------------------------------
    -- v1 placed with 1..5 items; 0..2 items added; shipped (70 %) or
    -- cancelled (12 %) or left placed; 3 % get a late item (ignored).
    WITH ev AS MATERIALIZED (
        SELECT o.*, v, random() AS r2,
               1 + floor(random() * n_prod)::int AS prod_i,
               1 + floor(random() * 3)::int AS qty,
               floor(random() * 20000)::bigint AS unit_price,
               1 + o.nadd + (o.fin <> 'none')::int + (o.fin <> 'none' AND o.late_add)::int AS nev
          FROM bench.order_ids o,
               generate_series(1, 1 + o.nadd + (o.fin <> 'none')::int
                                    + (o.fin <> 'none' AND o.late_add)::int) v
    )
    INSERT INTO bench.gen
    SELECT ev.t0 + make_interval(secs => (ev.v - 1 + CASE WHEN ev.v = 1 THEN 0 ELSE 0.9 * ev.r2 END) * 6 * 3600),
           'Order', ev.id, ev.v,
           et.event_type,
           CASE et.event_type
             WHEN 'OrderPlaced' THEN
               jsonb_build_object(
                 'customer_id', cu.id,
                 'items', (SELECT jsonb_agg(jsonb_build_object(
                                    'product_id', p.id,
                                    'quantity', 1 + floor(random() * 4)::int,
                                    'unit_price_cents', floor(random() * 20000)::bigint))
                             FROM generate_series(1, ev.nitems) j
                             JOIN bench.prod_ids p ON p.i = 1 + ((ev.prod_i + j * 7919) % n_prod)))
             WHEN 'OrderItemAdded' THEN
               jsonb_build_object('product_id', pr.id, 'quantity', ev.qty,
                                  'unit_price_cents', ev.unit_price)
             WHEN 'OrderCancelled' THEN
               jsonb_build_object('reason', (ARRAY['customer request', 'out of stock', 'payment failed'])[1 + floor(ev.r2 * 3)::int])
             ELSE '{}'::jsonb
           END
      FROM ev
      JOIN bench.user_ids cu ON cu.i = ev.cust_i
      JOIN bench.prod_ids pr ON pr.i = ev.prod_i
     CROSS JOIN LATERAL (
        SELECT CASE
                 WHEN ev.v = 1 THEN 'OrderPlaced'
                 WHEN ev.v <= 1 + ev.nadd THEN 'OrderItemAdded'
                 WHEN ev.v = 2 + ev.nadd THEN CASE ev.fin WHEN 'ship' THEN 'OrderShipped'
                                                          ELSE 'OrderCancelled' END
                 ELSE 'OrderItemAdded'
               END AS event_type) et;

    -- ---- positions: by occurred_at, cut at p_target ----------------------
    CREATE UNLOGGED TABLE bench.ordered AS
    SELECT * FROM (SELECT row_number() OVER (ORDER BY t, agg_id, version) AS seq, g.*
                     FROM bench.gen g) x
     WHERE seq <= p_target;
    CREATE INDEX ON bench.ordered (seq);
    DROP TABLE bench.gen;
    SELECT count(*) INTO v_total FROM bench.ordered;

    INSERT INTO event_store.event_stream (stream_id, aggregate_type, aggregate_id, created_at, version)
    SELECT gen_random_uuid(), agg_type, agg_id, min(t), max(version)
      FROM bench.ordered
     GROUP BY agg_type, agg_id;
    COMMIT;

    -- Identity positions are taken in the ORDER BY's order (as in
    -- append_events), one transaction per chunk.
    v_from := 1;
    WHILE v_from <= v_total LOOP
        INSERT INTO event_store.domain_event
            (stream_id, event_type, event_version, aggregate_version, event_data, metadata, occurred_at)
        SELECT s.stream_id, o.event_type, 1, o.version, o.data,
               jsonb_build_object('source', 'bench', 'seq', o.seq), o.t
          FROM bench.ordered o
          JOIN event_store.event_stream s ON s.aggregate_type = o.agg_type AND s.aggregate_id = o.agg_id
         WHERE o.seq >= v_from AND o.seq < v_from + p_chunk
         ORDER BY o.seq;
        COMMIT;
        v_from := v_from + p_chunk;
    END LOOP;

    DROP TABLE bench.cat_ids, bench.prod_ids, bench.user_ids, bench.order_ids, bench.ordered;
    COMMIT;
END;
$$;

-- What must hold of the generated data (all counts 0): version gaps,
-- stream versions, positions out of version order, duplicate emails.
CREATE OR REPLACE FUNCTION bench.check_events()
RETURNS TABLE (problem text, n bigint)
LANGUAGE sql
AS $$
    SELECT 'stream version <> its event count or max aggregate_version',
           count(*)
      FROM event_store.event_stream s
      JOIN (SELECT stream_id, count(*) AS c, max(aggregate_version) AS m, min(aggregate_version) AS lo
              FROM event_store.domain_event GROUP BY stream_id) e USING (stream_id)
     WHERE s.version <> e.c OR e.m <> e.c OR e.lo <> 1
    UNION ALL
    SELECT 'positions not in per-stream version order', count(*)
      FROM (SELECT global_position,
                   lag(global_position) OVER (PARTITION BY stream_id ORDER BY aggregate_version) AS prev
              FROM event_store.domain_event) x
     WHERE prev > global_position
    UNION ALL
    SELECT 'emails used twice (case-insensitive)', count(*)
      FROM (SELECT lower(event_data->>'email') FROM event_store.domain_event
             WHERE event_type IN ('UserRegistered', 'UserEmailChanged')
             GROUP BY 1 HAVING count(*) > 1) x
$$;
