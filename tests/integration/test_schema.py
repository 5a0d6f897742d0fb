"""SPEC §2 and §5 schema: migrations, append_events, the NOTIFY wake-up and
the status table's check query. No daemon involved."""

import datetime as dt
import select
import threading
import time
import uuid

import psycopg
import pytest

from eventgen import Command, append, event

UTC = dt.timezone.utc


def positions(db, aggregate_id):
    return db.query("""SELECT e.aggregate_version, e.global_position, e.event_type
                         FROM event_store.domain_event e JOIN event_store.event_stream s USING (stream_id)
                        WHERE s.aggregate_id = %s ORDER BY e.aggregate_version""", (aggregate_id,))


def stream_version(db, aggregate_id):
    return db.scalar("SELECT version FROM event_store.event_stream WHERE aggregate_id = %s", (aggregate_id,))


def test_migrations_create_everything_and_apply_twice(cluster):
    name = "schema_twice"
    cluster.create_database(name)          # applies every sql/V*.sql
    conn_s = cluster.conninfo(name)
    with psycopg.connect(conn_s, autocommit=True) as conn:
        conn.execute("""SELECT event_store.append_events('Category', gen_random_uuid(), 0,
                        ARRAY['{"event_type":"CategoryCreated","event_data":{"name":"x"}}'::jsonb])""")
    cluster.apply_schema(name)             # and again: idempotent, data kept
    with psycopg.connect(conn_s, autocommit=True) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
        assert {"event_store", "read_model", "command_model"} <= schemas
        extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        assert {"uuid-ossp", "pgcrypto"} <= extensions
        tables = {r[0] for r in conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname <> 'pg_catalog'")}
        assert {"event_store.event_stream", "event_store.domain_event",
                "read_model.projection_metadata", "read_model.projection_dead_letter",
                "read_model.categories", "read_model.products", "read_model.users",
                "read_model.orders", "read_model.daily_sales", "read_model.event_type_stats"} <= tables
        assert conn.execute("SELECT count(*) FROM read_model.projection_status").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0] == 1
        triggers = conn.execute("""SELECT count(*) FROM pg_trigger
                                    WHERE tgrelid = 'event_store.domain_event'::regclass
                                      AND NOT tgisinternal""").fetchone()[0]
        assert triggers == 1, "applying twice must not duplicate the NOTIFY trigger"
    cluster.drop_database(name)


def test_domain_event_columns(db):
    cols = dict(db.query("""SELECT column_name, data_type FROM information_schema.columns
                             WHERE table_schema = 'event_store' AND table_name = 'domain_event'"""))
    assert cols["global_position"] == "bigint"
    assert cols["transaction_id"] == "xid8"
    assert cols["event_data"] == "jsonb"
    assert cols["occurred_at"] == "timestamp with time zone"
    dead = {r[0] for r in db.query("""SELECT column_name FROM information_schema.columns
                                       WHERE table_schema = 'read_model'
                                         AND table_name = 'projection_dead_letter'""")}
    assert {"projection_name", "global_position", "event_id", "event_type", "error", "payload",
            "failed_at"} <= dead


STATUSES = {"products": ("product_status", ("active", "discontinued")),
            "users": ("user_status", ("active", "inactive")),
            "orders": ("order_status", ("placed", "shipped", "cancelled"))}


def test_read_model_statuses_are_enforced_without_table_checks(db):
    """A table CHECK is rebuilt from its text by every INSERT and UPDATE of
    the table (V023): the read models the daemon writes once per event keep
    their status rules as domains, still text to clients."""
    checks = db.query("""SELECT conrelid::regclass::text, conname FROM pg_constraint
                          WHERE contype = 'c' AND conrelid = ANY(%s::regclass[])""",
                      ([f"read_model.{t}" for t in STATUSES],))
    assert checks == []
    for table, (domain, allowed) in STATUSES.items():
        data_type = db.scalar("""SELECT data_type FROM information_schema.columns
                                  WHERE table_schema = 'read_model' AND table_name = %s
                                    AND column_name = 'status'""", (table,))
        assert data_type == "text"
        for value in allowed:
            assert db.scalar(f"SELECT %s::text::read_model.{domain}", (value,)) == value
        with pytest.raises(psycopg.errors.CheckViolation):
            db.scalar(f"SELECT 'bogus'::text::read_model.{domain}")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("""INSERT INTO read_model.orders (id, customer_id, status, placed_at)
                      VALUES (gen_random_uuid(), gen_random_uuid(), 'lost', now())""")


def test_new_stream_with_expected_version_zero(db):
    aid = uuid.uuid4()
    with db.connect() as conn:
        stream_id = conn.execute("SELECT event_store.append_events(%s, %s, %s, %s::jsonb[])",
                                 Command("Order", aid, 0, [event("A", {}), event("B", {})]).params()
                                 ).fetchone()[0]
    assert isinstance(stream_id, uuid.UUID)
    assert stream_version(db, aid) == 2
    assert [r[0] for r in positions(db, aid)] == [1, 2]


def test_version_conflict_raises_p0409(db):
    aid = uuid.uuid4()
    with db.connect() as conn:
        append(conn, Command("User", aid, 0, [event("UserRegistered", {})]))
        for wrong in (0, 2, 5):
            with pytest.raises(psycopg.Error) as info:
                append(conn, Command("User", aid, wrong, [event("UserLoggedIn", {})]))
            assert info.value.sqlstate == "P0409"
        append(conn, Command("User", aid, 1, [event("UserLoggedIn", {})]))
    assert stream_version(db, aid) == 2


