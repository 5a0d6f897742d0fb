/*
 * runner_sql: the statements the runner sends, kept apart from its state
 * machine so both stay readable. Every value is a parameter.
 */
#ifndef PROJECTORD_RUNNER_SQL_H
#define PROJECTORD_RUNNER_SQL_H

// clang-format off

/*
 * $1 the search_path: handlers name their tables unqualified, and a rebuild
 * points them at its shadow schema (projection.h). The server-side
 * keepalives make the server notice a vanished host, and so free the
 * ownership locks it held; tcp_user_timeout bounds unacknowledged sends.
 *
 * Rows are found through indexes, and joins are nested loops: every
 * statement here touches a few rows by key. A PJ_BULK statement joins its
 * arrays to a table, and its plan is made while the table is new and
 * nearly empty (a catch-up, a rebuild) and then cached: left free, the
 * planner joins a scan of the whole table, by hash or by a loop over it,
 * and keeps doing so as the table grows (a users catch-up ran at half
 * speed, scanning the table 2,855 times). Disabled is not forbidden: a
 * statement with no index to use still scans.
 */
#define SQL_SESSION_SETUP \
    "SELECT pg_catalog.set_config('search_path', $1, false)," \
    "       pg_catalog.set_config('TimeZone', 'UTC', false)," \
    "       pg_catalog.set_config('DateStyle', 'ISO', false)," \
    "       pg_catalog.set_config('tcp_keepalives_idle', '10', false)," \
    "       pg_catalog.set_config('tcp_keepalives_interval', '5', false)," \
    "       pg_catalog.set_config('tcp_keepalives_count', '3', false)," \
    "       pg_catalog.set_config('tcp_user_timeout', '30000', false)," \
    "       pg_catalog.set_config('enable_hashjoin', 'off', false)," \
    "       pg_catalog.set_config('enable_mergejoin', 'off', false)," \
    "       pg_catalog.set_config('enable_seqscan', 'off', false)"

/*
 * How many instances hold their presence lock (fleet.h) in this database
 * (pg_locks shows the whole cluster's), this one counted even before its
 * listener has taken its own: a runner may ask first. key and self are the
 * parameters holding FLEET_INSTANCE_LOCK and this instance's id.
 */
#define SQL_COUNT_INSTANCES(key, self) \
    "(SELECT count(*)::int FROM (" \
    "   SELECT objid FROM pg_catalog.pg_locks" \
    "    WHERE locktype = 'advisory' AND classid = " key "::int::oid AND objsubid = 2" \
    "      AND granted AND database = (SELECT oid FROM pg_catalog.pg_database" \
    "                                   WHERE datname = pg_catalog.current_database())" \
    "   UNION SELECT " self "::int::oid) i)"

/*
 * Take the projection's ownership lock if this instance owns fewer than its
 * share. $1 FLEET_INSTANCE_LOCK, $2 owned here, $3 projections enabled,
 * $4 FLEET_PROJECTION_LOCK, $5 name, $6 this instance's id. Returns whether
 * it is ours now, and how many instances there are.
 */
#define SQL_CLAIM \
    "SELECT CASE WHEN $2::int < ceil($3::numeric / n)" \
    "            THEN pg_try_advisory_lock($4::int, hashtext($5)) ELSE false END, n" \
    "  FROM " SQL_COUNT_INSTANCES("$1", "$6") " AS c(n)"

/* $1 FLEET_PROJECTION_LOCK, $2 name */
#define SQL_RELEASE "SELECT pg_advisory_unlock($1::int, hashtext($2))"

/*
 * $1 name, $2 version, $3 owner, $4 whether this process saw the projection
 * fail (a reconnect keeps it failed; a restart tries again).
 * Returns the stored checkpoint.
 */
#define SQL_REGISTER                                                                               \
    "INSERT INTO read_model.projection_metadata AS m"                                              \
    "       (projection_name, projection_version, status, owner, heartbeat_at)"                    \
    " VALUES ($1, $2::int, 'starting', $3, now())"                                                 \
    " ON CONFLICT (projection_name) DO UPDATE"                                                     \
    "   SET status = CASE WHEN $4::bool THEN m.status ELSE 'starting' END,"                        \
    "       owner = EXCLUDED.owner, heartbeat_at = now()"                                          \
    " RETURNING tail_snapshot_lo, tail_snapshot_hi, tail_window_position, tail_window_max,"        \
    "           last_position, checkpoint_seq, projection_version,"                                  \
    "           rebuild_requested_at IS NOT NULL, replay_requested_at IS NOT NULL"

