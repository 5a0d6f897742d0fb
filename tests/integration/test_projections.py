"""SPEC §4: each example projection on a scripted scenario, with the exact
rows written out by hand. The same scenarios also check the oracle's fold
(the catch-up and fault tests trust it), which needs no daemon."""

import pytest

import oracle
from scenarios import SCENARIOS


# --------------------------------------------------------------------------
# The oracle agrees with the hand-written rows (no daemon needed)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCENARIOS)
def test_oracle_fold_matches_hand_written_rows(db, name):
    sc = SCENARIOS[name]()
    db.append(sc.script.commands)
    with db.connect() as conn:
        f = oracle.fold_database(conn)
        for table, rows in sc.expected.items():
            oracle.assert_same_rows(table, rows, f.rows[table])
        assert f.ignored_missing[name] == sc.missing
        assert f.rows["event_type_stats"] == oracle.expected_event_stats(conn)


# --------------------------------------------------------------------------
# The daemon produces them
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCENARIOS)
def test_projection_scenario(db, start_daemon, name):
    sc = SCENARIOS[name]()
    daemon = start_daemon(batch_size=4)   # small batches: the scenario spans several
    db.append(sc.script.commands)
    daemon.wait_caught_up(timeout=30)
    rows = daemon.wait_ignored({name: sc.missing})
    with db.connect() as conn:
        for table, want in sc.expected.items():
            oracle.assert_same_rows(table, want, oracle.read_table(conn, table))
        oracle.assert_invariants(conn)
        handled = oracle.handled_counts(conn)[name]
    ignored = rows[name]["events_ignored"]
    assert sc.missing <= ignored <= sc.missing + sc.other, \
        f"{name}: the {sc.missing} updates of missing rows must be counted as ignored, got {ignored}"
    processed = rows[name]["events_processed"]
    assert handled - sc.missing - sc.other <= processed <= handled
    assert rows["event_stats"]["events_processed"] == sc.script.n_events
    assert rows["event_stats"]["events_ignored"] == 0


def test_all_projections_together_with_event_stats(db, start_daemon):
    """All three scenarios interleaved, checked against the hand-written rows
    and event_type_stats against the event table."""
    scenarios = [f() for f in SCENARIOS.values()]
    daemon = start_daemon(batch_size=7)
    # interleave: one command of each scenario in turn, keeping each order
    queues = [list(sc.script.commands) for sc in scenarios]
    commands = []
    while any(queues):
        for q in queues:
            if q:
                commands.append(q.pop(0))
    db.append(commands)
    daemon.wait_caught_up(timeout=30)
    with db.connect() as conn:
        for sc in scenarios:
            for table, want in sc.expected.items():
                oracle.assert_same_rows(table, want, oracle.read_table(conn, table))
        stats = oracle.read_table(conn, "event_type_stats")
        oracle.assert_same_rows("event_type_stats", oracle.expected_event_stats(conn), stats)
        assert sum(r["event_count"] for r in stats.values()) == sum(sc.script.n_events for sc in scenarios)
