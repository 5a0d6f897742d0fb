"""The command line for scripts and operators (issue 19, "The command
line"): `--json` for `list`, `check-config`, `status` and `dead-letters`;
`status NAME...`; the status table sized to its content, with heartbeats as
ages and a rebuild's progress; `dead-letters --purge NAME [--before
POSITION]`, and what a role without the right to delete is told."""

import json
import os
import re

import psycopg

import oracle
from daemon import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PROJECTIONS, as_user, config_text, run_cli
from scenarios import users_scenario
from test_dead_letters import BOB, CARL, scenario

SECRET = "s3cr3t"


def write(workdir, text, name="p.conf"):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def cli_json(args):
    proc = run_cli(args)
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------
# list --json, check-config --json
# --------------------------------------------------------------------------

def test_list_json_names_tables_and_event_types(workdir):
    path = write(workdir, config_text(None))
    doc = cli_json(["-c", path, "list", "--json"])
    assert [p["name"] for p in doc] == cli_json(["-c", path, "list", "--names", "--json"])
    assert sorted(p["name"] for p in doc) == sorted(PROJECTIONS)
    by_name = {p["name"]: p for p in doc}
    assert by_name["users"]["tables"] == ["read_model.users"]
    assert set(by_name["catalog"]["tables"]) == {"read_model.categories", "read_model.products"}
    for name in oracle.KNOWN:
        p = by_name[name]
        assert set(p) >= {"name", "version", "description", "origin", "file", "tables", "event_types"}
        assert isinstance(p["version"], int)
        assert p["origin"] in ("compiled-in", "declared")
        assert (p["file"] is None) == (p["origin"] == "compiled-in")
        assert set(oracle.HANDLED.get(name, ())) <= set(p["event_types"]), name


def test_check_config_json_masks_the_password(db, workdir):
    conninfo = db.conninfo + f" password={SECRET}"
    path = write(workdir, config_text(conninfo, batch_size=123, level="warning",
                                      projections={n: {"enabled": n != "orders"} for n in PROJECTIONS}))
    proc = run_cli(["-c", path, "check-config", "--json"])
    assert proc.returncode == EXIT_OK, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"] == path
    settings = doc["settings"]
    assert settings["batch_size"] == 123
    assert settings["log"]["level"] == "warning"
    assert settings["database"]["target"] is None
    assert "password=********" in settings["database"]["conninfo"]
    assert settings["projections"]["orders"] == {"enabled": False, "on_error": "stop"}
    assert settings["projections"]["users"]["enabled"] is True
    assert doc["statements_checked"] is True and doc["rejected_statements"] == []

    # Unreachable: the file alone, and it says so.
    path = write(workdir, config_text("host=127.0.0.1 port=1 dbname=x user=x"), "closed.conf")
    doc = cli_json(["-c", path, "check-config", "--json"])
    assert doc["statements_checked"] is False


# --------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------

def columns(header):
    """{title: start offset} of the table's header line."""
    return {m.group(0).strip(): m.start() for m in re.finditer(r"\S+(?: \S+)*", header)}


def test_status_names_json_widths_and_heartbeat_ages(db, start_daemon):
    daemon = start_daemon()
    db.append(users_scenario().script.commands)
    daemon.wait_caught_up()

    proc = run_cli(["-c", daemon.config_path, "status"])
    assert proc.returncode == EXIT_OK, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0]
    at = columns(header)
    # Sized to the content: the first column as wide as the longest name.
    widest = max(len(n) for n in PROJECTIONS + ["PROJECTION"])
    assert at["STATUS"] == widest + 2, header
    for line in lines[1:]:
        if line.startswith(" "):
            continue  # details under a row
        assert line[at["STATUS"]:].split()[0] in ("live", "catching_up"), line
        # Heartbeats as ages, not timestamps.
        assert re.search(r"\b\d+(\.\d)? s ago\b", line), line
        assert not re.search(r"\d{4}-\d\d-\d\dT", line), line

    proc = run_cli(["-c", daemon.config_path, "status", "users", "catalog"])
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = [line.split()[0] for line in proc.stdout.splitlines()[1:] if not line.startswith(" ")]
    assert rows == ["catalog", "users"]

    doc = cli_json(["-c", daemon.config_path, "status", "--json", "users"])
    assert [r["projection_name"] for r in doc] == ["users"]
    users = doc[0]
    assert users["status"] == "live" and users["healthy"] is True
    assert users["lag_events"] == 0 and users["lag_seconds"] == 0
    assert users["last_position"] == users["head_position"] > 0
    assert 0 <= users["heartbeat_age_seconds"] < 30
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", users["heartbeat_at"])
    assert users["rebuild"] is None
    for key in ("events_processed", "events_skipped", "events_ignored", "owner", "last_error",
                "stalled", "progressed_at", "unhealthy_reason"):
        assert key in users, key

    # Only the named ones are judged.
    db.execute("UPDATE read_model.projection_metadata SET status = 'failed' WHERE projection_name = 'orders'")
    try:
        assert run_cli(["-c", daemon.config_path, "status", "--check", "users"]).returncode == EXIT_OK
        proc = run_cli(["-c", daemon.config_path, "status", "--check"])
        assert proc.returncode == EXIT_FAILURE and "orders is unhealthy" in proc.stderr, proc.stderr
    finally:
        db.execute("UPDATE read_model.projection_metadata SET status = 'live' WHERE projection_name = 'orders'")

    proc = run_cli(["-c", daemon.config_path, "status", "users", "no_such_projection"])
    assert proc.returncode == EXIT_USAGE and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no_such_projection" in proc.stderr, proc.stderr


