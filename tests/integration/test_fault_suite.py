"""The fault suite (issue 5): the daemon under faults while writers append,
each scenario ending with an exact check of the read model against an
independent fold of the event table (faults.assert_exact), so a lost,
duplicated or reordered event fails it.

1. PostgreSQL restarted (fast and immediate) under a running daemon;
2. the daemon's connections killed with pg_terminate_backend;
3. kill -9 of the daemon during catch-up and live load;
4. writers that take their transaction id early and hold long
   transactions, mixed with restarts, terminations and kills;
5. lock_timeout / statement_timeout hit inside a batch: retried, never
   skipped (on_error = "skip" and still no dead letter).

Writers (faults.Writers) run in every scenario: plain ones, one that takes
its xid early, one holding long transactions that append nothing.

Counts are the CI's (the whole file in a few minutes). PROJECTORD_FAULTS=full
runs the issue's full counts (10 restarts, 30 terminations, 30 kills);
tests/soak/soak.py mixes them all for as long as asked. A run's seed is
printed; PROJECTORD_FAULT_SEED=N replays it.
"""

import os
import random
import signal
import time
import uuid

import pytest

import faults
from daemon import SLOWDOWN
from faults import metadata
from eventgen import Command, event

FULL = os.environ.get("PROJECTORD_FAULTS") == "full"
COUNTS = {
    "pg_restarts": 10 if FULL else 4,
    "terminations": 30 if FULL else 10,
    "kills": 30 if FULL else 8,
}


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("PROJECTORD_FAULT_SEED") or random.randrange(1, 1 << 30))
    print(f"\n{request.node.name}: seed {seed} (PROJECTORD_FAULT_SEED={seed} replays it)")
    return random.Random(seed)


@pytest.fixture
def admin(cluster, db):
    """A superuser conninfo for db whose sessions ignore the database's
    timeouts (the daemon's role may be a least-privilege one)."""
    return cluster.conninfo(db.name)


def head(conninfo):
    with faults.connect(conninfo) as conn:
        return conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]


def wait_passed(daemon, position, timeout, what):
    """Every enabled projection has applied or passed `position`."""
    def passed(conn):
        rows = metadata(conn)
        return all(n in rows and rows[n]["last_position"] >= position for n in daemon.enabled) and rows
    return daemon.wait_until(passed, timeout, what)


def count_events(conninfo):
    with faults.connect(conninfo) as conn:
        return conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]


def finish(daemon, admin, writers, base, timeout=120):
    """Stop the writers, let the daemon catch up, check exactly. `base`:
    events stored apart from the writers' (they must account for the rest:
    an append whose outcome was unknown was neither lost nor doubled).
    Returns the writers' statistics."""
    stats = writers.stop()
    daemon.wait_caught_up(timeout=timeout)
    with faults.connect(admin) as conn:
        faults.assert_exact(conn, daemon.enabled)
        total = conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]
    print(f"writers: {stats}; events in store: {total}")
    assert total == base + stats.get("events", 0), "the writers' bookkeeping and the store disagree"
    return stats


def assert_log_mentions(daemon, *needles):
    log = daemon.log(tail=100000)
    for needle in needles:
        assert needle in log, f"the daemon's log never says {needle!r}"


def new_user(db):
    uid = uuid.uuid4()
    db.append([Command("User", uid, 0, [event("UserRegistered", {
        "email": f"{uid}@example.com", "first_name": "Late", "last_name": "Comer"})])])
    return uid


# ---------------------------------------------------------------------------
# 1. PostgreSQL restarts
# ---------------------------------------------------------------------------

