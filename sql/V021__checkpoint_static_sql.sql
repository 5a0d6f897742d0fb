-- The checkpoint write without dynamic SQL.
--
-- V010's projectord_write_checkpoint picked its table with EXECUTE format(),
-- so every checkpoint (one per batch and projection: four per live event)
-- parsed and planned its UPDATE again: 0.33 ms a call where the UPDATE itself
-- took 0.08 ms (pg_stat_statements, tests/bench/RESULTS.md). Static
-- statements are planned once per session. Same signature and behaviour, so
-- grants and callers are unchanged; the two UPDATEs differ only in their
-- table, which a static statement can not take as a parameter.

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
    v_seq        bigint;
    v_committed  timestamptz;
    v_no_event   boolean := p_last_txid IS NULL AND p_last_occurred IS NULL;
    v_latency_ms double precision;
BEGIN
    IF p_last_txid IS NOT NULL AND current_setting('track_commit_timestamp') = 'on' THEN
        v_committed := pg_xact_commit_timestamp(xid(p_last_txid));
    END IF;
    v_latency_ms := 1000 * extract(epoch FROM clock_timestamp() - coalesce(v_committed, p_last_occurred));
    IF p_table = 'projection_metadata' THEN
        UPDATE read_model.projection_metadata
           SET tail_snapshot_lo     = p_snapshot_lo,
               tail_snapshot_hi     = p_snapshot_hi,
               tail_window_position = p_window_position,
               tail_window_max      = p_window_max,
               last_position        = greatest(last_position, p_last_position),
               last_event_id        = greatest(last_event_id, p_last_position),
               checkpoint_seq       = checkpoint_seq + 1,
               events_processed     = events_processed + p_processed,
               events_ignored       = events_ignored + p_ignored,
               events_skipped       = events_skipped + p_skipped,
               lag_events           = greatest(p_head - greatest(last_position, p_last_position), 0),
               apply_latency_ms     = CASE WHEN v_no_event THEN apply_latency_ms
                                           ELSE v_latency_ms END,
               status               = p_status,
               owner                = p_owner,
               last_error           = coalesce(p_error, last_error),
               last_error_sqlstate  = CASE WHEN p_error IS NULL THEN last_error_sqlstate ELSE p_error_sqlstate END,
               last_error_position  = CASE WHEN p_error IS NULL THEN last_error_position ELSE p_error_position END,
               last_error_at        = CASE WHEN p_error IS NULL THEN last_error_at ELSE now() END,
               heartbeat_at         = now(),
               updated_at           = now()
         WHERE projection_name = p_name AND checkpoint_seq = p_expected_seq
        RETURNING checkpoint_seq INTO v_seq;
    ELSIF p_table = 'projection_rebuild' THEN
        UPDATE read_model.projection_rebuild
           SET tail_snapshot_lo     = p_snapshot_lo,
               tail_snapshot_hi     = p_snapshot_hi,
               tail_window_position = p_window_position,
               tail_window_max      = p_window_max,
               last_position        = greatest(last_position, p_last_position),
               last_event_id        = greatest(last_event_id, p_last_position),
               checkpoint_seq       = checkpoint_seq + 1,
               events_processed     = events_processed + p_processed,
               events_ignored       = events_ignored + p_ignored,
               events_skipped       = events_skipped + p_skipped,
               lag_events           = greatest(p_head - greatest(last_position, p_last_position), 0),
               apply_latency_ms     = CASE WHEN v_no_event THEN apply_latency_ms
                                           ELSE v_latency_ms END,
               status               = p_status,
               owner                = p_owner,
               last_error           = coalesce(p_error, last_error),
               last_error_sqlstate  = CASE WHEN p_error IS NULL THEN last_error_sqlstate ELSE p_error_sqlstate END,
               last_error_position  = CASE WHEN p_error IS NULL THEN last_error_position ELSE p_error_position END,
               last_error_at        = CASE WHEN p_error IS NULL THEN last_error_at ELSE now() END,
               heartbeat_at         = now(),
               updated_at           = now()
         WHERE projection_name = p_name AND checkpoint_seq = p_expected_seq
        RETURNING checkpoint_seq INTO v_seq;
    ELSE
        RAISE EXCEPTION 'projectord_write_checkpoint: no checkpoint table %', p_table;
    END IF;
    IF v_seq IS NULL THEN
        RAISE EXCEPTION 'projection %: checkpoint moved by another writer (expected seq %)',
            p_name, p_expected_seq
            USING ERRCODE = 'PJ001';
    END IF;
    RETURN v_seq;
END;
$$;
