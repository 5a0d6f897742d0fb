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

-- The checkpoint write of V002, changed in one place: the apply latency is
-- measured from the last event's commit timestamp when the daemon passes
-- its transaction id (same database, so the same cluster's commit log), and
-- from its occurred_at when it passes none (a read model in another
-- database, maybe another cluster, whose commit log knows nothing of the
-- event store's transactions).
CREATE OR REPLACE FUNCTION read_model.projectord_write_checkpoint(
    p_table           text,
    p_name            text,
    p_expected_seq    bigint,
    p_snapshot_lo     text,
    p_snapshot_hi     text,
    p_window_position bigint,
    p_window_max      bigint,
    p_last_position   bigint,
    p_processed       bigint,
    p_ignored         bigint,
    p_skipped         bigint,
    p_head            bigint,
    p_status          text,
    p_owner           text,
    p_error           text,
    p_error_sqlstate  text,
    p_error_position  bigint,
    p_last_txid       xid8,
    p_last_occurred   timestamptz)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_seq       bigint;
    v_committed timestamptz;
BEGIN
    IF p_table NOT IN ('projection_metadata', 'projection_rebuild') THEN
        RAISE EXCEPTION 'projectord_write_checkpoint: no checkpoint table %', p_table;
    END IF;
    IF p_last_txid IS NOT NULL AND current_setting('track_commit_timestamp') = 'on' THEN
        v_committed := pg_xact_commit_timestamp(xid(p_last_txid));
    END IF;
    EXECUTE format($u$
        UPDATE read_model.%I
           SET tail_snapshot_lo     = $3,
               tail_snapshot_hi     = $4,
               tail_window_position = $5,
               tail_window_max      = $6,
               last_position        = greatest(last_position, $7),
               last_event_id        = greatest(last_event_id, $7),
               checkpoint_seq       = checkpoint_seq + 1,
               events_processed     = events_processed + $8,
               events_ignored       = events_ignored + $9,
               events_skipped       = events_skipped + $10,
               lag_events           = greatest($11 - greatest(last_position, $7), 0),
               apply_latency_ms     = CASE WHEN $17 THEN apply_latency_ms
                                           ELSE 1000 * extract(epoch FROM clock_timestamp() - $18) END,
               status               = $12,
               owner                = $13,
               last_error           = coalesce($14, last_error),
               last_error_sqlstate  = CASE WHEN $14 IS NULL THEN last_error_sqlstate ELSE $15 END,
               last_error_position  = CASE WHEN $14 IS NULL THEN last_error_position ELSE $16 END,
               last_error_at        = CASE WHEN $14 IS NULL THEN last_error_at ELSE now() END,
               heartbeat_at         = now(),
               updated_at           = now()
         WHERE projection_name = $1 AND checkpoint_seq = $2
        RETURNING checkpoint_seq$u$, p_table)
       INTO v_seq
      USING p_name, p_expected_seq, p_snapshot_lo, p_snapshot_hi, p_window_position,
            p_window_max, p_last_position, p_processed, p_ignored, p_skipped, p_head,
            p_status, p_owner, p_error, p_error_sqlstate, p_error_position,
            p_last_txid IS NULL AND p_last_occurred IS NULL,
            coalesce(v_committed, p_last_occurred);
    IF v_seq IS NULL THEN
        RAISE EXCEPTION 'projection %: checkpoint moved by another writer (expected seq %)',
            p_name, p_expected_seq
            USING ERRCODE = 'PJ001';
    END IF;
    RETURN v_seq;
END;
$$;
