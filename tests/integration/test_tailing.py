"""SPEC §3 tailing guarantees. Each scenario is built so that a known naive
technique fails it:

- `WHERE global_position > last` skips an event committed after a higher one;
- ordering by transaction_id (the `pg_snapshot_xmin` technique) applies a
  transaction that took its id early before the one that created the row;
- the xmin technique also stalls behind any long write transaction.
"""

import random
import threading
import time
import uuid

import pytest

import oracle
from eventgen import Command, event, generate_mix, append
from pgstats import event_index_tuples_read

# The default poll interval and a batch size smaller than some scenarios.
LIVE = dict(poll_interval_ms=1000, batch_size=100)


@pytest.fixture
def command_table(db):
    """A command-side table, so a transaction can take its id before appending."""
    db.execute("CREATE TABLE command_model.test_cmd (id serial PRIMARY KEY, note text)")
    return "command_model.test_cmd"


def position_of(conn, aggregate_id):
    return conn.execute("""SELECT max(e.global_position) FROM event_store.domain_event e
                             JOIN event_store.event_stream s USING (stream_id)
                            WHERE s.aggregate_id = %s""", (aggregate_id,)).fetchone()[0]


def row_exists(table, key):
    """A wait_until predicate: read_model.table has a row with id = key."""
    return lambda conn: conn.execute(f"SELECT 1 FROM read_model.{table} WHERE id = %s", (key,)).fetchone()


def category(cid, name):
    return Command("Category", cid, 0, [event("CategoryCreated", {"name": name})])


def test_out_of_order_commit_is_not_skipped(db, start_daemon):
    daemon = start_daemon(**LIVE)
    daemon.wait_started()
    x, y = uuid.uuid4(), uuid.uuid4()
    with db.connect(autocommit=False) as writer_a, db.connect() as writer_b:
        append(writer_a, category(x, "committed last"))   # takes the lower position, stays open
        append(writer_b, category(y, "committed first"))
        pos_a, pos_b = position_of(writer_a, x), position_of(writer_b, y)
        assert pos_a < pos_b
        daemon.wait_until(row_exists("categories", y), 10, "the event committed first")
        assert daemon.status()["catalog"]["last_position"] >= pos_b
        writer_a.commit()
    daemon.wait_until(row_exists("categories", x), 10, "the event committed after a higher position")
    rows = daemon.wait_caught_up()
    stats = db.query("""SELECT event_count, first_position, last_position FROM read_model.event_type_stats
                         WHERE event_type = 'CategoryCreated'""")
    assert stats == [(2, pos_a, pos_b)]
    assert rows["catalog"]["events_processed"] == 2
    assert rows["event_stats"]["events_processed"] == 2


def test_transaction_that_took_its_id_early_keeps_stream_order(db, start_daemon, command_table):
    daemon = start_daemon(**LIVE)
    daemon.wait_started()
    s = uuid.uuid4()
    created = Command("Product", s, 0, [event("ProductCreated", {
        "sku": "S-1", "name": "Before", "price_cents": 100, "category_id": None})])
    renamed = Command("Product", s, 1, [event("ProductRenamed", {"name": "After"})])
    with db.connect(autocommit=False) as t, db.connect(autocommit=False) as u:
        t.execute(f"INSERT INTO {command_table} (note) VALUES ('command first')")  # t's xid is taken now
        append(u, created)
        u.commit()
        time.sleep(0.3)  # let the daemon look while t is still open
        append(t, renamed)
        t.commit()
    rows = daemon.wait_caught_up()
    xids = db.query("""SELECT e.event_type, e.transaction_id::text::bigint, e.global_position
                         FROM event_store.domain_event e JOIN event_store.event_stream s USING (stream_id)
                        WHERE s.aggregate_id = %s ORDER BY e.aggregate_version""", (s,))
    (_, xid_create, pos_create), (_, xid_rename, pos_rename) = xids
    assert xid_rename < xid_create and pos_create < pos_rename, "the scenario's premise"
    product = db.query("SELECT name, version FROM read_model.products WHERE id = %s", (s,))
    assert product == [("After", 2)], "the rename must apply after the creation"
    assert rows["catalog"]["events_ignored"] == 0
    assert rows["catalog"]["events_processed"] == 2


