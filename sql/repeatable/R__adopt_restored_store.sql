-- Repeatable migration (Flyway's R__ convention): applied after every
-- versioned migration, and again whenever this file changes. It holds the
-- one current definition of each function below and who may call it;
-- their earlier definitions in V0NN files are history (docs/design.md,
-- "The schema: versioned and repeatable migrations"). Idempotent; depends
-- only on objects the versioned migrations create.
--
-- Adopting an event store restored or copied from another cluster
-- (`projectord adopt-restored-store`); V026 has the whole reasoning, steps
-- 1-4 below refer to it.

-- Steps 1-3 on the event store, for the checkpoints given as
-- [{table, name, lo, hi, window_position, last_position}] (they may live in
-- another database: database.target). Returns {snapshot, events, ahead,
-- classes, checkpoints: [{table, name, lo, hi, window_position,
-- window_max, applied, to_apply}]}. p_dry_run: judge, rewrite nothing.
CREATE OR REPLACE FUNCTION event_store.projectord_adopt_transaction_ids(p_checkpoints jsonb,
                                                                        p_dry_run boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    v_snap    pg_snapshot;
    v_xmin    bigint;
    v_classes bigint;
    v_out     jsonb;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot older than the lock would miss events committed before it.
        RAISE EXCEPTION 'projectord_adopt_transaction_ids: run it in a READ COMMITTED transaction';
    END IF;
    LOCK TABLE event_store.domain_event IN EXCLUSIVE MODE;
    v_snap := pg_current_snapshot();
    v_xmin := pg_snapshot_xmin(v_snap)::text::bigint;

    DROP TABLE IF EXISTS pg_temp.projectord_adopt_cp, pg_temp.projectord_adopt_event,
                         pg_temp.projectord_adopt_class;
    CREATE TEMP TABLE projectord_adopt_cp ON COMMIT DROP AS
        SELECT c.ord::int AS ord, c.cp->>'table' AS tab, c.cp->>'name' AS name,
               (c.cp->>'lo')::pg_snapshot AS lo, (c.cp->>'hi')::pg_snapshot AS hi,
               c.cp->>'lo' <> c.cp->>'hi' AS window_open,
               (c.cp->>'window_position')::bigint AS window_position,
               (c.cp->>'last_position')::bigint AS last_position
          FROM jsonb_array_elements(coalesce(p_checkpoints, '[]')) WITH ORDINALITY AS c(cp, ord);

    -- key: one character per checkpoint, '1' applied, '0' not.
    CREATE TEMP TABLE projectord_adopt_event ON COMMIT DROP AS
        SELECT e.global_position AS pos, e.transaction_id AS xid,
               coalesce((SELECT string_agg(
                                  CASE WHEN e.global_position <= c.last_position
                                        AND (pg_visible_in_snapshot(e.transaction_id, c.lo)
                                             OR (c.window_open
                                                 AND e.global_position <= c.window_position
                                                 AND pg_visible_in_snapshot(e.transaction_id, c.hi)))
                                       THEN '1' ELSE '0' END, '' ORDER BY c.ord)
                           FROM projectord_adopt_cp c), '') AS key
          FROM event_store.domain_event e;

    CREATE TEMP TABLE projectord_adopt_class ON COMMIT DROP AS
        SELECT k.key, (v_xmin - k.rank)::text::xid8 AS xid
          FROM (SELECT key, row_number() OVER (ORDER BY key) AS rank
                  FROM projectord_adopt_event GROUP BY key) k;
    SELECT count(*) INTO v_classes FROM projectord_adopt_class;
    IF v_xmin - v_classes < 3 THEN
        RAISE EXCEPTION 'projectord_adopt_transaction_ids: this cluster has used too few transaction ids (%) for % classes of events; run it again after a few hundred transactions',
            v_xmin, v_classes;
    END IF;

    IF NOT p_dry_run THEN
        UPDATE event_store.domain_event e
           SET transaction_id = k.xid
          FROM projectord_adopt_event a JOIN projectord_adopt_class k USING (key)
         WHERE e.global_position = a.pos AND e.transaction_id <> k.xid;
    END IF;

    SELECT jsonb_build_object(
               'snapshot', v_snap::text,
               'events', (SELECT count(*) FROM projectord_adopt_event),
               'ahead', (SELECT count(*) FROM projectord_adopt_event
                          WHERE xid >= pg_snapshot_xmax(v_snap)),
               'classes', v_classes,
               'checkpoints', coalesce(jsonb_agg(x.cp ORDER BY x.ord), '[]'))
      INTO v_out
      FROM (SELECT c.ord, jsonb_build_object(
                       'table', c.tab, 'name', c.name,
                       'lo', CASE WHEN u.n = 0 THEN v_snap::text
                                  ELSE (format('%s:%s:', u.xids[1], pg_snapshot_xmax(v_snap))
                                        || (SELECT string_agg(x::text, ',' ORDER BY x)
                                              FROM (SELECT unnest(u.xids)
                                                    UNION ALL
                                                    SELECT pg_snapshot_xip(v_snap)) AS t(x))
                                       )::pg_snapshot::text END,
                       'hi', v_snap::text,
                       'window_position', coalesce(u.first - 1, 0),
                       'window_max', coalesce(u.last, 0),
                       'applied', (SELECT count(*) FROM projectord_adopt_event) - u.n,
                       'to_apply', u.n) AS cp
              FROM projectord_adopt_cp c,
                   LATERAL (SELECT count(*) AS n, min(a.pos) AS first, max(a.pos) AS last,
                                   (SELECT array_agg(k.xid ORDER BY k.xid)
                                      FROM projectord_adopt_class k
                                     WHERE substr(k.key, c.ord, 1) = '0') AS xids
                              FROM projectord_adopt_event a
                             WHERE substr(a.key, c.ord, 1) = '0') u) x;
    RETURN v_out;
END;
$$;

-- The checkpoints, locked until the end of the transaction (a daemon's
-- batch waits), in the form projectord_adopt_transaction_ids takes.
CREATE OR REPLACE FUNCTION read_model.projectord_adoption_checkpoints()
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_out jsonb;
BEGIN
    PERFORM 1 FROM read_model.projection_metadata FOR UPDATE;
    PERFORM 1 FROM read_model.projection_rebuild FOR UPDATE;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'table', t.tab, 'name', t.projection_name, 'lo', t.tail_snapshot_lo,
               'hi', t.tail_snapshot_hi, 'window_position', t.tail_window_position,
               'last_position', t.last_position) ORDER BY t.tab, t.projection_name), '[]')
      INTO v_out
      FROM (SELECT 'projection_metadata' AS tab, projection_name, tail_snapshot_lo,
                   tail_snapshot_hi, tail_window_position, last_position
              FROM read_model.projection_metadata
            UNION ALL
            SELECT 'projection_rebuild', projection_name, tail_snapshot_lo,
                   tail_snapshot_hi, tail_window_position, last_position
              FROM read_model.projection_rebuild) t;
    RETURN v_out;
