-- Requests an operator's one-shot command leaves for the instance that owns
-- a projection (`projectord resume`, `projectord replay-dead-letters`); the
-- owner picks them up with its next heartbeat. Idempotent.

ALTER TABLE read_model.projection_metadata
    ADD COLUMN IF NOT EXISTS resume_requested_at timestamptz,
    ADD COLUMN IF NOT EXISTS replay_requested_at timestamptz,
    ADD COLUMN IF NOT EXISTS replayed_at timestamptz;