def test_postgres_restarts_while_writers_append(cluster, db, admin, start_daemon, rng,
                                                restarts=COUNTS["pg_restarts"]):
    # Only NOTIFY can wake it quickly: the poll is a minute.
    daemon = start_daemon(batch_size=100, poll_interval_ms=60_000, level="info")
    pid = daemon.proc.pid
    db.append_all(faults.mix(seed=rng.randrange(1 << 30), n_events=3000))
    daemon.wait_caught_up(timeout=60)
    backlog = faults.mix(seed=rng.randrange(1 << 30), n_events=1000 * restarts)
    chunk = len(backlog) // restarts
    base = count_events(admin)
    writers = faults.Writers(admin, refill=faults.mix_feeder(rng.randrange(1 << 30), 2000),
                             plain=2, early=1, holders=1, seed=rng.randrange(1 << 30),
                             pace=(0.0, 0.03)).start()
    try:
        for n in range(restarts):
            mode = ("fast", "immediate")[n % 2]
            # A backlog, so the restart hits batches in flight, and live writers.
            part = backlog[n * chunk:(n + 1) * chunk]
            db.append_all(part, per_transaction=50)
            base += sum(len(c.events) for c in part)
            time.sleep(rng.uniform(0.0, 0.4))
            target = head(admin)
            cluster.restart(mode)
            writers.wait_commits(5, timeout=60 * SLOWDOWN)
            wait_passed(daemon, target, 90, f"the daemon to resume after restart {n + 1} ({mode})")
            assert daemon.proc.pid == pid and daemon.alive()
            time.sleep(rng.uniform(0.1, 0.8))
        finish(daemon, admin, writers, base)
    finally:
        writers.stop_event.set()
    assert daemon.proc.pid == pid and daemon.alive(), "the daemon must survive every restart"
    assert_log_mentions(daemon, "connection lost", "reconnecting in")

    # Re-LISTENed: with a 60 s poll, a new event shows within seconds.
    faults.wait_backends(admin, db.name, len(daemon.enabled) + 1, 30 * SLOWDOWN, alive=daemon.alive)
    started = time.monotonic()
    uid = new_user(db)
    daemon.wait_until(lambda conn: conn.execute("SELECT 1 FROM read_model.users WHERE id = %s",
                                                (uid,)).fetchone(),
                      5, "a NOTIFY-driven wake-up after the last restart (LISTEN re-issued)")
    print(f"wake-up latency after {restarts} restarts: {time.monotonic() - started:.3f}s")
    daemon.wait_caught_up()
    with faults.connect(admin) as conn:
        faults.assert_exact(conn)


# ---------------------------------------------------------------------------
# 2. pg_terminate_backend on the daemon's connections
# ---------------------------------------------------------------------------

def test_backends_terminated_while_writers_append(db, admin, start_daemon, rng,
                                                  terminations=COUNTS["terminations"]):
    """Odd rounds terminate a random subset of the daemon's sessions at a
    random moment; even rounds wait for a session caught inside a batch's
    transaction (applying, or between its statements and its checkpoint)
    and terminate that one."""
    daemon = start_daemon(batch_size=50, poll_interval_ms=1000, level="info")
    pid = daemon.proc.pid
    db.append_all(faults.mix(seed=rng.randrange(1 << 30), n_events=5000))
    base = count_events(admin)
    writers = faults.Writers(admin, refill=faults.mix_feeder(rng.randrange(1 << 30), 2000),
                             plain=2, early=1, holders=1, seed=rng.randrange(1 << 30)).start()
    killed, in_batch = 0, []
    try:
        for n in range(terminations):
            faults.wait_backends(admin, db.name, 1, 30 * SLOWDOWN, alive=daemon.alive)
            time.sleep(rng.uniform(0.05, 0.6))
            with faults.connect(admin) as conn:
                hit = faults.terminate_in_transaction(conn, db.name) if n % 2 else None
                if hit:
                    in_batch.append(hit)
                    killed += 1
                else:
                    killed += faults.terminate_backends(conn, db.name, rng)
            assert daemon.alive() and daemon.proc.pid == pid, f"the daemon died after termination {n + 1}"
        finish(daemon, admin, writers, base)
    finally:
        writers.stop_event.set()
    print(f"{terminations} rounds terminated {killed} daemon sessions, {len(in_batch)} inside a batch: {in_batch}")
    assert killed >= terminations
    assert daemon.proc.pid == pid and daemon.alive()
    assert_log_mentions(daemon, "connection lost")


# ---------------------------------------------------------------------------
# 3. kill -9 of the daemon
# ---------------------------------------------------------------------------

def kill_9(daemon):
    daemon.kill(signal.SIGKILL)
    assert daemon.wait() == -signal.SIGKILL


def sleep_until_kill(daemon, rng, n, span):
    """Sleep until a random moment to kill the daemon: odd rounds count from
    the start of its process (the kill may land in its startup), even rounds
    from the moment all its projections run."""
    if n % 2 == 0:
        daemon.wait_started()
    time.sleep(rng.uniform(*span) * SLOWDOWN)


def wait_mid_catch_up(daemon, admin, rng, timeout=60):
    """Return once the slowest projection is a random part of the way
    through the backlog, so the kill that follows lands in the middle of a
    catch-up by construction rather than by timing (a fast daemon is done
    with a backlog before a random sleep ends; a slow one, under valgrind,
    would only ever be killed while starting)."""
    daemon.wait_started()
    with faults.connect(admin) as conn:
        def slowest():
            return min(r["last_position"] for r in metadata(conn).values())
        floor = slowest()
        top = conn.execute("SELECT max(global_position) FROM event_store.domain_event").fetchone()[0]
        target = floor + (top - floor) * rng.uniform(0.1, 0.6)
        deadline = time.monotonic() + timeout * SLOWDOWN
        while slowest() < target:
            assert daemon.alive() and time.monotonic() < deadline, "the catch-up did not progress"
            time.sleep(0.005)