def test_long_unrelated_transaction_does_not_stall(db, start_daemon, command_table):
    daemon = start_daemon(**LIVE)
    daemon.wait_started()
    latencies = []
    with db.connect(autocommit=False) as long_tx, db.connect() as writer:
        long_tx.execute(f"INSERT INTO {command_table} (note) VALUES ('long, appends nothing')")
        for n in range(3):
            uid = uuid.uuid4()
            append(writer, Command("User", uid, 0, [event("UserRegistered", {
                "email": f"u{n}.{uid.hex[:8]}@example.com", "first_name": "F", "last_name": "L"})]))
            started = time.monotonic()
            daemon.wait_until(row_exists("users", uid), 2.0, f"event {n} while a long transaction is open")
            latencies.append(time.monotonic() - started)
        long_tx.rollback()
    print(f"latencies with a long transaction open: {[round(x, 3) for x in latencies]}")
    rows = daemon.wait_caught_up()
    assert rows["users"]["events_processed"] == 3


def catalog_noise(n):
    """n commands that only catalog and event_stats handle."""
    return [category(uuid.uuid4(), f"noise {i}") for i in range(n)]


def test_progress_past_ignored_events(db, start_daemon):
    daemon = start_daemon(**LIVE)
    daemon.wait_started()
    heads = []
    for _ in range(2):
        db.append_all(catalog_noise(300), per_transaction=20)
        heads.append(db.scalar("SELECT max(global_position) FROM event_store.domain_event"))
        rows = daemon.wait_caught_up()
        assert rows["users"]["last_position"] == heads[-1], "users must pass events it does not handle"
        assert rows["users"]["events_processed"] == 0
        assert rows["orders"]["last_position"] == heads[-1]
    assert heads[1] > heads[0]

    # The passed position is a real checkpoint: a restarted daemon starts there.
    assert daemon.stop() == 0
    assert daemon.status()["users"]["last_position"] == heads[1]
    daemon.start()
    uid = uuid.uuid4()
    db.append([Command("User", uid, 0, [event("UserRegistered", {
        "email": "late@example.com", "first_name": "F", "last_name": "L"})])])
    rows = daemon.wait_caught_up()
    assert rows["users"]["events_processed"] == 1
    with db.connect() as conn:
        assert rows["users"]["last_position"] == position_of(conn, uid)
    assert rows["catalog"]["events_processed"] == 600


def test_ignored_traffic_is_checkpointed_about_once_a_second(db, start_daemon):
    """A projection that handles none of a stream of small transactions moves
    its checkpoint in memory and writes it at most about once a second, not
    once per window (a one-shot timer restarted without being set again
    fired at once and wrote for every window)."""
    daemon = start_daemon(**LIVE)
    daemon.wait_started()
    seq = "SELECT checkpoint_seq FROM read_model.projection_metadata WHERE projection_name = 'users'"
    before = db.scalar(seq)
    started = time.monotonic()
    for cmd in catalog_noise(150):
        db.append([cmd])
        time.sleep(0.02)
    rows = daemon.wait_caught_up()
    elapsed = time.monotonic() - started
    assert rows["catalog"]["events_processed"] == 150, "every window was a live one"
    assert rows["users"]["last_position"] == db.scalar(
        "SELECT max(global_position) FROM event_store.domain_event"), "the deferred write came"
    writes = db.scalar(seq) - before
    assert writes <= elapsed + 3, f"users wrote its checkpoint {writes} times in {elapsed:.1f} s"


