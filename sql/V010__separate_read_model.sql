-- A read model in its own database (database.target, docs/design.md): the
-- status view there cannot see the event store, whose copy of the tables
-- in that database stays empty. The head position is then the one the
-- daemon saw at its last checkpoint write (last_position + lag_events);
-- in the event store's own database the live maximum is at least that, so
-- nothing changes there. Idempotent.

CREATE OR REPLACE VIEW read_model.projection_status AS
SELECT m.projection_name,
       CASE WHEN r.status = 'rebuilding' THEN 'rebuilding' ELSE m.status END AS status,
       m.last_position,
       greatest(h.head_position, m.last_position + m.lag_events) AS head_position,
       greatest(h.head_position - m.last_position, m.lag_events, 0) AS lag_events,
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