def test_kill_9_during_catch_up_and_live_load(db, admin, start_daemon, rng, kills=COUNTS["kills"]):
    db.append_all(faults.mix(seed=rng.randrange(1 << 30), n_events=30_000))
    backlog_head = head(admin)
    daemon = start_daemon(batch_size=100, poll_interval_ms=500, level="info")
    mid_catch_up = 0
    catch_up_kills = kills // 2
    for n in range(catch_up_kills):
        if n % 2 == 0:
            wait_mid_catch_up(daemon, admin, rng)
        else:
            time.sleep(rng.uniform(0.1, 0.7) * SLOWDOWN)  # from its start: may land in startup
        kill_9(daemon)
        with faults.connect(admin) as conn:
            rows = metadata(conn)
            if rows:
                mid_catch_up += min(r["last_position"] for r in rows.values()) < backlog_head
            faults.assert_stats_match_checkpoint(conn)
        # A fresh backlog while it is down: every round restarts into a catch-up.
        db.append_all(faults.mix(seed=rng.randrange(1 << 30), n_events=6000))
        backlog_head = head(admin)
        daemon.start()

    base = count_events(admin)
    writers = faults.Writers(admin, refill=faults.mix_feeder(rng.randrange(1 << 30), 2000),
                             plain=2, early=1, holders=1, seed=rng.randrange(1 << 30)).start()
    try:
        for n in range(kills - catch_up_kills):
            writers.wait_commits(3, timeout=60 * SLOWDOWN)
            sleep_until_kill(daemon, rng, n, (0.1, 1.0))
            kill_9(daemon)
            with faults.connect(admin) as conn:
                faults.assert_stats_match_checkpoint(conn)
            time.sleep(rng.uniform(0.0, 0.3))   # writers go on while it is down
            daemon.start()
        finish(daemon, admin, writers, base)
    finally:
        writers.stop_event.set()
    print(f"{kills} kills, {mid_catch_up} of the first {catch_up_kills} in the middle of catch-up")
    assert mid_catch_up >= 1, "no kill landed during catch-up: the scenario tested nothing"


# ---------------------------------------------------------------------------
# 4. Early-xid writers and long transactions, mixed with the faults above
# ---------------------------------------------------------------------------

def test_early_xid_writers_mixed_with_faults(cluster, db, admin, start_daemon, rng):
    daemon = start_daemon(batch_size=50, poll_interval_ms=1000, level="info")
    db.append_all(faults.mix(seed=rng.randrange(1 << 30), n_events=2000))
    base = count_events(admin)
    writers = faults.Writers(admin, refill=faults.mix_feeder(rng.randrange(1 << 30), 2000),
                             plain=1, early=3, holders=2, seed=rng.randrange(1 << 30),
                             hold=(0.0, 0.3), long_hold=(1.0, 4.0), pace=(0.0, 0.01)).start()
    plan = ["restart"] + ["terminate"] * 3 + ["kill"] * 2
    rng.shuffle(plan)
    try:
        for what in plan:
            writers.wait_commits(10, timeout=60 * SLOWDOWN)
            time.sleep(rng.uniform(0.1, 0.8))
            if what == "restart":
                cluster.restart("immediate")
            elif what == "terminate":
                with faults.connect(admin) as conn:
                    faults.terminate_backends(conn, db.name, rng)
            else:
                kill_9(daemon)
                daemon.start()
        writers.wait_commits(20, timeout=60 * SLOWDOWN)
        # A fast daemon gets through the plan before a holder's long
        # transaction ends: let at least one end, and one early writer commit.
        deadline = time.monotonic() + 30 * SLOWDOWN
        while writers.stats_get("holds") == 0 or writers.stats_get("early_commits") == 0:
            writers.check()
            assert time.monotonic() < deadline, "no long transaction or early commit ended"
            time.sleep(0.05)
        stats = finish(daemon, admin, writers, base)
    finally:
        writers.stop_event.set()
    assert stats.get("early_commits", 0) > 0 and stats.get("holds", 0) > 0
    with faults.connect(admin) as conn:
        inversions = faults.count_inversions(conn)
    print(f"streams with a later version in an older transaction: {inversions}")
    assert inversions > 0, "no early-xid inversion happened: the scenario tested nothing"


# ---------------------------------------------------------------------------
# 5. lock_timeout / statement_timeout inside a batch
# ---------------------------------------------------------------------------

SKIP_ALL = {name: {"on_error": "skip"} for name in ("catalog", "users", "orders", "event_stats")}