END;
$$;

-- Step 4: write the checkpoints projectord_adopt_transaction_ids returned.
CREATE OR REPLACE FUNCTION read_model.projectord_adopt_checkpoints(p_result jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE read_model.projection_metadata m
       SET tail_snapshot_lo = c->>'lo', tail_snapshot_hi = c->>'hi',
           tail_window_position = (c->>'window_position')::bigint,
           tail_window_max = (c->>'window_max')::bigint,
           checkpoint_seq = m.checkpoint_seq + 1,
           resume_requested_at = clock_timestamp(), updated_at = now()
      FROM jsonb_array_elements(p_result->'checkpoints') AS c
     WHERE c->>'table' = 'projection_metadata' AND m.projection_name = c->>'name';
    UPDATE read_model.projection_rebuild m
       SET tail_snapshot_lo = c->>'lo', tail_snapshot_hi = c->>'hi',
           tail_window_position = (c->>'window_position')::bigint,
           tail_window_max = (c->>'window_max')::bigint,
           checkpoint_seq = m.checkpoint_seq + 1, updated_at = now()
      FROM jsonb_array_elements(p_result->'checkpoints') AS c
     WHERE c->>'table' = 'projection_rebuild' AND m.projection_name = c->>'name';
END;
$$;

-- All of it in one transaction, when the read model lives with the events.
CREATE OR REPLACE FUNCTION read_model.projectord_adopt_restored_store(p_dry_run boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_out jsonb;
BEGIN
    -- Appenders out first, then the checkpoints: a batch never waits on the event table.
    LOCK TABLE event_store.domain_event IN EXCLUSIVE MODE;
    v_out := event_store.projectord_adopt_transaction_ids(
                 read_model.projectord_adoption_checkpoints(), p_dry_run);
    IF NOT p_dry_run THEN
        PERFORM read_model.projectord_adopt_checkpoints(v_out);
    END IF;
    RETURN v_out;
END;
$$;

-- Not for the daemon's role, nor anyone's but the owner's unless granted.
REVOKE ALL ON FUNCTION event_store.projectord_adopt_transaction_ids(jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_adoption_checkpoints() FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_adopt_checkpoints(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_adopt_restored_store(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.projectord_adopt_transaction_ids(jsonb, boolean)
    FROM projectord;
REVOKE ALL ON FUNCTION read_model.projectord_adoption_checkpoints() FROM projectord;
REVOKE ALL ON FUNCTION read_model.projectord_adopt_checkpoints(jsonb) FROM projectord;
REVOKE ALL ON FUNCTION read_model.projectord_adopt_restored_store(boolean) FROM projectord;
