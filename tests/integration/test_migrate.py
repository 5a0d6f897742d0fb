"""`projectord migrate` (issue 19, "The schema"): the bundled migrations
applied in Flyway's order and recorded in Flyway's history table
(public.flyway_schema_history), idempotent, under an advisory lock, with
--dry-run; a database whose schema was applied by hand before the command
existed; and the event store of the original CQRS design adopted in place,
with its events (sql/adopt/original_event_store.sql).

The original design's init scripts are read from ../shared/fixtures (next
to the repository), as a team would have run them."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import zlib

import psycopg
import pytest

import oracle
import schemainfo
from conftest import Database, daemon_starter
from daemon import (BIN, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, clean_env, command,
                    run_cli)
from eventgen import APPEND_SQL, Command, event, generate_mix, new_id
from pgcluster import REPO_ROOT, SQL_DIR

FIXTURE = os.path.join(REPO_ROOT, "..", "shared", "fixtures", "original_event_store.sql")
MIGRATE_LOCK = 1886546541


def new_db(cluster, name, schema=False):
    cluster.drop_database(name)
    cluster.create_database(name, schema=schema)
    return Database(cluster, name)


EMPTY_CONFIG = os.path.join(tempfile.mkdtemp(prefix="projectord-migrate-"), "empty.conf")
open(EMPTY_CONFIG, "w").close()


def migrate(db, *args, sql_dir=SQL_DIR, env=None):
    """projectord migrate on db, configured through the environment only."""
    e = clean_env(PROJECTORD_DATABASE_URL=db.conninfo, **(env or {}))
    where = ["--sql-dir", sql_dir] if sql_dir else []
    return run_cli(["-c", EMPTY_CONFIG, "migrate", *where, *args], env=e)


def flyway_checksum(path):
    """Flyway's checksum, as Flyway computes it: CRC32 over the lines of the
    file read as UTF-8 without their line breaks (BufferedReader.readLine),
    as a signed int."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = text.removeprefix("\ufeff")
    crc = 0
    for line in re.split(r"\r\n|\r|\n", text):
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def history(db):
    return db.query("""SELECT installed_rank, version, description, type, script, checksum,
                              installed_by, execution_time >= 0, success
                         FROM public.flyway_schema_history ORDER BY installed_rank""")


def expected_history(sql_dir=SQL_DIR):
    rows = []
    for rank, path in enumerate(migration_files(sql_dir), 1):
        name = os.path.basename(path)
        m = re.match(r"^(V([0-9_.]+)|R)__(.+)\.sql$", name)
        version = m.group(2).replace("_", ".") if m.group(2) else None
        rows.append((rank, version, m.group(3).replace("_", " "), "SQL", name,
                     flyway_checksum(path), "postgres", True, True))
    return rows


def migration_files(sql_dir=SQL_DIR):
    """Flyway's order: V files by version (numerically), then R files by name."""
    v = [f for f in os.listdir(sql_dir) if re.match(r"^V[0-9_.]+__.+\.sql$", f)]
    v.sort(key=lambda f: [int(p) for p in re.match(r"^V([0-9_.]+)__", f).group(1).replace("_", ".").split(".")])
    rdir = os.path.join(sql_dir, "repeatable")
    r = sorted(f for f in os.listdir(rdir) if re.match(r"^R__.+\.sql$", f))
    return [os.path.join(sql_dir, f) for f in v] + [os.path.join(rdir, f) for f in r]


