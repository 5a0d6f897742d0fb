"""A team without the four example projections (issue 19, "The schema"):
`projectord migrate --no-examples` leaves out the migrations that
sql/examples.list names (the examples' tables and domains, and V020/V023
that change only those): not applied, not recorded. The core (event
store, status, dead letters, the projectord role and its grants) is whole
without them, a team's own projection runs on it, and a later plain
`migrate` applies the examples (the way to opt back in), after which the
schema is the one a fresh database gets and the four projections work.

The build without them (-DPROJECTORD_EXAMPLES=OFF) is
test_no_examples_build.py."""

import json
import os
import shutil

import oracle
import schemainfo
from conftest import daemon_starter
from daemon import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, PROJECTIONS, clean_env, run_cli
from eventgen import generate_mix
from pgcluster import SQL_DIR
from test_migrate import email_unique, expected_history, history, migrate, new_db

EXAMPLES = ["catalog", "event_stats", "orders", "users"]


def example_files(sql_dir=SQL_DIR):
    with open(os.path.join(sql_dir, "examples.list")) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def example_tables():
    """The examples' tables, as the binary says (`list --json`)."""
    r = run_cli(["-c", "/dev/null", "list", "--json"])
    assert r.returncode == EXIT_OK, r.stderr
    return sorted(t.removeprefix("read_model.") for p in json.loads(r.stdout) if p["name"] in EXAMPLES
                  for t in p["tables"])


def example_relations(db):
    """The examples' tables and what belongs to them (indexes, sequences,
    TOAST), as read_model.NAME."""
    tables = [f"read_model.{t}" for t in example_tables()]
    rows = db.query("""WITH t AS (SELECT to_regclass(x) AS oid FROM unnest(%(t)s::text[]) x)
                       SELECT c.oid::regclass::text FROM pg_class c
                        WHERE c.oid IN (SELECT oid FROM t)
                           OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM t))
                           OR c.oid IN (SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass
                                          AND refobjid IN (SELECT oid FROM t) AND deptype IN ('a', 'i'))""",
                    {"t": tables})
    return {r[0] for r in rows}


def domains(db):
    return [r[0] for r in db.query("""SELECT t.typname::text FROM pg_type t JOIN pg_namespace n
                                        ON n.oid = t.typnamespace
                                       WHERE n.nspname = 'read_model' AND t.typtype = 'd'
                                       ORDER BY 1""")]


def test_the_list_names_only_migrations_that_touch_nothing_else():
    """examples.list names existing V files; no other migration names an
    example's table or domain (the rule of sql/README.md)."""
    listed = example_files()
    assert listed and all(os.path.exists(os.path.join(SQL_DIR, f)) for f in listed)
    assert "products" in example_tables()
    names = example_tables() + ["product_status", "user_status", "order_status"]
    core = [os.path.join(SQL_DIR, f) for f in os.listdir(SQL_DIR) if f.endswith(".sql")]
    core += [os.path.join(SQL_DIR, "repeatable", f) for f in os.listdir(os.path.join(SQL_DIR, "repeatable"))]
    for path in core:
        if os.path.basename(path) in listed:
            continue
        with open(path) as f:
            code = "\n".join(line.split("--")[0] for line in f)  # comments may name them
        for name in names:
            assert f"read_model.{name}" not in code and f" {name} " not in code, (path, name)


