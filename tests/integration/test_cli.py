"""SPEC §6–§7 command line: exit codes, config errors (one line naming file,
line and key), list, check-config with secrets masked, status, and the
environment overrides."""

import json
import os
import re
import time

import pytest

import oracle
from scenarios import users_scenario
from daemon import (PROJECTIONS, EXIT_CONFIG, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, REPO_ROOT, clean_env,
                    config_text, metadata, run_cli)
from pgcluster import free_port

SECRET = "s3cr3t"


@pytest.fixture
def write_config(workdir):
    """write_config(text, name='projectord.conf') -> path of the file."""
    def write(text, name="projectord.conf"):
        path = os.path.join(workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path
    return write


def closed_conninfo():
    """A conninfo nobody answers: a port we just found free."""
    return f"host=127.0.0.1 port={free_port()} dbname=nothing user=postgres"


def stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------
# Configuration errors -> 78 and one line naming file, line and key
# --------------------------------------------------------------------------

# (id, file text, line of the error, key the message must name or None)
BAD_CONFIGS = [
    ("syntax", 'batch_size = 10;\npoll_interval_ms = ;\n', 2, None),
    ("unknown-key", 'batch_size = 10;\nbatch_sise = 3;\n', 2, "batch_sise"),
    ("unknown-nested-key", 'batch_size = 10;\nlog = {\n  levl = "debug";\n};\n', 3, "levl"),
    ("unknown-projection", 'projections = {\n  catalog = { enabled = true; };\n  catalg = { enabled = true; };\n};\n',
     3, "catalg"),
    ("batch-size-zero", '# a comment first\nbatch_size = 0;\n', 2, "batch_size"),
    ("batch-size-string", 'log = { level = "info"; };\n\nbatch_size = "x";\n', 3, "batch_size"),
    ("on-error-maybe", 'projections = {\n  users = {\n    enabled = true;\n    on_error = "maybe";\n  };\n};\n',
     4, "on_error"),
    ("enabled-not-bool", 'projections = {\n  orders = { enabled = "yes"; };\n};\n', 2, "enabled"),
    ("bad-log-level", 'log = { level = "loud"; };\n', 1, "level"),
]


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("text,line,key", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_78_with_one_line(write_config, command, text, line, key):
    path = write_config(f'database = {{ conninfo = "{closed_conninfo()}"; }};\n' + text)
    line += 1  # the database line above
    proc = run_cli(["-c", path, command], timeout=15)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, f"expected one line, got: {lines}"
    assert re.search(re.escape(path) + r"\D{0,12}\b" + str(line) + r"\b", lines[0]), \
        f"the line must name {path} and line {line}: {lines[0]}"
    if key:
        assert key in lines[0]


def test_missing_config_file_exits_78(workdir):
    path = os.path.join(workdir, "absent.conf")
    proc = run_cli(["-c", path, "check-config"])
    assert proc.returncode == EXIT_CONFIG
    lines = stderr_lines(proc)
    assert len(lines) == 1 and path in lines[0], lines


# --------------------------------------------------------------------------
# Usage
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["frobnicate"], ["--bogus-option", "list"], ["status", "--bogus"]],
                         ids=["unknown-command", "unknown-option", "unknown-argument"])
def test_usage_errors_exit_64(write_config, args):
    path = write_config(config_text(closed_conninfo()))
    proc = run_cli(["-c", path] + args)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.strip(), "a usage error says why on stderr"


