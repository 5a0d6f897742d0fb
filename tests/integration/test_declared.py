"""SPEC §8: projections declared in files. A new projection from one
declared file and one table (no compiler), its events validated and applied
like a compiled-in projection's and rebuilt by the harness; files that can
not be loaded exit 78 with one FILE:LINE line; `list` says which form is in
use; projections.NAME blocks accept declared names.

The declared forms of the four examples run the whole projection suite with
PROJECTORD_TEST_DECLARED=1 (tests/CMakeLists.txt registers those runs)."""

import os
import signal
import uuid

import pytest

from daemon import (PROJECTIONS, DECLARED_DIR, EXIT_CONFIG, EXIT_OK, clean_env, config_text, libconfig_string,
                    metadata, run_cli)
from eventgen import Script, at
from pgcluster import free_port
from scenarios import users_scenario

WIDGETS = """\
# widgets: how often each widget was seen, and its parts.
name = "widgets";
version = 1;
description = "widgets seen, with their parts";
tables = [ "widgets", "widget_parts" ];

handlers = (
  {
    event = "WidgetSeen";
    fields = {
      colour = "text";
      size = { type = "integer"; min = 1; };
      parts = { type = "array"; fields = { part_id = "uuid"; }; };
      shiny = "boolean?";
    };
    statements = (
      {
        params = [ "event.aggregate_id", "colour", "size", "shiny", "event.occurred_at" ];
        sql = "INSERT INTO widgets AS w (id, colour, size, shiny, seen, updated_at)"
              " VALUES ($1::uuid, $2::text, $3::bigint, $4::boolean, 1, $5::timestamptz)"
              " ON CONFLICT (id) DO UPDATE SET colour = excluded.colour, size = excluded.size,"
              "   shiny = excluded.shiny, seen = w.seen + 1, updated_at = excluded.updated_at";
      },
      {
        for_each = "parts";
        params = [ "event.aggregate_id", "parts.part_id" ];
        sql = "INSERT INTO widget_parts (widget_id, part_id) VALUES ($1::uuid, $2::uuid)"
              " ON CONFLICT DO NOTHING";
      }
    );
  },
  {
    event = "WidgetPolished";
    statements = (
      {
        bulk = true;
        count_ignored = true;
        params = [ "event.aggregate_id", "event.occurred_at" ];
        sql = "UPDATE widgets w SET shiny = true, updated_at = e.at"
              " FROM unnest($1::uuid[], $2::timestamptz[]) AS e(id, at) WHERE w.id = e.id";
      }
    );
  }
);
"""

# The projection's one migration, as a user would write it (sql/V0NN__widgets.sql).
WIDGETS_SQL = """
CREATE TABLE read_model.widgets (id uuid PRIMARY KEY, colour text NOT NULL, size bigint NOT NULL,
                                 shiny boolean, seen integer NOT NULL,
                                 updated_at timestamptz NOT NULL);
CREATE TABLE read_model.widget_parts (widget_id uuid, part_id uuid,
                                      PRIMARY KEY (widget_id, part_id));
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON read_model.widgets, read_model.widget_parts
    TO projectord;
"""


