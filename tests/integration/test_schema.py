"""SPEC §2 and §5 schema: migrations, append_events, the NOTIFY wake-up and
the status table's check query. No daemon involved, except in the upgrade
tests, which run one on a database migrated from an earlier schema.

The migrations (issue 17, "The SQL"; docs/design.md, "The schema"): the
versioned files sql/V*.sql, never changed once released, then the
repeatable files sql/repeatable/R__*.sql, which hold the one current
definition of each function and view (apart, so that applying sql/*.sql in
lexical order, as SPEC §2 allows, still creates everything)."""

import datetime as dt
import glob
import hashlib
import os
import re
import select
import threading
import time
import uuid

import psycopg
import pytest

import oracle
import schemainfo
from conftest import Database, daemon_starter
from daemon import PROJECTIONS, EXIT_OK, run_cli
from eventgen import Command, append, event, generate_mix
from pgcluster import SQL_DIR

UTC = dt.timezone.utc


def positions(db, aggregate_id):
    return db.query("""SELECT e.aggregate_version, e.global_position, e.event_type
                         FROM event_store.domain_event e JOIN event_store.event_stream s USING (stream_id)
                        WHERE s.aggregate_id = %s ORDER BY e.aggregate_version""", (aggregate_id,))


def stream_version(db, aggregate_id):
    return db.scalar("SELECT version FROM event_store.event_stream WHERE aggregate_id = %s", (aggregate_id,))


def test_migrations_create_everything_and_apply_twice(cluster):
    name = "schema_twice"
    cluster.create_database(name)          # applies every sql/V*.sql, then sql/R__*.sql
    once = schemainfo.catalog(cluster.conninfo(name))
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
    assert schemainfo.differences(once, schemainfo.catalog(conn_s)) == []
    cluster.drop_database(name)


def test_every_sql_file_in_lexical_order_creates_everything(cluster):
    """SPEC §2: the files of sql/ applied in lexical order with `psql -v
    ON_ERROR_STOP=1 -f FILE` (the postgres image's initdb does the same with
    a mounted sql/) create everything, and the same as Flyway's order (V
    files, then the repeatable ones). So no R__ file stands among them (it
    would sort first and fail on an empty database), and the V files alone
    carry the current definitions: the repeatable files, applied after
    them, change nothing."""
    name = "schema_lexical"
    cluster.create_database(name, schema=False)
    files = sorted(glob.glob(os.path.join(SQL_DIR, "*.sql")))
    assert files and all(os.path.basename(f).startswith("V") for f in files), files
    cluster.apply_schema(name, files)
    cluster.create_database("schema_flyway_order")
    assert schemainfo.differences(schemainfo.catalog(cluster.conninfo("schema_flyway_order")),
                                  schemainfo.catalog(cluster.conninfo(name))) == []
    cluster.drop_database(name)
    cluster.drop_database("schema_flyway_order")


# ---------------------------------------------------------------------------
# Versioned and repeatable migrations
# ---------------------------------------------------------------------------

# sha256 of each versioned migration as released. Flyway checksums every V
# file it has applied and refuses to migrate a database whose applied files
# changed, so these stay byte for byte as they are: a function or view
# changes in its R__ file, anything else in a new V file.
RELEASED = {
    "V001__event_store.sql": "8b9ebc1c5e67ba1411a2b3869291cb15be71001ec3264709a62fabaf5913a07e",
    "V002__projection_status.sql": "d97446bbbb5d4eb20b2b0339cbf5027cf80e51488fcaff4c0e4ff97f4227f28b",
    "V003__catalog.sql": "4f964d846f9f635eb2779738eac98e8780d6e7de49868681f9056e3a7563b166",
    "V004__users.sql": "85898d8853ae15dc69eeeddc88837578eb0ff1d38fa3f43d51faf237d8d9c6c2",
    "V005__orders.sql": "04db438f69fe48128f77239c81ae68877c6159d9ce822e5f3a2d9969799b27a1",
    "V006__event_stats.sql": "ecbcd875fa99f272f17489d6ac5a6733c225f5f6c16233953799ede26b80aaef",
    "V007__projectord_role.sql": "c6c525aef82315e81f63fb278f6fdf79ece92d7f554ca68201e80f4fa00762e5",
    "V008__rebuild.sql": "599029f4e44d8349c9520dec4176e480df5229e268a0c5f7eaa7f513af69caa4",
    "V009__operator_requests.sql": "0c2c765921a2bfa7d097541d7b8004f624befaad7949898e56b8b1decc135c5f",
    "V010__separate_read_model.sql": "38e913873eaf59077a46b72520496083e7ba13a15927f4537083eb00de0d3297",
    "V020__read_model_fillfactor.sql": "e98eba686e56b87b0d1b1f7150c696c2579abf093c022c9410c6e29c43b8cb9f",
    "V021__checkpoint_static_sql.sql": "0bd2141cfdd56d2e4a84084fee5e968b6d711e1aea99a29e30e62f320b77de77",
    "V022__checkpoint_statement.sql": "662568cab61345a6237e8f2e1d1785ac44a83889fbd1b66f19eccd2b4a837a0c",
    "V023__status_domains.sql": "538394740e01e3f0790506141b859469ef21e4ce70f341c12da170d341e19cd8",
    "V024__append_events_fewer_statements.sql": "71587b159f4759899e6893c792053f42c8949a60586939725ae28247c955b838",
    "V026__adopt_restored_store.sql": "f29989d21c19f14a5ba7e26b21025b5eb1e75fcde45d9ea24610f8ee354a7e90",
    "V027__swap_by_row_diff.sql": "fdb4e3d4a6c55abdd3f46d42e27283dfb8fdfd835b9d147b05d13277488c2904",
    "V028__health_progress.sql": "d05525070f439474de24392193c29d479f3352230112f27c9294601ab30fb043",
    "V029__drop_unused.sql": "df198c091fd094aa57fe0f830b828689f0385d598a6a651ddf9207ca6056dc65",
}


