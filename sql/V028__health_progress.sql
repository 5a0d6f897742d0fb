-- Healthy means progressing (SPEC §3, §5; issue 16).
--
-- A fresh heartbeat only says the daemon is alive: a projection can hold a
-- fresh heartbeat while it applies nothing (a batch stuck behind a lock, a
-- runner that never opens another window). So the status row also records
-- when the projection last made progress, and how long it may go without:
--
--   progressed_at  when last_position last moved (the checkpoint UPDATE sets
--                  it in the same statement, so it costs nothing extra), or
--                  when the owning daemon last found the projection at the
--                  head (its heartbeat sets it then, so a projection idle at
--                  the head is not "stalled" the moment a new event comes);
--   stall_after    the owning daemon's stall_timeout_ms, written with every
--                  checkpoint and heartbeat: the view, `projectord status
--                  --check` and any SQL user judge with the same threshold
--                  the daemon was configured with (a reload applies it at
--                  the next write).
--
-- The view projection_health adds `stalled`: running (not failed, not
-- stopped), behind the head, and no progress for longer than stall_after
-- (20 s when a daemon never wrote it); `healthy` is false when stalled,
-- whatever the heartbeat says, and `unhealthy_reason` says which test
-- failed. projection_status takes its `healthy` from it and shows status
-- `stalled`. The head is the one V010 defines: the live maximum here, or,
-- in a read model kept in another database, the head the daemon last
-- wrote (last_position + lag_events). Idempotent.

ALTER TABLE read_model.projection_metadata
    ADD COLUMN IF NOT EXISTS progressed_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS stall_after interval;

-- The rebuild's checkpoint is written by the same UPDATE (SQL_CHECKPOINT_ON).
ALTER TABLE read_model.projection_rebuild
    ADD COLUMN IF NOT EXISTS progressed_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS stall_after interval;

-- The details, in a view of their own: projection_status keeps the columns
-- V008 gave it (re-running an older migration replaces the view, and
-- CREATE OR REPLACE VIEW cannot drop columns), and says `stalled` in its
-- status column. Columns are only ever added at the end.
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

-- V010's view, with status `stalled` while stalled and healthy as above.
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

-- Read-only for the daemon's role, like projection_status (V007).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'projectord') THEN
        GRANT SELECT ON read_model.projection_health TO projectord;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON read_model.projection_health FROM projectord;
    END IF;
END;
$$;
