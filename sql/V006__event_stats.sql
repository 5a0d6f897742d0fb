-- Read model of the event_stats projection (projections/event_stats.c).

CREATE TABLE IF NOT EXISTS read_model.event_type_stats (
    event_type       text PRIMARY KEY,
    event_count      bigint NOT NULL DEFAULT 0,
    first_position   bigint NOT NULL,
    last_position    bigint NOT NULL,
    last_occurred_at timestamptz
);