def versioned():
    return sorted(glob.glob(os.path.join(SQL_DIR, "V*.sql")))


def repeatable():
    return sorted(glob.glob(os.path.join(SQL_DIR, "repeatable", "R__*.sql")))


def test_released_versioned_migrations_are_unchanged():
    for name, digest in RELEASED.items():
        with open(os.path.join(SQL_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, \
                f"{name} changed after its release: Flyway's validate fails on every database it migrated"


DEFINITION = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|VIEW)\s+([a-z_]+\.[a-z_0-9]+)",
                        re.IGNORECASE | re.MULTILINE)


def test_each_function_and_view_has_one_current_definition(db):
    """Each function and view of the schema is defined in exactly one R__
    file, once; nothing else is left in the database (what no R__ file
    defines was dropped by a V file)."""
    defined = {}
    for path in repeatable():
        with open(path) as f:
            for kind, name in DEFINITION.findall(f.read()):
                defined.setdefault((kind.lower(), name.lower()), []).append(os.path.basename(path))
    assert defined, "no R__ files"
    assert {k: v for k, v in defined.items() if len(v) > 1} == {}
    present = {("function", r[0]) for r in db.query(
                   """SELECT p.oid::regproc::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname IN ('event_store', 'read_model')""")}
    present |= {("view", r[0]) for r in db.query(
                    """SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname IN ('event_store', 'read_model') AND c.relkind = 'v'""")}
    assert present == set(defined)
    for gone in ("projectord_save_checkpoint", "projectord_write_checkpoint"):
        assert ("function", f"read_model.{gone}") not in present


def test_repeatable_files_apply_again_on_their_own(db):
    """What Flyway does when an R__ file changed: that file alone, again."""
    before = schemainfo.catalog(db.conninfo)
    for path in repeatable():
        db.cluster.apply_schema(db.name, [path])
    assert schemainfo.differences(before, schemainfo.catalog(db.conninfo)) == []


def fresh_catalog(cluster):
    name = f"fresh_{os.getpid()}"
    cluster.create_database(name)
    try:
        return schemainfo.catalog(cluster.conninfo(name))
    finally:
        cluster.drop_database(name)


def earlier_schemas():
    """Each schema projectord has had: the V files up to each one."""
    files = versioned()
    return [files[:i] for i in range(1, len(files))]


def test_upgrades_from_every_earlier_schema(cluster):
    """From every earlier schema (V001 alone, V001..V002, ..., everything
    but the last V file), both ways of upgrading end in the schema a fresh
    database gets, grants included: every file again (psql, README), or
    only the files the database has not had (Flyway: the newer V files,
    then every R__ file)."""
    want = fresh_catalog(cluster)
    for old in earlier_schemas():
        for way in ("psql", "flyway"):
            name = f"up_{os.getpid()}_{len(old)}_{way}"
            cluster.create_database(name, schema=False)
            cluster.apply_schema(name, old)
            with psycopg.connect(cluster.conninfo(name), autocommit=True) as conn:
                append(conn, Command("User", uuid.uuid4(), 0, [event("UserRegistered", {})]))
            new = cluster.migrations() if way == "psql" else \
                [f for f in cluster.migrations() if f not in old]
            cluster.apply_schema(name, new)
            got = schemainfo.catalog(cluster.conninfo(name))
            assert schemainfo.differences(want, got) == [], \
                f"upgraded from ..{os.path.basename(old[-1])} ({way})"
            cluster.drop_database(name)


