"""SPEC §4: each example projection on a scripted scenario, with the exact
rows written out by hand, run through the projection authors' harness
(projection_harness.py: the daemon, then a rebuild). The same scenarios
also check the oracle's fold (the catch-up and fault tests trust it),
which needs no daemon."""

import uuid

import pytest

import oracle
from eventgen import at
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
# The daemon produces them: each example projection through the harness a
# projection author uses (projection_harness.py), alone, then rebuilt
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCENARIOS)
def test_projection_scenario(projection_case, name):
    sc = SCENARIOS[name]()
    case = projection_case(name, batch_size=4)   # small batches: the scenario spans several
    case.append(sc.script.commands).run()
    for table, want in sc.expected.items():
        case.assert_rows(table, want)
    with case.db.connect() as conn:
        handled = oracle.handled_counts(conn)[name]
    ignored = case.status["events_ignored"]
    assert sc.missing <= ignored <= sc.missing + sc.other, \
        f"{name}: the {sc.missing} updates of missing rows must be counted as ignored, got {ignored}"
    processed = case.status["events_processed"]
    assert handled - sc.missing - sc.other <= processed <= handled
    assert case.bad == []


def test_event_stats_scenario(projection_case):
    """event_stats on all three scenarios' events: a row per event type,
    exactly as computed from the event table."""
    case = projection_case("event_stats", batch_size=7)
    for sc in SCENARIOS.values():
        case.append(sc().script.commands)
    case.run()
    with case.db.connect() as conn:
        expected = oracle.expected_event_stats(conn)
    case.assert_rows("event_type_stats", expected)
    assert case.status["events_processed"] == sum(r["event_count"] for r in expected.values())
    assert case.status["events_ignored"] == 0


def test_orders_bad_item_lines_are_dead_lettered_with_where_they_are(projection_case):
    """Nested item lines are read with projection.h's accessors; their
    errors name the line, and the good orders around them are applied."""
    o1, o2, o3, c = (uuid.uuid4() for _ in range(4))
    line = {"product_id": str(uuid.uuid4()), "quantity": 2, "unit_price_cents": 150}
    case = projection_case("orders")
    case.emit("Order", o1, "OrderPlaced", {"customer_id": str(c), "items": [line, "x"]}, at(0, 9))
    case.emit("Order", o2, "OrderPlaced", {"customer_id": str(c), "items": [line, {"quantity": 1}]},
              at(0, 10))
    case.emit("Order", o3, "OrderPlaced", {"customer_id": str(c), "items": [line, line]}, at(0, 11))
    case.emit("Order", o3, "OrderItemAdded", dict(line, quantity=0), at(0, 12))
    case.run()
    case.assert_rows("orders", {o3: {"status": "placed", "item_count": 4, "total_cents": 600}})
    case.assert_rows("daily_sales", {at(0).date(): {"orders_placed": 1, "revenue_cents": 600}})
    assert case.bad == [
        ("OrderPlaced", "items[1] must be a JSON object (got string)"),
        ("OrderPlaced", "items[1]: field 'product_id' is missing"),
        ("OrderItemAdded", "field 'quantity' must be > 0 (got 0)"),
    ]


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