def append_concurrently(db, commands, writers=3, seed=7):
    """Append from several connections at once; each stream stays with one
    writer (keeping its order), commits interleave out of position order."""
    shares = [[] for _ in range(writers)]
    for c in commands:
        shares[c.aggregate_id.int % writers].append(c)
    errors = []

    def write(share, rng):
        try:
            with db.connect(autocommit=False) as conn:
                i = 0
                while i < len(share):
                    k = rng.randint(1, 5)
                    for c in share[i:i + k]:
                        append(conn, c)
                    if rng.random() < 0.2:
                        time.sleep(rng.random() * 0.005)  # hold the transaction a little
                    conn.commit()
                    i += k
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(share, random.Random(seed + n)))
               for n, share in enumerate(shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_concurrent_writers_exactly_once(db, start_daemon):
    """Many small concurrent transactions while the daemon is live: every
    handled event applied exactly once, the read model equal to the fold."""
    daemon = start_daemon(batch_size=50, poll_interval_ms=200)
    daemon.wait_started()
    append_concurrently(db, generate_mix(seed=11, n_events=6000, days=3))
    rows = daemon.wait_caught_up(timeout=60)
    with db.connect() as conn:
        oracle.assert_invariants(conn)
        oracle.assert_read_model_matches_fold(conn)
        handled = oracle.handled_counts(conn)
    for name in oracle.KNOWN:
        assert rows[name]["events_processed"] == handled[name], name
        assert rows[name]["events_ignored"] == 0, name


def test_idle_polls_do_not_read_the_event_table(db, start_daemon):
    """Opening a window is a read of the transaction_id index, whose entries
    are only the window's events: an idle daemon polling an event table of
    30,000 events reads next to nothing of it. Measured in index tuples read
    (pg_stat_user_indexes), not time: an open that walked the
    global_position index (the planner's min/max shortcut, with the window's
    tests as a filter) would read the whole table, twice, on every poll."""
    db.append_all(generate_mix(seed=515, n_events=30_000, days=2))
    first = start_daemon()
    first.wait_caught_up(timeout=120)
    assert first.stop() == 0
    # A backend that goes idle may keep its statistics for up to 10 s, and with
    # shared opens (readshare.h) most of the catch-up's backends then run
    # nothing: a second daemon, on a caught-up table, is the idle one measured.
    daemon = start_daemon(poll_interval_ms=50)
    daemon.wait_caught_up(timeout=120)

    def tuples_read():
        return db.scalar("SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes "
                         "WHERE schemaname = 'event_store' AND relname = 'domain_event'")

    time.sleep(2)  # the backend that polls flushes its statistics about once a second
    before = tuples_read()
    time.sleep(4)  # ~80 polls
    after = tuples_read()
    assert after > before, "no poll reached the event table (statistics not flushed?)"
    assert after - before < 30_000, f"idle polls read {after - before} index tuples"


def test_a_window_with_gaps_is_read_cell_by_cell(db, start_daemon):
    """A window whose events lie between those of a transaction still open
    (two writers appending in turn, one of them committing late) is read a
    cell of batch_size positions at a time: no fetch walks on to the
    window's end, which would make reading such a window quadratic
    (SQL_FETCH_CELL bounds its index scan by the cell, readshare.h)."""
    n = 2000
    with db.connect(autocommit=False) as early, db.connect(autocommit=False) as late:
        for i in range(n):  # every other position is the late writer's
            append(early, category(uuid.uuid4(), f"early {i}"))
            append(late, category(uuid.uuid4(), f"late {i}"))
        early.commit()
        before = event_index_tuples_read(db)
        daemon = start_daemon(batch_size=50, poll_interval_ms=1000)
        daemon.wait_until(lambda conn: conn.execute(
            "SELECT count(*) = %s FROM read_model.categories", (n,)).fetchone()[0],
            60, "the early writer's categories")
        assert daemon.stop() == 0
        walked = event_index_tuples_read(db) - before
        late.commit()
    print(f"{walked} index tuples read for a window of {n} events over {2 * n} positions")
    assert walked < 3 * 2 * n, f"read {walked} index tuples for a window over {2 * n} positions"


def test_notifications_read_together_wake_the_daemon_once(db, start_daemon):
    """Notifications are wake-up hints, and each wake-up starts a round of
    window opens: the ones that arrive in one read count once (pgconn.c).
    The 51 notifications of one transaction (the trigger's and fifty more)
    arrive together; without the coalescing the listener logs 51 wake-ups.
    The event still applies."""
    daemon = start_daemon(poll_interval_ms=60000, batch_size=100)
    daemon.wait_started()
    daemon.wait_caught_up()

    def wakeups():
        return daemon.log(tail=100000).count(" notification(s) on ")

    before = wakeups()
    cid = uuid.uuid4()
    with db.connect(autocommit=False) as conn:
        append(conn, category(cid, "woken"))
        conn.execute("SELECT pg_notify('domain_event', g::text) FROM generate_series(1, 50) g")
        conn.commit()
    daemon.wait_until(row_exists("categories", cid), 10, "the event appended with the notifications")
    time.sleep(0.5)
    woken = wakeups() - before
    assert 1 <= woken < 10, f"{woken} wake-ups for one read of 51 notifications"