/*
 * A rebuild's checkpoint, in the columns of SQL_REGISTER, if the rebuild is
 * still this owner's (no row: another instance started its own). $1 name,
 * $2 owner
 */
#define SQL_LOAD_REBUILD                                                                           \
    "SELECT tail_snapshot_lo, tail_snapshot_hi, tail_window_position, tail_window_max,"           \
    "       last_position, checkpoint_seq, NULL::int, false, false"                               \
    "  FROM read_model.projection_rebuild WHERE projection_name = $1 AND owner = $2"

/* See sql/V008__rebuild.sql. $1 name, $2 tables (text[]), $3 owner / version / error */
#define SQL_BEGIN_REBUILD   "SELECT read_model.projectord_begin_rebuild($1, $2::text[], $3)"
#define SQL_FINISH_REBUILD  "SELECT read_model.projectord_finish_rebuild($1, $2::text[], $3::int)"
#define SQL_ABANDON_REBUILD "SELECT read_model.projectord_abandon_rebuild($1, $2)"

/*
 * Transaction ids this cluster cannot judge (docs/reliability.md, "A
 * restored event store"): an event store restored with pg_dump, copied by
 * logical replication, or written with an explicit transaction_id. Each
 * test is a check of the open's own lo ($1, $2) and last_position ($4)
 * against w.now, the statement's snapshot, and costs one index probe at
 * most, so the live path stays as cheap as it was:
 *   checkpoint  the current snapshot does not cover lo: lo comes from a
 *               cluster whose ids are ahead of this one's (a snapshot of
 *               this cluster is always covered by a later one);
 *   ahead       a committed event whose id is at or beyond the snapshot's
 *               xmax: no snapshot of this cluster sees it, so no window
 *               would ever hold it (the lowest such id is returned);
 *   behind      the first event after last_position is visible in lo:
 *               the checkpoint counts it as applied though it never was,
 *               so it would be skipped.
 * The text is "kind value value"; runner.c words it for the log and status.
 */
#define SQL_TROUBLE \
    "CASE WHEN pg_snapshot_xmax(w.now) < $2::xid8" \
    "       OR EXISTS (SELECT 1 FROM pg_snapshot_xip(w.now) AS x(xid)" \
    "                   WHERE NOT (x.xid = ANY($1::xid8[]) OR x.xid >= $2::xid8))" \
    "     THEN 'checkpoint ' || $2::text || ' ' || pg_snapshot_xmax(w.now)::text" \
    "     WHEN a.xid IS NOT NULL" \
    "     THEN 'ahead ' || a.xid::text || ' ' || pg_snapshot_xmax(w.now)::text" \
    "     WHEN NOT (n.xid = ANY($1::xid8[]) OR n.xid >= $2::xid8)" \
    "     THEN 'behind ' || n.global_position::text || ' ' || n.xid::text END"
#define SQL_TROUBLE_PROBES \
    " LEFT JOIN LATERAL (SELECT f.transaction_id AS xid FROM event_store.domain_event f" \
    "                     WHERE f.transaction_id >= pg_snapshot_xmax(w.now)" \
    "                     ORDER BY f.transaction_id LIMIT 1) a ON true" \
    " LEFT JOIN LATERAL (SELECT f.global_position, f.transaction_id AS xid" \
    "                      FROM event_store.domain_event f WHERE f.global_position > $4::bigint" \
    "                     ORDER BY f.global_position LIMIT 1) n ON true"

