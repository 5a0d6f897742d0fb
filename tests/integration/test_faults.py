"""Faults: the daemon killed mid-batch, PostgreSQL restarted under it, and
clean stops on SIGTERM/SIGINT. Afterwards the read model must be exact:
nothing lost, nothing applied twice."""

import signal
import uuid

import pytest

import oracle
from daemon import PROJECTIONS, metadata
from eventgen import Command, event, generate_mix


def assert_exact(db, rows):
    """The read model equals the fold, the invariants hold, and every
    projection processed each handled event exactly once."""
    with db.connect() as conn:
        oracle.assert_invariants(conn)
        oracle.assert_read_model_matches_fold(conn)
        handled = oracle.handled_counts(conn)
    for name in oracle.KNOWN:
        assert rows[name]["events_processed"] == handled[name], f"{name}: processed != handled"
        assert rows[name]["events_ignored"] == 0, name


def assert_stats_match_checkpoint(db):
    """At any moment event_stats' rows and its checkpoint agree: both are
    written in one transaction (SPEC §3 exactly-once effect)."""
    with db.connect() as conn:
        counted = conn.execute("SELECT coalesce(sum(event_count), 0) FROM read_model.event_type_stats").fetchone()[0]
        processed = metadata(conn)["event_stats"]["events_processed"]
    assert counted == processed, "event_type_stats and its checkpoint disagree"


def split(commands, *fractions):
    """Cut commands into consecutive parts at the given fractions."""
    cuts = [0] + [int(len(commands) * f) for f in fractions] + [len(commands)]
    return [commands[a:b] for a, b in zip(cuts, cuts[1:])]


def test_kill_9_during_catch_up(db, start_daemon):
    db.append_all(generate_mix(seed=5, n_events=50_000))
    head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")
    daemon = start_daemon(batch_size=100, poll_interval_ms=500)

    def midway(conn):
        rows = metadata(conn)
        return any(0.1 * head <= r["last_position"] <= 0.9 * head for r in rows.values()) and rows
    at_kill = daemon.wait_until(midway, 60, "a projection 10-90% through the backlog", interval=0.01)
    daemon.kill(signal.SIGKILL)
    assert daemon.wait() == -signal.SIGKILL
    after = daemon.status()
    assert min(r["last_position"] for r in after.values()) < head, "killed too late to test anything"
    assert all(after[n]["last_position"] >= at_kill[n]["last_position"] for n in at_kill)
    assert_stats_match_checkpoint(db)

    daemon.start()
    rows = daemon.wait_caught_up(timeout=120)
    assert_exact(db, rows)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_running_daemon(cluster, db, start_daemon, mode):
    before, during, after = split(generate_mix(seed=17, n_events=30_000), 0.3, 0.8)
    # A long poll interval: after the restart only a re-issued LISTEN wakes it quickly.
    daemon = start_daemon(batch_size=200, poll_interval_ms=30_000)
    db.append_all(before)
    daemon.wait_caught_up(timeout=60)

    db.append_all(during)           # a backlog: the restart hits batches in flight
    cluster.restart(mode)
    db.append_all(after)            # appended while the daemon is reconnecting
    rows = daemon.wait_caught_up(timeout=120)
    assert daemon.alive()

    uid = uuid.uuid4()
    db.append([Command("User", uid, 0, [event("UserRegistered", {
        "email": f"{uid}@example.com", "first_name": "After", "last_name": "Restart"})])])
    daemon.wait_until(lambda conn: conn.execute("SELECT 1 FROM read_model.users WHERE id = %s", (uid,)).fetchone(),
                      5, "a NOTIFY-driven wake-up after the restart (LISTEN re-issued)")
    rows = daemon.wait_caught_up()
    assert_exact(db, rows)
    assert daemon.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(db, start_daemon, sig):
    daemon = start_daemon()
    db.append_all(generate_mix(seed=3, n_events=2000))
    daemon.wait_caught_up()
    daemon.kill(sig)
    assert daemon.wait(timeout=5) == 0
    statuses = {n: r["status"] for n, r in daemon.status().items()}
    assert statuses == {n: "stopped" for n in PROJECTIONS}


def test_sigterm_during_catch_up_finishes_the_batch(db, start_daemon):
    db.append_all(generate_mix(seed=9, n_events=60_000))
    head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")
    daemon = start_daemon(batch_size=100)
    daemon.wait_until(lambda conn: any(r["last_position"] > 0 for r in metadata(conn).values()),
                      30, "catch-up to begin", interval=0.01)
    daemon.kill(signal.SIGTERM)
    assert daemon.wait(timeout=5) == 0
    rows = daemon.status()
    assert all(r["status"] == "stopped" for r in rows.values())
    assert min(r["last_position"] for r in rows.values()) < head, "stopped too late to test anything"
    assert_stats_match_checkpoint(db)

    daemon.start()
    assert_exact(db, daemon.wait_caught_up(timeout=60))


def test_a_stuck_projection_does_not_hold_the_others_back(db, start_daemon):
    """The projections read the events together (readshare.h), and one far
    ahead waits for the slowest: but not for one that has stopped moving.
    orders gets stuck behind a lock in the middle of the catch-up; the
    others still reach the head, and orders catches up exactly once the
    lock goes."""
    db.append_all(generate_mix(seed=4242, n_events=60_000, days=2))
    daemon = start_daemon(batch_size=100)
    daemon.wait_until(lambda conn: metadata(conn).get("orders", {}).get("last_position", 0) > 0,
                      30, "orders' first batch")
    with db.connect(autocommit=False) as locker:
        locker.execute("LOCK TABLE read_model.orders IN ACCESS EXCLUSIVE MODE")

        def others_at_head(conn):
            rows, head = metadata(conn), daemon.head(conn)
            return all(rows[n]["last_position"] >= head
                       for n in ("catalog", "users", "event_stats")) and rows
        rows = daemon.wait_until(others_at_head, 60, "the projections that are not stuck")
        with db.connect() as conn:
            assert rows["orders"]["last_position"] < daemon.head(conn), "orders was not stuck"
        locker.rollback()
    assert_exact(db, daemon.wait_caught_up(timeout=120))
    assert daemon.stop() == 0


def test_a_checkpoint_moved_by_another_writer_is_reloaded(db, start_daemon):
    """Every checkpoint write compares and sets checkpoint_seq. When another
    writer moved it, the batch's transaction fails (SQLSTATE PJ001, the
    batch's statements go with it), and the runner reloads the stored
    checkpoint and goes on: nothing applied twice, nothing lost."""
    first, second = split(generate_mix(seed=11, n_events=3_000), 0.5)
    db.append_all(first)
    daemon = start_daemon(batch_size=50)
    daemon.wait_caught_up(timeout=60)
    db.execute("UPDATE read_model.projection_metadata SET checkpoint_seq = checkpoint_seq + 1000"
               " WHERE projection_name IN ('orders', 'event_stats')")
    db.append_all(second)
    rows = daemon.wait_caught_up(timeout=60)
    log = daemon.log(tail=100000)
    for name in ("orders", "event_stats"):
        assert f"projection {name}: checkpoint moved by another writer" in log, log
    assert_exact(db, rows)
    assert_stats_match_checkpoint(db)
