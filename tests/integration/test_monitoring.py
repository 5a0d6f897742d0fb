"""Logs and monitoring (issue 19): what a DBA sees of projectord's sessions
in pg_stat_activity (`application_name` per connection), JSON log records
with fields (`projection`, `position`, `sqlstate`, `instance`) and a
SQLSTATE on every database error line, the status transitions and a
catch-up's progress in the log, /healthz and /readyz on the metrics
listener, the process_* metrics, and the shipped Grafana dashboard and
Prometheus rules (promtool, and every metric they name is exported)."""

import json
import os
import random
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from daemon import ONLY_EVENT_STATS, PROJECTIONS, REPO_ROOT, clean_env, command, run_cli
from eventgen import Command, event, generate_mix
from pgcluster import free_port
from test_metrics import scrape, value

DASHBOARD = os.path.join(REPO_ROOT, "deploy", "grafana", "projectord.json")
RULES = os.path.join(REPO_ROOT, "deploy", "prometheus", "projectord-rules.yml")
RULES_TESTS = os.path.join(REPO_ROOT, "deploy", "prometheus", "projectord-rules.test.yml")

# Metrics the dashboard and the rules may name that a scrape does not show
# by itself, each with why (docs/monitoring.md lists them too):
CONDITIONAL_METRICS = {
    # Prometheus's own series for every scrape target: the instance-down alert.
    "up": "written by Prometheus for every target",
}


def metrics_config(port, extra=""):
    return f'metrics = {{ listen = "127.0.0.1:{port}"; }};\n' + extra


def get(port, path):
    """(status, body) of GET path on the metrics listener."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except urllib.error.URLError as err:  # not listening yet
        return None, str(err)


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def json_records(daemon):
    """The daemon's JSON log records (lines that are not JSON, e.g. the
    test harness's start markers, are left out)."""
    records = []
    for line in daemon.log(tail=1_000_000).splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def register(email, stream=None):
    return Command("User", stream or uuid.uuid4(), 0,
                   [event("UserRegistered", {"email": email, "first_name": "A", "last_name": "B"})])


def application_names(db, user="projectord"):
    with db.connect() as conn:
        rows = conn.execute("SELECT application_name FROM pg_stat_activity"
                            " WHERE datname = current_database() AND usename = %s", [user]).fetchall()
    return sorted(r[0] for r in rows)


# --------------------------------------------------------------------------
# application_name
# --------------------------------------------------------------------------

def test_application_name_per_connection(db, start_daemon):
    daemon = start_daemon(poll_interval_ms=200)
    daemon.wait_started()
    want = sorted(["projectord/listener"] + [f"projectord/{p}" for p in PROJECTIONS])
    wait_for(lambda: application_names(db) == want, 30, f"the sessions {want}")
    assert daemon.stop() == 0

    # A connection string that names its own application_name wins, for every session.
    mine = start_daemon(name="mine", poll_interval_ms=200,
                        daemon_conninfo=f"{db.conninfo} user=projectord application_name=mine")
    # (the tests' conninfo is key=value: the later keys win)
    mine.wait_started()
    wait_for(lambda: application_names(db) == ["mine"] * (len(PROJECTIONS) + 1), 30,
             "every session named mine")


def test_application_name_of_a_one_shot_command(db, workdir):
    """`projectord migrate` waits for the migration lock another session
    holds: meanwhile pg_stat_activity shows it as projectord/migrate."""
    env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo,
                    PROJECTORD_SQL_DIR=os.path.join(REPO_ROOT, "sql"))
    with db.connect() as locker:
        locker.execute("SELECT pg_advisory_lock(1886546541, 0)")
        proc = subprocess.Popen(command(["migrate", "--dry-run"]), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: "projectord/migrate" in application_names(db, "postgres"), 30,
                     "projectord/migrate in pg_stat_activity")
        finally:
            locker.execute("SELECT pg_advisory_unlock(1886546541, 0)")
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err