COMMANDS = ["run", "status", "rebuild", "dead-letters", "replay-dead-letters", "resume",
            "adopt-restored-store", "migrate", "list", "check-config"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_its_help(command, flag):
    """`projectord COMMAND --help` prints that command's usage on stdout and
    exits 0, without a configuration file or a database (issue 19)."""
    proc = run_cli(["-c", "/nonexistent/projectord.conf", command, flag], timeout=15)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr == ""
    first = proc.stdout.splitlines()[0]
    assert first.startswith("usage: projectord") and f" {command}" in first, first
    for other in COMMANDS:
        if other != command and not other.startswith(command):
            assert not re.search(rf"^{re.escape(other)}\b", proc.stdout, re.M), other


def test_no_command_prints_usage_and_starts_no_daemon(db, workdir):
    """Without a command projectord says how to use it (stderr, exit 64); it
    used to start the daemon. `run` stays explicit (issue 19)."""
    path = os.path.join(workdir, "p.conf")
    with open(path, "w") as f:
        f.write(config_text(db.conninfo))
    for argv in (["-c", path], ["-c", path, "-l", "debug"]):
        proc = run_cli(argv, timeout=15)
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.startswith("usage: projectord") and "\nrun" in proc.stderr, proc.stderr
    assert db.query("SELECT count(*) FROM read_model.projection_metadata") == [(0,)]


@pytest.mark.parametrize("args", [[c, "--bogus"] for c in COMMANDS] + [
    ["--bogus"], ["-c"], ["frobnicate"], ["status", "--max-lag"], ["status", "--max-lag", "soon"],
    ["status", "no_such_projection"], ["dead-letters", "--purge"], ["dead-letters", "--before", "3"],
    ["dead-letters", "--purge", "users", "--before", "x"], ["dead-letters", "--purge", "nope"],
    ["check-config", "--json", "extra"], ["list", "--names", "extra"]],
    ids=lambda a: " ".join(a))
def test_usage_errors_are_one_line(write_config, args):
    """A wrong option or argument, for any command: exit 64 and one line on
    stderr (not the whole usage), nothing on stdout."""
    path = write_config(config_text(closed_conninfo()))
    argv = args if args[0] in ("--bogus", "-c") else ["-c", path] + args
    proc = run_cli(argv, timeout=15)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert len(stderr_lines(proc)) == 1, proc.stderr
    assert proc.stdout == ""


def test_daemon_starters_say_run():
    """What starts the daemon says `run`: the unit, the image, compose, the
    demo, the tests' Daemon."""
    def text(*path):
        with open(os.path.join(REPO_ROOT, *path)) as f:
            return f.read()
    assert re.search(r"^ExecStart=\S*/projectord run$", text("systemd", "projectord.service.in"), re.M)
    assert 'CMD ["run"]' in text("Dockerfile")
    compose = text("docker-compose.yml")
    assert "command:" not in compose.split("  projectord:")[1], "compose overrides the image's run"
    assert re.search(r'"\$bin" -c "\$work/projectord.conf" run ', text("scripts", "demo.sh"))
    assert '"run"]' in text("tests", "integration", "daemon.py")


def project_version():
    with open(os.path.join(REPO_ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(projectord\s+VERSION\s+([0-9.]+)", f.read()).group(1)


def test_version_and_help():
    proc = run_cli(["--version"])
    assert proc.returncode == EXIT_OK
    assert project_version() in proc.stdout
    proc = run_cli(["--help"])
    assert proc.returncode == EXIT_OK
    for command in ("run", "status", "list", "check-config"):
        assert command in proc.stdout


def test_list_shows_projections_tables_and_event_types(write_config):
    proc = run_cli(["-c", write_config(config_text(closed_conninfo())), "list"])
    assert proc.returncode == EXIT_OK, proc.stderr
    out = proc.stdout
    tables = {"catalog": ["categories", "products"], "users": ["users"],
              "orders": ["orders", "daily_sales"], "event_stats": ["event_type_stats"]}
    for name in oracle.KNOWN:
        assert re.search(rf"\b{name}\b", out), name
        for table in tables[name]:
            assert re.search(rf"\b{table}\b", out), table
        for event_type in oracle.HANDLED.get(name, ()):
            assert re.search(rf"\b{event_type}\b", out), event_type


# --------------------------------------------------------------------------
# check-config and secrets
# --------------------------------------------------------------------------

def test_check_config_prints_effective_config_with_password_masked(write_config):
    conninfo = f"host=127.0.0.1 port=5 dbname=app user=postgres password={SECRET}"
    path = write_config(config_text(conninfo, batch_size=123, poll_interval_ms=4567, level="warning"))
    proc = run_cli(["-c", path, "check-config"])
    assert proc.returncode == EXIT_OK, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert re.search(r"batch_size\s*=\s*123\b", proc.stdout)
    assert re.search(r"poll_interval_ms\s*=\s*4567\b", proc.stdout)
    assert "dbname=app" in proc.stdout


def test_database_url_password_masked(write_config):
    env = clean_env(PROJECTORD_DATABASE_URL=f"postgresql://postgres:{SECRET}@127.0.0.1:5/app")
    proc = run_cli(["-c", write_config(config_text(None)), "check-config"], env=env)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "127.0.0.1" in proc.stdout


def test_password_never_in_daemon_log(db, start_daemon):
    daemon = start_daemon(conninfo=db.conninfo + f" password={SECRET}", level="debug")
    daemon.wait_started()
    assert daemon.stop() == 0
    log = daemon.log(tail=100000)
    assert "starting" in log or "connected" in log, "the daemon logged nothing at debug level?"
    assert SECRET not in log


# --------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------

def test_status_after_a_run(db, start_daemon):
    daemon = start_daemon()
    db.append(users_scenario().script.commands)
    daemon.wait_caught_up()
    assert daemon.stop() == 0

    proc = run_cli(["-c", daemon.config_path, "status"])
    assert proc.returncode == EXIT_OK, proc.stderr
    for name in PROJECTIONS:
        assert re.search(rf"^\s*{name}\b.*\bstopped\b", proc.stdout, re.M), f"no row for {name}"

    proc = run_cli(["-c", daemon.config_path, "status", "--json"])
    assert proc.returncode == EXIT_OK, proc.stderr
    doc = json.loads(proc.stdout)
    text = json.dumps(doc)
    for name in PROJECTIONS:
        assert f'"{name}"' in text


def test_idle_daemon_is_live_and_healthy(db, start_daemon):
    """A daemon with nothing to do is live, keeps its heartbeat fresh (the
    view calls a heartbeat older than 30 s unhealthy) and passes --check."""
    def all_live(conn):
        rows = metadata(conn)
        return all(rows.get(n, {}).get("status") == "live" for n in PROJECTIONS) and rows

    def oldest_beat(conn):
        return min(r["heartbeat_at"] for r in metadata(conn).values())

    daemon = start_daemon()
    rows = daemon.wait_until(all_live, 10, "every projection to be live on an empty store")
    newest = max(r["heartbeat_at"] for r in rows.values())
    daemon.wait_until(lambda conn: oldest_beat(conn) > newest, 35,
                      "the heartbeat of an idle daemon to be refreshed", interval=0.5)
    proc = run_cli(["-c", daemon.config_path, "status", "--check"])
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr


def test_status_unreachable_database_exits_69_quickly(write_config):
    path = write_config(config_text(closed_conninfo()))
    started = time.monotonic()
    proc = run_cli(["-c", path, "status"], timeout=30)
    assert time.monotonic() - started < 15
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert len(stderr_lines(proc)) == 1, proc.stderr
    assert stderr_lines(proc)[0].endswith("(SQLSTATE 08001)"), proc.stderr


@pytest.mark.parametrize("what", ["database", "role"])
def test_a_refusing_server_is_told_from_an_unreachable_one(db, write_config, what):
    """The server answers and refuses (no such database, no such role):
    exit 77, one line, not 69 ("unreachable", above)."""
    conninfo = (f"host=127.0.0.1 port={db.cluster.port} user=postgres dbname=no_such_db"
                if what == "database" else
                f"host=127.0.0.1 port={db.cluster.port} user=no_such_role dbname={db.name}")
    proc = run_cli(["-c", write_config(config_text(conninfo)), "status"], timeout=30)
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "refused by the server" in lines[0], lines
    assert f"no_such_{what}" in lines[0] or "does not exist" in lines[0], lines
    # The server's SQLSTATE, as every database error line names one.
    assert lines[0].endswith("(SQLSTATE 3D000)" if what == "database" else "(SQLSTATE 28000)"), lines


# --------------------------------------------------------------------------
# Environment overrides
# --------------------------------------------------------------------------

def uri(db):
    return f"postgresql://postgres@127.0.0.1:{db.cluster.port}/{db.name}"


def test_database_url_overrides_the_file(db, write_config):
    bad_file = write_config(config_text(closed_conninfo()), "bad.conf")
    good_file = write_config(config_text(db.conninfo), "good.conf")
    assert run_cli(["-c", bad_file, "status"]).returncode == EXIT_UNAVAILABLE
    proc = run_cli(["-c", bad_file, "status"], env=clean_env(PROJECTORD_DATABASE_URL=uri(db)))
    assert proc.returncode == EXIT_OK, proc.stderr
    proc = run_cli(["-c", good_file, "status"], env=clean_env(PROJECTORD_DATABASE_URL=closed_conninfo()))
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr


def test_pg_variables_apply_without_conninfo(db, write_config):
    path = write_config(config_text(None))
    pg = dict(PGHOST="127.0.0.1", PGUSER="postgres", PGDATABASE=db.name)
    proc = run_cli(["-c", path, "status"], env=clean_env(PGPORT=db.cluster.port, **pg))
    assert proc.returncode == EXIT_OK, proc.stderr
    proc = run_cli(["-c", path, "status"], env=clean_env(PGPORT=free_port(), **pg))
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr


def test_check_config_shows_the_effective_target(db, write_config):
    """check-config says where the daemon would connect, also when host,
    port, database and user come from PG* variables: as the connection
    found them when the database answers, else as configured."""
    path = write_config(config_text(None))
    pg = dict(PGHOST="127.0.0.1", PGUSER="postgres", PGDATABASE=db.name)
    proc = run_cli(["-c", path, "check-config"], env=clean_env(PGPORT=db.cluster.port, **pg))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert (f"# database: host=127.0.0.1 port={db.cluster.port} dbname={db.name} user=postgres "
            "(connected)") in proc.stdout, proc.stdout
    port = free_port()
    proc = run_cli(["-c", path, "check-config", "--json"], env=clean_env(PGPORT=port, **pg))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["effective_target"] == {"database": {
        "host": "127.0.0.1", "port": str(port), "dbname": db.name, "user": "postgres",
        "from": "configuration and environment"}}
    # The conninfo's own values win over the environment; a separate read model is shown apart.
    path = write_config(config_text(f"host=127.0.0.1 port={port} dbname=events user=writer",
                                    target=f"host=127.0.0.1 port={port} dbname=reads"), "t.conf")
    proc = run_cli(["-c", path, "check-config", "--json"], env=clean_env(PGUSER="someone"))
    targets = json.loads(proc.stdout)["effective_target"]
    assert targets["event_store"]["dbname"] == "events" and targets["event_store"]["user"] == "writer"
    assert targets["read_model"]["dbname"] == "reads" and targets["read_model"]["user"] == "someone"


def effective_level(proc):
    match = re.search(r'level\s*=\s*"(\w+)"', proc.stdout)
    assert match, proc.stdout
    return match.group(1)


def test_log_level_overrides(write_config):
    path = write_config(config_text(closed_conninfo(), level="error"))
    assert effective_level(run_cli(["-c", path, "check-config"])) == "error"
    proc = run_cli(["-c", path, "check-config"], env=clean_env(PROJECTORD_LOG_LEVEL="debug"))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert effective_level(proc) == "debug"
    proc = run_cli(["-c", path, "-l", "warning", "check-config"])
    assert proc.returncode == EXIT_OK, proc.stderr
    assert effective_level(proc) == "warning"
    proc = run_cli(["-c", path, "check-config"], env=clean_env(PROJECTORD_LOG_LEVEL="loud"))
    assert proc.returncode == EXIT_CONFIG
    assert len(stderr_lines(proc)) == 1 and "PROJECTORD_LOG_LEVEL" in proc.stderr