def test_checksum_matches_flyways_algorithm_with_any_line_breaks(cluster, tmp_path):
    """The checksum ignores line breaks (\\n or \\r\\n checkouts) and a BOM, as Flyway's does."""
    sql = tmp_path / "sql"
    sql.mkdir()
    body = "-- a comment\nSELECT 1;\n\nSELECT 'é';\n"
    (sql / "V1__unix.sql").write_bytes(body.encode())
    (sql / "V2__dos.sql").write_bytes(body.replace("\n", "\r\n").encode())
    (sql / "V3__bom.sql").write_bytes(b"\xef\xbb\xbf" + body.encode())
    (sql / "repeatable").mkdir()
    (sql / "repeatable" / "R__last.sql").write_bytes(b"SELECT 2;")
    db = new_db(cluster, "mig_checksum")
    r = migrate(db, sql_dir=str(sql))
    assert r.returncode == EXIT_OK, r.stderr
    sums = {row[4]: row[5] for row in history(db)}
    assert sums["V1__unix.sql"] == sums["V2__dos.sql"] == sums["V3__bom.sql"] == \
        flyway_checksum(sql / "V1__unix.sql")
    assert sums["R__last.sql"] == flyway_checksum(sql / "repeatable" / "R__last.sql")
    assert [row[1] for row in history(db)] == ["1", "2", "3", None]


def test_empty_database_same_catalog_as_psql_then_noop(cluster):
    by_hand = new_db(cluster, "mig_by_hand", schema=True)
    db = new_db(cluster, "mig_empty")
    r = migrate(db)
    assert r.returncode == EXIT_OK, r.stderr
    assert r.stderr == ""
    files = migration_files()
    assert r.stdout.count(": applied") == len(files)
    assert f"{len(files)} migration(s) applied" in r.stdout
    assert schemainfo.differences(schemainfo.catalog(by_hand.conninfo),
                                  schemainfo.catalog(db.conninfo)) == []
    assert history(db) == expected_history()
    before = history(db)
    again = migrate(db)
    assert again.returncode == EXIT_OK, again.stderr
    assert "nothing to apply" in again.stdout and ": applied" not in again.stdout
    assert history(db) == before
    # an installed-like copy elsewhere, found through PROJECTORD_SQL_DIR
    env_run = migrate(db, sql_dir=None, env={"PROJECTORD_SQL_DIR": SQL_DIR})
    assert env_run.returncode == EXIT_OK and "nothing to apply" in env_run.stdout, env_run.stderr


def test_dry_run_changes_nothing(cluster):
    db = new_db(cluster, "mig_dry")
    before = schemainfo.catalog(db.conninfo)
    r = migrate(db, "--dry-run")
    assert r.returncode == EXIT_OK, r.stderr
    listed = re.findall(r"^(\S+\.sql): would be applied$", r.stdout, re.M)
    assert listed == [os.path.basename(f) for f in migration_files()]
    assert "nothing changed" in r.stdout
    assert db.scalar("SELECT to_regclass('public.flyway_schema_history') IS NULL")
    assert db.scalar("SELECT to_regnamespace('event_store') IS NULL")
    assert schemainfo.differences(before, schemainfo.catalog(db.conninfo)) == []


def test_only_new_and_changed_files_are_applied(cluster, tmp_path):
    sql = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql, ignore=shutil.ignore_patterns("V029*"))
    db = new_db(cluster, "mig_changed")
    assert migrate(db, sql_dir=str(sql)).returncode == EXIT_OK
    shutil.copy(os.path.join(SQL_DIR, "V029__drop_unused.sql"), sql)     # a new release's V file
    with open(sql / "repeatable" / "R__checkpoint.sql", "a") as f:         # and a changed R file
        f.write("\n-- changed\n")
    r = migrate(db, "--dry-run", sql_dir=str(sql))
    assert re.findall(r"^(\S+): would be applied$", r.stdout, re.M) == \
        ["V029__drop_unused.sql", "R__checkpoint.sql"], r.stdout
    r = migrate(db, sql_dir=str(sql))
    assert r.returncode == EXIT_OK, r.stderr
    assert re.findall(r"^(\S+): applied", r.stdout, re.M) == \
        ["V029__drop_unused.sql", "R__checkpoint.sql"], r.stdout
    rows = history(db)
    assert [(row[1], row[4]) for row in rows[-2:]] == [("029", "V029__drop_unused.sql"),
                                                       (None, "R__checkpoint.sql")]
    assert rows[-1][5] == flyway_checksum(sql / "repeatable" / "R__checkpoint.sql")
    # A released V file that changed is refused, naming it; nothing is applied.
    with open(sql / "V003__catalog.sql", "a") as f:
        f.write("\n-- edited after release\n")
    n = len(history(db))
    r = migrate(db, sql_dir=str(sql))
    assert r.returncode == EXIT_FAILURE
    assert "V003__catalog.sql has changed since it was applied" in r.stderr
    assert len(history(db)) == n


