-- Repeatable migration (Flyway's R__ convention): applied after every
-- versioned migration, and again whenever this file changes. It holds the
-- one current definition of each function below and who may call it;
-- their earlier definitions in V0NN files are history (docs/design.md,
-- "The schema: versioned and repeatable migrations"). Idempotent; depends
-- only on objects the versioned migrations create.
--
-- The checkpoint write's compare-and-set.
--
-- projectord writes its checkpoint with a single prepared UPDATE
-- (src/runner_sql.h, SQL_CHECKPOINT_ON). When no row matched (another
-- instance moved the checkpoint, or a rebuild swapped it), the statement
-- calls this function, which fails the batch's transaction with SQLSTATE
-- PJ001 and the whole batch rolls back.

CREATE OR REPLACE FUNCTION read_model.projectord_checkpoint_moved(p_name text, p_expected_seq bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'projection %: checkpoint moved by another writer (expected seq %)',
        p_name, p_expected_seq
        USING ERRCODE = 'PJ001';
END;
$$;

-- It only raises, so it is executable by PUBLIC: whatever role runs the
-- daemon can write its checkpoint.
GRANT EXECUTE ON FUNCTION read_model.projectord_checkpoint_moved(text, bigint) TO PUBLIC;