/*
 * Open the next window: take a new snapshot hi (or use $3, one another
 * runner took: readshare.h) and find the positions of the window's events
 * through the transaction_id index.
 * $1 xip(lo) as xid8[], $2 xmax(lo), $3 hi or NULL, $4 last_position.
 * Returns hi, min and max position in the window (NULL when empty), the head
 * position, and trouble: NULL, or why this cluster cannot judge the store's
 * transaction ids (SQL_TROUBLE). It also
 * leaves the window in settings of its transaction, so that the window's
 * first batch can be fetched in the same request (SQL_WINDOW_BOUND), and
 * makes the fetch's planner settings (SQL_FETCH_PLAN) as it ends: they
 * apply to the statements planned after it, not to itself, and a live
 * wake-up sends one statement less.
 *
 * OFFSET 0 fences the aggregates from the rows: left to itself the planner
 * turns min() and max() into walks of the global_position index with the
 * window's tests as a filter, and an empty window (every poll of an idle
 * daemon, every live wake-up) then reads the whole table: ~1 s per open at
 * 1M events. Fenced, the rows come from the transaction_id index, which
 * holds only the window's (tests/bench/RESULTS.md, finding 1).
 */
#define SQL_OPEN_WINDOW \
    "WITH w AS MATERIALIZED (SELECT coalesce($3::pg_snapshot, pg_current_snapshot()) AS hi," \
    "                               pg_current_snapshot() AS now)" \
    " SELECT w.hi::text, b.first_position, b.last_position," \
    "        (SELECT coalesce(max(global_position), 0) FROM event_store.domain_event)," \
    "        " SQL_TROUBLE "," \
    "        pg_catalog.set_config('projectord.window_done'," \
    "                              coalesce((b.first_position - 1)::text, ''), true)," \
    "        pg_catalog.set_config('projectord.window_last'," \
    "                              coalesce(b.last_position::text, ''), true)," \
    "        pg_catalog.set_config('projectord.window_hi', w.hi::text, true)," \
    "        " SQL_FETCH_SETTINGS \
    "   FROM w, LATERAL (" \
    "     SELECT min(p) AS first_position, max(p) AS last_position" \
    "       FROM (SELECT e.global_position AS p" \
    "               FROM event_store.domain_event e" \
    "              WHERE (e.transaction_id = ANY($1::xid8[])" \
    "                     OR (e.transaction_id >= $2::xid8" \
    "                         AND e.transaction_id < pg_snapshot_xmax(w.hi)))" \
    "                AND pg_visible_in_snapshot(e.transaction_id, w.hi)" \
    "             OFFSET 0) s) b" \
    SQL_TROUBLE_PROBES

/*
 * Sent before each open, for its transaction only. Left to choose, the plan
 * cache plans the open anew for every call (its custom plans, which know lo,
 * look cheaper than the generic one): 0.16 ms of planning for 0.05 ms of
 * work, most of a live wake-up's server time. The generic plan is the same
 * bitmap scan of the transaction_id index (tests/bench/RESULTS.md), once
 * sequential scans are off: over a small table (20k events) the generic
 * plan would otherwise be a sequential scan, 5 ms an open, and it stays
 * cached while the table grows.
 */
#define SQL_OPEN_PLAN                                                                              \
    "SELECT pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true),"                 \
    "       pg_catalog.set_config('enable_seqscan', 'off', true)"

/*
 * The next batch of the window, in position order. The window's position
 * range bounds an ordered walk of the global_position index; the snapshot
 * tests are filters on it. ($1 position done, $2 window's last position,
 * $3 hi, $4 lo, $5 handled event types as text[] or NULL for all, $6 limit,
 * $7 batch_max_bytes: SQL_BOUNDED_EVENTS.)
 * SQL_FETCH_PLAN goes first in the same request (the open, for a first batch).
 */
/* Events with their envelope, in the columns of enum fetch_column. */
#define SQL_EVENT_COLUMNS \
    "e.global_position, e.event_id, e.stream_id, s.aggregate_type, s.aggregate_id," \
    "       e.event_type, e.event_version, e.aggregate_version, e.event_data, e.metadata," \
    "       e.occurred_at, e.causation_id, e.correlation_id, e.transaction_id"
#define SQL_EVENT_TABLES \
    "  FROM event_store.domain_event e" \
    "  JOIN event_store.event_stream s ON s.stream_id = e.stream_id"
#define SQL_EVENTS "SELECT " SQL_EVENT_COLUMNS SQL_EVENT_TABLES

