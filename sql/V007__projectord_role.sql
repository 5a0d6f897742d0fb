-- The projectord login role, with the least privilege the daemon needs:
-- read the event store, write the read model and its own status and
-- dead-letter tables (a rebuild goes through V008's functions), nothing
-- else. No superuser, no write access to event_store, no append_events.
-- Idempotent: every statement may run again on an existing database.
--
-- Run the migrations as the schema owner (the role that owns event_store and
-- read_model); the default privileges below cover the tables that role
-- creates in read_model later (new projections' migrations).
--
-- No password is set here (it would end up in the migration history).
-- Set one as a superuser or a role with CREATEROLE:
--     psql -c '\password projectord'
--     ALTER ROLE projectord PASSWORD 'scram-sha-256 secret';   -- lands in psql's history
-- and give it to the daemon through ~/.pgpass, PGPASSFILE, PGPASSWORD or
-- PROJECTORD_DATABASE_URL rather than the config file. Or authenticate it
-- without a password (peer, cert).
--
-- Roles are per cluster; the grants below are per database. Applied to a
-- second database of the same cluster, the role is reused.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'projectord') THEN
        BEGIN
            CREATE ROLE projectord LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created at the same moment by a migration of another database
        END;
    END IF;
END
$$;

-- The event store: read only.
GRANT USAGE ON SCHEMA event_store TO projectord;
GRANT SELECT ON event_store.event_stream, event_store.domain_event TO projectord;

-- Functions are executable by PUBLIC by default; appending is for the
-- application only. append_events runs with its caller's rights, so an
-- application role other than the schema owner needs (e.g. for role app):
--     GRANT USAGE ON SCHEMA event_store TO app;
--     GRANT EXECUTE ON FUNCTION event_store.append_events(varchar, uuid, integer, jsonb[]) TO app;
--     GRANT SELECT, INSERT, UPDATE ON event_store.event_stream TO app;
--     GRANT INSERT ON event_store.domain_event TO app;
-- The schema owner (postgres in the tests and the demo, app in
-- docker-compose.yml) keeps every right.
REVOKE ALL ON FUNCTION event_store.append_events(varchar, uuid, integer, jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION event_store.append_events(varchar, uuid, integer, jsonb[]) FROM projectord;

-- The read model: the projections' tables, projection_metadata and
-- projection_dead_letter. No CREATE: a rebuild's shadow schema and tables
-- are made and swapped in by SECURITY DEFINER functions (V008), which
-- grant this role what it needs on them.
GRANT USAGE ON SCHEMA read_model TO projectord;
REVOKE CREATE ON SCHEMA read_model FROM projectord;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA read_model TO projectord;
-- ALL TABLES includes the projection_status view, which is read only.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON read_model.projection_status FROM projectord;
-- projection_dead_letter.id is an identity column.
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA read_model TO projectord;
GRANT EXECUTE ON FUNCTION read_model.projectord_save_checkpoint(
    text, bigint, text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text, text,
    text, text, bigint, xid8, timestamptz) TO projectord;

-- Tables and sequences that the role running the migrations creates in
-- read_model from now on (a new projection's V0NN file) are covered too.
ALTER DEFAULT PRIVILEGES IN SCHEMA read_model
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO projectord;
ALTER DEFAULT PRIVILEGES IN SCHEMA read_model
    GRANT USAGE, SELECT ON SEQUENCES TO projectord;
