"""Zero-downtime rebuilds (SPEC §6 `rebuild`, issue 3): the shadow tables
are built from the whole event store while the live ones keep serving and
being updated, then swapped in with the checkpoint in one transaction.

A reader polling the tables must never see them shrink, the result must
equal a fresh computation from the event table, an interrupted rebuild must
leave the live tables as they were and can simply run again, and no shadow
schema may be left behind.
"""

import signal
import subprocess
import threading
import time

import oracle
from daemon import PROJECTIONS, Daemon, command, clean_env, run_cli, SLOWDOWN, ONLY_EVENT_STATS
from eventgen import bulk_events, generate_mix
from oracle import assert_event_stats_exact


SHADOWS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'projectord_rebuild%'"


def assert_exact(db, daemon):
    rows = daemon.wait_caught_up(timeout=120)
    with db.connect() as conn:
        oracle.assert_invariants(conn)
        oracle.assert_read_model_matches_fold(conn)
        handled = oracle.handled_counts(conn)
    for name in oracle.KNOWN:
        assert rows[name]["events_processed"] == handled[name], name
    assert db.query(SHADOWS) == [], "a shadow schema was left behind"
    return rows


class Reader(threading.Thread):
    """Polls row counts; products and orders only ever grow in these mixes,
    so any drop means a reader saw a partial or empty table."""

    TABLES = ("products", "categories", "users", "orders", "event_type_stats")

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.drops = []
        self.polls = 0

    def run(self):
        last = {}
        with self.db.connect() as conn:
            while not self.stop.is_set():
                for t in self.TABLES:
                    n = conn.execute(f"SELECT count(*) FROM read_model.{t}").fetchone()[0]
                    if n < last.get(t, 0):
                        self.drops.append((t, last[t], n))
                    last[t] = n
                self.polls += 1
                time.sleep(0.005)


class Writer(threading.Thread):
    def __init__(self, db, commands):
        super().__init__(daemon=True)
        self.db, self.commands = db, commands

    def run(self):
        self.db.append_all(self.commands, per_transaction=20)


def test_rebuild_all_while_readers_read_and_writers_write(db, start_daemon):
    commands = generate_mix(seed=31, n_events=15000, days=4)
    head, tail = commands[:len(commands) * 2 // 3], commands[len(commands) * 2 // 3:]
    db.append_all(head)
    daemon = start_daemon(poll_interval_ms=200)
    daemon.wait_caught_up(timeout=120)

    reader, writer = Reader(db), Writer(db, tail)
    reader.start()
    writer.start()
    result = run_cli(["-c", daemon.config_path, "rebuild", "--all"], timeout=240)
    writer.join()
    reader.stop.set()
    reader.join()

    assert result.returncode == 0, result.stdout + result.stderr
    for name in PROJECTIONS:
        assert f"{name}: rebuilt" in result.stdout
    assert reader.polls > 20
    assert reader.drops == [], f"a reader saw a table shrink: {reader.drops[:5]}"
    rows = assert_exact(db, daemon)
    assert all(rows[n]["rebuilt_at"] is not None for n in PROJECTIONS)


def test_rebuild_without_a_running_daemon(db, workdir):
    db.append_all(generate_mix(seed=32, n_events=5000, days=2))
    cli = Daemon(db.conninfo, workdir, name="cli")
    result = run_cli(["-c", cli.config_path, "rebuild", "catalog", "users"], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "catalog: rebuilt" in result.stdout and "users: rebuilt" in result.stdout
    with db.connect() as conn:
        oracle.assert_read_model_matches_fold(conn, tables=("categories", "products", "users"))
    assert db.query(SHADOWS) == []
    versions = dict(db.query("SELECT projection_name, projection_version FROM read_model.projection_metadata"))
    assert versions == {"catalog": 1, "users": 1}
    # The swapped-in tables keep the live ones' storage parameters (sql/V020).
    options = dict(db.query("SELECT relname, reloptions FROM pg_class "
                            "WHERE oid IN ('read_model.users'::regclass, 'read_model.products'::regclass)"))
    assert options == {"users": ["fillfactor=75"], "products": ["fillfactor=75"]}


def test_rebuild_of_an_unknown_projection_is_a_usage_error(db, workdir):
    cli = Daemon(db.conninfo, workdir, name="cli")
    result = run_cli(["-c", cli.config_path, "rebuild", "catalg"])
    assert result.returncode == 64
    assert "catalg" in result.stderr
    assert run_cli(["-c", cli.config_path, "rebuild"]).returncode == 64


def test_kill_9_during_rebuild_leaves_live_tables_and_rebuild_resumes(db, start_daemon):
    db.append_all(generate_mix(seed=33, n_events=30000, days=5))
    daemon = start_daemon(poll_interval_ms=200, batch_size=200)
    daemon.wait_caught_up(timeout=180)
    with db.connect() as conn:
        before = oracle.read_model(conn)

    waiter = subprocess.Popen(command(["-c", daemon.config_path, "rebuild", "--all"]),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=clean_env())
    try:
        def midway(conn):
            rows = conn.execute("SELECT last_position, events_total FROM read_model.projection_rebuild "
                                "WHERE projection_name = 'event_stats'").fetchall()
            return rows and 0.1 * rows[0][1] < rows[0][0] < 0.9 * rows[0][1]
        daemon.wait_until(midway, 60, "the event_stats rebuild to be midway", interval=0.01)
        daemon.kill(signal.SIGKILL)
        daemon.wait()

        with db.connect() as conn:
            assert oracle.read_model(conn) == before, "the live tables changed under a killed rebuild"

        daemon.start()
        out, _ = waiter.communicate(timeout=180 * SLOWDOWN)
        assert waiter.returncode == 0, out
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert_exact(db, daemon)


def test_version_change_rebuilds_on_start(db, start_daemon):
    db.append_all(generate_mix(seed=34, n_events=4000, days=2))
    daemon = start_daemon(poll_interval_ms=200)
    daemon.wait_caught_up(timeout=60)
    assert daemon.stop() == 0
    db.execute("UPDATE read_model.projection_metadata SET projection_version = 0 "
               "WHERE projection_name = 'users'")

    daemon.start()
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT rebuilt_at IS NOT NULL AND projection_version = 1 FROM read_model.projection_metadata "
        "WHERE projection_name = 'users'").fetchone()[0], 60, "users to be rebuilt")
    rows = assert_exact(db, daemon)
    assert rows["catalog"]["rebuilt_at"] is None, "only the changed projection is rebuilt"


