-- The rebuild's swap, made MVCC-safe and deadlock-free (issue 16, defect 8).
--
-- V008's projectord_finish_rebuild moved tables with ALTER TABLE ... SET
-- SCHEMA, table by table, each under ACCESS EXCLUSIVE, with no lock
-- timeout. Two faults followed:
--
-- * A reader running a two-statement transaction (products, then
--   categories) held one table while the swap held the other: deadlock, and
--   the deadlock detector picked the reader as often as the swap. When the
--   swap lost it retried after a backoff of seconds, and every reader queued
--   behind its waiting ACCESS EXCLUSIVE request stalled as long.
-- * DDL is not MVCC-safe: a REPEATABLE READ transaction whose snapshot was
--   older than the swap found, in read_model, tables whose rows were all
--   written after its snapshot, and counted 0 products where it had seen
--   2,222 (SPEC §6: readers keep seeing the old table).
--
-- The swap now applies the difference between shadow and live tables as
-- ordinary row changes in the live tables, in one transaction: rows the
-- shadow lacks are deleted, rows that differ (the whole row compared) are
-- updated, new rows inserted. Readers keep their MVCC view: a snapshot older
-- than the swap sees the old rows, a newer one the new rows, nothing in
-- between. A rebuild that changed little writes little.
--
-- Locks: the live tables in one LOCK ... IN SHARE ROW EXCLUSIVE MODE. That
-- mode conflicts with every writer (ROW EXCLUSIVE: the live runner's
-- batches) and with itself, and with no reader (ACCESS SHARE, and ROW SHARE
-- for SELECT ... FOR UPDATE): a reader never waits for the swap, not even
-- behind its queued request. The shadow's tables are taken ACCESS EXCLUSIVE
-- (they are dropped at the end; only autovacuum ever competes for them).
-- Every lock is taken under lock_timeout = 200 ms, well below
-- deadlock_timeout (1 s by default): whoever else waits on the swap is
-- released by the swap's own timeout before a deadlock check can pick a
-- victim, so the swap is always the one that gives way. It fails with
-- SQLSTATE 55P03 and the runner tries again within milliseconds
-- (src/runner_rebuild.c).
--
-- Autovacuum holds SHARE UPDATE EXCLUSIVE, which the swap's locks conflict
-- with, for as long as a vacuum takes (minutes on a large table). It gives
-- way only to a lock request that has waited deadlock_timeout; so when a
-- short wait failed and an autovacuum worker holds one of the tables, the
-- swap waits once more, for deadlock_timeout + 1 s. That wait blocks no
-- reader (see above).
--
-- Keys and constraints. Rows are matched on the primary key (else on a
-- unique, non-partial index of plain NOT NULL columns). A table with other
-- unique indexes or exclusion constraints (users: lower(email)) would
-- trip over them when two rows trade values (two users swapping emails), so
-- there a row that differs is deleted and inserted again instead of
-- updated: every intermediate state is then a subset of the final one,
-- which the shadow proves unique. Deletes go first, table by table in
-- reverse order, then updates and inserts in the projection's table order
-- (parents first), with deferrable constraints deferred to the commit.
-- Generated columns are compared but never written; identity columns are
-- written as the shadow has them (OVERRIDING SYSTEM VALUE). A table with no
-- usable key is emptied and filled again (still MVCC-safe). Triggers on the
-- live tables fire for these changes like for any other.
--
-- Only where a table's shape differs (its columns, their types or
-- generation: the live table was altered after the rebuild made its shadow
-- from it, e.g. by a migration applied meanwhile) does the swap fall back to
-- V008's DDL, now under one LOCK of every table (live and shadow) IN ACCESS
-- EXCLUSIVE MODE with the same lock_timeout. What a reader sees then is
-- written in docs/design.md ("Rebuilds and readers").
--
-- Same signature as V008's: the daemon's statement does not change. The
-- checks before the swap (a half-built shadow, one that has not applied
-- everything the live projection has, is never swapped in) are V008's.
-- Idempotent.