# --------------------------------------------------------------------------
# JSON log records and SQLSTATEs
# --------------------------------------------------------------------------

def test_json_log_records_carry_fields(db, start_daemon):
    db.append_all(generate_mix(seed=19, n_events=200, days=1))
    stream = uuid.uuid4()
    db.append([register("twice@example.org"), register("TWICE@example.org", stream)])
    bad = db.scalar("SELECT global_position FROM event_store.domain_event"
                    " WHERE stream_id = (SELECT stream_id FROM event_store.event_stream"
                    "                     WHERE aggregate_id = %s)", [stream])
    daemon = start_daemon(poll_interval_ms=200, log_format="json", level="info")
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT status FROM read_model.projection_metadata WHERE projection_name = 'users'"
    ).fetchone() == ("failed",), 30, "users to fail at the second registration")
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT bool_and(status = 'live') FROM read_model.projection_metadata"
        " WHERE projection_name <> 'users'").fetchone()[0], 30, "the others to be live")
    # A database error in the loop: the event store is no longer readable.
    with db.connect() as conn:
        conn.execute("REVOKE SELECT ON event_store.domain_event FROM projectord")
    db.append_all(generate_mix(seed=20, n_events=20, days=1))
    wait_for(lambda: any(r.get("sqlstate") == "42501" for r in json_records(daemon)), 30,
             "a permission error in the log")
    assert daemon.stop() == 0

    records = json_records(daemon)
    assert records, daemon.log()
    instance = records[0]["instance"]
    assert re.fullmatch(r"[^:]+:\d+", instance) and instance.endswith(f":{daemon.proc.pid}")
    assert all(r["instance"] == instance for r in records)
    # The bad event: its projection, position and SQLSTATE, as keys of their own.
    stop = [r for r in records if "on_error = stop" in r["msg"]]
    assert len(stop) == 1, stop
    assert stop[0]["level"] == "error"
    assert (stop[0]["projection"], stop[0]["position"], stop[0]["sqlstate"]) == ("users", bad, "23505")
    # The transition, once, at the checkpoint's position.
    failed = [r for r in records if r.get("projection") == "users" and " failed at position" in r["msg"]]
    assert len(failed) == 1 and failed[0]["position"] == bad - 1, failed
    # The retried error: every such line names its SQLSTATE, in the text and as a key.
    denied = [r for r in records if r.get("sqlstate") == "42501"]
    assert denied and all(r["level"] in ("error", "warning") and "(SQLSTATE 42501)" in r["msg"]
                          and r["projection"] in PROJECTIONS and "position" in r for r in denied)
    for r in records:
        if r["level"] in ("error", "warning") and "SQLSTATE" in r["msg"]:
            assert re.search(r"SQLSTATE [0-9A-Z]{5}\b", r["msg"]), r
            assert r.get("sqlstate") == re.search(r"SQLSTATE ([0-9A-Z]{5})", r["msg"]).group(1), r


def test_connection_errors_name_their_sqlstate(db, start_daemon):
    """A database that does not exist: the server's SQLSTATE (3D000) on the
    line; a server that does not answer: 08001, could not connect."""
    daemon = start_daemon(name="nodb", daemon_conninfo=f"{db.conninfo} dbname=no_such_db",
                          log_format="json", level="info")
    wait_for(lambda: any(r.get("sqlstate") == "3D000" for r in json_records(daemon)), 30,
             "the missing database's SQLSTATE")
    assert daemon.stop() == 0
    line = next(r["msg"] for r in json_records(daemon) if r.get("sqlstate") == "3D000")
    assert "cannot connect" in line and "(SQLSTATE 3D000)" in line and "LOCATION" not in line, line
    assert 'database "no_such_db" does not exist' in line, line

    port = free_port()
    daemon = start_daemon(name="noserver", daemon_conninfo=f"host=127.0.0.1 port={port}")
    wait_for(lambda: "(SQLSTATE 08001)" in daemon.log(), 30, "08001")
    assert re.search(r"WARNING schema: cannot connect: .*\(SQLSTATE 08001\); retrying",
                     daemon.log()), daemon.log()