def test_null_expected_version_appends_without_check(db):
    aid = uuid.uuid4()
    with db.connect() as conn:
        append(conn, Command("Category", aid, None, [event("CategoryCreated", {"name": "a"})]))
        append(conn, Command("Category", aid, None, [event("CategoryRenamed", {"name": "b"}),
                                                     event("CategoryRenamed", {"name": "c"})]))
    assert stream_version(db, aid) == 3
    assert [(r[0], r[2]) for r in positions(db, aid)] == [
        (1, "CategoryCreated"), (2, "CategoryRenamed"), (3, "CategoryRenamed")]


def test_positions_follow_aggregate_version(db):
    a, b = uuid.uuid4(), uuid.uuid4()
    with db.connect() as conn:
        append(conn, Command("X", a, 0, [event(f"E{i}", {"i": i}) for i in range(5)]))
        append(conn, Command("X", b, 0, [event("E", {})]))
        append(conn, Command("X", a, 5, [event(f"E{i}", {"i": i}) for i in range(5, 8)]))
    rows = positions(db, a)
    assert [r[0] for r in rows] == list(range(1, 9))
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert len({r[1] for r in rows}) == 8


def test_occurred_at_honoured_and_defaulted(db):
    aid = uuid.uuid4()
    when = dt.datetime(2023, 12, 31, 23, 59, 58, 123456, tzinfo=UTC)
    with db.connect() as conn:
        before = conn.execute("SELECT now()").fetchone()[0]
        append(conn, Command("X", aid, 0, [event("E", {}, at=when), event("F", {})]))
    got = dict(db.query("""SELECT e.event_type, e.occurred_at FROM event_store.domain_event e
                            JOIN event_store.event_stream s USING (stream_id) WHERE s.aggregate_id = %s""",
                        (aid,)))
    assert got["E"] == when
    assert got["F"] >= before


def test_concurrent_appends_to_one_stream_are_serialized(db):
    """The second writer waits for the first's lock, then sees the new
    version and gets a conflict instead of a duplicate version."""
    aid = uuid.uuid4()
    got = contend(db, aid, Command("X", aid, 0, [event("E", {})]),
                  Command("X", aid, 0, [event("E", {})]), commit_first=True)
    assert got == {"sqlstate": "P0409"}
    assert stream_version(db, aid) == 1


def contend(db, aid, first_cmd, second_cmd, commit_first):
    """first_cmd in an open transaction; second_cmd on another connection
    must wait for it; then the first commits or rolls back. Returns what the
    second got."""
    with db.connect(autocommit=False) as first, db.connect() as second:
        append(first, first_cmd)
        result = {}

        def contender():
            try:
                append(second, second_cmd)
                result["ok"] = True
            except psycopg.Error as exc:
                result["sqlstate"] = exc.sqlstate

        t = threading.Thread(target=contender)
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), "the second append must wait for the stream lock"
        first.commit() if commit_first else first.rollback()
        t.join(10)
    return result


def test_an_unchecked_append_waits_and_takes_the_next_versions(db):
    aid = uuid.uuid4()
    db.append([Command("X", aid, 0, [event("E", {})])])
    got = contend(db, aid, Command("X", aid, 1, [event("E", {})]),
                  Command("X", aid, None, [event("F", {}), event("G", {})]), commit_first=True)
    assert got == {"ok": True}
    assert stream_version(db, aid) == 4
    assert [(v, t) for v, _, t in positions(db, aid)] == [(1, "E"), (2, "E"), (3, "F"), (4, "G")]


def test_a_new_stream_rolled_back_leaves_it_to_the_waiting_writer(db):
    aid = uuid.uuid4()
    got = contend(db, aid, Command("X", aid, 0, [event("E", {})]),
                  Command("X", aid, 0, [event("F", {})]), commit_first=False)
    assert got == {"ok": True}
    assert stream_version(db, aid) == 1
    assert [(v, t) for v, _, t in positions(db, aid)] == [(1, "F")]


def wait_notifications(conn, timeout):
    """Notifications that arrive on conn within timeout seconds (psycopg
    3.1's notifies() has no timeout, so select() on the socket)."""
    got = []
    conn.add_notify_handler(got.append)
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        ready, _, _ = select.select([conn.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            conn.execute("SELECT 1")  # lets psycopg read and dispatch them
    return got


def test_notify_on_commit_only(db):
    with db.connect() as listener, db.connect(autocommit=False) as writer:
        listener.execute("LISTEN domain_event")
        append(writer, Command("X", uuid.uuid4(), 0, [event("E", {}), event("F", {})]))
        assert wait_notifications(listener, 0.5) == [], "NOTIFY before commit"
        writer.rollback()
        assert wait_notifications(listener, 0.5) == [], "NOTIFY after rollback"
        append(writer, Command("X", uuid.uuid4(), 0, [event("E", {})]))
        writer.commit()
        got = wait_notifications(listener, 5)
        assert [n.channel for n in got] == ["domain_event"]


def test_status_check_query(db):
    """The seed's check query works on an empty and a filled status table."""
    sql = "SELECT MAX(last_event_id), MAX(updated_at) FROM read_model.projection_metadata"
    assert db.query(sql) == [(None, None)]
    db.execute("""INSERT INTO read_model.projection_metadata (projection_name, last_position, last_event_id)
                  VALUES ('a', 7, 7), ('b', 9, 9)""")
    newest, updated = db.query(sql)[0]
    assert newest == 9 and updated is not None
    healthy = dict(db.query("SELECT projection_name, healthy FROM read_model.projection_status"))
    assert healthy == {"a": False, "b": False}  # no heartbeat yet