-- A table's columns as one comparable text: name, type, collation,
-- generation, identity, in column order.
CREATE OR REPLACE FUNCTION read_model.projectord_table_shape(p_table regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%I %s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod),
                             a.attcollation, a.attgenerated, a.attidentity),
                      ', ' ORDER BY a.attnum)
      FROM pg_attribute a
     WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- The columns rows are matched on: the primary key, else a unique index
-- that is not partial, has no expressions and only NOT NULL columns; NULL
-- when the table has none.
CREATE OR REPLACE FUNCTION read_model.projectord_row_key(p_table regclass, OUT key_columns text[],
                                                         OUT key_index oid)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT array_agg(a.attname::text ORDER BY k.ord)
              FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
           i.indexrelid
      FROM pg_index i
     WHERE i.indrelid = p_table AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
       AND NOT (0 = ANY (i.indkey::int2[]))
       AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
                          AND NOT a.attnotnull)
     ORDER BY i.indisprimary DESC, i.indexrelid
     LIMIT 1
$$;

-- Take p_lock (a LOCK statement) under the swap's lock_timeout. When that
-- fails and p_patient, and an autovacuum worker holds one of p_tables,
-- wait once more for longer than deadlock_timeout, which cancels the
-- worker. Anything else: the error (55P03) goes to the caller.
CREATE OR REPLACE FUNCTION read_model.projectord_swap_lock(p_lock text, p_tables regclass[],
                                                           p_patient boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        EXECUTE p_lock;
        RETURN;
    EXCEPTION WHEN lock_not_available THEN
        IF NOT p_patient OR NOT EXISTS (
               SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'relation' AND l.granted AND l.relation = ANY (p_tables)
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND a.backend_type = 'autovacuum worker') THEN
            RAISE;
        END IF;
    END;
    PERFORM set_config('lock_timeout',
                       (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000
                        + 1000)::bigint || 'ms', true);
    EXECUTE p_lock;
    PERFORM set_config('lock_timeout', '200ms', true);
END;
$$;

-- Make live table p_table equal to its shadow in p_schema, by row changes.
-- p_phase 'delete': delete the rows to go (and, where other unique indexes
-- are, the rows that differ); 'upsert': update the rows that differ, insert
-- the new ones.
CREATE OR REPLACE FUNCTION read_model.projectord_apply_diff(p_schema name, p_table text,
                                                            p_phase text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live      regclass := format('read_model.%I', p_table)::regclass;
    v_shadow    text := format('%I.%I', p_schema, p_table);
    v_key       text[];
    v_key_index oid;
    v_match     text;    -- s.k1 = l.k1 AND ...
    v_cols      text;    -- the written columns
    v_set       text;    -- c = s.c, ... for the non-key written columns
    v_replace   boolean; -- rows that differ are deleted and inserted again
BEGIN
    SELECT key_columns, key_index INTO v_key, v_key_index FROM read_model.projectord_row_key(v_live);
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
           string_agg(format('%I = s.%I', a.attname, a.attname), ', ' ORDER BY a.attnum)
               FILTER (WHERE NOT a.attname::text = ANY (coalesce(v_key, '{}')))
      INTO v_cols, v_set
      FROM pg_attribute a
     WHERE a.attrelid = v_live AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    IF v_key IS NULL THEN
        -- No key to match rows on: empty and fill.
        IF p_phase = 'delete' THEN
            EXECUTE format('DELETE FROM %s', v_live);
        ELSE
            EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s',
                           v_live, v_cols, v_cols, v_shadow);
        END IF;
        RETURN;
    END IF;

    SELECT string_agg(format('s.%I = l.%I', k, k), ' AND ') INTO v_match FROM unnest(v_key) AS k;
    v_replace := v_set IS NULL
              OR EXISTS (SELECT 1 FROM pg_index i
                          WHERE i.indrelid = v_live AND i.indexrelid <> v_key_index
                            AND (i.indisunique OR i.indisexclusion))
              OR EXISTS (SELECT 1 FROM pg_attribute a
                          WHERE a.attrelid = v_live AND a.attnum > 0 AND NOT a.attisdropped
                            AND a.attidentity = 'a' AND NOT a.attname::text = ANY (v_key));

    IF p_phase = 'delete' THEN
        EXECUTE format('DELETE FROM %s l WHERE NOT EXISTS (SELECT 1 FROM %s s WHERE %s)',
                       v_live, v_shadow, v_match);
        IF v_replace THEN
            EXECUTE format('DELETE FROM %s l USING %s s WHERE %s AND l::text IS DISTINCT FROM s::text',
                           v_live, v_shadow, v_match);
        END IF;
        RETURN;
    END IF;

    IF NOT v_replace THEN
        EXECUTE format('UPDATE %s l SET %s FROM %s s WHERE %s AND l::text IS DISTINCT FROM s::text',
                       v_live, v_set, v_shadow, v_match);
    END IF;
    EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s s'
                   ' WHERE NOT EXISTS (SELECT 1 FROM %s l WHERE %s)',
                   v_live, v_cols, v_cols, v_shadow, v_live, v_match);