/*
 * Batches are bounded by bytes as well as by count (batch_max_bytes): a
 * fetch returns the events of its count-limited rows while the payload
 * bytes before each stay under the bound, so always at least one, and its
 * last column says whether the bound cut it (the window may hold more).
 * What the daemon holds is the text of event_data and metadata; as stored
 * they may be compressed (a payload of repeated characters shrinks 100
 * times), so the bytes counted are the text's for a compressed value,
 * else the stored size, which is the text's to within jsonb's binary form
 * (docs/design.md, "Bounded batches"). Working out a compressed value's
 * text means reading it whole, so it is done only for the rows whose
 * stored sizes alone stay under the bound: a row past that is never read.
 *
 * The sums are running sums over narrow rows (position and sizes) in a
 * first walk of the position index, which stops at the count limit; the
 * events themselves come from a second walk bounded by the last position
 * kept (an InitPlan, so it bounds the index scan). Summing over the events'
 * own rows doubled the fetch's server time: a window function keeps every
 * row it has seen, payloads included. (walk_where, walk_tail: the walk's
 * WHERE and its ORDER BY ... LIMIT over domain_event e; bytes: the bound.)
 */
#define SQL_STORED_SIZE(e) \
    "pg_catalog.pg_column_size(" e ".event_data)" \
    " + coalesce(pg_catalog.pg_column_size(" e ".metadata), 0)"
#define SQL_IF_COMPRESSED(v) \
    "CASE WHEN pg_catalog.pg_column_compression(" v ") IS NOT NULL THEN " v " END"
#define SQL_BYTES_CUT(walk, bytes) \
    "WITH x AS MATERIALIZED (" \
    " SELECT max(w.p) AS upto, bool_or(w.stored_run >= " bytes " OR w.text_run >= " bytes ") AS cut" \
    "   FROM (SELECT v.*, sum(v.text) OVER (ORDER BY v.p ROWS UNBOUNDED PRECEDING) AS text_run" \
    "           FROM (SELECT u.p, u.stored_run," \
    "                        coalesce(pg_catalog.octet_length(u.dz::text), u.ds)" \
    "                        + coalesce(pg_catalog.octet_length(u.mz::text), u.ms) AS text" \
    "                   FROM (SELECT e.global_position AS p," \
    "                                pg_catalog.pg_column_size(e.event_data) AS ds," \
    "                                coalesce(pg_catalog.pg_column_size(e.metadata), 0) AS ms," \
    "                                " SQL_IF_COMPRESSED("e.event_data") " AS dz," \
    "                                " SQL_IF_COMPRESSED("e.metadata") " AS mz," \
    "                                sum(" SQL_STORED_SIZE("e") ")" \
    "                                  OVER (ORDER BY e.global_position ROWS UNBOUNDED PRECEDING)" \
    "                                  AS stored_run" \
    "                           FROM event_store.domain_event e " walk ") u" \
    "                  WHERE u.stored_run - u.ds - u.ms < " bytes \
    "                  ORDER BY u.p OFFSET 0) v) w" \
    "  WHERE w.text_run - w.text < " bytes ")"
/* The events of the walk that the byte bound keeps, and whether it cut them. */
#define SQL_BOUNDED_EVENTS(walk_where, walk_tail, bytes) \
    SQL_BYTES_CUT(walk_where walk_tail, bytes) \
    " SELECT " SQL_EVENT_COLUMNS ", (SELECT cut FROM x)" SQL_EVENT_TABLES \
    walk_where " AND e.global_position <= (SELECT upto FROM x)" walk_tail

/*
 * A fetch's bounds: $1 position done, $2 the window's last position, $3 hi;
 * NULL for the first batch of a window, which is sent right behind the
 * window's open in the same request (one round trip less per live wake-up)
 * and takes them from the settings the open left for its transaction. As
 * scalar subqueries they are evaluated once, and bound the index scan.
 */
#define SQL_WINDOW_BOUND(param, type, name)                                                        \
    "coalesce(" param "::" type ", (SELECT nullif(pg_catalog.current_setting("                      \
    "'projectord.window_" name "', true), '')::" type "))"
#define SQL_DONE SQL_WINDOW_BOUND("$1", "bigint", "done")
#define SQL_LAST SQL_WINDOW_BOUND("$2", "bigint", "last")
#define SQL_HI   SQL_WINDOW_BOUND("$3", "pg_snapshot", "hi")

/* The window's events: visible in hi ($3), not in lo ($4). */
#define SQL_IN_WINDOW(e)                                                                           \
    "   AND pg_visible_in_snapshot(" e ".transaction_id, " SQL_HI ")"                              \
    "   AND NOT pg_visible_in_snapshot(" e ".transaction_id, $4::pg_snapshot)"
