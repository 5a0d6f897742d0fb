-- The checkpoint write as one plain statement.
--
-- projectord now writes its checkpoint with a single prepared UPDATE
-- (src/runner_sql.h, SQL_CHECKPOINT_ON) instead of calling
-- projectord_save_checkpoint: the PL/pgSQL call around the UPDATE cost as
-- much as the UPDATE itself (pg_stat_statements over a live run: 65 us a
-- call, 29 us of it the UPDATE; tests/bench/RESULTS.md). The compare-and-set
-- on checkpoint_seq stays: when no row matched, the statement calls this
-- function, which fails the batch's transaction with the same error as
-- before. projectord_save_checkpoint and projectord_write_checkpoint stay
-- for anything else that calls them.

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

-- It only raises, so it stays executable by PUBLIC like the functions it
-- stands in for: whatever role runs the daemon can write its checkpoint.