END;
$$;

-- V008's DDL swap, for tables whose shape changed: the caller holds every
-- table ACCESS EXCLUSIVE. The old tables' grants carry over; an old table
-- that something else depends on (a view) is kept in
-- projectord_rebuild_NAME_old with a warning instead of dropped.
CREATE OR REPLACE FUNCTION read_model.projectord_swap_tables(p_name text, p_tables text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    v_schema name := read_model.projectord_shadow_schema(p_name);
    v_trash  name := (read_model.projectord_shadow_schema(p_name) || '_old')::name;
    v_table  text;
    v_grant  record;
BEGIN
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', v_trash);
    EXECUTE format('CREATE SCHEMA %I', v_trash);
    FOREACH v_table IN ARRAY p_tables LOOP
        EXECUTE format('ALTER TABLE read_model.%I SET SCHEMA %I', v_table, v_trash);
        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA read_model', v_schema, v_table);
        FOR v_grant IN
            SELECT a.grantee, a.privilege_type
              FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = format('%I.%I', v_trash, v_table)::regclass
               AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('GRANT %s ON read_model.%I TO %s', v_grant.privilege_type, v_table,
                           CASE WHEN v_grant.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(v_grant.grantee)) END);
        END LOOP;
    END LOOP;
    FOREACH v_table IN ARRAY p_tables LOOP
        BEGIN
            EXECUTE format('DROP TABLE %I.%I', v_trash, v_table);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE WARNING 'projectord: %.% kept: other objects depend on it (recreate them on '
                          'read_model.%, then drop it)', v_trash, v_table, v_table;
        END;
    END LOOP;
    BEGIN
        EXECUTE format('DROP SCHEMA %I', v_trash);
    EXCEPTION WHEN dependent_objects_still_exist THEN
        NULL;
    END;
END;
$$;

-- Swap the shadow in, if it has applied everything the live projection has
-- (returns false otherwise: the rebuild goes on and tries again). Tables
-- and checkpoint change in this one transaction. SQLSTATE 55P03 when a lock
-- was not had within the timeout: nothing changed, try again.
CREATE OR REPLACE FUNCTION read_model.projectord_finish_rebuild(p_name text, p_tables text[],
                                                                p_version integer)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
-- The daemon's sessions turn these off for their small keyed statements;
-- a diff joins whole tables.
SET enable_hashjoin = on
SET enable_mergejoin = on
SET enable_seqscan = on
AS $$
DECLARE
    v_schema name := read_model.projectord_shadow_schema(p_name);
    v_live   read_model.projection_metadata%ROWTYPE;
    v_shadow read_model.projection_rebuild%ROWTYPE;
    v_table  text;
    v_lives  regclass[];
    v_all    regclass[];
    v_same   boolean;