def test_version_change_can_be_left_alone(db, start_daemon):
    db.append_all(generate_mix(seed=35, n_events=1000, days=1))
    daemon = start_daemon(poll_interval_ms=200, extra="rebuild_on_version_change = false;")
    daemon.wait_caught_up(timeout=60)
    assert daemon.stop() == 0
    db.execute("UPDATE read_model.projection_metadata SET projection_version = 0 "
               "WHERE projection_name = 'users'")
    daemon.start()
    daemon.wait_caught_up(timeout=60)
    time.sleep(1)
    assert db.scalar("SELECT rebuilt_at FROM read_model.projection_metadata "
                     "WHERE projection_name = 'users'") is None
    assert "rebuild_on_version_change = false" in daemon.log()


def test_a_rebuild_run_here_keeps_the_live_projection_going(db, start_daemon):
    """With no instance running, `rebuild` owns the projection itself for as
    long as the rebuild takes; its live runner must go on applying new
    events meanwhile. It opened no window after its first (no LISTEN and no
    poll in a one-shot command): the operations test saw event_stats stay
    20,000 events behind for the minutes a batch_size = 1 rebuild took."""
    bulk_events(db, 100, 1000)
    daemon = start_daemon(poll_interval_ms=100, level="info", batch_size=10,
                          projections=ONLY_EVENT_STATS)
    daemon.wait_caught_up(timeout=120)
    assert daemon.stop() == 0
    cmd = subprocess.Popen(command(["-c", daemon.config_path, "rebuild", "event_stats"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        deadline = time.monotonic() + 30 * SLOWDOWN
        while not db.query("SELECT 1 FROM read_model.projection_rebuild WHERE last_position > 0"):
            assert cmd.poll() is None and time.monotonic() < deadline, "the rebuild did not start"
            time.sleep(0.05)
        bulk_events(db, 1, 20)
        head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")
        # The live row at the head while the rebuild is still under way (its row is there).
        while True:
            live, rebuilding = db.query(
                "SELECT m.last_position >= %s, EXISTS (SELECT 1 FROM read_model.projection_rebuild r"
                "                                      WHERE r.projection_name = m.projection_name)"
                "  FROM read_model.projection_metadata m WHERE projection_name = 'event_stats'",
                (head,))[0]
            if live:
                break
            assert rebuilding, "the rebuild was done before the live projection applied the new events"
            assert time.monotonic() < deadline, "the live projection stood still during the rebuild"
            time.sleep(0.05)
        assert rebuilding
    finally:
        out, _ = cmd.communicate(timeout=300 * SLOWDOWN)
    assert cmd.returncode == 0, out
    assert_event_stats_exact(db)


def test_a_request_reaches_the_running_daemon_by_notification(db, start_daemon):
    """`rebuild` writes its request to the status row and announces it on
    the requests' channel (fleet.h): the owner reads it at once, not at its
    next heartbeat (a request read wakes every projection's runner, so two
    sent together are both read, also when their notifications arrive as
    one)."""
    daemon = start_daemon(poll_interval_ms=200)
    db.append_all(generate_mix(seed=41, n_events=2000, days=2))
    daemon.wait_caught_up()
    result = run_cli(["-c", daemon.config_path, "rebuild", "catalog", "users"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "listener: a request for " in daemon.log(tail=1_000_000)
    assert "catalog: rebuilt" in result.stdout and "users: rebuilt" in result.stdout
    assert_exact(db, daemon)
