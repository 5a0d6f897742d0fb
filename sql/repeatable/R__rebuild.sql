-- Repeatable migration (Flyway's R__ convention): applied after every
-- versioned migration, and again whenever this file changes. It holds the
-- one current definition of each function below and who may call it;
-- their earlier definitions in V0NN files are history (docs/design.md,
-- "The schema: versioned and repeatable migrations"). Idempotent; depends
-- only on objects the versioned migrations create.
--
-- Zero-downtime rebuilds (`projectord rebuild`, and on a projection version
-- change; V008 has the tables). A rebuild replays the event store into
-- shadow copies of the projection's tables, in schema
-- projectord_rebuild_NAME, with its own checkpoint in
-- read_model.projection_rebuild, while the live tables keep serving and
-- being updated; once the shadow has applied everything the live
-- projection has, projectord_finish_rebuild applies the difference to the
-- live tables as row changes, MVCC-safe and deadlock-free (V027 has the
-- reasoning: locks, lock_timeout, autovacuum, keys and constraints).

CREATE OR REPLACE FUNCTION read_model.projectord_shadow_schema(p_name text)
RETURNS name
LANGUAGE sql IMMUTABLE
AS $$ SELECT ('projectord_rebuild_' || p_name)::name $$;

-- True if every transaction visible in p_older is visible in p_newer.
CREATE OR REPLACE FUNCTION read_model.projectord_snapshot_covers(p_newer pg_snapshot,
                                                                 p_older pg_snapshot)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_snapshot_xmax(p_newer) >= pg_snapshot_xmax(p_older)
       AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(p_newer) AS x(xid)
                        WHERE pg_visible_in_snapshot(x.xid, p_older))
$$;

-- Start a rebuild from scratch: drop whatever an interrupted one left,
-- create the shadow tables (same columns, indexes and constraints as the
-- live ones) and a fresh rebuild checkpoint. SECURITY DEFINER: it runs as
-- the schema owner, so the daemon's role needs no right to create schemas.
CREATE OR REPLACE FUNCTION read_model.projectord_begin_rebuild(p_name text, p_tables text[],
                                                               p_owner text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    v_schema  name := read_model.projectord_shadow_schema(p_name);
    v_table   text;
    v_options text[];
BEGIN
    IF p_name !~ '^[a-z_][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'projectord_begin_rebuild: bad projection name %', p_name;
    END IF;
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', v_schema);
    EXECUTE format('CREATE SCHEMA %I', v_schema);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', v_schema, session_user);
    FOREACH v_table IN ARRAY p_tables LOOP
        EXECUTE format('CREATE TABLE %I.%I (LIKE read_model.%I INCLUDING ALL)',
                       v_schema, v_table, v_table);
        -- LIKE copies no storage parameters (fillfactor, autovacuum_*): carry them over.
        SELECT c.reloptions INTO v_options FROM pg_class c
         WHERE c.oid = format('read_model.%I', v_table)::regclass;
        IF v_options IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.%I SET (%s)', v_schema, v_table,
                           array_to_string(v_options, ', '));
        END IF;
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %I.%I TO %I',
                       v_schema, v_table, session_user);
    END LOOP;
    DELETE FROM read_model.projection_rebuild WHERE projection_name = p_name;
    INSERT INTO read_model.projection_rebuild
           (projection_name, status, owner, heartbeat_at, events_total, started_at)
    VALUES (p_name, 'rebuilding', p_owner, now(),
            (SELECT coalesce(max(global_position), 0) FROM event_store.domain_event), now());
END;
$$;

-- A failed or abandoned rebuild: forget the request, keep the live tables.
CREATE OR REPLACE FUNCTION read_model.projectord_abandon_rebuild(p_name text, p_error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
BEGIN
    UPDATE read_model.projection_metadata
       SET rebuild_requested_at = NULL,
           last_error = 'rebuild failed: ' || p_error,
           last_error_at = now()
     WHERE projection_name = p_name;
    UPDATE read_model.projection_rebuild SET status = 'failed', last_error = p_error,
           last_error_at = now()
     WHERE projection_name = p_name;
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', read_model.projectord_shadow_schema(p_name));
END;
$$;

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

-- The definer functions are for the daemon's role only; the helpers run
-- inside projectord_finish_rebuild only.
REVOKE ALL ON FUNCTION read_model.projectord_begin_rebuild(text, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_finish_rebuild(text, text[], integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_abandon_rebuild(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_swap_lock(text, regclass[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_apply_diff(name, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_swap_tables(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION read_model.projectord_begin_rebuild(text, text[], text) TO projectord;
GRANT EXECUTE ON FUNCTION read_model.projectord_finish_rebuild(text, text[], integer) TO projectord;
GRANT EXECUTE ON FUNCTION read_model.projectord_abandon_rebuild(text, text) TO projectord;
