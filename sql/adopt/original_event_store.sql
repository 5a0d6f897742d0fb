-- Adopting the event store of the original CQRS design (its init scripts
-- 01-create-schemas.sql and 02-event-store.sql: event_stream, domain_event
-- without global_position and transaction_id, and its own append_events),
-- with its events, in place.
--
-- Not a Flyway migration (no V or R prefix: Flyway skips it, and no history
-- row is written for it): `projectord migrate` runs it when domain_event has
-- no global_position, in ONE transaction followed by every pending V and R
-- file (docs/reference.md, "Adopting an existing event store"). Run by hand
-- (Flyway users), it must be followed in the same transaction by V001..R__:
--
--     psql -v ON_ERROR_STOP=1 -1 -f adopt/original_event_store.sql \
--          -f V001__event_store.sql ... -f R__status_views.sql
--
-- What it does, with appenders locked out until the transaction ends:
--
-- 1. Checks that the layout is the original's: every column V001 declares.
-- 2. Numbers the existing events (global_position 1..N) in an order that
--    keeps each stream's aggregate_version order: by the stream's running
--    maximum of occurred_at in version order, then stream_id, then
--    aggregate_version (then event_id). That is occurred_at order where
--    occurred_at grows with the version in every stream; where it does not
--    (the original append_events stamps an event with the start time of its
--    transaction, which may have begun before the one appending the
--    previous version), an event never sorts before its stream's earlier
--    versions.
-- 3. Gives every existing event transaction_id = this transaction's id:
--    every snapshot taken after the commit sees it committed, and every
--    later append (waiting on the lock, or starting after) comes into a
--    snapshot only after this one does: the events are read as if appended
--    by this transaction, before all later ones (as adopt-restored-store
--    gives ids every later snapshot sees committed, sql/V026).
-- 4. Makes global_position the identity V001 declares (continuing after
--    N), transaction_id default to the writer's id, adds V001's unique
--    constraints (stream_id, aggregate_version unless the store already has
--    duplicates: a WARNING then, the events are kept as they are).
-- 5. Grants EXECUTE on append_events to the roles that may insert events:
--    the original function was executable by PUBLIC, R__event_store revokes
--    that, and the application's role must keep appending.
-- The migrations that follow in the same transaction replace append_events
-- with the safe one (same signature; the stream row is locked so one
-- stream's versions get increasing positions) and install the NOTIFY
-- trigger and the transaction_id index.

DO $$
DECLARE
    v_missing text;
BEGIN
    IF to_regclass('event_store.event_stream') IS NULL THEN
        RAISE EXCEPTION 'event_store.domain_event is there but event_store.event_stream is not: the layout differs from the original design''s'
            USING HINT = 'See "Adopting an existing event store" in docs/reference.md: adapt the store, or map it with views.';
    END IF;
    SELECT string_agg(format('%s.%s', t, c), ', ') INTO v_missing
      FROM (VALUES ('domain_event', 'event_id'), ('domain_event', 'stream_id'),
                   ('domain_event', 'event_type'), ('domain_event', 'event_version'),
                   ('domain_event', 'aggregate_version'), ('domain_event', 'event_data'),
                   ('domain_event', 'metadata'), ('domain_event', 'occurred_at'),
                   ('domain_event', 'causation_id'), ('domain_event', 'correlation_id'),
                   ('event_stream', 'stream_id'), ('event_stream', 'aggregate_type'),
                   ('event_stream', 'aggregate_id'), ('event_stream', 'version')) AS want(t, c)
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = format('event_store.%I', want.t)::regclass
                          AND a.attname = want.c AND NOT a.attisdropped);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'the event store lacks %: its layout differs from the original design''s', v_missing
            USING HINT = 'See "Adopting an existing event store" in docs/reference.md: adapt the store, or map it with views.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'event_store.domain_event'::regclass AND contype = 'p') THEN
        RAISE EXCEPTION 'event_store.domain_event has no primary key (event_id in the original design)';
    END IF;
END
$$;

-- Appenders wait from here to the commit: the original append_events writes
-- event_stream first, then domain_event (the same order as here).
LOCK TABLE event_store.event_stream IN EXCLUSIVE MODE;
LOCK TABLE event_store.domain_event IN ACCESS EXCLUSIVE MODE;

ALTER TABLE event_store.domain_event
    ADD COLUMN global_position bigint,
    ADD COLUMN transaction_id xid8;

WITH keyed AS (
    SELECT event_id, stream_id, aggregate_version,
           max(coalesce(occurred_at, '-infinity'))
               OVER (PARTITION BY stream_id ORDER BY aggregate_version, event_id
                     ROWS UNBOUNDED PRECEDING) AS stream_time
      FROM event_store.domain_event
), numbered AS (
    SELECT event_id,
           row_number() OVER (ORDER BY stream_time, stream_id, aggregate_version, event_id) AS pos
      FROM keyed
)
UPDATE event_store.domain_event e
   SET global_position = n.pos, transaction_id = pg_current_xact_id()
  FROM numbered n
 WHERE n.event_id = e.event_id;

ALTER TABLE event_store.domain_event
    ALTER COLUMN global_position SET NOT NULL,
    ALTER COLUMN global_position ADD GENERATED ALWAYS AS IDENTITY,
    ALTER COLUMN transaction_id SET NOT NULL,
    ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id(),
    ADD CONSTRAINT domain_event_global_position_key UNIQUE (global_position);

SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('event_store.domain_event', 'global_position'),
                         coalesce(max(global_position), 1), max(global_position) IS NOT NULL)
  FROM event_store.domain_event;

COMMENT ON COLUMN event_store.domain_event.global_position IS
    'Adopted by projectord migrate: the events before it numbered by (stream''s running max of occurred_at, stream_id, aggregate_version)';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM event_store.domain_event
                GROUP BY stream_id, aggregate_version HAVING count(*) > 1) THEN
        RAISE WARNING 'event_store.domain_event has streams with two events of one aggregate_version (written by concurrent appends through the original append_events): kept as they are, without the unique constraint on (stream_id, aggregate_version); the new append_events serializes appends per stream';
    ELSIF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                       WHERE conrelid = 'event_store.domain_event'::regclass
                         AND conname = 'domain_event_stream_id_aggregate_version_key') THEN
        ALTER TABLE event_store.domain_event
            ADD CONSTRAINT domain_event_stream_id_aggregate_version_key
            UNIQUE (stream_id, aggregate_version);
    END IF;
END
$$;

DO $$
DECLARE
    v_role name;
BEGIN
    IF to_regprocedure('event_store.append_events(varchar, uuid, integer, jsonb[])') IS NULL THEN
        RETURN;
    END IF;
    FOR v_role IN
        SELECT r.rolname FROM pg_catalog.pg_roles r
         WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
           AND pg_catalog.has_table_privilege(r.oid, 'event_store.domain_event', 'INSERT')
           AND pg_catalog.has_function_privilege(
                   r.oid, 'event_store.append_events(varchar, uuid, integer, jsonb[])', 'EXECUTE')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION event_store.append_events(varchar, uuid, integer, jsonb[]) TO %I',
                       v_role);
    END LOOP;
END
$$;