@pytest.mark.parametrize("way", ["psql", "flyway"])
def test_upgrade_from_the_schema_before_repeatable_migrations(request, cluster, workdir, way):
    """A database of the last schema without R__ files (V001..V028), with a
    daemon tailing it, is upgraded under the running daemon; then the
    suite's core checks: it goes on projecting, the status views work,
    `status --check` passes, a rebuild swaps, the role may do what the
    daemon needs and nothing the schema does not grant."""
    old = [f for f in versioned() if os.path.basename(f) < "V029"]
    name = f"up28_{os.getpid()}_{way}"
    cluster.create_database(name, schema=False)
    cluster.apply_schema(name, old)
    db = Database(cluster, name)
    commands = generate_mix(seed=171, n_events=3000, days=2)
    db.append_all(commands[:2000])
    try:
        with daemon_starter(request, workdir, db.conninfo) as start:
            daemon = start(poll_interval_ms=200)
            daemon.wait_caught_up(timeout=60)
            new = cluster.migrations() if way == "psql" else \
                [f for f in cluster.migrations() if f not in old]
            cluster.apply_schema(name, new)
            assert schemainfo.differences(fresh_catalog(cluster), schemainfo.catalog(db.conninfo)) == []

            db.append_all(commands[2000:])
            daemon.wait_caught_up(timeout=60)
            status = dict(db.query("SELECT projection_name, healthy FROM read_model.projection_status"))
            assert status == {n: True for n in PROJECTIONS}
            health = db.query("SELECT projection_name, unhealthy_reason FROM read_model.projection_health")
            assert sorted(health) == sorted((n, None) for n in PROJECTIONS)
            check = run_cli(["-c", daemon.config_path, "status", "--check"])
            assert check.returncode == EXIT_OK, check.stdout + check.stderr

            rebuild = run_cli(["-c", daemon.config_path, "rebuild", "catalog"], timeout=120)
            assert rebuild.returncode == EXIT_OK, rebuild.stdout + rebuild.stderr
            assert "catalog: rebuilt" in rebuild.stdout
            rows = daemon.wait_caught_up(timeout=60)
            assert rows["catalog"]["rebuilt_at"] is not None
            with db.connect() as conn:
                oracle.assert_invariants(conn)
                oracle.assert_read_model_matches_fold(conn)
            assert db.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'projectord_rebuild%'") == []

            with psycopg.connect(db.conninfo.replace("user=postgres", "user=projectord"),
                                 autocommit=True) as conn:
                may = dict(conn.execute(
                    """SELECT f, has_function_privilege(f, 'EXECUTE') FROM unnest(ARRAY[
                           'read_model.projectord_begin_rebuild(text, text[], text)',
                           'read_model.projectord_finish_rebuild(text, text[], integer)',
                           'read_model.projectord_abandon_rebuild(text, text)',
                           'read_model.projectord_checkpoint_moved(text, bigint)',
                           'event_store.append_events(varchar, uuid, integer, jsonb[])',
                           'read_model.projectord_adopt_restored_store(boolean)',
                           'read_model.projectord_apply_diff(name, text, text)']) AS f""").fetchall())
                assert may == {"read_model.projectord_begin_rebuild(text, text[], text)": True,
                               "read_model.projectord_finish_rebuild(text, text[], integer)": True,
                               "read_model.projectord_abandon_rebuild(text, text)": True,
                               "read_model.projectord_checkpoint_moved(text, bigint)": True,
                               "event_store.append_events(varchar, uuid, integer, jsonb[])": False,
                               "read_model.projectord_adopt_restored_store(boolean)": False,
                               "read_model.projectord_apply_diff(name, text, text)": False}
                for view in ("projection_status", "projection_health", "projection_lag"):
                    rights = dict(conn.execute(
                        """SELECT p, has_table_privilege(%s, p) FROM unnest(ARRAY['SELECT', 'INSERT',
                               'UPDATE', 'DELETE', 'TRUNCATE']) AS p""", (f"read_model.{view}",)).fetchall())
                    assert rights == {"SELECT": True, "INSERT": False, "UPDATE": False,
                                      "DELETE": False, "TRUNCATE": False}, view
    finally:
        if cluster.is_running():
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