def test_failed_file_leaves_nothing_of_itself(cluster, tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "V1__good.sql").write_text("CREATE TABLE public.mig_good (x int);\n")
    (sql / "V2__bad.sql").write_text("CREATE TABLE public.mig_bad (x int);\nSELECT 1/0;\n")
    db = new_db(cluster, "mig_fail")
    r = migrate(db, sql_dir=str(sql))
    assert r.returncode == EXIT_FAILURE
    assert "V2__bad.sql: division by zero (SQLSTATE 22012)" in r.stderr
    assert [row[4] for row in history(db)] == ["V1__good.sql"]
    assert db.scalar("SELECT to_regclass('public.mig_bad') IS NULL")


def test_usage_and_missing_directory(cluster, tmp_path):
    db = new_db(cluster, "mig_usage")
    r = migrate(db, "--bogus")
    assert r.returncode == EXIT_USAGE and "--dry-run" in r.stderr
    r = migrate(db, sql_dir=str(tmp_path / "nowhere"))
    assert r.returncode == EXIT_CONFIG and "nowhere" in r.stderr and len(r.stderr.splitlines()) == 1


def test_two_concurrent_migrates_one_applies(cluster):
    db = new_db(cluster, "mig_race")
    env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo)
    # Both start while the lock is held, so both are surely waiting at once.
    with db.connect() as holder:
        holder.execute("SELECT pg_advisory_lock(%s, 0)", (MIGRATE_LOCK,))
        procs = [subprocess.Popen(command(["-c", EMPTY_CONFIG, "migrate", "--sql-dir", SQL_DIR]), env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        def waiting():
            return db.scalar("""SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                                   AND classid = %s::int::oid AND NOT granted""", (MIGRATE_LOCK,))
        for _ in range(200):
            if waiting() == 2:
                break
            threading.Event().wait(0.05)
        assert waiting() == 2
        holder.execute("SELECT pg_advisory_unlock(%s, 0)", (MIGRATE_LOCK,))
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [EXIT_OK, EXIT_OK], outs
    applied = [out.count(": applied") for out, _ in outs]
    assert sorted(applied) == [0, len(migration_files())], outs
    assert all("waiting for another `projectord migrate`" in out for out, _ in outs)
    assert history(db) == expected_history()


def test_schema_applied_by_hand_is_recognised(cluster):
    """A database set up with the psql loop before `migrate` existed: every
    file runs again (each is idempotent: the documented psql upgrade) and is
    recorded; the data stays; the catalog is a fresh database's."""
    db = new_db(cluster, "mig_hand", schema=True)
    fresh = schemainfo.catalog(db.conninfo)
    db.execute("""SELECT event_store.append_events('Category', gen_random_uuid(), 0,
                  ARRAY['{"event_type":"CategoryCreated","event_data":{"name":"x"}}'::jsonb])""")
    r = migrate(db)
    assert r.returncode == EXIT_OK, r.stderr
    assert "without a migration history (applied by hand)" in r.stdout
    assert history(db) == expected_history()
    assert db.scalar("SELECT count(*) FROM event_store.domain_event") == 1
    assert schemainfo.differences(fresh, schemainfo.catalog(db.conninfo)) == []
    assert "nothing to apply" in migrate(db).stdout


# ---------------------------------------------------------------------------
# The original design's event store
# ---------------------------------------------------------------------------

def load_original(cluster, name):
    if not os.path.isdir(os.path.dirname(FIXTURE)):
        # A machine without the project's shared data next to the checkout.
        pytest.skip(f"{os.path.dirname(FIXTURE)} is not there (the original design's init scripts)")
    assert os.path.exists(FIXTURE), f"{FIXTURE} (../shared/fixtures next to the repository)"
    db = new_db(cluster, name)
    cluster.psql(name, "-f", FIXTURE)
    return db


def email_unique(commands, tag):
    """The mixes number their emails alike: make each mix's its own."""
    for c in commands:
        for ev in c.events:
            if "email" in ev["event_data"]:
                ev["event_data"] = dict(ev["event_data"], email=f"{tag}.{ev['event_data']['email']}")
    return commands


def append_through_function(conninfo, commands, errors, per_transaction=5):
    """Append commands through event_store.append_events, a few per
    transaction, each with its expected version (the original function's
    convention: the stream's current version)."""
    try:
        with psycopg.connect(conninfo) as conn:
            for start in range(0, len(commands), per_transaction):
                with conn.transaction():
                    for c in commands[start:start + per_transaction]:
                        conn.execute(APPEND_SQL, c.params())
    except Exception as exc:  # reported by the test
        errors.append(exc)


def wait_for(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stream_orders(db):
    """Streams whose positions do not follow their versions."""
    return db.query("""SELECT stream_id FROM (
                         SELECT stream_id, global_position,
                                lag(global_position) OVER w AS prev_pos,
                                aggregate_version, lag(aggregate_version) OVER w AS prev_version
                           FROM event_store.domain_event
                         WINDOW w AS (PARTITION BY stream_id ORDER BY aggregate_version)) s
                        WHERE prev_pos >= global_position OR prev_version + 1 <> aggregate_version""")


def test_original_event_store_adopted_with_its_events(cluster, request, workdir):
    db = load_original(cluster, "mig_original")
    # The application's role, as the original design has it: it may insert
    # events and call append_events through PUBLIC's default EXECUTE.
    db.execute("DROP ROLE IF EXISTS cqrs_app")
    db.execute("CREATE ROLE cqrs_app LOGIN")
    db.execute("GRANT SELECT, INSERT, UPDATE ON event_store.event_stream, event_store.domain_event TO cqrs_app")
    app = db.conninfo + " user=cqrs_app"
    before = email_unique(generate_mix(61, 400), "before")
    errors = []
    append_through_function(app, before, errors)
    assert not errors, errors
    # An event whose occurred_at is before its stream's previous version
    # (the original function stamps the transaction's start time).
    late = new_id()
    with psycopg.connect(db.conninfo) as early:
        early.execute("SELECT 1")  # the transaction starts now...
        db.execute(APPEND_SQL, Command("Category", late, 0,
                                       [event("CategoryCreated", {"name": "Late"})]).params())
        early.execute(APPEND_SQL, Command("Category", late, 1,
                                          [event("CategoryRenamed", {"name": "Later"})]).params())
    n_before = db.scalar("SELECT count(*) FROM event_store.domain_event")
    assert db.scalar("""SELECT count(*) FROM event_store.domain_event e1 JOIN event_store.domain_event e2
                         USING (stream_id) WHERE e2.aggregate_version > e1.aggregate_version
                         AND e2.occurred_at < e1.occurred_at""") >= 1

    # Appenders go on through the function while the store is adopted and
    # after it. To be sure some wait on the adoption's lock: a reader holds
    # domain_event, so the adoption waits for it with event_stream locked,
    # and appenders come in then; the reader lets go once they wait.
    mixes = [email_unique(generate_mix(70 + k, 300), f"t{k}") for k in range(3)]
    threads = [threading.Thread(target=append_through_function, args=(app, m, errors))
               for m in mixes]
    dry = migrate(db, "--dry-run")
    assert dry.returncode == EXIT_OK and "would be adopted first" in dry.stdout, dry.stderr
    assert db.scalar("SELECT to_regclass('public.flyway_schema_history') IS NULL")

    def waiting_on(table):
        return db.scalar("""SELECT count(*) FROM pg_locks
                             WHERE relation = %s::regclass AND NOT granted""", (table,))

    with db.connect(autocommit=False) as reader:
        reader.execute("SELECT count(*) FROM event_store.domain_event")
        env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo)
        proc = subprocess.Popen(command(["-c", EMPTY_CONFIG, "migrate", "--sql-dir", SQL_DIR]),
                                env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: waiting_on("event_store.domain_event") == 1, "the adoption to wait")
        for t in threads[:2]:
            t.start()
        wait_for(lambda: waiting_on("event_store.event_stream") >= 2, "appenders to wait")
        reader.rollback()
    out, err = proc.communicate(timeout=120)
    threads[2].start()
    assert proc.returncode == EXIT_OK, out + err
    assert "adopt/original_event_store.sql: applied" in out
    assert history(db) == expected_history()
    for t in threads:
        t.join(120)
    assert not errors, errors

    n = db.scalar("SELECT count(*) FROM event_store.domain_event")
    assert n == n_before + sum(c.n_events if hasattr(c, "n_events") else len(c.events)
                               for m in mixes for c in m)
    assert db.scalar("SELECT count(DISTINCT global_position) = count(*) AND min(global_position) = 1"
                     " FROM event_store.domain_event")
    assert stream_orders(db) == []
    # The events from before the adoption: one transaction id, positions first.
    # (The appenders came in while the adoption held event_stream: every
    # event there before it is numbered 1..n_before, with one id.)
    adopted = db.query("""SELECT count(*), min(global_position), max(global_position)
                            FROM event_store.domain_event
                           WHERE transaction_id = (SELECT transaction_id FROM event_store.domain_event
                                                    WHERE global_position = 1)""")[0]
    assert adopted == (n_before, 1, n_before)
    # The functions, views and trigger are a fresh database's (ACLs aside:
    # the application's role keeps EXECUTE on append_events).
    fresh = new_db(cluster, "mig_original_fresh", schema=True)
    fresh.execute("ALTER DATABASE mig_original_fresh SET search_path TO event_store, read_model, "
                  "command_model, public")  # as the fixture does: definitions print alike
    ours, theirs = schemainfo.catalog(db.conninfo), schemainfo.catalog(fresh.conninfo)
    for kind in ("functions", "views", "triggers"):
        assert [r[:2] for r in ours[kind]] == [r[:2] for r in theirs[kind]], kind
    assert db.scalar("""SELECT has_function_privilege('cqrs_app',
                          'event_store.append_events(varchar, uuid, integer, jsonb[])', 'EXECUTE')""")

    # The safe append_events now: its conflict is SQLSTATE P0409.
    with pytest.raises(psycopg.Error) as conflict:
        db.execute(APPEND_SQL, Command("Category", late, 0, [event("CategoryRenamed", {"name": "x"})]).params())
    assert conflict.value.sqlstate == "P0409"

    with daemon_starter(request, workdir, db.conninfo) as start:
        d = start()
        d.wait_caught_up(timeout=90)
        more = email_unique(generate_mix(90, 200), "after")
        append_through_function(app, more, errors)
        assert not errors
        d.wait_caught_up(timeout=60)
        with db.connect() as conn:
            oracle.assert_read_model_matches_fold(conn)
            oracle.assert_invariants(conn)
    assert "nothing to apply" in migrate(db).stdout


def test_store_that_differs_more_is_refused_unchanged(cluster):
    db = load_original(cluster, "mig_other")
    db.execute("ALTER TABLE event_store.domain_event DROP COLUMN causation_id")
    before = schemainfo.catalog(db.conninfo)
    r = migrate(db)
    assert r.returncode == EXIT_FAILURE
    assert "domain_event.causation_id" in r.stderr and "layout differs" in r.stderr
    assert "rolled back" in r.stderr
    assert db.scalar("SELECT to_regclass('public.flyway_schema_history') IS NULL")
    assert schemainfo.differences(before, schemainfo.catalog(db.conninfo)) == []


# ---------------------------------------------------------------------------
# A database without the schema
# ---------------------------------------------------------------------------

ONE_SHOT = [["status"], ["status", "--check"], ["dead-letters"], ["rebuild", "--all"],
            ["resume", "users"], ["replay-dead-letters", "users"], ["adopt-restored-store"]]


@pytest.mark.parametrize("store", ["empty", "original"])
def test_one_shot_commands_without_schema_name_migrate(cluster, store):
    db = new_db(cluster, f"mig_noschema_{store}") if store == "empty" else \
        load_original(cluster, f"mig_noschema_{store}")
    env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo)
    for args in ONE_SHOT:
        r = run_cli(["-c", EMPTY_CONFIG, *args], env=env)
        assert r.returncode == EXIT_FAILURE, (args, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and "run `projectord migrate`" in lines[0], (args, r.stderr)
        assert f"database {db.name} " in lines[0]
        if store == "original" and args[0] != "status" and args[0] != "dead-letters":
            assert "original design" in lines[0] and "to adopt it" in lines[0], (args, lines)
        assert "does not exist" not in r.stderr


def ensure_daemon_role(cluster):
    cluster.psql("postgres", "-c", "DO $$ BEGIN CREATE ROLE projectord LOGIN; "
                 "EXCEPTION WHEN duplicate_object THEN NULL; END $$")


def test_run_says_it_once_and_starts_after_migrate(cluster, request, workdir):
    ensure_daemon_role(cluster)
    db = new_db(cluster, "mig_run")
    line = f"ERROR database {db.name} has no projectord schema"
    with daemon_starter(request, workdir, db.conninfo) as start:
        d = start()
        wait_for(lambda: line in d.log(), "the ERROR line")
        # Retries with backoff (1 s, 2 s, 4 s...): several in this time, one line.
        time.sleep(4)
        assert d.alive()
        assert d.log(tail=10000).count("no projectord schema") == 1, d.log()
        assert "does not exist" not in d.log(tail=10000)
        r = migrate(db)
        assert r.returncode == EXIT_OK, r.stderr
        db.append([Command("Category", new_id(), 0, [event("CategoryCreated", {"name": "c"})])])
        d.wait_caught_up(timeout=60)
        assert "the schema is there now" in d.log(tail=10000)
        assert d.log(tail=10000).count("no projectord schema") == 1


def test_run_stops_at_once_while_waiting_for_the_schema(cluster, request, workdir):
    ensure_daemon_role(cluster)
    db = load_original(cluster, "mig_run_stop")
    with daemon_starter(request, workdir, db.conninfo) as start:
        d = start()
        wait_for(lambda: "holds the event store of the original design" in d.log(), "the ERROR line")
        assert d.stop(timeout=5) == EXIT_OK


def test_separate_read_model_database_gets_both(cluster):
    """database.target: both databases get every migration, each its own history."""
    events, reads = new_db(cluster, "mig_events"), new_db(cluster, "mig_reads")
    env = clean_env(PROJECTORD_DATABASE_URL=events.conninfo,
                    PROJECTORD_TARGET_DATABASE_URL=reads.conninfo)
    r = run_cli(["-c", EMPTY_CONFIG, "migrate", "--sql-dir", SQL_DIR], env=env)
    assert r.returncode == EXIT_OK, r.stderr
    assert "event store: mig_events:" in r.stdout and "read model: mig_reads:" in r.stdout
    assert history(events) == history(reads) == expected_history()
    again = run_cli(["-c", EMPTY_CONFIG, "migrate", "--sql-dir", SQL_DIR], env=env)
    assert again.stdout.count("nothing to apply") == 2, again.stdout