def declared_dir(workdir, files):
    """A projection_dir in workdir holding files {name: text}."""
    path = os.path.join(workdir, "declared")
    os.makedirs(path, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    return path


def test_a_projection_declared_in_a_file_runs_without_a_compiler(db, workdir, projection_case):
    db.execute(WIDGETS_SQL)
    w1, w2, p1, p2 = (uuid.uuid4() for _ in range(4))
    hostile = "red'); DROP TABLE read_model.widgets; --"
    case = projection_case("widgets", projection_dir=declared_dir(workdir, {"widgets.conf": WIDGETS}))
    case.emit("Widget", w1, "WidgetSeen", {"colour": "red", "size": 3,
                                            "parts": [{"part_id": str(p1)}, {"part_id": str(p2)}]},
              at(0, 9))
    case.emit("Widget", w1, "WidgetSeen", {"colour": hostile, "size": 4, "parts": []}, at(0, 10))
    case.emit("Widget", w2, "WidgetSeen", {"colour": "blue", "size": 0, "parts": []}, at(0, 11))
    case.emit("Widget", w2, "WidgetSeen", {"colour": "blue", "size": 2,
                                            "parts": [{"part_id": "nope"}]}, at(0, 12))
    case.emit("Widget", w2, "WidgetSeen", {"size": 2, "parts": []}, at(0, 13))
    case.emit("Widget", w1, "WidgetPolished", {}, at(0, 14))
    case.emit("Widget", w2, "WidgetPolished", {}, at(0, 15))  # no such widget: ignored
    case.run()
    case.assert_rows("widgets", {w1: {"colour": hostile, "size": 4, "seen": 2, "shiny": True,
                                      "updated_at": at(0, 14)}})
    case.assert_rows("widget_parts", {(w1, p1): {}, (w1, p2): {}})
    assert case.bad == [
        ("WidgetSeen", "field 'size' must be >= 1 (got 0)"),
        ("WidgetSeen", "parts[0]: field 'part_id' is not a uuid in 8-4-4-4-12 form"),
        ("WidgetSeen", "field 'colour' is missing"),
    ]
    assert case.status["events_ignored"] == 1


def test_list_says_which_form_is_in_use(workdir):
    path = declared_dir(workdir, {"catalog.conf": open(os.path.join(DECLARED_DIR, "catalog.conf")).read(),
                                  "widgets.conf": WIDGETS})
    proc = run_cli(["list"], env=clean_env(PROJECTORD_PROJECTION_DIR=path))
    assert proc.returncode == EXIT_OK, proc.stderr
    lines = proc.stdout.splitlines()
    form = {lines[i].split(" ", 1)[0]: lines[i + 1].strip() for i in range(len(lines))
            if not lines[i].startswith(" ")}
    assert form == {"catalog": f"declared ({path}/catalog.conf)", "event_stats": "compiled-in",
                    "orders": "compiled-in", "users": "compiled-in",
                    "widgets": f"declared ({path}/widgets.conf)"}, proc.stdout


def test_projection_blocks_accept_declared_names(workdir):
    path = declared_dir(workdir, {"widgets.conf": WIDGETS})
    conninfo = f"host=127.0.0.1 port={free_port()} dbname=nothing user=postgres"
    projections = {"widgets": {"on_error": "skip"}, "orders": {"enabled": False}}
    cfg = os.path.join(workdir, "p.conf")
    with open(cfg, "w") as f:
        f.write(config_text(conninfo, projections=projections,
                            extra=f"projection_dir = {libconfig_string(path)};"))
    proc = run_cli(["-c", cfg, "check-config"])
    assert proc.returncode == EXIT_OK, proc.stderr
    assert 'widgets = { enabled = true; on_error = "skip"; };' in proc.stdout
    assert f"projection_dir = {libconfig_string(path)};" in proc.stdout
    # without the directory the name is unknown, as before (78)
    with open(cfg, "w") as f:
        f.write(config_text(conninfo, projections=projections))
    proc = run_cli(["-c", cfg, "check-config"])
    assert proc.returncode == EXIT_CONFIG
    assert "projections.widgets: unknown projection" in proc.stderr


BAD_FILES = [
    ("syntax", WIDGETS.replace('version = 1;', 'version = = 1;'), 3, "syntax error"),
    ("unknown-type", WIDGETS.replace('shiny = "boolean?";', 'shiny = "bool";'), 14,
     "field 'shiny': unknown field type 'bool'"),
    ("unknown-parameter", WIDGETS.replace('"colour", "size"', '"color", "size"'), 18,
     "parameter 'color' names no declared field"),
    ("placeholders", WIDGETS.replace("$5::timestamptz)", "now())"), 19,
     "its SQL uses 4 parameters ($1..$4) but 'params' names 5"),
]


@pytest.mark.parametrize("text,line,problem", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
@pytest.mark.parametrize("command", ["run", "check-config", "list"])
def test_a_file_that_cannot_be_loaded_exits_78_with_file_and_line(workdir, text, line, problem,
                                                                   command):
    path = declared_dir(workdir, {"widgets.conf": text})
    conninfo = f"host=127.0.0.1 port={free_port()} dbname=nothing user=postgres"
    cfg = os.path.join(workdir, "p.conf")
    with open(cfg, "w") as f:
        f.write(config_text(conninfo, extra=f"projection_dir = {libconfig_string(path)};"))
    proc = run_cli(["-c", cfg, command])
    assert proc.returncode == EXIT_CONFIG, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"projectord: {path}/widgets.conf:{line}: "), lines[0]
    assert problem in lines[0], lines[0]


def test_two_files_with_one_name_exit_78(workdir):
    path = declared_dir(workdir, {"a.conf": WIDGETS, "b.conf": WIDGETS})
    proc = run_cli(["list"], env=clean_env(PROJECTORD_PROJECTION_DIR=path))
    assert proc.returncode == EXIT_CONFIG
    assert proc.stderr.strip() == (f"projectord: {path}/b.conf:2: duplicate name: projection "
                                   f"'widgets' is declared in {path}/a.conf already")


def test_a_missing_projection_dir_exits_78(workdir):
    proc = run_cli(["list"], env=clean_env(PROJECTORD_PROJECTION_DIR=os.path.join(workdir, "no")))
    assert proc.returncode == EXIT_CONFIG
    assert "projection_dir: cannot read: No such file or directory" in proc.stderr


def test_a_statement_the_database_rejects_fails_that_projection_alone(db, workdir, start_daemon):
    """SPEC §8: the projection is failed with the SQLSTATE, the message and
    the file in its status row and the log; the others run; check-config
    reports the same; after a fix, a resume prepares again."""
    db.execute(WIDGETS_SQL)
    path = declared_dir(workdir, {"widgets.conf": WIDGETS.replace("SET shiny = true", "SET shinny = true")})
    line = WIDGETS.splitlines().index("        bulk = true;") + 1 - 1  # the statement's "{"
    projections = {name: {} for name in PROJECTIONS}
    projections["widgets"] = {}
    daemon = start_daemon(projections=projections,
                          extra=f"projection_dir = {libconfig_string(path)};")
    where = f"{path}/widgets.conf:{line}"

    def widgets_failed(conn):
        row = metadata(conn).get("widgets")
        return row if row and row["status"] == "failed" else None
    row = daemon.wait_until(widgets_failed, 30, "widgets to fail")
    assert row["last_error_sqlstate"] == "42703", row
    assert row["last_error"] == (f'statement 2 ({where}) does not prepare: column "shinny" of '
                                 'relation "widgets" does not exist'), row
    assert f"widgets: statement 2 ({where}) does not prepare" in daemon.log()
    db.append(users_scenario().script.commands)
    rows = daemon.wait_until(
        lambda conn: all(metadata(conn)[n]["status"] == "live" for n in PROJECTIONS)
        and metadata(conn), 30, "the other projections to run")
    assert rows["users"]["events_processed"] > 0

    proc = run_cli(["-c", daemon.config_path, "check-config"])
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert proc.stderr.strip() == (f'projectord: {where}: projection widgets: statement 2 does not '
                                   'prepare: column "shinny" of relation "widgets" does not exist '
                                   '(SQLSTATE 42703)')

    db.execute("ALTER TABLE read_model.widgets ADD COLUMN shinny boolean")
    assert run_cli(["-c", daemon.config_path, "resume", "widgets"]).returncode == EXIT_OK
    daemon.wait_until(lambda conn: metadata(conn)["widgets"]["status"] == "live", 30,
                      "widgets to run after the resume")
    proc = run_cli(["-c", daemon.config_path, "check-config"])
    assert proc.returncode == EXIT_OK, proc.stderr


GADGETS = """\
name = "gadgets";
version = 1;
tables = [ "gadgets" ];
handlers = (
  { event = "GadgetMade";
    fields = { label = "text"; };
    statements = ( { params = [ "event.aggregate_id", "label" ];
                     sql = "INSERT INTO gadgets (id, label) VALUES ($1::uuid, $2::text)"
                           " ON CONFLICT (id) DO NOTHING"; } ); }
);
"""


def test_sighup_loads_new_and_changed_files(db, workdir, start_daemon):
    """SPEC §8: SIGHUP loads a new file (its projection starts) and a changed
    one (a changed version rebuilds it without downtime, with the new
    statements); a file that can not be loaded changes nothing."""
    db.execute(WIDGETS_SQL)
    db.execute("CREATE TABLE read_model.gadgets (id uuid PRIMARY KEY, label text NOT NULL);"
               " GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON read_model.gadgets TO projectord")
    path = declared_dir(workdir, {"widgets.conf": WIDGETS})
    daemon = start_daemon(poll_interval_ms=200,
                          extra=f"projection_dir = {libconfig_string(path)};")
    w, g = uuid.uuid4(), uuid.uuid4()
    script = Script()
    for n in range(3):
        script.emit("Widget", w, "WidgetSeen", {"colour": "red", "size": 1, "parts": []}, at(0, 9 + n))
    script.emit("Gadget", g, "GadgetMade", {"label": "first"}, at(0, 12))
    db.append(script.commands)
    seen = "SELECT seen FROM read_model.widgets WHERE id = %s"
    daemon.wait_until(lambda conn: conn.execute(seen, (w,)).fetchone() == (3,), 20,
                      "widgets to apply its events")

    # A broken file: the reload says where, and everything runs on as it was.
    with open(os.path.join(path, "broken.conf"), "w") as f:
        f.write('name = "broken";\nversion = = 1;\n')
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: "reload: " + os.path.join(path, "broken.conf") + ":2: " in daemon.log(),
                      10, "the reload to report the broken file")
    os.unlink(os.path.join(path, "broken.conf"))

    # Version 2 counts every sighting ten times: the rebuild replays the
    # events with the new statement. And gadgets is new.
    with open(os.path.join(path, "widgets.conf"), "w") as f:
        f.write(WIDGETS.replace("version = 1;", "version = 2;")
                .replace("seen = w.seen + 1", "seen = w.seen + 10")
                .replace("$4::boolean, 1, $5", "$4::boolean, 10, $5"))
    with open(os.path.join(path, "gadgets.conf"), "w") as f:
        f.write(GADGETS)
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: conn.execute(seen, (w,)).fetchone() == (30,), 30,
                      "widgets to be rebuilt with version 2's statements")
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT label FROM read_model.gadgets WHERE id = %s", (g,)).fetchone() == ("first",), 20,
        "gadgets to start and apply its event")
    rows = daemon.wait_caught_up()
    assert rows["widgets"]["projection_version"] == 2
    assert rows["gadgets"]["status"] in ("live", "catching_up")
    log = daemon.log()
    assert "reload: gadgets: declared in" in log
    assert "reload: widgets: " in log and "changed (version 2, was 1)" in log
    script.commands = []
    script.emit("Widget", w, "WidgetSeen", {"colour": "blue", "size": 2, "parts": []}, at(0, 20))
    db.append(script.commands)
    daemon.wait_until(lambda conn: conn.execute(seen, (w,)).fetchone() == (40,), 20,
                      "widgets to apply new events with version 2")