def test_fresh_database_without_examples_has_the_core_only(cluster):
    full = new_db(cluster, "noex_full")
    assert migrate(full).returncode == EXIT_OK
    db = new_db(cluster, "noex_core")
    r = migrate(db, "--no-examples")
    assert r.returncode == EXIT_OK, r.stderr
    listed = example_files()
    assert f"{len(listed)} example migration(s) left out, not recorded" in r.stdout
    assert all(f in r.stdout for f in listed)
    # Not recorded: the history is a fresh database's without the examples.
    want = [row[1:] for row in expected_history() if row[4] not in listed]
    assert [row[1:] for row in history(db)] == want

    # The core: the event store, status, dead letters, the role and its grants.
    for rel in ("event_store.domain_event", "event_store.event_stream",
                "read_model.projection_metadata", "read_model.projection_status",
                "read_model.projection_health", "read_model.projection_lag",
                "read_model.projection_dead_letter", "read_model.projection_rebuild"):
        assert db.scalar("SELECT to_regclass(%s) IS NOT NULL", (rel,)), rel
    assert db.scalar("SELECT to_regprocedure('event_store.append_events(varchar, uuid, integer, jsonb[])')"
                     " IS NOT NULL")
    assert db.scalar("SELECT rolcanlogin AND NOT rolsuper FROM pg_roles WHERE rolname = 'projectord'")
    assert db.scalar("""SELECT has_table_privilege('projectord', 'event_store.domain_event', 'SELECT')
                           AND NOT has_table_privilege('projectord', 'event_store.domain_event', 'INSERT')
                           AND has_table_privilege('projectord', 'read_model.projection_metadata', 'UPDATE')
                           AND has_table_privilege('projectord', 'read_model.projection_dead_letter', 'INSERT')
                           AND has_table_privilege('projectord', 'read_model.projection_status', 'SELECT')""")
    # None of the examples' tables or domains.
    assert example_relations(full) and not example_relations(db)
    assert domains(full) and domains(db) == []
    # Everything else as a fresh database with the examples has it.
    core, everything, extra = schemainfo.catalog(db.conninfo), schemainfo.catalog(full.conninfo), \
        example_relations(full)
    for kind in everything:
        assert set(core[kind]) <= set(everything[kind]), kind
        assert {row[0] for row in set(everything[kind]) - set(core[kind])} <= extra, kind

    # Again: nothing to apply, the examples still left out.
    again = migrate(db, "--no-examples")
    assert again.returncode == EXIT_OK and "nothing to apply" in again.stdout
    assert "left out" in again.stdout


def test_options_and_the_list(cluster, tmp_path):
    db = new_db(cluster, "noex_opts")
    dry = migrate(db, "--no-examples", "--dry-run")
    assert dry.returncode == EXIT_OK, dry.stderr
    assert db.scalar("SELECT to_regclass('public.flyway_schema_history') IS NULL")
    for f in example_files():
        assert f"{f}: would be applied" not in dry.stdout and f in dry.stdout
    assert "V001__event_store.sql: would be applied" in dry.stdout
    # The default build applies them unless told.
    assert "V003__catalog.sql: would be applied" in migrate(db, "--dry-run").stdout
    assert "V003__catalog.sql: would be applied" in migrate(db, "--examples", "--dry-run").stdout

    both = migrate(db, "--examples", "--no-examples")
    assert both.returncode == EXIT_USAGE and len(both.stderr.splitlines()) == 1

    # A name in the list that is no migration: refused before anything is applied.
    sql = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql)
    with open(sql / "examples.list", "a") as f:
        f.write("V004__user.sql  # a typo\n")
    bad = migrate(db, "--no-examples", sql_dir=str(sql))
    assert bad.returncode == EXIT_CONFIG
    assert "examples.list:" in bad.stderr and "V004__user.sql is no migration" in bad.stderr
    # Without the list (an older release's directory): everything, as before;
    # leaving the examples out then needs it.
    os.unlink(sql / "examples.list")
    missing = migrate(db, "--no-examples", "--dry-run", sql_dir=str(sql))
    assert missing.returncode == EXIT_CONFIG and "examples.list" in missing.stderr
    plain = migrate(db, "--dry-run", sql_dir=str(sql))
    assert plain.returncode == EXIT_OK and "V003__catalog.sql: would be applied" in plain.stdout
    assert db.scalar("SELECT to_regclass('public.flyway_schema_history') IS NULL")


# A team's own projection, declared, with its own migration: events per stream.
STREAMS_CONF = """name = "streams_seen";
version = 1;
description = "events per stream";
tables = [ "streams_seen" ];
handlers = (
  {
    event = "*";
    payload = false;
    statements = (
      {
        params = [ "event.stream_id", "event.position" ];
        sql = "INSERT INTO streams_seen AS s (stream_id, events, last_position)"
              " VALUES ($1::uuid, 1, $2)"
              " ON CONFLICT (stream_id) DO UPDATE"
              "   SET events = s.events + 1, last_position = greatest(s.last_position, $2)";
      }
    );
  }
);
"""

STREAMS_SQL = """CREATE TABLE IF NOT EXISTS read_model.streams_seen (
    stream_id     uuid PRIMARY KEY,
    events        bigint NOT NULL,
    last_position bigint NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON read_model.streams_seen TO projectord;
"""