# --------------------------------------------------------------------------
# Status transitions and catch-up progress
# --------------------------------------------------------------------------

def test_catch_up_progress_and_transitions_in_the_log(db, start_daemon):
    """A catch-up held up for longer than the progress interval (5 s) logs
    its progress (position, head, rate, ETA, events applied), then one
    "live" line; a second instance logs "standby" once per projection."""
    daemon = start_daemon(batch_size=100, poll_interval_ms=200, projections=ONLY_EVENT_STATS,
                          log_format="json", level="info")
    daemon.wait_started()
    with db.connect(autocommit=False) as locker:
        # The batches' writes wait; the projection's window is open meanwhile.
        locker.execute("LOCK TABLE read_model.event_type_stats IN EXCLUSIVE MODE")
        db.append_all(generate_mix(seed=21, n_events=3000, days=2))
        head = db.scalar("SELECT max(global_position) FROM event_store.domain_event")
        time.sleep(6)  # longer than the progress interval: the next batch says how far it got
        locker.rollback()
    daemon.wait_caught_up(timeout=60)
    standby = start_daemon(name="standby", poll_interval_ms=200, projections=ONLY_EVENT_STATS,
                           log_format="json", level="info")
    wait_for(lambda: any("standing by" in r["msg"] for r in json_records(standby)), 30,
             "the second instance to stand by")
    time.sleep(5)  # it claims every 2 s: standing by stays one line
    assert standby.stop() == 0
    assert daemon.stop() == 0

    records = [r for r in json_records(daemon) if r.get("projection") == "event_stats"]
    progress = [r for r in records if "catching up:" in r["msg"]]
    assert progress, daemon.log()
    first = progress[0]
    m = re.search(r"catching up: position (\d+) of (\d+) \((\d+) behind\), (\d+) positions/s, "
                  r"ETA (\d+ s|unknown); (\d+) events applied so far", first["msg"])
    assert m, first
    # the head as the window the projection is in saw it (the appends went on meanwhile)
    assert first["position"] == int(m.group(1)) < int(m.group(2)) <= head
    assert int(m.group(3)) == int(m.group(2)) - int(m.group(1))
    live = [r for r in records if re.search(r": live at position \d+", r["msg"])]
    # Live at the start (nothing to do yet), then once at the end of the catch-up; the short
    # windows after it (the appends went on) are no catch-up to speak of.
    assert len(live) == 2, live
    assert live[0]["position"] == 0 and "caught up" not in live[0]["msg"]
    assert "caught up from position 0" in live[1]["msg"] and live[1]["position"] <= head, live
    assert records.index(live[1]) > records.index(progress[-1])
    said = [r for r in json_records(standby) if r.get("projection") == "event_stats"
            and "standing by" in r["msg"]]
    assert len(said) == 1, said


# --------------------------------------------------------------------------
# /healthz, /readyz and process_* metrics
# --------------------------------------------------------------------------

def test_healthz_and_readyz(db, start_daemon, cluster):
    port = free_port()
    db.append_all(generate_mix(seed=22, n_events=300, days=1))
    daemon = start_daemon(poll_interval_ms=200, extra=metrics_config(port, "stall_timeout_ms = 1000;"))
    daemon.wait_caught_up(timeout=60)
    assert get(port, "/healthz") == (200, "ok\n")
    status, body = get(port, "/readyz")
    assert status == 200 and body == f"ready: {len(PROJECTIONS)} projection(s) owned by this " \
                                      "instance, all healthy\n", body
    assert get(port, "/readyz?verbose")[0] == 200

    # Stalled: behind the head, held up for longer than stall_timeout_ms.
    with db.connect(autocommit=False) as locker:
        locker.execute("LOCK TABLE read_model.event_type_stats IN ACCESS EXCLUSIVE MODE")
        db.append_all(generate_mix(seed=23, n_events=20, days=1))
        status, body = wait_for(lambda: (lambda a: a if a[0] == 503 else None)(get(port, "/readyz")),
                                30, "/readyz to say 503")
        assert re.fullmatch(r"not ready: event_stats stalled \(\d+ events behind, no progress "
                            r"for \d+ s\)\n", body), body
        assert get(port, "/healthz")[0] == 200  # alive all the same
        locker.rollback()
    wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "/readyz to recover")

    # Failed: a bad event stops users.
    db.append([register("same@example.org"), register("same@example.org")])
    status, body = wait_for(lambda: (lambda a: a if a[0] == 503 else None)(get(port, "/readyz")),
                            30, "/readyz to say 503 for the failed projection")
    assert body == "not ready: users failed\n", body