def set_database_timeouts(admin, dbname, daemon, **settings):
    """ALTER DATABASE ... SET (or RESET for None), then make the daemon take
    new sessions (the setting applies at connect) and wait for them."""
    with faults.connect(admin) as conn:
        for name, value in settings.items():
            if value is None:
                conn.execute(f'ALTER DATABASE "{dbname}" RESET {name}')
            else:
                conn.execute(f'ALTER DATABASE "{dbname}" SET {name} = \'{value}\'')
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        faults.terminate_backends(conn, dbname)
    faults.wait_backends(admin, dbname, len(daemon.enabled) + 1, 30 * SLOWDOWN, since=since,
                         alive=daemon.alive)


def watch_error(admin, projection, sqlstate, seconds):
    """Poll the status table for `seconds`: did `projection` record
    `sqlstate` as its last error? Also: nothing dead-lettered, not failed."""
    seen = False
    end = time.monotonic() + seconds
    with faults.connect(admin) as conn:
        while time.monotonic() < end:
            row = metadata(conn)[projection]
            assert row["status"] != "failed", f"{projection} failed: {row['last_error']}"
            seen |= row["last_error_sqlstate"] == sqlstate
            time.sleep(0.05)
        dead = conn.execute("SELECT count(*) FROM read_model.projection_dead_letter").fetchone()[0]
    assert dead == 0, "a batch that timed out was dead-lettered"
    return seen


def timeout_scenario(db, admin, start_daemon, rng, setting, value, sqlstate, fault):
    daemon = start_daemon(batch_size=50, poll_interval_ms=200, level="info", projections=SKIP_ALL)
    pid = daemon.proc.pid
    db.append_all(faults.mix(seed=rng.randrange(1 << 30), n_events=2000))
    daemon.wait_caught_up(timeout=60)
    base = count_events(admin)
    writers = faults.Writers(admin, refill=faults.mix_feeder(rng.randrange(1 << 30), 2000),
                             plain=2, early=1, holders=0, seed=rng.randrange(1 << 30),
                             pace=(0.0, 0.03)).start()
    try:
        set_database_timeouts(admin, db.name, daemon, **{setting: value})
        with fault():
            seen = watch_error(admin, "catalog", sqlstate, 3.0 * SLOWDOWN)
        # Reported while the fault lasted, and never skipped.
        assert seen, f"catalog's last_error_sqlstate never showed {sqlstate}"
        set_database_timeouts(admin, db.name, daemon, **{setting: None})
        writers.wait_commits(10, timeout=60 * SLOWDOWN)
        finish(daemon, admin, writers, base)
    finally:
        writers.stop_event.set()
        with faults.connect(admin) as conn:
            conn.execute(f'ALTER DATABASE "{db.name}" RESET {setting}')
    assert daemon.proc.pid == pid and daemon.alive()
    assert_log_mentions(daemon, f"(SQLSTATE {sqlstate}); retrying with backoff")
    with faults.connect(admin) as conn:
        row = metadata(conn)["catalog"]
    assert row["last_error_sqlstate"] == sqlstate and row["events_skipped"] == 0


def test_lock_timeout_inside_a_batch_is_retried_not_skipped(db, admin, start_daemon, rng):
    """Another session holds read_model.products locked: catalog's batches
    fail with 55P03 (lock_timeout = 100ms) and are retried until it lets go."""
    from contextlib import contextmanager

    @contextmanager
    def products_locked():
        with faults.connect(admin, autocommit=False) as conn:
            conn.execute("LOCK TABLE read_model.products IN ACCESS EXCLUSIVE MODE")
            yield
            conn.rollback()

    timeout_scenario(db, admin, start_daemon, rng, "lock_timeout", "100ms", "55P03", products_locked)


def test_statement_timeout_inside_a_batch_is_retried_not_skipped(db, admin, start_daemon, rng):
    """A slow batch: a trigger makes every write to read_model.products take
    0.5 s, statement_timeout is 200ms: catalog's batches fail with 57014
    and are retried until the trigger goes."""
    from contextlib import contextmanager

    @contextmanager
    def slow_products():
        with faults.connect(admin) as conn:
            conn.execute("""
                CREATE FUNCTION read_model.fault_slow_write() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$""")
            conn.execute("""CREATE TRIGGER fault_slow_write BEFORE INSERT OR UPDATE ON read_model.products
                            FOR EACH ROW EXECUTE FUNCTION read_model.fault_slow_write()""")
        try:
            yield
        finally:
            with faults.connect(admin) as conn:
                conn.execute("DROP TRIGGER fault_slow_write ON read_model.products")
                conn.execute("DROP FUNCTION read_model.fault_slow_write()")

    timeout_scenario(db, admin, start_daemon, rng, "statement_timeout", "200ms", "57014", slow_products)