def assert_streams_exact(db):
    assert db.query("SELECT stream_id, events, last_position FROM read_model.streams_seen ORDER BY 1") == \
        db.query("""SELECT stream_id, count(*), max(global_position) FROM event_store.domain_event
                     GROUP BY 1 ORDER BY 1""")


def test_own_projection_without_examples_then_opt_back_in(cluster, request, workdir, tmp_path):
    db = new_db(cluster, "noex_run")
    r = migrate(db, "--no-examples")
    assert r.returncode == EXIT_OK, r.stderr
    db.execute(STREAMS_SQL)  # the team's own migration
    declared = tmp_path / "declared"
    declared.mkdir()
    (declared / "streams_seen.conf").write_text(STREAMS_CONF)
    extra = f'projection_dir = "{declared}";'
    without = {name: {"enabled": False} for name in EXAMPLES} | {"streams_seen": {}}
    db.append_all(generate_mix(seed=1901, n_events=1500, days=3))

    with daemon_starter(request, workdir, db.conninfo) as start:
        d = start(projections=without, extra=extra)
        d.wait_caught_up(timeout=60)
        assert_streams_exact(db)
        env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo)
        # check-config prepares the enabled projection's statements: all there.
        check = run_cli(["-c", d.config_path, "check-config"], env=env)
        assert check.returncode == EXIT_OK, check.stderr
        assert "does not exist" not in check.stderr
        status = run_cli(["-c", d.config_path, "status", "--json", "--check"], env=env)
        assert status.returncode == EXIT_OK, status.stderr
        assert [row["projection_name"] for row in json.loads(status.stdout)] == ["streams_seen"]
        assert status.stderr == ""
        assert d.stop() == EXIT_OK

        # Opting back in: a plain migrate applies the examples, out of order.
        listed = example_files()
        again = migrate(db)
        assert again.returncode == EXIT_OK, again.stderr
        assert [line.split(":")[0] for line in again.stdout.splitlines() if ": applied (" in line] == listed
        assert "left out" not in again.stdout
        assert sorted(row[4] for row in history(db)) == sorted(row[4] for row in expected_history())
        # ... ending in the schema a fresh database gets (the team's own table aside).
        fresh = new_db(cluster, "noex_fresh")
        assert migrate(fresh).returncode == EXIT_OK
        fresh.execute(STREAMS_SQL)
        assert schemainfo.differences(schemainfo.catalog(fresh.conninfo),
                                      schemainfo.catalog(db.conninfo)) == []

        # The four examples start from the beginning, next to the team's own.
        d2 = start(projections={name: {} for name in PROJECTIONS} | {"streams_seen": {}}, extra=extra)
        db.append_all(email_unique(generate_mix(seed=1902, n_events=800, days=2), "later"))
        d2.wait_caught_up(timeout=90)
        with db.connect() as conn:
            oracle.assert_invariants(conn)
            oracle.assert_read_model_matches_fold(conn)
        assert_streams_exact(db)


def test_an_enabled_example_without_its_tables_is_named(cluster, request, workdir):
    """The examples left out but a projection of theirs still enabled (the
    default config): check-config says which and what to do, not only
    `relation does not exist`; so do `run`'s error and the status row."""
    db = new_db(cluster, "noex_enabled")
    assert migrate(db, "--no-examples").returncode == EXIT_OK
    config = os.path.join(workdir, "default.conf")
    with open(config, "w") as f:
        f.write('projections = { catalog = { enabled = true; }; };\n')
    r = run_cli(["-c", config, "check-config"], env=clean_env(PROJECTORD_DATABASE_URL=db.conninfo))
    assert r.returncode == EXIT_CONFIG
    assert "projection catalog: its tables are not there" in r.stderr
    assert "projectord migrate --examples" in r.stderr and "catalog.enabled = false" in r.stderr
    # Once per projection, not once per statement.
    assert r.stderr.count("its tables are not there") == len(EXAMPLES)

    only_catalog = {name: {"enabled": name == "catalog"} for name in EXAMPLES}
    with daemon_starter(request, workdir, db.conninfo) as start:
        d = start(projections=only_catalog)
        d.wait_until(lambda conn: conn.execute(
            "SELECT last_error FROM read_model.projection_metadata WHERE status = 'failed'").fetchall(),
            30, "catalog to fail")
        error = db.scalar("SELECT last_error FROM read_model.projection_metadata")
        assert "does not exist" in error and "`projectord migrate --examples`; or disable it" in error
        assert "projectord migrate --examples" in d.log()