def test_readyz_of_an_instance_standing_by(db, start_daemon):
    """An instance that owns nothing (another holds the one projection) has
    nothing to judge: ready. The owner's verdict is the one that tells."""
    db.append_all(generate_mix(seed=25, n_events=100, days=1))
    port, port2 = free_port(), free_port()
    owner = start_daemon(poll_interval_ms=200, projections=ONLY_EVENT_STATS,
                         extra=metrics_config(port))
    owner.wait_caught_up(timeout=60)
    second = start_daemon(name="second", poll_interval_ms=200, projections=ONLY_EVENT_STATS,
                          extra=metrics_config(port2))
    wait_for(lambda: "standing by" in second.log(), 30, "the second instance to stand by")
    assert get(port2, "/readyz") == (200, "ready: 0 projection(s) owned by this instance, "
                                          "all healthy\n")
    assert get(port, "/readyz") == (200, "ready: 1 projection(s) owned by this instance, "
                                         "all healthy\n")


def test_readyz_before_the_schema_and_without_the_database(cluster, start_daemon):
    name = f"noschema_{os.getpid()}"
    cluster.create_database(name, schema=False)
    port = free_port()
    try:
        daemon = start_daemon(name="noschema", conninfo=cluster.conninfo(name), user=None,
                              extra=metrics_config(port))
        status, body = wait_for(lambda: (lambda a: a if a[0] == 503 else None)(get(port, "/readyz")),
                                30, "/readyz to answer")
        assert body == "not ready: waiting for the schema (projectord migrate)\n", body
        assert get(port, "/healthz") == (200, "ok\n")
        assert daemon.stop() == 0
    finally:
        cluster.drop_database(name)

    port = free_port()
    daemon = start_daemon(name="noserver", conninfo=f"host=127.0.0.1 port={free_port()}",
                          user=None, extra=metrics_config(port))
    status, body = wait_for(lambda: (lambda a: a if a[0] == 503 else None)(get(port, "/readyz")),
                            30, "/readyz to answer")
    assert body.startswith("not ready: "), body
    assert daemon.stop() == 0


def test_metrics_listen_from_the_environment(db):
    """PROJECTORD_METRICS_LISTEN (containers: docker-compose.yml) beats the
    file; a bad value is a configuration error."""
    env = clean_env(PROJECTORD_DATABASE_URL=db.conninfo, PROJECTORD_METRICS_LISTEN="0.0.0.0:9187")
    proc = run_cli(["-c", "/dev/null", "check-config"], env=env)
    assert proc.returncode == 0 and re.search(r'listen = "0\.0\.0\.0:9187"', proc.stdout), proc
    env["PROJECTORD_METRICS_LISTEN"] = "9187"
    proc = run_cli(["-c", "/dev/null", "check-config"], env=env)
    assert proc.returncode == 78, proc
    assert "PROJECTORD_METRICS_LISTEN: must be HOST:PORT" in proc.stderr, proc.stderr