/*
 * Sent before each fetch, for its transaction only (the open makes them for
 * the first batch of its window). No bitmap scan: it would read and sort the
 * whole rest of the window for every batch. No parallel workers: on a large
 * table (5M events) the planner takes a batch's range for millions of rows
 * and starts a worker for every fetch, which costs more than the batch
 * (0.35 s instead of 0.2 s, and half of it system time).
 */
#define SQL_FETCH_SETTINGS                                                                         \
    "pg_catalog.set_config('enable_bitmapscan', 'off', true),"                                     \
    " pg_catalog.set_config('max_parallel_workers_per_gather', '0', true)"
#define SQL_FETCH_PLAN "SELECT " SQL_FETCH_SETTINGS
#define SQL_FETCH_WHERE                                                                            \
    " WHERE e.global_position > " SQL_DONE " AND e.global_position <= " SQL_LAST                    \
    SQL_IN_WINDOW("e")                                                                             \
    "   AND ($5::text[] IS NULL OR e.event_type = ANY($5::text[]))"
#define SQL_FETCH                                                                                  \
    SQL_BOUNDED_EVENTS(SQL_FETCH_WHERE, " ORDER BY e.global_position LIMIT $6::int", "$7::bigint")

/*
 * A shared batch (readshare.h): every event type, ending on the grid of $5
 * positions that starts at the first event of the window after $1, so
 * runners at different points of one cell meet at its end. ($1 position
 * done, $2 window's last position, $3 hi, $4 lo, $5 batch size, $6
 * batch_max_bytes: a cell cut by bytes ends at its last event.) The first
 * event comes from a scalar subquery, not a join: as an InitPlan its value
 * bounds the index scan, where a joined value would only filter a walk to
 * the window's end; and ORDER BY ... LIMIT 1, not min(), which custom plans
 * turn into an aggregate over the rest of the window.
 */
#define SQL_FETCH_CELL_WHERE                                                                       \
    " WHERE e.global_position > " SQL_DONE                                                         \
    "   AND e.global_position <= least(" SQL_LAST ", (("                                           \
    "         (SELECT f.global_position FROM event_store.domain_event f"                          \
    "           WHERE f.global_position > " SQL_DONE " AND f.global_position <= " SQL_LAST          \
    SQL_IN_WINDOW("f") "  ORDER BY f.global_position LIMIT 1) - 1) / $5::int + 1) * $5::int)"     \
    SQL_IN_WINDOW("e")
#define SQL_FETCH_CELL                                                                             \
    SQL_BOUNDED_EVENTS(SQL_FETCH_CELL_WHERE, " ORDER BY e.global_position LIMIT $5::int",           \
                       "$6::bigint")

enum fetch_column {
    FC_POSITION,
    FC_EVENT_ID,
    FC_STREAM_ID,
    FC_AGGREGATE_TYPE,
    FC_AGGREGATE_ID,
    FC_EVENT_TYPE,
    FC_EVENT_VERSION,
    FC_AGGREGATE_VERSION,
    FC_EVENT_DATA,
    FC_METADATA,
    FC_OCCURRED_AT,
    FC_CAUSATION_ID,
    FC_CORRELATION_ID,
    FC_TRANSACTION_ID,
    FC_BYTES_FULL, /* SQL_FETCH and SQL_FETCH_CELL only: the byte bound cut the batch here */
};

/*
 * The batch's checkpoint, in the batch's transaction: a compare-and-set on
 * checkpoint_seq in table (projection_metadata, or projection_rebuild for a
 * rebuild). One plain statement, planned once per session: the PL/pgSQL
 * function it replaces cost as much again as its UPDATE (sql/V022). When
 * another writer moved the checkpoint no row matches, and
 * projectord_checkpoint_moved fails the transaction (SQLSTATE PJ001).
 * ($1 name, $2 expected seq, $3 lo, $4 hi, $5 window position, $6 window
 * max, $7 last position, $8-$10 processed, ignored and skipped in the batch,
 * $11 head, $12 status, $13 owner, $14-$16 an error, its sqlstate and
 * position, or NULL, $17 and $18 the transaction and occurred_at of the
 * batch's newest event, NULL without events, $19 stall_timeout_ms.)
 * progressed_at moves with last_position (sql/V028: healthy means
 * progressing).
 *
 * Returns the new seq and the commit-to-apply latency of the newest event
 * in seconds (NULL without events): from its commit timestamp when the
 * server keeps them, else from its occurred_at; the row keeps it in ms.
 */
