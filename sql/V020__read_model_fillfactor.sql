-- Room on each page for updated row versions.
--
-- The read model is update-heavy: a user logs in again and again, an order
-- gets items and is shipped, a product's price changes. With full pages
-- (fillfactor 100, the default) most new row versions go to another page,
-- so every index of the table gets a new entry. A quarter of each page kept
-- free makes about half of these updates HOT (no index entry, pruned in
-- place): in a catch-up, HOT updates went from 27 % to 49 % (users), 7 % to
-- 51 % (orders), 26 % to 55 % (products), and the backends' CPU for those
-- projections down 5 % (tests/bench/RESULTS.md). The tables are no larger:
-- fewer dead versions make up for the free space.
--
-- Only pages written from now on use it; a rebuild's shadow tables get it
-- from the live ones (V008's projectord_begin_rebuild). Idempotent.

ALTER TABLE read_model.users SET (fillfactor = 75);
ALTER TABLE read_model.orders SET (fillfactor = 75);
ALTER TABLE read_model.products SET (fillfactor = 75);
