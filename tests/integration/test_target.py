"""A read model in its own database (`database.target`, SPEC §7; issue 3):
the events are read from one database, while the read-model tables, the
checkpoints, the status and dead-letter tables and the ownership locks live
in another ("database per service"). Both databases get all of sql/.

Each test ends with an exact check of the target's tables against an
independent fold of the source's event table, so an event read from the
wrong place, lost or applied twice fails it; and the source's own
read_model tables must stay empty, so writes that went to the wrong
database fail it too.
"""

import datetime as dt
import json
import os
import signal
import time
import uuid

import pytest

import oracle
from conftest import Database
from daemon import PROJECTIONS, SLOWDOWN, run_cli
from eventgen import Command, event, generate_mix
from test_dead_letters import ANN, BOB, CARL, dead_letters, replay_after_fix, scenario, users

ALL_TABLES = tuple(oracle.TABLES)


@pytest.fixture
def reads(cluster, db):
    """The read-model database, next to `db` (the event store)."""
    name = f"{db.name}_reads"
    cluster.create_database(name)
    yield Database(cluster, name)
    if cluster.is_running():
        cluster.drop_database(name)


def assert_exact(events, reads, rows):
    """The target's read model is the fold of the source's events; the
    source's read model and status table are untouched."""
    with events.connect() as ev, reads.connect() as rm:
        expected = oracle.fold_database(ev).rows
        for table in ALL_TABLES:
            oracle.assert_same_rows(table, expected[table], oracle.read_table(rm, table))
        handled = oracle.handled_counts(ev)
    for name in oracle.KNOWN:
        assert rows[name]["events_processed"] == handled[name], f"{name} processed a different number"
    for table in ALL_TABLES + ("projection_metadata", "projection_dead_letter"):
        assert events.scalar(f"SELECT count(*) FROM read_model.{table}") == 0, \
            f"read_model.{table} of the event store database was written to"


def kill_backends(database, user="projectord"):
    """pg_terminate_backend for the daemon's sessions on one database only
    (asked from the maintenance database, which stays reachable)."""
    return Database(database.cluster, "postgres").scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND usename = %s AND pid <> pg_backend_pid()", (database.name, user))


