-- Zero-downtime rebuilds (`projectord rebuild`, and on a projection version
-- change). A rebuild replays the event store into shadow copies of the
-- projection's tables, in schema projectord_rebuild_NAME, with its own
-- checkpoint in read_model.projection_rebuild, while the live tables keep
-- serving and being updated; once the shadow has applied everything the
-- live projection has, projectord_finish_rebuild swaps tables and
-- checkpoint in one transaction. Idempotent.

ALTER TABLE read_model.projection_metadata
    ADD COLUMN IF NOT EXISTS rebuild_requested_at timestamptz,
    ADD COLUMN IF NOT EXISTS rebuilt_at timestamptz;

-- The shadow's checkpoint: the same columns as projection_metadata.
CREATE TABLE IF NOT EXISTS read_model.projection_rebuild
    (LIKE read_model.projection_metadata INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE read_model.projection_rebuild
    ADD COLUMN IF NOT EXISTS events_total bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS started_at timestamptz NOT NULL DEFAULT now();

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

-- Swap the shadow in, if it has applied everything the live projection has
-- (returns false otherwise: the rebuild goes on and tries again). Tables
-- and checkpoint change in this one transaction; readers see the old
-- tables or the new ones, never a partial state. The old tables' grants
-- carry over. An old table that something else depends on (a view) is
-- kept in projectord_rebuild_NAME_old with a warning instead of dropped.
CREATE OR REPLACE FUNCTION read_model.projectord_finish_rebuild(p_name text, p_tables text[],
                                                                p_version integer)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    v_schema name := read_model.projectord_shadow_schema(p_name);
    v_trash  name := (read_model.projectord_shadow_schema(p_name) || '_old')::name;
    v_live   read_model.projection_metadata%ROWTYPE;
    v_shadow read_model.projection_rebuild%ROWTYPE;
    v_table  text;
    v_grant  record;
BEGIN
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
    RETURN true;
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

-- The definer functions are for the daemon's role only.
REVOKE ALL ON FUNCTION read_model.projectord_begin_rebuild(text, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_finish_rebuild(text, text[], integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION read_model.projectord_abandon_rebuild(text, text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'projectord') THEN
        GRANT EXECUTE ON FUNCTION read_model.projectord_begin_rebuild(text, text[], text) TO projectord;
        GRANT EXECUTE ON FUNCTION read_model.projectord_finish_rebuild(text, text[], integer) TO projectord;
        GRANT EXECUTE ON FUNCTION read_model.projectord_abandon_rebuild(text, text) TO projectord;
        GRANT SELECT, INSERT, UPDATE, DELETE ON read_model.projection_rebuild TO projectord;
    END IF;
END
$$;

-- The status view, now with the rebuild's progress.
CREATE OR REPLACE VIEW read_model.projection_status AS
SELECT m.projection_name,
       CASE WHEN r.status = 'rebuilding' THEN 'rebuilding' ELSE m.status END AS status,
       m.last_position,
       h.head_position,
       greatest(h.head_position - m.last_position, 0) AS lag_events,
       m.events_processed,
       m.events_skipped,
       m.events_ignored,
       m.apply_latency_ms,
       m.last_error,
       m.last_error_at,
       m.owner,
       m.heartbeat_at,
       m.updated_at,
       (m.status <> 'failed'
        AND m.heartbeat_at IS NOT NULL
        AND m.heartbeat_at > now() - interval '30 seconds') AS healthy,
       r.last_position AS rebuild_position,
       r.events_total AS rebuild_events_total,
       r.started_at AS rebuild_started_at,
       m.rebuilt_at
  FROM read_model.projection_metadata m
 CROSS JOIN (SELECT coalesce(max(global_position), 0) AS head_position
               FROM event_store.domain_event) h
  LEFT JOIN read_model.projection_rebuild r USING (projection_name);
