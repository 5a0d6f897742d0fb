"""Lag in seconds next to lag in events (issue 19): the age of the oldest
event a projection has still to apply, in the view
read_model.projection_lag, in `projectord status` (text and JSON), in the
metric projectord_projection_lag_seconds, and judged by `status --check
--max-lag SECONDS`.

A projection is held back on purpose (one of its tables locked in a
transaction kept open) while events wait: its lag in seconds grows past the
threshold and --max-lag fails naming it, while the others stay at 0; once
released it catches up and everything says 0 again.
"""

import json
import random
import time

import pytest

from conftest import Database
from daemon import EXIT_FAILURE, EXIT_OK, PROJECTIONS, run_cli
from pgcluster import free_port
from test_health import users_registered
from test_metrics import scrape, value

HELD_S = 2.0


def lag_rows(conn):
    cur = conn.execute("SELECT projection_name, lag_events, lag_seconds, oldest_unapplied_position"
                       "  FROM read_model.projection_lag")
    return {r[0]: {"lag_events": r[1], "lag_seconds": r[2], "oldest": r[3]} for r in cur.fetchall()}


def status_json(daemon, *names):
    proc = run_cli(["-c", daemon.config_path, "status", "--json", *names])
    assert proc.returncode == EXIT_OK, proc.stderr
    return {r["projection_name"]: r for r in json.loads(proc.stdout)}


def max_lag(daemon, seconds, *names):
    return run_cli(["-c", daemon.config_path, "status", "--check", "--max-lag", str(seconds), *names])


def test_lag_in_seconds_while_held_back_and_after(db, start_daemon):
    port = free_port()
    rng = random.Random(19)
    # A long stall timeout: held back for a few seconds is lagging, not stalled.
    daemon = start_daemon(poll_interval_ms=200, extra=f"stall_timeout_ms = 60000;\n"
                                                        f'metrics = {{ listen = "127.0.0.1:{port}"; }};')
    db.append(users_registered(5, rng))
    daemon.wait_caught_up()
    with db.connect() as conn:
        assert all(r["lag_seconds"] == 0 and r["oldest"] is None for r in lag_rows(conn).values())
    assert max_lag(daemon, 0).returncode == EXIT_OK

    with db.connect(autocommit=False) as locker:
        locker.execute("LOCK TABLE read_model.users IN ACCESS EXCLUSIVE MODE")
        first = db.scalar("SELECT max(global_position) FROM event_store.domain_event") + 1
        db.append(users_registered(10, rng))
        held_at = time.monotonic()

        def others_caught_up(conn):
            rows = lag_rows(conn)
            return rows if all(r["lag_seconds"] == 0 for n, r in rows.items() if n != "users") \
                and rows["users"]["lag_seconds"] > HELD_S else None
        rows = daemon.wait_until(others_caught_up, HELD_S + 15, "users to lag, the others not")
        users = rows["users"]
        assert users["lag_events"] >= 10 and users["oldest"] == first, users
        # Not older than the events themselves.
        assert users["lag_seconds"] < time.monotonic() - held_at + 5, users

        doc = status_json(daemon)
        assert doc["users"]["lag_seconds"] > HELD_S and doc["users"]["lag_events"] >= 10
        assert doc["catalog"]["lag_seconds"] == 0
        text = run_cli(["-c", daemon.config_path, "status", "users"]).stdout
        assert "LAG TIME" in text.splitlines()[0], text

        proc = max_lag(daemon, HELD_S / 2)
        assert proc.returncode == EXIT_FAILURE, proc
        assert "users lags" in proc.stderr and f"more than --max-lag {HELD_S / 2:g}" in proc.stderr
        assert "catalog" not in proc.stderr, proc.stderr
        assert max_lag(daemon, 3600).returncode == EXIT_OK
        # Only the named ones are judged.
        assert max_lag(daemon, HELD_S / 2, "catalog", "orders").returncode == EXIT_OK

        deadline = time.monotonic() + 10
        while True:
            samples = scrape(port)
            if value(samples, "projectord_projection_lag_seconds", "users") > HELD_S \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert value(samples, "projectord_projection_lag_seconds", "users") > HELD_S
        assert value(samples, "projectord_projection_lag_seconds", "catalog") == 0
        locker.rollback()

    daemon.wait_caught_up(timeout=30)

    def no_lag(conn):
        rows = lag_rows(conn)
        return rows if all(r["lag_seconds"] == 0 for r in rows.values()) else None
    daemon.wait_until(no_lag, 10, "every lag to be 0 again")
    assert max_lag(daemon, 0.5).returncode == EXIT_OK
    assert status_json(daemon, "users")["users"]["lag_seconds"] == 0
    assert value(scrape(port), "projectord_projection_lag_seconds", "users") == 0


@pytest.fixture
def reads(request, cluster, db):
    """The read-model database (database.target) when the test's parameter
    says so, else None; set up before the daemons, so dropped after them."""
    if not request.param:
        yield None
        return
    reads = Database(cluster, f"{db.name}_reads")
    cluster.create_database(reads.name)
    yield reads
    if cluster.is_running():
        cluster.drop_database(reads.name)


@pytest.mark.parametrize("reads", [False, True], ids=["one-database", "database.target"], indirect=True)
def test_a_disabled_projection_lags_in_seconds(db, reads, start_daemon):
    """A projection disabled after it ran falls behind in seconds as events
    come: the view (one database) and `status` say so; the daemon has no
    series for it and --max-lag judges enabled projections only. With the
    read model in another database (database.target), whose view has no
    events to look at, `status` asks the event store's database."""
    target = reads.conninfo if reads else None
    first = start_daemon(target=target, poll_interval_ms=200)
    db.append(users_registered(3, random.Random(7)))
    first.wait_caught_up()
    assert first.stop() == 0

    port = free_port()
    daemon = start_daemon(target=target, poll_interval_ms=200,
                          projections={n: {"enabled": n != "users"} for n in PROJECTIONS},
                          extra=f'metrics = {{ listen = "127.0.0.1:{port}"; }};')
    db.append(users_registered(3, random.Random(8)))
    daemon.wait_caught_up()
    time.sleep(1.2)
    if reads is None:
        with db.connect() as conn:
            rows = lag_rows(conn)
        assert rows["users"]["lag_events"] == 3 and rows["users"]["lag_seconds"] > 1, rows
        assert rows["event_stats"]["lag_seconds"] == 0, rows
    doc = status_json(daemon)
    assert doc["users"]["lag_seconds"] > 1, doc["users"]
    assert doc["event_stats"]["lag_seconds"] == 0
    # users is disabled: --check and --max-lag judge enabled projections only.
    assert max_lag(daemon, 0.5).returncode == EXIT_OK
    samples = scrape(port)
    assert ("projectord_projection_lag_seconds", (("projection", "users"),)) not in samples
    assert value(samples, "projectord_projection_lag_seconds", "event_stats") == 0
    assert daemon.stop() == 0
