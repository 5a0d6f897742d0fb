-- Lag in seconds next to lag in events (issue 19): how long the oldest
-- event a projection has still to apply (the first after its
-- last_position) has been there, by its commit timestamp where the server
-- keeps them (track_commit_timestamp = on), else its occurred_at; 0 when
-- nothing is left. A function, event_store.projectord_first_event_after,
-- which `projectord status` also asks of the event store's own database
-- when the read model is kept in another one, and a view of its own,
-- read_model.projection_lag: projection_status keeps V008's columns (see
-- R__status_views.sql, whose definitions are the current ones; these are
-- the same, so that applying the V files alone creates everything).
-- Idempotent.

CREATE OR REPLACE FUNCTION event_store.projectord_first_event_after(p_position bigint)
RETURNS TABLE (global_position bigint, event_time timestamptz)
LANGUAGE sql STABLE
-- With its owner's rights, like the views that call it: `projectord status`
-- must answer also while the daemon's role may not read the events (an
-- operator who revoked it is looking for why the projections stopped).
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.global_position,
           coalesce(CASE WHEN pg_catalog.current_setting('track_commit_timestamp') = 'on'
                          AND e.transaction_id::text::bigint
                              > pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint
                                - 2000000000
                         THEN pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid(e.transaction_id))
                    END,
                    e.occurred_at)
      FROM event_store.domain_event e
     WHERE e.global_position > p_position
     ORDER BY e.global_position
     LIMIT 1
$$;

-- A view of its own (the header says why): lag_seconds is NULL when the
-- projection is behind but the event is not in this database (a read model
-- kept apart: `projectord status` then asks the event store's database).
CREATE OR REPLACE VIEW read_model.projection_lag AS
SELECT h.projection_name,
       h.last_position,
       h.head_position,
       h.lag_events,
       f.global_position AS oldest_unapplied_position,
       f.event_time AS oldest_unapplied_at,
       CASE WHEN h.lag_events = 0 THEN 0::double precision
            WHEN f.event_time IS NOT NULL
            THEN greatest(extract(epoch FROM now() - f.event_time), 0)::double precision
       END AS lag_seconds
  FROM read_model.projection_health h
  LEFT JOIN LATERAL event_store.projectord_first_event_after(h.last_position) f ON true;

-- Read-only for the daemon's role, like projection_status (V007).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'projectord') THEN
        GRANT SELECT ON read_model.projection_lag TO projectord;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON read_model.projection_lag FROM projectord;
    END IF;
END;
$$;
