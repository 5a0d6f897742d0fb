-- Sample events for the demo (scripts/demo.sh): a small shop.
--
-- Every event goes through event_store.append_events(aggregate_type,
-- aggregate_id, expected_version, events[]): expected_version is the
-- stream's current version (0 for a new stream). Fixed ids keep the output
-- readable; occurred_at spreads the story over two days.
--
-- What the read model shows afterwards:
--   categories  Kitchen (2 active products), Garden (1: the mower was
--               discontinued; the hose was created before Garden existed)
--   users       ada (email changed, so no longer verified; logged in once),
--               grace (admin), linus
--   orders      one shipped, one cancelled (keeps its total; not revenue),
--               one placed; daily_sales per UTC day

\set ON_ERROR_STOP on

-- Catalog ---------------------------------------------------------------

SELECT event_store.append_events('Category', 'ca000000-0000-4000-8000-000000000001', 0, ARRAY[
  '{"event_type": "CategoryCreated", "event_data": {"name": "Kitchen"},
    "occurred_at": "2024-03-01T09:00:00Z"}'::jsonb]);

-- The hose names the Garden category before it exists.
SELECT event_store.append_events('Product', 'b0000000-0000-4000-8000-000000000003', 0, ARRAY[
  '{"event_type": "ProductCreated",
    "event_data": {"sku": "GA-HOSE", "name": "Garden hose", "price_cents": 2999,
                   "category_id": "ca000000-0000-4000-8000-000000000002"},
    "occurred_at": "2024-03-01T09:05:00Z"}'::jsonb]);

SELECT event_store.append_events('Category', 'ca000000-0000-4000-8000-000000000002', 0, ARRAY[
  '{"event_type": "CategoryCreated", "event_data": {"name": "Garden"},
    "occurred_at": "2024-03-01T09:10:00Z"}'::jsonb]);

SELECT event_store.append_events('Product', 'b0000000-0000-4000-8000-000000000001', 0, ARRAY[
  '{"event_type": "ProductCreated",
    "event_data": {"sku": "KI-KETTLE", "name": "Kettle", "price_cents": 2599,
                   "category_id": "ca000000-0000-4000-8000-000000000001"},
    "occurred_at": "2024-03-01T09:15:00Z"}'::jsonb,
  '{"event_type": "ProductPriceChanged", "event_data": {"price_cents": 2299},
    "occurred_at": "2024-03-01T16:00:00Z"}'::jsonb]);

SELECT event_store.append_events('Product', 'b0000000-0000-4000-8000-000000000002', 0, ARRAY[
  '{"event_type": "ProductCreated",
    "event_data": {"sku": "KI-KNIFE", "name": "Chef knife", "price_cents": 4900,
                   "category_id": "ca000000-0000-4000-8000-000000000001"},
    "occurred_at": "2024-03-01T09:20:00Z"}'::jsonb]);

SELECT event_store.append_events('Product', 'b0000000-0000-4000-8000-000000000004', 0, ARRAY[
  '{"event_type": "ProductCreated",
    "event_data": {"sku": "GA-MOWER", "name": "Lawn mower", "price_cents": 19900,
                   "category_id": "ca000000-0000-4000-8000-000000000002"},
    "occurred_at": "2024-03-01T09:25:00Z"}'::jsonb,
  '{"event_type": "ProductDiscontinued", "event_data": {},
    "occurred_at": "2024-03-02T08:00:00Z"}'::jsonb]);

-- Users -----------------------------------------------------------------

SELECT event_store.append_events('User', 'a0000000-0000-4000-8000-000000000001', 0, ARRAY[
  '{"event_type": "UserRegistered",
    "event_data": {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
    "occurred_at": "2024-03-01T10:00:00Z"}'::jsonb,
  '{"event_type": "UserEmailVerified", "event_data": {},
    "occurred_at": "2024-03-01T10:05:00Z"}'::jsonb,
  '{"event_type": "UserLoggedIn", "event_data": {},
    "occurred_at": "2024-03-01T10:06:00Z"}'::jsonb,
  '{"event_type": "UserEmailChanged", "event_data": {"email": "ada@analytical.example"},
    "occurred_at": "2024-03-02T11:00:00Z"}'::jsonb]);

SELECT event_store.append_events('User', 'a0000000-0000-4000-8000-000000000002', 0, ARRAY[
  '{"event_type": "UserRegistered",
    "event_data": {"email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper",
                   "role": "admin"},
    "occurred_at": "2024-03-01T10:30:00Z"}'::jsonb]);

SELECT event_store.append_events('User', 'a0000000-0000-4000-8000-000000000003', 0, ARRAY[
  '{"event_type": "UserRegistered",
    "event_data": {"email": "linus@example.com", "first_name": "Linus", "last_name": "Torvalds"},
    "occurred_at": "2024-03-01T11:00:00Z"}'::jsonb]);

-- Orders ----------------------------------------------------------------

SELECT event_store.append_events('Order', 'd0000000-0000-4000-8000-000000000001', 0, ARRAY[
  '{"event_type": "OrderPlaced",
    "event_data": {"customer_id": "a0000000-0000-4000-8000-000000000001",
                   "items": [{"product_id": "b0000000-0000-4000-8000-000000000001",
                              "quantity": 1, "unit_price_cents": 2599},
                             {"product_id": "b0000000-0000-4000-8000-000000000002",
                              "quantity": 2, "unit_price_cents": 4900}]},
    "occurred_at": "2024-03-01T12:00:00Z"}'::jsonb,
  '{"event_type": "OrderShipped", "event_data": {},
    "occurred_at": "2024-03-02T09:00:00Z"}'::jsonb]);

SELECT event_store.append_events('Order', 'd0000000-0000-4000-8000-000000000002', 0, ARRAY[
  '{"event_type": "OrderPlaced",
    "event_data": {"customer_id": "a0000000-0000-4000-8000-000000000002",
                   "items": [{"product_id": "b0000000-0000-4000-8000-000000000004",
                              "quantity": 1, "unit_price_cents": 19900}]},
    "occurred_at": "2024-03-01T13:00:00Z"}'::jsonb,
  '{"event_type": "OrderCancelled", "event_data": {"reason": "product discontinued"},
    "occurred_at": "2024-03-02T08:05:00Z"}'::jsonb]);

SELECT event_store.append_events('Order', 'd0000000-0000-4000-8000-000000000003', 0, ARRAY[
  '{"event_type": "OrderPlaced",
    "event_data": {"customer_id": "a0000000-0000-4000-8000-000000000003",
                   "items": [{"product_id": "b0000000-0000-4000-8000-000000000003",
                              "quantity": 3, "unit_price_cents": 2999}]},
    "occurred_at": "2024-03-02T14:00:00Z"}'::jsonb,
  '{"event_type": "OrderItemAdded",
    "event_data": {"product_id": "b0000000-0000-4000-8000-000000000001",
                   "quantity": 1, "unit_price_cents": 2299},
    "occurred_at": "2024-03-02T14:10:00Z"}'::jsonb]);
