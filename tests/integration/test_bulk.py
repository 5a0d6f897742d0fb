"""PJ_BULK statements (projection.h): a batch holds their events back and
sends each statement once for many events. The guarantees that must
survive this: one key's events keep their order, a bad event among held
ones is still found and only it is dead-lettered, and the statements find
their rows through the index however small the table was when their plan
was made."""

import time
import uuid

from eventgen import Command, at, event

BIGINT_MAX = 9223372036854775807


def register(uid, n, version=0):
    return Command("User", uid, version, [event("UserRegistered", {
        "email": f"u{n}@example.com", "first_name": "F", "last_name": "L"}, at=at(0))])


def test_one_keys_events_keep_their_order_among_held_ones(db, start_daemon):
    """Logins are held; a status change or a second login of the same user
    must send them first. All of it is one batch (the daemon starts after
    the events are in), so the held statements really hold several events."""
    ann, bob = uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(20)]
    commands = [register(ann, 0)]
    commands += [register(u, i + 2) for i, u in enumerate(others)]
    commands += [Command("User", bob, 0, [event("UserLoggedIn", {}, at=at(1))])]  # no row yet: ignored
    commands += [register(bob, 1, version=1)]
    commands += [Command("User", u, 1, [event("UserLoggedIn", {}, at=at(1))]) for u in others]
    commands += [Command("User", ann, 1, [
        event("UserLoggedIn", {}, at=at(1)),
        event("UserDeactivated", {}, at=at(2)),
        event("UserLoggedIn", {}, at=at(3)),
        event("UserLoggedIn", {}, at=at(4)),
        event("UserRoleChanged", {"role": "admin"}, at=at(5)),
        event("UserEmailVerified", {}, at=at(6)),
        event("UserReactivated", {}, at=at(7)),
    ])]
    commands += [Command("User", bob, 2, [event("UserLoggedIn", {}, at=at(8))])]
    commands += [Command("User", u, 2, [event("UserLoggedIn", {}, at=at(9))]) for u in others]
    db.append(commands)

    daemon = start_daemon()
    daemon.wait_caught_up(timeout=30)
    rows = daemon.wait_ignored({"users": 1})
    assert rows["users"]["events_ignored"] == 1
    got = {r[0]: r[1:] for r in db.query(
        "SELECT id, login_count, last_login_at, status, role, email_verified, updated_at"
        "  FROM read_model.users")}
    assert got[ann] == (3, at(4), "active", "admin", True, at(7))
    assert got[bob] == (1, at(8), "active", "user", False, at(8))
    for u in others:
        assert got[u] == (2, at(9), "active", "user", False, at(9))


def test_a_bad_event_among_held_ones_is_found_alone(db, start_daemon):
    """One login of five overflows login_count (an arithmetic result beyond
    bigint: a bad event). The statement for all five fails; the batch goes
    again one event at a time, and only that login is dead-lettered."""
    users = [uuid.uuid4() for _ in range(5)]
    db.append([register(u, i) for i, u in enumerate(users)])
    daemon = start_daemon(projections={"catalog": {}, "event_stats": {}, "orders": {},
                                       "users": {"on_error": "skip"}})
    daemon.wait_caught_up(timeout=30)
    db.execute("UPDATE read_model.users SET login_count = %s WHERE id = %s", (BIGINT_MAX, users[2]))

    # One transaction: one batch.
    db.append_all([Command("User", u, 1, [event("UserLoggedIn", {})]) for u in users])
    daemon.wait_caught_up(timeout=30, allow_skipped=True)

    bad = db.scalar("SELECT e.global_position FROM event_store.domain_event e"
                    "  JOIN event_store.event_stream s USING (stream_id)"
                    " WHERE s.aggregate_id = %s AND e.event_type = 'UserLoggedIn'", (users[2],))
    assert db.query("SELECT global_position, sqlstate FROM read_model.projection_dead_letter"
                    " WHERE projection_name = 'users'") == [(bad, "22003")]
    counts = dict(db.query("SELECT id, login_count FROM read_model.users"))
    assert counts == {u: (BIGINT_MAX if u == users[2] else 1) for u in users}
    assert "one event at a time" in daemon.log()


