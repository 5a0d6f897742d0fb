-- append_events with fewer statements per call.
--
-- V001's append_events ran five statements for every append: insert the
-- stream if missing, select it FOR UPDATE, validate, insert the events,
-- update the stream's version. Now the stream's row lock and its new
-- version come from one statement: an UPDATE ... RETURNING for an existing
-- stream, an INSERT ... RETURNING for a new one (tried first when the
-- caller expects version 0). The events are validated before anything is
-- written, so bad events with a wrong expected version now raise
-- invalid_parameter_value rather than P0409. Same contract (SPEC §2):
-- concurrent appends to one stream are serialized on the stream's row (the
-- UPDATE's row lock, FOR NO KEY UPDATE, is weaker than V001's FOR UPDATE
-- but two appends' UPDATEs still wait for each other, and the waiting one
-- sees the version the first committed; only foreign-key checks, which
-- take FOR KEY SHARE, no longer wait), a version conflict raises P0409,
-- bad arguments raise as before. About a
-- fifth less server time per append (a loop of 20k OrderPlaced appends on
-- a 1M-event store: 2.29-2.88 s before, 1.74-2.04 s after); the writers
-- share the box with the daemon.

CREATE OR REPLACE FUNCTION event_store.append_events(
    p_aggregate_type varchar,
    p_aggregate_id   uuid,
    p_expected_version integer,
    p_events         jsonb[])
RETURNS uuid
LANGUAGE plpgsql
AS $$
DECLARE
    v_stream_id uuid;
    v_version   integer;
    v_count     integer := coalesce(cardinality(p_events), 0);
    -- a new stream is tried first only when the caller expects one
    v_update    boolean := p_expected_version IS DISTINCT FROM 0;
BEGIN
    IF p_aggregate_type IS NULL OR p_aggregate_id IS NULL THEN
        RAISE EXCEPTION 'append_events: aggregate type and id are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    IF v_count > 0 AND EXISTS (SELECT 1 FROM unnest(p_events) AS e(ev)
                WHERE e.ev IS NULL OR jsonb_typeof(e.ev) <> 'object'
                   OR coalesce(e.ev->>'event_type', '') = ''
                   OR NOT e.ev ? 'event_data') THEN
        RAISE EXCEPTION 'append_events: every event needs an object with event_type and event_data'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The stream's row lock and its new version in one statement. An INSERT
    -- that meets a concurrent one waits for it and then finds the row taken,
    -- and the UPDATE, retried, waits for the row lock: the loop ends once
    -- one of them returns the row.
    LOOP
        IF v_update THEN
            UPDATE event_store.event_stream
               SET version = version + v_count
             WHERE aggregate_type = p_aggregate_type AND aggregate_id = p_aggregate_id
            RETURNING stream_id, version - v_count INTO v_stream_id, v_version;
            EXIT WHEN FOUND;
        END IF;
        INSERT INTO event_store.event_stream (aggregate_type, aggregate_id, version)
        VALUES (p_aggregate_type, p_aggregate_id, v_count)
        ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
        RETURNING stream_id, 0 INTO v_stream_id, v_version;
        EXIT WHEN FOUND;
        v_update := true;
    END LOOP;

    IF p_expected_version IS NOT NULL AND v_version <> p_expected_version THEN
        RAISE EXCEPTION 'append_events: version conflict on % %: expected %, stream is at %',
            p_aggregate_type, p_aggregate_id, p_expected_version, v_version
            USING ERRCODE = 'P0409',
                  HINT = 'Reload the aggregate and retry the command.';
    END IF;

    IF v_count = 0 THEN
        RETURN v_stream_id;
    END IF;

    INSERT INTO event_store.domain_event
        (stream_id, event_type, event_version, aggregate_version, event_data,
         metadata, occurred_at, causation_id, correlation_id)
    SELECT v_stream_id,
           e.ev->>'event_type',
           coalesce((e.ev->>'event_version')::integer, 1),
           v_version + e.n::integer,
           e.ev->'event_data',
           nullif(e.ev->'metadata', 'null'::jsonb),
           coalesce((e.ev->>'occurred_at')::timestamptz, now()),
           (e.ev->>'causation_id')::uuid,
           (e.ev->>'correlation_id')::uuid
      FROM unnest(p_events) WITH ORDINALITY AS e(ev, n)
     ORDER BY e.n;

    RETURN v_stream_id;
END;
$$;