#define SQL_CHECKPOINT_ON(table)                                                                   \
    "WITH l AS (SELECT extract(epoch FROM clock_timestamp() - coalesce("                          \
    "    CASE WHEN $17::xid8 IS NOT NULL"                                                          \
    "          AND pg_catalog.current_setting('track_commit_timestamp') = 'on'"                    \
    "         THEN pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid($17::xid8)) END,"            \
    "    $18::timestamptz)) AS s),"                                                                \
    " c AS (UPDATE read_model." table " m"                                                         \
    "   SET tail_snapshot_lo = $3::text, tail_snapshot_hi = $4::text,"                             \
    "       tail_window_position = $5::bigint, tail_window_max = $6::bigint,"                      \
    "       last_position = greatest(m.last_position, $7::bigint),"                                \
    "       last_event_id = greatest(m.last_event_id, $7::bigint),"                                \
    "       progressed_at = CASE WHEN $7::bigint > m.last_position THEN now()"                     \
    "                            ELSE m.progressed_at END,"                                        \
    "       stall_after = $19::int * interval '1 millisecond',"                                    \
    "       checkpoint_seq = m.checkpoint_seq + 1,"                                                \
    "       events_processed = m.events_processed + $8::bigint,"                                   \
    "       events_ignored = m.events_ignored + $9::bigint,"                                       \
    "       events_skipped = m.events_skipped + $10::bigint,"                                      \
    "       lag_events = greatest($11::bigint - greatest(m.last_position, $7::bigint), 0),"        \
    "       apply_latency_ms = coalesce(1000 * l.s, m.apply_latency_ms),"                          \
    "       status = $12::text, owner = $13::text,"                                                \
    "       last_error = coalesce($14::text, m.last_error),"                                       \
    "       last_error_sqlstate = CASE WHEN $14::text IS NULL THEN m.last_error_sqlstate"          \
    "                                  ELSE $15::text END,"                                        \
    "       last_error_position = CASE WHEN $14::text IS NULL THEN m.last_error_position"          \
    "                                  ELSE $16::bigint END,"                                      \
    "       last_error_at = CASE WHEN $14::text IS NULL THEN m.last_error_at ELSE now() END,"      \
    "       heartbeat_at = now(), updated_at = now()"                                              \
    "   FROM l WHERE m.projection_name = $1::text AND m.checkpoint_seq = $2::bigint"               \
    "     AND m.owner = $13::text"                                                                 \
    "   RETURNING m.checkpoint_seq)"                                                               \
    " SELECT coalesce((SELECT checkpoint_seq FROM c),"                                             \
    "                 read_model.projectord_checkpoint_moved($1::text, $2::bigint)), l.s FROM l"
#define SQL_CHECKPOINT         SQL_CHECKPOINT_ON("projection_metadata")
#define SQL_REBUILD_CHECKPOINT SQL_CHECKPOINT_ON("projection_rebuild")
#define SQL_CHECKPOINT_NPARAMS 19

/* $1 name, $2 position, $3 event_id, $4 event_type, $5 error, $6 sqlstate, $7 payload */
#define SQL_DEAD_LETTER                                                                            \
    "INSERT INTO read_model.projection_dead_letter"                                                \
    "       (projection_name, global_position, event_id, event_type, error, sqlstate, payload)"    \
    " VALUES ($1, $2::bigint, $3::uuid, $4, $5, $6, $7::jsonb)"                                    \
    " ON CONFLICT (projection_name, global_position) DO UPDATE"                                    \
    "   SET error = EXCLUDED.error, sqlstate = EXCLUDED.sqlstate, failed_at = now()"

