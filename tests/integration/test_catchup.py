"""Catch-up: a large backlog appended before the daemon starts ends up in
the read model exactly (no loss, no duplicate, invariants hold)."""

import time

import oracle
from pgstats import event_index_tuples_read
from eventgen import generate_mix

N_EVENTS = 100_000


def test_catch_up_100k_events(db, start_daemon):
    db.append_all(generate_mix(seed=20240301, n_events=N_EVENTS, days=6))
    with db.connect() as conn:
        head = conn.execute("SELECT max(global_position) FROM event_store.domain_event").fetchone()[0]
    assert head >= N_EVENTS

    read_before = event_index_tuples_read(db)
    started = time.monotonic()
    # Polls every 20 ms: wake rounds while the runners get ready one by one,
    # so an open another runner sent is soon older than a runner's wake-up;
    # a runner that then opened the backlog again read it once more (3-4x
    # the index tuples before readshare's backlog rule).
    daemon = start_daemon(batch_size=1000, poll_interval_ms=20)
    rows = daemon.wait_caught_up(timeout=300)
    elapsed = time.monotonic() - started
    print(f"caught up with {head} events in {elapsed:.1f}s ({head / elapsed:.0f} events/s)")
    assert daemon.stop() == 0

    # The four projections read the events once between them (readshare.h):
    # each reading its own copy walked the global_position index four times.
    # A read is two walks of the index since batches are bounded by bytes too
    # (runner_sql.h, SQL_BYTES_CUT: the rows' sizes first, then the events
    # the bound keeps), so shared reads come to about 2x, separate ones 8x.
    walked = event_index_tuples_read(db) - read_before
    print(f"global_position index tuples read: {walked} for {head} events")
    assert walked < 2.5 * head, f"the catch-up read {walked} index tuples for {head} events"

    with db.connect() as conn:
        oracle.assert_invariants(conn)              # event_stats == event table, product_count, daily_sales
        oracle.assert_read_model_matches_fold(conn)  # every row of every table
        handled = oracle.handled_counts(conn)
    for name in oracle.KNOWN:
        assert rows[name]["events_processed"] == handled[name], f"{name} processed a different number"
        assert rows[name]["events_ignored"] == 0, f"{name} ignored events of a valid mix"
