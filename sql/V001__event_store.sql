-- Event store: streams, events, the safe append function and the wake-up
-- NOTIFY. Idempotent: every statement may run again on an existing database.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA IF NOT EXISTS event_store;
CREATE SCHEMA IF NOT EXISTS read_model;
CREATE SCHEMA IF NOT EXISTS command_model;

CREATE TABLE IF NOT EXISTS event_store.event_stream (
    stream_id      uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    aggregate_type varchar(255) NOT NULL,
    aggregate_id   uuid NOT NULL,
    created_at     timestamptz DEFAULT current_timestamp,
    version        integer NOT NULL DEFAULT 0,
    UNIQUE (aggregate_type, aggregate_id)
);

CREATE TABLE IF NOT EXISTS event_store.domain_event (
    event_id          uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    global_position   bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- Taken when the row is written; compared with snapshots to know
    -- whether the writing transaction had committed (SPEC §3).
    transaction_id    xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id         uuid NOT NULL REFERENCES event_store.event_stream (stream_id),
    event_type        varchar(255) NOT NULL,
    event_version     integer NOT NULL,
    aggregate_version integer NOT NULL,
    event_data        jsonb NOT NULL,
    metadata          jsonb,
    occurred_at       timestamptz DEFAULT current_timestamp,
    causation_id      uuid,
    correlation_id    uuid,
    UNIQUE (stream_id, aggregate_version)
);

-- The tail window selects events by transaction id range; this index keeps
-- opening a window cheap however long the table grows.
CREATE INDEX IF NOT EXISTS domain_event_transaction_id_idx
    ON event_store.domain_event (transaction_id);

-- Appends events to one stream. The stream row is locked for the rest of the
-- caller's transaction, so concurrent appends to one stream are serialized
-- and each stream's events get increasing positions in version order.
-- p_expected_version: the stream's current version (0 for a new stream);
-- NULL appends without the check. A conflict raises SQLSTATE P0409.
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
BEGIN
    IF p_aggregate_type IS NULL OR p_aggregate_id IS NULL THEN
        RAISE EXCEPTION 'append_events: aggregate type and id are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    INSERT INTO event_store.event_stream (aggregate_type, aggregate_id)
    VALUES (p_aggregate_type, p_aggregate_id)
    ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING;

    SELECT stream_id, version INTO v_stream_id, v_version
      FROM event_store.event_stream
     WHERE aggregate_type = p_aggregate_type AND aggregate_id = p_aggregate_id
       FOR UPDATE;

    IF p_expected_version IS NOT NULL AND v_version <> p_expected_version THEN
        RAISE EXCEPTION 'append_events: version conflict on % %: expected %, stream is at %',
            p_aggregate_type, p_aggregate_id, p_expected_version, v_version
            USING ERRCODE = 'P0409',
                  HINT = 'Reload the aggregate and retry the command.';
    END IF;

    IF v_count = 0 THEN
        RETURN v_stream_id;
    END IF;

    IF EXISTS (SELECT 1 FROM unnest(p_events) AS e(ev)
                WHERE e.ev IS NULL OR jsonb_typeof(e.ev) <> 'object'
                   OR coalesce(e.ev->>'event_type', '') = ''
                   OR NOT e.ev ? 'event_data') THEN
        RAISE EXCEPTION 'append_events: every event needs an object with event_type and event_data'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Rows are produced in array order, so identity positions follow
    -- aggregate_version within the stream.
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

    UPDATE event_store.event_stream
       SET version = v_version + v_count
     WHERE stream_id = v_stream_id;

    RETURN v_stream_id;
END;
$$;

-- Wake-up hint for projectord. The channel defaults to 'domain_event'; set
-- `ALTER DATABASE ... SET projectord.listen_channel = '...'` to change it
-- (and listen_channel in the daemon's config to match).
CREATE OR REPLACE FUNCTION event_store.notify_domain_event()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify(coalesce(nullif(current_setting('projectord.listen_channel', true), ''),
                               'domain_event'), '');
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER domain_event_notify
    AFTER INSERT ON event_store.domain_event
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.notify_domain_event();