/*
 * Heartbeat and status; $4/$5 an error to record, or NULL. Returns how many
 * instances there are ($6 FLEET_INSTANCE_LOCK, $7 this instance's id), for
 * rebalancing, and whether a rebuild, a resume or a replay was asked for.
 * $8 stall_timeout_ms. A projection found at the head (as the status view
 * judges it: SQL_AT_HEAD) counts as progressing, so one that waited at the
 * head is not stalled the moment an event comes (sql/V028).
 * The resume request is cleared here and reported from `before`, which
 * locks the row first: a statement that waits for a row lock re-reads, under
 * READ COMMITTED, only what it locks or updates, so a plain self-join would
 * report the request as it was before the wait and clear the one committed
 * meanwhile (adopt-restored-store holds the rows for seconds, then asks
 * every projection to resume): lost, the projection failed for good.
 */
#define SQL_AT_HEAD(m) \
    m ".last_position >= greatest(" m ".last_position + " m ".lag_events," \
    " (SELECT coalesce(max(global_position), 0) FROM event_store.domain_event))"
#define SQL_NOTE \
    "WITH before AS (SELECT resume_requested_at FROM read_model.projection_metadata" \
    "                 WHERE projection_name = $1 FOR UPDATE)" \
    "UPDATE read_model.projection_metadata m" \
    "   SET status = $2, owner = $3, heartbeat_at = now()," \
    "       progressed_at = CASE WHEN " SQL_AT_HEAD("m") " THEN now() ELSE m.progressed_at END," \
    "       stall_after = $8::int * interval '1 millisecond'," \
    "       last_error = coalesce($4, m.last_error)," \
    "       last_error_sqlstate = CASE WHEN $4 IS NULL THEN m.last_error_sqlstate ELSE $5 END," \
    "       last_error_at = CASE WHEN $4 IS NULL THEN m.last_error_at ELSE now() END," \
    "       resume_requested_at = NULL" \
    "  FROM before" \
    " WHERE m.projection_name = $1" \
    " RETURNING " SQL_COUNT_INSTANCES("$6", "$7") "," \
    "           m.rebuild_requested_at IS NOT NULL," \
    "           before.resume_requested_at IS NOT NULL," \
    "           m.replay_requested_at IS NOT NULL"

/*
 * The positions of the next dead letters to replay, as a bigint[] literal
 * (NULL when none): the dead letters live with the read model, which may be
 * another database than the events. $1 name, $2 after, $3 limit
 */
#define SQL_LIST_DEAD_LETTERS \
    "SELECT array_agg(global_position ORDER BY global_position)::text" \
    "  FROM (SELECT global_position FROM read_model.projection_dead_letter" \
    "         WHERE projection_name = $1 AND global_position > $2::bigint" \
    "         ORDER BY global_position LIMIT $3::int) d"

/* Those events, in the columns of SQL_FETCH and position order. $1 bigint[] */
#define SQL_FETCH_POSITIONS \
    SQL_EVENTS \
    " WHERE e.global_position = ANY($1::bigint[])" \
    " ORDER BY e.global_position"

/* A replayed event applied: its dead letter goes. $1 name, $2 position */
#define SQL_DROP_DEAD_LETTER \
    "DELETE FROM read_model.projection_dead_letter" \
    " WHERE projection_name = $1 AND global_position = $2::bigint"

/* A replay batch's commit: $2 dead letters applied now. */
#define SQL_REPLAYED \
    "UPDATE read_model.projection_metadata" \
    "   SET events_skipped = greatest(events_skipped - $2::bigint, 0)," \
    "       events_processed = events_processed + $2::bigint, updated_at = now()" \
    " WHERE projection_name = $1"

/* The replay is over. $1 name */
#define SQL_REPLAY_DONE \
    "UPDATE read_model.projection_metadata" \
    "   SET replay_requested_at = NULL, replayed_at = clock_timestamp()" \
    " WHERE projection_name = $1"

/*
 * Sent when a handler fails after queuing statements of its own: those can
 * not be unsent, so the batch's transaction is made to fail and the batch
 * is sent again with the event known to be bad.
 */
#define SQL_ABANDON                                                                                \
    "DO $$BEGIN RAISE EXCEPTION 'projectord: batch abandoned' USING ERRCODE = 'PJ002'; END$$"
#define SQLSTATE_ABANDONED        "PJ002"
#define SQLSTATE_UNTRANSLATABLE   "22P05" /* untranslatable_character */
#define SQLSTATE_CHECKPOINT_MOVED "PJ001"
#define SQLSTATE_FOREIGN_IDS      "PJ003" /* the status row's code for SQL_TROUBLE */

// clang-format on

#endif
