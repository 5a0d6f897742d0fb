-- Functions nothing calls any more, dropped (issue 17, "The SQL").
--
-- projectord_save_checkpoint (V002) and projectord_write_checkpoint (V002,
-- V010, V021) wrote the checkpoint until V022 replaced them with one
-- prepared UPDATE (src/runner_sql.h, SQL_CHECKPOINT_ON) whose
-- compare-and-set fails through projectord_checkpoint_moved. Nothing in
-- projectord calls them since, yet the daemon's role could still execute
-- projectord_save_checkpoint (V007): an unused entry point into the status
-- table, and two more definitions to keep in step. Dropping a function
-- drops its grants with it.
--
-- From now on every function and view has its one current definition in a
-- repeatable migration (sql/R__*.sql, applied after the versioned ones);
-- the V files keep their old definitions as history and stay byte for byte
-- as they were (Flyway checksums them). Re-applying every V file, as the
-- README's upgrade does, creates the two functions again in V002 and
-- drops them again here. Idempotent.

DROP FUNCTION IF EXISTS read_model.projectord_save_checkpoint(
    text, bigint, text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text, text,
    text, text, bigint, xid8, timestamptz);
DROP FUNCTION IF EXISTS read_model.projectord_write_checkpoint(
    text, text, bigint, text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, text,
    text, text, text, bigint, xid8, timestamptz);