BEGIN
    IF to_regnamespace(v_schema) IS NULL THEN
        RETURN false;
    END IF;
    SELECT array_agg(format('read_model.%I', t)::regclass ORDER BY o),
           bool_and(read_model.projectord_table_shape(format('read_model.%I', t)::regclass)
                    IS NOT DISTINCT FROM
                    read_model.projectord_table_shape(to_regclass(format('%I.%I', v_schema, t))))
      INTO v_lives, v_same
      FROM unnest(p_tables) WITH ORDINALITY AS x(t, o);
    SELECT v_lives || array_agg(format('%I.%I', v_schema, t)::regclass ORDER BY o)
      INTO v_all
      FROM unnest(p_tables) WITH ORDINALITY AS x(t, o);

    -- The tables first, in one go, before any row lock: a live batch holds
    -- its tables, then wants the status row.
    IF v_same THEN
        PERFORM read_model.projectord_swap_lock(
            format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE',
                   array_to_string(v_lives::text[], ', ')), v_all, true);
        PERFORM read_model.projectord_swap_lock(
            format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE',
                   array_to_string(v_all[array_length(v_lives, 1) + 1:], ', ')), v_all, true);
        -- Altered between the look and the lock: the next try takes the other way.
        IF EXISTS (SELECT 1 FROM unnest(p_tables) AS t
                    WHERE read_model.projectord_table_shape(format('read_model.%I', t)::regclass)
                          IS DISTINCT FROM
                          read_model.projectord_table_shape(format('%I.%I', v_schema, t)::regclass))
        THEN
            RAISE EXCEPTION 'projectord: % changed shape during the swap; trying again', p_name
                USING ERRCODE = 'lock_not_available';
        END IF;
    ELSE
        PERFORM read_model.projectord_swap_lock(
            format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', array_to_string(v_all::text[], ', ')),
            v_all, false);
    END IF;

    SELECT * INTO v_live FROM read_model.projection_metadata
     WHERE projection_name = p_name FOR UPDATE;
    SELECT * INTO v_shadow FROM read_model.projection_rebuild
     WHERE projection_name = p_name FOR UPDATE;
    IF v_shadow.projection_name IS NULL
       OR v_shadow.tail_snapshot_lo <> v_shadow.tail_snapshot_hi
       OR (v_live.projection_name IS NOT NULL
           AND NOT read_model.projectord_snapshot_covers(v_shadow.tail_snapshot_hi::pg_snapshot,
                                                         v_live.tail_snapshot_hi::pg_snapshot)) THEN
        RETURN false;
    END IF;

    IF v_same THEN
        SET CONSTRAINTS ALL DEFERRED;
        FOR i IN REVERSE array_length(p_tables, 1)..1 LOOP
            PERFORM read_model.projectord_apply_diff(v_schema, p_tables[i], 'delete');
        END LOOP;
        FOREACH v_table IN ARRAY p_tables LOOP
            PERFORM read_model.projectord_apply_diff(v_schema, v_table, 'upsert');
        END LOOP;
    ELSE
        PERFORM read_model.projectord_swap_tables(p_name, p_tables);
    END IF;

    UPDATE read_model.projection_metadata
       SET tail_snapshot_lo     = v_shadow.tail_snapshot_lo,
           tail_snapshot_hi     = v_shadow.tail_snapshot_hi,
           tail_window_position = v_shadow.tail_window_position,
           tail_window_max      = v_shadow.tail_window_max,
           last_position        = greatest(last_position, v_shadow.last_position),
           last_event_id        = greatest(last_event_id, v_shadow.last_position),
           checkpoint_seq       = checkpoint_seq + 1,
           events_processed     = v_shadow.events_processed,
           events_skipped       = v_shadow.events_skipped,
           events_ignored       = v_shadow.events_ignored,
           projection_version   = p_version,
           rebuild_requested_at = NULL,
           rebuilt_at           = now(),
           updated_at           = now()
     WHERE projection_name = p_name;
    DELETE FROM read_model.projection_rebuild WHERE projection_name = p_name;
    EXECUTE format('DROP SCHEMA %I CASCADE', v_schema);
    RETURN true;
END;
$$;

-- The helpers run inside the definer function only.
REVOKE ALL ON FUNCTION read_model.projectord_swap_lock(text, regclass[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_apply_diff(name, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_swap_tables(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_finish_rebuild(text, text[], integer) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'projectord') THEN
        GRANT EXECUTE ON FUNCTION read_model.projectord_finish_rebuild(text, text[], integer)
            TO projectord;
    END IF;
END
$$;
