-- projectord's own tables: one status/checkpoint row per projection, the
-- dead letters, and a view for humans and healthchecks (SPEC §5).

CREATE SCHEMA IF NOT EXISTS read_model;

CREATE TABLE IF NOT EXISTS read_model.projection_metadata (
    projection_name      text PRIMARY KEY,
    projection_version   integer NOT NULL DEFAULT 0,
    status               text NOT NULL DEFAULT 'starting'
        CHECK (status IN ('starting', 'catching_up', 'live', 'rebuilding', 'failed', 'stopped')),
    -- Highest global_position applied or passed; never moves backwards.
    last_position        bigint NOT NULL DEFAULT 0,
    -- Kept for the seed's check query: the same position as last_position.
    last_event_id        bigint NOT NULL DEFAULT 0,
    -- The checkpoint proper (SPEC §3): every event whose transaction is
    -- visible in tail_snapshot_lo is applied, and so is every event of the
    -- window (lo, hi] up to tail_window_position.
    tail_snapshot_lo     text NOT NULL DEFAULT '1:1:',
    tail_snapshot_hi     text NOT NULL DEFAULT '1:1:',
    tail_window_position bigint NOT NULL DEFAULT 0,
    -- Highest position in the window, so a resumed scan stays bounded.
    tail_window_max      bigint NOT NULL DEFAULT 0,
    -- Bumped by every checkpoint write; writers compare-and-set on it.
    checkpoint_seq       bigint NOT NULL DEFAULT 0,
    events_processed     bigint NOT NULL DEFAULT 0,
    events_skipped       bigint NOT NULL DEFAULT 0,
    events_ignored       bigint NOT NULL DEFAULT 0,
    lag_events           bigint NOT NULL DEFAULT 0,
    -- Commit-to-apply latency of the newest event of the last batch, in ms:
    -- from its transaction's commit (track_commit_timestamp = on) or, when
    -- commit timestamps are off, from its occurred_at.
    apply_latency_ms     double precision,
    last_error           text,
    last_error_sqlstate  text,
    last_error_position  bigint,
    last_error_at        timestamptz,
    owner                text,
    heartbeat_at         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS read_model.projection_dead_letter (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection_name text NOT NULL,
    global_position bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    error           text NOT NULL,
    sqlstate        text,
    payload         jsonb,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection_name, global_position)
);

-- lag_events here is an estimate: head minus last position counts the
-- positions of rolled-back appends too. Created only if missing: later
-- migrations (V008) extend it, and running this file again must not undo that.
DO $do$
BEGIN
    IF to_regclass('read_model.projection_status') IS NULL THEN
        CREATE VIEW read_model.projection_status AS
        SELECT m.projection_name,
               m.status,
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
                AND m.heartbeat_at > now() - interval '30 seconds') AS healthy
          FROM read_model.projection_metadata m
         CROSS JOIN (SELECT coalesce(max(global_position), 0) AS head_position
                       FROM event_store.domain_event) h;
    END IF;
END
$do$;

-- Writes a checkpoint row, of read_model.projection_metadata (the live
-- projection) or read_model.projection_rebuild (its shadow during a
-- rebuild); called by the daemon in the same transaction as the batch's
-- read-model changes. The write is a compare-and-set on checkpoint_seq: a
-- writer whose view of the checkpoint is stale (another instance moved it,
-- or a rebuild swapped it) fails with SQLSTATE PJ001 and its whole batch
-- rolls back.
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
            p_last_txid IS NULL, coalesce(v_committed, p_last_occurred);
    IF v_seq IS NULL THEN
        RAISE EXCEPTION 'projection %: checkpoint moved by another writer (expected seq %)',
            p_name, p_expected_seq
            USING ERRCODE = 'PJ001';
    END IF;
    RETURN v_seq;
END;
$$;

-- The live projection's checkpoint (see projectord_write_checkpoint).
CREATE OR REPLACE FUNCTION read_model.projectord_save_checkpoint(
    p_name text, p_expected_seq bigint, p_snapshot_lo text, p_snapshot_hi text,
    p_window_position bigint, p_window_max bigint, p_last_position bigint, p_processed bigint,
    p_ignored bigint, p_skipped bigint, p_head bigint, p_status text, p_owner text,
    p_error text, p_error_sqlstate text, p_error_position bigint, p_last_txid xid8,
    p_last_occurred timestamptz)
RETURNS bigint
LANGUAGE sql
AS $$
    SELECT read_model.projectord_write_checkpoint('projection_metadata', p_name, p_expected_seq,
        p_snapshot_lo, p_snapshot_hi, p_window_position, p_window_max, p_last_position,
        p_processed, p_ignored, p_skipped, p_head, p_status, p_owner, p_error,
        p_error_sqlstate, p_error_position, p_last_txid, p_last_occurred)
$$;
