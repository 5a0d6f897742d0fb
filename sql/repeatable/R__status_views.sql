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
-- (docs/design.md). New details go into a new view.

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

-- Read only for the daemon's role (V007 grants it ALL TABLES of read_model,
-- views included, and default privileges give it write rights on new ones).
GRANT SELECT ON read_model.projection_status, read_model.projection_health TO projectord;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE
    ON read_model.projection_status, read_model.projection_health FROM projectord;