def test_process_metrics(db, start_daemon):
    port = free_port()
    daemon = start_daemon(poll_interval_ms=200, extra=metrics_config(port))
    daemon.wait_started()
    started = time.time()
    samples = scrape(port)
    pid = daemon.proc.pid
    one = lambda name: samples[(name, ())]  # noqa: E731
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        btime = int(next(l for l in f if l.startswith("btime")).split()[1])
    # btime is whole seconds; the daemon's own boot clock is finer
    assert one("process_start_time_seconds") == pytest.approx(btime + int(fields[19]) / ticks, abs=1.5)
    assert scrape(port)[("process_start_time_seconds", ())] == one("process_start_time_seconds")
    assert started - 120 < one("process_start_time_seconds") <= started
    assert 0 <= one("process_cpu_seconds_total") <= (int(fields[11]) + int(fields[12])) / ticks + 1
    rss = int(fields[21]) * os.sysconf("SC_PAGESIZE")
    assert one("process_resident_memory_bytes") > 1 << 20
    assert one("process_resident_memory_bytes") == pytest.approx(rss, rel=0.5)
    assert one("process_virtual_memory_bytes") >= one("process_resident_memory_bytes")
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    # the projections' and the listener's sockets, the log, the metrics listener and scrape
    assert len(PROJECTIONS) + 3 <= one("process_open_fds") <= fds + 2
    with open(f"/proc/{pid}/limits") as f:
        soft = next(l for l in f if l.startswith("Max open files")).split()[3]
    assert one("process_max_fds") == int(soft)


# --------------------------------------------------------------------------
# The dashboard and the alert rules
# --------------------------------------------------------------------------

def promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))
    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        exprs.append(q["query"] if isinstance(q, dict) else q or "")
    return dash, exprs


def rule_exprs():
    with open(RULES) as f:
        groups = yaml.safe_load(f)["groups"]
    return [r for g in groups for r in g["rules"]]


def metric_names(expr):
    """The metric names an expression reads: projectord's and process_*, and up."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values are not names
    return set(re.findall(r"\b(projectord_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(?!\s*\()", expr))


def test_rules_pass_promtool():
    proc = subprocess.run([promtool(), "check", "rules", RULES], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"SUCCESS: \d+ rules found", proc.stdout), proc.stdout
    # The alerts fire on the series they are meant for, and only then.
    proc = subprocess.run([promtool(), "test", "rules", RULES_TESTS], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60,
                          cwd=os.path.dirname(RULES_TESTS))
    assert proc.returncode == 0, proc.stdout


def test_rules_cover_what_an_operator_must_hear_of():
    alerts = {r["alert"]: r for r in rule_exprs() if "alert" in r}
    for name in ("ProjectordInstanceDown", "ProjectordProjectionFailed",
                 "ProjectordProjectionStalled", "ProjectordLagHigh", "ProjectordDeadLettersGrowing"):
        assert name in alerts, sorted(alerts)
        assert alerts[name]["labels"]["severity"] in ("critical", "warning")
        assert alerts[name]["annotations"]["summary"]


def test_dashboard_and_rules_name_only_exported_metrics(db, start_daemon):
    """Scrape a daemon that has done some work (histograms observed, a dead
    letter skipped) and compare with every name the dashboard's queries and
    the rules' expressions read."""
    dash, exprs = dashboard_exprs()
    assert dash["title"] and dash["uid"] and exprs
    named = set()
    for e in exprs + [r["expr"] for r in rule_exprs()]:
        named |= metric_names(str(e))
    assert named, "no metric found in the expressions"

    port = free_port()
    db.append_all(generate_mix(seed=24, n_events=300, days=1))
    projections = {p: {"on_error": "skip"} for p in PROJECTIONS}
    daemon = start_daemon(poll_interval_ms=200, projections=projections,
                          extra=metrics_config(port))
    db.append([register("dup@example.org"), register("dup@example.org")])
    daemon.wait_caught_up(timeout=60, allow_skipped=True)
    exported = {name for name, _ in scrape(port)}
    missing = named - exported - set(CONDITIONAL_METRICS)
    assert not missing, f"named by the dashboard or the rules, not exported: {sorted(missing)}"
