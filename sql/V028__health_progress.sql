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
-- The view adds `stalled`: running (not failed, not stopped), behind the
-- head, and no progress for longer than stall_after (20 s when a daemon
-- never wrote it); `healthy` is false when stalled, whatever the heartbeat
-- says, and `unhealthy_reason` says which test failed. The head is the one
-- V010 defines: the live maximum here, or, in a read model kept in another
-- database, the head the daemon last wrote (last_position + lag_events).
-- Idempotent.

ALTER TABLE read_model.projection_metadata
    ADD COLUMN IF NOT EXISTS progressed_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS stall_after interval;

-- The rebuild's checkpoint is written by the same UPDATE (SQL_CHECKPOINT_ON).
ALTER TABLE read_model.projection_rebuild
    ADD COLUMN IF NOT EXISTS progressed_at timestamptz DEFAULT now(),
    ADD COLUMN IF NOT EXISTS stall_after interval;

CREATE OR REPLACE VIEW read_model.projection_status AS
WITH s AS (
    SELECT m.*,
           CASE WHEN r.status = 'rebuilding' THEN 'rebuilding' ELSE m.status END AS shown_status,
           greatest(h.head_position, m.last_position + m.lag_events) AS head,
           coalesce(m.progressed_at, m.updated_at) AS progress_seen,
           coalesce(m.stall_after, interval '20 seconds') AS stall_limit,
           r.last_position AS r_last_position,
           r.events_total AS r_events_total,
           r.started_at AS r_started_at
      FROM read_model.projection_metadata m
     CROSS JOIN (SELECT coalesce(max(global_position), 0) AS head_position
                   FROM event_store.domain_event) h
      LEFT JOIN read_model.projection_rebuild r USING (projection_name)
), t AS (
    SELECT s.*,
           (s.status NOT IN ('failed', 'stopped')
            AND s.last_position < s.head
            AND s.progress_seen < now() - s.stall_limit) AS is_stalled,
           (s.heartbeat_at IS NOT NULL
            AND s.heartbeat_at > now() - interval '30 seconds') AS beating
      FROM s
)
SELECT t.projection_name,
       t.shown_status AS status,
       t.last_position,
       t.head AS head_position,
       greatest(t.head - t.last_position, 0) AS lag_events,
       t.events_processed,
       t.events_skipped,
       t.events_ignored,
       t.apply_latency_ms,
       t.last_error,
       t.last_error_at,
       t.owner,
       t.heartbeat_at,
       t.updated_at,
       (t.status <> 'failed' AND t.beating AND NOT t.is_stalled) AS healthy,
       t.r_last_position AS rebuild_position,
       t.r_events_total AS rebuild_events_total,
       t.r_started_at AS rebuild_started_at,
       t.rebuilt_at,
       t.progressed_at,
       t.stall_after,
       t.is_stalled AS stalled,
       CASE WHEN t.status = 'failed' THEN 'failed'
            WHEN NOT t.beating THEN 'no heartbeat'
            WHEN t.is_stalled THEN 'stalled'
       END AS unhealthy_reason
  FROM t;
