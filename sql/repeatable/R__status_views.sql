-- Repeatable migration (Flyway's R__ convention): applied after every
-- versioned migration, and again whenever this file changes. It holds the
-- one current definition of each view below and who may read it;
-- their earlier definitions in V0NN files are history (docs/design.md,
-- "The schema: versioned and repeatable migrations"). Idempotent; depends
-- only on objects the versioned migrations create.
--
-- The status views (SPEC §5): projection_health, whether each projection
-- is healthy and why not (`stalled`: running, behind the head, and no
-- progress for longer than stall_after; V028 has the reasoning), and
-- projection_status, the status row for humans and healthchecks, whose
-- `healthy` comes from projection_health and whose status says `stalled`.
-- The head is the live maximum, or, in a read model kept in another
-- database, the head the daemon last wrote (last_position + lag_events;
-- V010).
--
-- Their columns stay as they are: projection_status's are V008's,
-- projection_health's V028's. A database upgraded by applying every V file
-- again (README) re-runs those files' CREATE OR REPLACE VIEW over these
-- definitions, which fails when a column was added, removed or changed
-- (docs/design.md). New details go into a new view: projection_lag (lag
-- in seconds) is one.

CREATE OR REPLACE VIEW read_model.projection_health AS
WITH s AS (
    SELECT m.projection_name,
           m.status,
           m.last_position,
           greatest(h.head_position, m.last_position + m.lag_events) AS head_position,
           m.heartbeat_at,
           coalesce(m.progressed_at, m.updated_at) AS progressed_at,
           coalesce(m.stall_after, interval '20 seconds') AS stall_after
      FROM read_model.projection_metadata m
     CROSS JOIN (SELECT coalesce(max(global_position), 0) AS head_position
                   FROM event_store.domain_event) h
), t AS (
    SELECT s.*,
           (s.status NOT IN ('failed', 'stopped')
            AND s.last_position < s.head_position
            AND s.progressed_at < now() - s.stall_after) AS stalled,
           (s.heartbeat_at IS NOT NULL
            AND s.heartbeat_at > now() - interval '30 seconds') AS beating
      FROM s
)
SELECT t.projection_name,
       t.status <> 'failed' AND t.beating AND NOT t.stalled AS healthy,
       t.stalled,
       CASE WHEN t.status = 'failed' THEN 'failed'
            WHEN NOT t.beating THEN 'no heartbeat'
            WHEN t.stalled THEN 'stalled'
       END AS unhealthy_reason,
       t.last_position,
       t.head_position,
       greatest(t.head_position - t.last_position, 0) AS lag_events,
       t.progressed_at,
       extract(epoch FROM now() - t.progressed_at) AS seconds_since_progress,
       t.stall_after,
       t.heartbeat_at
  FROM t;

CREATE OR REPLACE VIEW read_model.projection_status AS
SELECT m.projection_name,
       CASE WHEN ph.stalled THEN 'stalled'
            WHEN r.status = 'rebuilding' THEN 'rebuilding'
            ELSE m.status END AS status,
       m.last_position,
       ph.head_position,
       ph.lag_events,
       m.events_processed,
       m.events_skipped,
       m.events_ignored,
       m.apply_latency_ms,
       m.last_error,
       m.last_error_at,
       m.owner,
       m.heartbeat_at,
       m.updated_at,
       ph.healthy,
       r.last_position AS rebuild_position,
       r.events_total AS rebuild_events_total,
       r.started_at AS rebuild_started_at,
       m.rebuilt_at
  FROM read_model.projection_metadata m
  JOIN read_model.projection_health ph USING (projection_name)
  LEFT JOIN read_model.projection_rebuild r USING (projection_name);

-- Lag in seconds (issue 19), next to lag in events: how long the oldest
-- event the projection has still to apply has been there. That event is
-- the first one after last_position (events at or below it are applied or
-- passed); its time is its transaction's commit timestamp where the server
-- keeps them (track_commit_timestamp = on), else its occurred_at (which the
-- application may set: events imported with old occurred_at values then
-- count as old). 0 when nothing is left to apply. The age of the oldest
-- unapplied event, not of the newest applied one: a projection idle for an
-- hour that has one new event to apply lags by that event's age, not by an
-- hour.
--
-- The first event after a position, with its time; a function because
-- `projectord status` asks it of the event store's own database as well
-- when the read model is kept in another one (database.target), where this
-- database holds no events. A plain SQL function, inlined into the view.
-- pg_xact_commit_timestamp takes a 32-bit xid: for a transaction more than
-- about 2^31 transactions old the xid may name a newer one, so such an
-- event (whose commit timestamp is long gone anyway) is timed by its
-- occurred_at.
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

-- Read only for the daemon's role (V007 grants it ALL TABLES of read_model,
-- views included, and default privileges give it write rights on new ones).
GRANT SELECT ON read_model.projection_status, read_model.projection_health,
                read_model.projection_lag TO projectord;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE
    ON read_model.projection_status, read_model.projection_health, read_model.projection_lag
  FROM projectord;