def test_status_shows_a_rebuilds_progress(db, workdir):
    """A rebuild under way (its row in read_model.projection_rebuild, as the
    shadow runner keeps it) shows as `rebuilding: DONE / TOTAL events` under
    its projection, and as "rebuild" in the JSON."""
    path = write(workdir, config_text(as_user(db.conninfo, "projectord")))
    db.append(users_scenario().script.commands)
    head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")
    db.execute("INSERT INTO read_model.projection_metadata (projection_name, status, last_position)"
               " VALUES ('users', 'live', %s), ('catalog', 'live', %s)", (head, head))
    db.execute("INSERT INTO read_model.projection_rebuild (projection_name, status, last_position,"
               " events_total, started_at) VALUES ('users', 'rebuilding', 3, %s, now() - interval '42 s')",
               (head,))
    proc = run_cli(["-c", path, "status"])
    assert proc.returncode == EXIT_OK, proc.stderr
    assert re.search(rf"^users\s+rebuilding\b.*\n    rebuilding: 3 / {head} events "
                     rf"\(\d+%\), started 4\d s ago$", proc.stdout, re.M), proc.stdout
    assert "rebuilding:" not in proc.stdout.split("\nusers")[0], "catalog has no rebuild"
    doc = {r["projection_name"]: r for r in cli_json(["-c", path, "status", "--json"])}
    assert doc["users"]["rebuild"]["position"] == 3
    assert doc["users"]["rebuild"]["events_total"] == head
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["users"]["rebuild"]["started_at"])
    assert doc["catalog"]["rebuild"] is None

    # A failed rebuild is no rebuild under way.
    db.execute("UPDATE read_model.projection_rebuild SET status = 'failed'")
    proc = run_cli(["-c", path, "status"])
    assert "rebuilding:" not in proc.stdout, proc.stdout


# --------------------------------------------------------------------------
# dead-letters --json, --purge
# --------------------------------------------------------------------------

def test_dead_letters_json_and_purge(db, start_daemon):
    positions = scenario(db)
    daemon = start_daemon(poll_interval_ms=200, projections={
        "catalog": {}, "event_stats": {}, "orders": {}, "users": {"on_error": "skip"}})
    daemon.wait_caught_up(timeout=30, allow_skipped=True)
    assert daemon.stop() == 0

    letters = cli_json(["-c", daemon.config_path, "dead-letters", "--json", "users"])
    assert [d["position"] for d in letters] == [positions[BOB], positions[CARL]]
    bob, carl = letters
    assert bob["projection"] == "users" and bob["event_type"] == "UserRegistered"
    assert bob["sqlstate"] == "23505" and carl["sqlstate"] is None
    assert bob["payload"] == {"email": "ANN@example.com", "first_name": "F", "last_name": "L"}
    assert carl["payload"] == {"first_name": "no email"}
    assert bob["error"] and re.fullmatch(r"[0-9a-f-]{36}", bob["event_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", bob["failed_at"])
    assert cli_json(["-c", daemon.config_path, "dead-letters", "--json"]) == letters
    assert cli_json(["-c", daemon.config_path, "dead-letters", "--json", "orders"]) == []

    # A role that may read them but not delete them is told so, and nothing goes.
    db.execute("CREATE ROLE dl_reader LOGIN")
    try:
        db.execute("GRANT USAGE ON SCHEMA read_model, event_store TO dl_reader")
        db.execute("GRANT SELECT ON ALL TABLES IN SCHEMA read_model, event_store TO dl_reader")
        path = os.path.join(daemon.workdir, "reader.conf")
        with open(path, "w") as f:
            f.write(config_text(as_user(db.conninfo, "dl_reader")))
        proc = run_cli(["-c", path, "dead-letters", "--purge", "users"])
        assert proc.returncode == EXIT_FAILURE, proc
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "dl_reader may not delete dead letters" in proc.stderr and "42501" in proc.stderr
        assert len(cli_json(["-c", daemon.config_path, "dead-letters", "--json"])) == 2
    finally:
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            conn.execute("DROP OWNED BY dl_reader")
            conn.execute("DROP ROLE dl_reader")

    # The daemon's role may: those below the position, then the rest.
    proc = run_cli(["-c", daemon.config_path, "dead-letters", "--purge", "users", "--before",
                    str(positions[CARL])])
    assert proc.returncode == EXIT_OK, proc.stderr
    assert f"users: 1 dead letter purged (positions below {positions[CARL]})" in proc.stdout
    assert [d["position"] for d in cli_json(["-c", daemon.config_path, "dead-letters", "--json"])] \
        == [positions[CARL]]
    proc = run_cli(["-c", daemon.config_path, "dead-letters", "--purge", "orders"])
    assert proc.returncode == EXIT_OK and "orders: 0 dead letters purged" in proc.stdout, proc
    proc = run_cli(["-c", daemon.config_path, "dead-letters", "--purge", "users"])
    assert proc.returncode == EXIT_OK and "users: 1 dead letter purged" in proc.stdout, proc
    assert cli_json(["-c", daemon.config_path, "dead-letters", "--json"]) == []
    # The events themselves are untouched.
    assert db.scalar("SELECT count(*) FROM event_store.domain_event") == 4