def wait_progress(reads, minimum, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reads.scalar("SELECT coalesce(min(last_position), 0) FROM read_model.projection_metadata") >= minimum:
            return
        time.sleep(0.02)
    raise AssertionError(f"no projection reached position {minimum}")


def test_catch_up_kill_9_and_live_into_a_separate_database(db, reads, start_daemon):
    """Catch-up from the source into the target, a kill -9 midway, then
    live events woken by NOTIFY on the source: exact, nothing in the source's
    read model, and `projectord status` reads the target."""
    commands = generate_mix(seed=7001, n_events=20_000, days=4)
    backlog, live = commands[:-800], commands[-800:]  # one mix: its emails stay unique
    db.append_all(backlog)
    daemon = start_daemon(target=reads.conninfo, batch_size=500, poll_interval_ms=60_000)
    wait_progress(reads, 2_000)
    daemon.kill(signal.SIGKILL)
    daemon.wait()
    daemon.start()
    daemon.wait_caught_up(timeout=180)

    # Live: the poll timer is a minute, so only the source's NOTIFY wakes it.
    db.append_all(live, per_transaction=20)
    rows = daemon.wait_caught_up(timeout=30)
    assert_exact(db, reads, rows)

    status = run_cli(["-c", daemon.config_path, "status", "--json"])
    assert status.returncode == 0, status.stderr
    head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")
    by_name = {row["projection_name"]: row for row in json.loads(status.stdout)}
    assert sorted(by_name) == sorted(PROJECTIONS)
    for name, row in by_name.items():
        assert row["head_position"] == head and row["lag_events"] == 0, row
        assert row["healthy"] is True, row
    assert run_cli(["-c", daemon.config_path, "status", "--check"]).returncode == 0


def test_either_database_dropping_the_daemon_mid_catch_up(db, reads, start_daemon):
    """The daemon's sessions on the source only, then on the target only,
    are terminated again and again during catch-up: each side reconnects on
    its own and the result is exact (a fetch lost with the source must be
    sent again; a batch lost with the target must be retried from the
    stored checkpoint)."""
    db.append_all(generate_mix(seed=7003, n_events=25_000, days=4))
    daemon = start_daemon(target=reads.conninfo, batch_size=250, poll_interval_ms=200)
    killed = {"source": 0, "target": 0}
    for round_ in range(8):
        time.sleep(0.3)
        side, database = ("source", db) if round_ % 2 == 0 else ("target", reads)
        killed[side] += kill_backends(database)
    assert killed["source"] > 0 and killed["target"] > 0, killed
    rows = daemon.wait_caught_up(timeout=240)
    assert_exact(db, reads, rows)
    assert "connection lost" in daemon.log(tail=100_000)


def test_dead_letters_replay_and_rebuild_across_databases(db, reads, start_daemon):
    """Dead letters are written to the target with the source's payload;
    a replay reads their events from the source; a zero-downtime rebuild
    replays the source into shadow tables of the target and swaps them in."""
    positions = scenario(db)
    daemon = start_daemon(target=reads.conninfo, poll_interval_ms=200, projections={
        "catalog": {}, "event_stats": {}, "orders": {}, "users": {"on_error": "skip"}})
    daemon.wait_caught_up(timeout=30, allow_skipped=True)
    assert users(reads) == {ANN: "ann@example.com"}
    assert dead_letters(reads) == [(positions[BOB], "UserRegistered", "23505", True, True),
                                   (positions[CARL], "UserRegistered", None, True, True)]

    replay_after_fix(daemon, db, reads)

    db.append_all(generate_mix(seed=7004, n_events=3_000, days=2))
    rebuild = run_cli(["-c", daemon.config_path, "rebuild", "catalog", "event_stats"], timeout=120)
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    daemon.wait_caught_up(timeout=60, allow_skipped=True)
    with db.connect() as ev, reads.connect() as rm:
        # The scenario's users include a bad event the fold does not take.
        events = [e for e in ev.execute(oracle.EVENTS_SQL).fetchall() if e[1] != "User"]
        expected = oracle.fold(events).rows
        for table in ("categories", "products"):
            oracle.assert_same_rows(table, expected[table], oracle.read_table(rm, table))
        oracle.assert_same_rows("event_type_stats", oracle.expected_event_stats(ev),
                                oracle.read_table(rm, "event_type_stats"))
    assert reads.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'projectord_rebuild_%%'") == 0
    assert db.scalar("SELECT count(*) FROM read_model.projection_metadata") == 0


def test_target_without_the_schema_is_retried_not_fatal(db, cluster, start_daemon, workdir):
    """A target database without sql/ applied: the daemon says so once
    (issue 19: naming `projectord migrate`, not a raw "relation ... does not
    exist" from every projection) and asks again with backoff; once the
    migrations are applied it starts without a restart."""
    name = f"{db.name}_empty"
    cluster.create_database(name, schema=False)
    empty = Database(cluster, name)
    try:
        daemon = start_daemon(target=empty.conninfo, user=None, poll_interval_ms=200)
        deadline = time.monotonic() + 20
        while "has no projectord schema (no read_model.projection_metadata): run `projectord migrate`" \
                not in daemon.log(tail=100_000):
            assert daemon.alive() and time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        cluster.apply_schema(name)
        rows = daemon.wait_caught_up(timeout=60)
        assert sorted(rows) == sorted(PROJECTIONS)
        assert daemon.stop() == 0
    finally:
        if os.environ.get("PROJECTORD_KEEP_TMP") != "1" and cluster.is_running():
            cluster.drop_database(name)


@pytest.mark.parametrize("separate", [False, True], ids=["same_database", "separate_database"])
def test_apply_latency_from_commit_time_or_occurred_at(db, reads, start_daemon, separate):
    """The status table's apply_latency_ms (issue 4): with one database it
    runs from the event's commit timestamp (track_commit_timestamp is on in
    the test cluster), so an event that says it occurred an hour ago but
    was committed just now shows a latency of well under a minute; with a
    separate read-model database, whose cluster's commit log can not date
    the event store's transactions, it runs from occurred_at: an hour."""
    daemon = start_daemon(target=reads.conninfo if separate else None, poll_interval_ms=100)
    status_db = reads if separate else db
    daemon.wait_started()
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    db.append([Command("Session", uuid.uuid4(), 0, [event("PageViewed", {"path": "/"}, at=hour_ago)])])
    daemon.wait_caught_up(timeout=30)
    latency = status_db.scalar("SELECT apply_latency_ms FROM read_model.projection_metadata "
                               "WHERE projection_name = 'event_stats'")
    assert latency is not None
    if separate:
        assert 3_600_000 <= latency < 3_600_000 + 60_000, latency
    else:
        assert 0 <= latency < 60_000, latency


def test_sigterm_while_the_event_store_is_unreachable(db, reads, start_daemon):
    """The event store database refuses connections (the daemon's sessions
    there are gone): the projections wait for it, the status stays in the
    target, and SIGTERM still stops everything cleanly, at once."""
    db.append_all(generate_mix(seed=7005, n_events=8_000, days=2))
    daemon = start_daemon(target=reads.conninfo, batch_size=200, poll_interval_ms=100)
    wait_progress(reads, 1)
    db.cluster.psql("postgres", "-c", f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS false')
    try:
        assert kill_backends(db) > 0
        time.sleep(1)
        assert daemon.alive()
        started = time.monotonic()
        assert daemon.stop(timeout=10) == 0
        assert time.monotonic() - started < 5 * SLOWDOWN, "stopping waited for the event store"
        rows = {r[0]: r[1] for r in reads.query(
            "SELECT projection_name, status FROM read_model.projection_metadata")}
        assert set(rows.values()) == {"stopped"}, rows
    finally:
        db.cluster.psql("postgres", "-c", f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS true')
