"""What the daemon asks of the server per live wake-up, counted with
pg_stat_statements (a cluster of this module's own, with the library
loaded). Counts, not times: these fail on the request pattern, not on a slow
machine."""

import os
import time
import uuid

import pytest

from conftest import Database, daemon_starter, own_cluster
from eventgen import Command, event, generate_mix

OPEN = "WITH w AS MATERIALIZED%"


@pytest.fixture(scope="module")
def stats_cluster():
    with own_cluster("projectord-pg-stats-",
                     settings={"shared_preload_libraries": "'pg_stat_statements'",
                               "pg_stat_statements.track_planning": "on"}) as c:
        yield c


@pytest.fixture
def sdb(stats_cluster):
    name = f"st{os.getpid()}"
    stats_cluster.create_database(name)
    db = Database(stats_cluster, name)
    db.execute("CREATE EXTENSION pg_stat_statements")
    yield db
    if stats_cluster.is_running():
        stats_cluster.drop_database(name)


@pytest.fixture
def start_sdaemon(request, sdb, workdir):
    with daemon_starter(request, workdir, sdb.conninfo) as start:
        yield start


def statement(db, pattern):
    """(calls, plans, shared blocks read or hit) of the statements whose text
    starts like pattern."""
    return db.query("SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(plans), 0)::bigint,"
                    "       coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint"
                    "  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    " WHERE d.datname = current_database() AND s.query LIKE %s", (pattern,))[0]


def live_wake_ups(db, daemon, n):
    """With the statistics reset, n transactions of one event 50 ms apart (a
    wake-up each); the status rows once the daemon has applied them."""
    db.execute("SELECT pg_stat_statements_reset()")
    for i in range(n):
        db.append([Command("Category", uuid.uuid4(), 0, [event("CategoryCreated", {"name": f"c{i}"})])])
        time.sleep(0.05)
    return daemon.wait_caught_up()


def test_a_window_open_is_not_planned_per_call(sdb, start_sdaemon):
    """A window's open runs a cached generic plan: left to choose, the plan
    cache planned it anew for every call, as its custom plans (which know
    lo) look cheaper: 0.16 ms of planning for 0.05 ms of work, most of a
    live wake-up's server time. And the generic plan must be the bitmap
    scan of the transaction_id index: over a table of this size the planner's
    generic choice was a sequential scan of the whole event table for every
    open (5 ms each), kept while the table grows."""
    # With an event table of some size, a custom plan (which sees that few
    # events are newer than lo) always looks cheaper than the generic one.
    # Appended in two transactions, as a bulk import of history would be:
    # with few distinct transaction ids the generic plan's estimate of the
    # window is most of the table, and a sequential scan wins unless ruled out.
    sdb.append_all(generate_mix(seed=808, n_events=20_000, days=2), per_transaction=10_000)
    sdb.execute("ANALYZE event_store.domain_event")
    daemon = start_sdaemon(poll_interval_ms=1000, batch_size=100)
    daemon.wait_caught_up(timeout=120)
    n = 40
    rows = live_wake_ups(sdb, daemon, n)
    assert rows["catalog"]["events_processed"] >= n
    opens, open_plans, blocks = statement(sdb, OPEN)
    assert opens >= n / 2, f"{opens} opens for {n} live transactions"
    assert open_plans <= opens / 4, f"the open was planned {open_plans} times in {opens} calls"
    table_blocks = sdb.scalar("SELECT pg_relation_size('event_store.domain_event')"
                              " / current_setting('block_size')::int")
    assert blocks / opens < table_blocks / 10, \
        f"an open touched {blocks / opens:.0f} blocks; the event table has {table_blocks}"


def test_a_live_wake_up_makes_the_fetch_settings_in_its_open(sdb, start_sdaemon):
    """A live wake-up's request is the open and the window's first batch. The
    fetch's planner settings are made by the open as it ends, not by a
    statement of their own between the two: that statement was one in four
    of a live wake-up's (11k in 15 s at 1,000 events/s). The open's own
    settings still go first: two set_config() statements per open before,
    one now (pg_stat_statements counts them as one statement: only their
    constants differ)."""
    daemon = start_sdaemon(poll_interval_ms=1000)
    daemon.wait_caught_up(timeout=60)
    n = 40
    live_wake_ups(sdb, daemon, n)
    opens = statement(sdb, OPEN)[0]
    settings = statement(sdb, "SELECT pg_catalog.set_config(%, true),%")[0]
    assert opens >= n / 2, f"{opens} opens for {n} live transactions"
    assert settings <= opens * 1.25, f"{settings} planner settings statements for {opens} opens"