def table_scans(db, tables):
    return {r[0]: r[1:] for r in db.query(
        "SELECT relname, seq_scan, idx_scan FROM pg_stat_user_tables"
        " WHERE schemaname = 'read_model' AND relname = ANY(%s)", (tables,))}


def test_held_statements_find_rows_by_index_from_an_empty_table(db, start_daemon):
    """The plan of a bulk statement is made while its table is new and
    small, then cached. It must still look rows up by key: a plan that scans
    the whole table costs a scan per batch, which grows with the table."""
    users = [uuid.uuid4() for _ in range(600)]
    commands = []
    for i, u in enumerate(users):
        commands.append(register(u, i))
        commands.append(Command("User", u, 1, [event("UserLoggedIn", {}, at=at(1))]))
    seq_before = table_scans(db, ["users"])["users"][0]   # the schema's own checks
    daemon = start_daemon(batch_size=50)   # many batches: the plan is cached early
    db.append_all(commands, per_transaction=50)
    daemon.wait_caught_up(timeout=60)
    # Statistics reach the shared counters when a backend goes idle, within a second or so.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (table_scans(db, ["users"])["users"][1] or 0) < len(users):
        time.sleep(0.2)
    seq, idx = table_scans(db, ["users"])["users"]
    assert idx >= len(users), "the statistics did not arrive"
    assert seq == seq_before, f"users was scanned whole {seq - seq_before} times"
    assert db.scalar("SELECT sum(login_count) FROM read_model.users") == len(users)


def place(oid, cents, day):
    return Command("Order", oid, 0, [event("OrderPlaced", {"customer_id": str(uuid.uuid4()), "items": [
        {"product_id": str(uuid.uuid4()), "quantity": 1, "unit_price_cents": cents}]}, at=day)])


def cancel(oid, day):
    return Command("Order", oid, 1, [event("OrderCancelled", {"reason": "r"}, at=day)])


def test_a_days_sum_is_bad_only_where_position_order_overflows(db, start_daemon):
    """Held orders events change their day's sums out of position order
    (placements before cancellations). Near the bigint maximum that must
    neither make a good event bad nor let a bad one through."""
    day = at(10)
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    db.append([place(a, BIGINT_MAX - 30, day), place(b, 20, day)])   # the day at MAX - 10
    daemon = start_daemon(projections={"catalog": {}, "event_stats": {}, "users": {},
                                       "orders": {"on_error": "skip"}})
    daemon.wait_caught_up(timeout=30)

    def one_batch(commands):
        db.append_all(commands)   # one transaction
        daemon.wait_caught_up(timeout=30, allow_skipped=True)

    def revenue():
        return db.scalar("SELECT revenue_cents FROM read_model.daily_sales WHERE day = %s", (day.date(),))

    one_batch([cancel(b, day), place(c, 25, day)])   # MAX - 30, then MAX - 5: both good
    assert revenue() == BIGINT_MAX - 5
    assert db.scalar("SELECT count(*) FROM read_model.projection_dead_letter") == 0

    one_batch([place(d, 20, day), cancel(a, day)])   # the placement overflows, then the cancellation
    bad = db.scalar("SELECT global_position FROM event_store.domain_event e JOIN event_store.event_stream s"
                    " USING (stream_id) WHERE s.aggregate_id = %s", (d,))
    assert db.query("SELECT global_position, sqlstate FROM read_model.projection_dead_letter") == \
        [(bad, "22003")]
    assert revenue() == 25
    assert dict(db.query("SELECT id, status FROM read_model.orders")) == {
        a: "cancelled", b: "cancelled", c: "placed"}
