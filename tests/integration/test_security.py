"""Least privilege, secrets and TLS (issue 5).

- The `projectord` role of sql/V007 reads the event store and writes only the
  read model: it can do what the daemon needs and cannot modify event_store
  or append events; the daemon of every integration test runs as it.
- The password may come from the config conninfo (key=value or URI),
  PROJECTORD_DATABASE_URL, a libpq password file or PGPASSWORD: each works
  end to end against a cluster that demands SCRAM passwords, and the
  password never shows in the daemon's log, check-config, status, error
  messages, the server log or the process's command line, also when the
  password is wrong, the server unreachable or restarted, or a query fails.
- A config file holding a password that group or others can read gets a
  warning.
- TLS: sslmode=verify-full with sslrootcert works against a cluster with a
  certificate of our own CA; another CA is refused with a clear error.
"""

import collections
import os
import re
import subprocess
import tempfile
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

import oracle
from conftest import KEEP_TMP, Database, daemon_starter, own_cluster
from daemon import EXIT_CONFIG, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, SLOWDOWN, clean_env, config_text, run_cli
from eventgen import Command, event
from pgcluster import PASSWORD_HBA, free_port
from scenarios import users_scenario

# Space, quote and ampersand: quoting and URI encoding must both be right.
SECRET = "Tr0ub4dor&3 horse'staple"
WRONG = "Wr0ngPassw0rd zebra'fig"
# Any of these in any output is a leak (a fragment is one too).
SECRET_WORDS = ["Tr0ub4dor", "horse'staple", "horse%27staple", quote(SECRET, safe="")]
WRONG_WORDS = ["Wr0ngPassw0rd", "zebra'fig", "zebra%27fig"]


def assert_no_secret(where, text, words=SECRET_WORDS):
    for word in words:
        assert word not in text, f"the password ({word!r}) shows in {where}:\n{text}"


def one_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {lines}"
    return lines[0]


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


# --------------------------------------------------------------------------
# Least privilege (the test file's own trust cluster)
# --------------------------------------------------------------------------

def as_projectord(db):
    return psycopg.connect(db.conninfo.replace("user=postgres", "user=projectord"), autocommit=True)


def test_role_has_no_special_attributes_or_memberships(db):
    row = db.query("""SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,
                             rolbypassrls FROM pg_roles WHERE rolname = 'projectord'""")
    assert row == [(True, False, False, False, False, False)]
    member_of = db.query("""SELECT g.rolname FROM pg_auth_members m
                              JOIN pg_roles g ON g.oid = m.roleid
                              JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'projectord'""")
    assert member_of == [], "projectord must not inherit any role (pg_read_all_data, ...)"


EVENT_STORE_WRITES = [
    ("insert-event", """INSERT INTO event_store.domain_event (stream_id, event_type, event_version,
                            aggregate_version, event_data)
                        SELECT stream_id, 'Forged', 1, 99, '{}' FROM event_store.event_stream LIMIT 1"""),
    ("update-event", "UPDATE event_store.domain_event SET event_data = '{}'"),
    ("delete-event", "DELETE FROM event_store.domain_event"),
    ("truncate-event", "TRUNCATE event_store.domain_event CASCADE"),
    ("insert-stream", "INSERT INTO event_store.event_stream (aggregate_type, aggregate_id) "
                      "VALUES ('Forged', gen_random_uuid())"),
    ("update-stream", "UPDATE event_store.event_stream SET version = version + 1"),
    ("delete-stream", "DELETE FROM event_store.event_stream"),
    ("truncate-stream", "TRUNCATE event_store.event_stream CASCADE"),
    ("append-events", """SELECT event_store.append_events('User', gen_random_uuid(), 0,
                           ARRAY['{"event_type":"Forged","event_data":{}}'::jsonb])"""),
    ("alter-table", "ALTER TABLE event_store.domain_event DISABLE TRIGGER domain_event_notify"),
    ("drop-table", "DROP TABLE event_store.domain_event CASCADE"),
    ("create-in-event-store", "CREATE TABLE event_store.forged (id int)"),
    ("replace-function", """CREATE OR REPLACE FUNCTION event_store.notify_domain_event()
                            RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"""),
    ("command-model", "CREATE TABLE command_model.forged (id int)"),
    ("create-in-read-model", "CREATE TABLE read_model.forged (id int)"),
    ("create-schema", "CREATE SCHEMA forged"),
    ("replace-checkpoint-function", """CREATE OR REPLACE FUNCTION read_model.projectord_shadow_schema(
                                         p_name text) RETURNS name LANGUAGE sql
                                       AS $$ SELECT 'event_store'::name $$"""),
    ("public-schema", "CREATE TABLE public.forged (id int)"),
]


def test_role_cannot_modify_the_event_store(db):
    db.append(users_scenario().script.commands)
    before = db.query("SELECT * FROM event_store.domain_event ORDER BY global_position")
    streams = db.query("SELECT * FROM event_store.event_stream ORDER BY stream_id")
    allowed = []
    with as_projectord(db) as conn:
        for what, statement in EVENT_STORE_WRITES:
            try:
                conn.execute(statement)
                allowed.append(what)
            except psycopg.errors.InsufficientPrivilege:
                pass
    assert allowed == [], f"projectord may: {allowed}"
    assert db.query("SELECT * FROM event_store.domain_event ORDER BY global_position") == before
    assert db.query("SELECT * FROM event_store.event_stream ORDER BY stream_id") == streams


def test_role_can_do_what_the_daemon_needs(db):
    """Read events, write every read-model table, its status and dead letters,
    save a checkpoint, build (and drop) a shadow table, take advisory locks."""
    db.append(users_scenario().script.commands)
    # A table the migration owner creates later is covered by the default privileges.
    db.execute("CREATE TABLE read_model.added_later (id int PRIMARY KEY)")
    tables = [r[0] for r in db.query("""SELECT tablename FROM pg_tables
                                         WHERE schemaname = 'read_model' ORDER BY 1""")]
    assert {"users", "projection_metadata", "projection_dead_letter", "added_later"} <= set(tables)
    with as_projectord(db) as conn:
        assert conn.execute("SELECT count(*) FROM event_store.domain_event e "
                            "JOIN event_store.event_stream s USING (stream_id)").fetchone()[0] > 0
        conn.execute("SELECT pg_current_snapshot(), pg_try_advisory_lock(1, 2), "
                     "pg_advisory_unlock(1, 2)")
        conn.execute("LISTEN domain_event")
        with conn.transaction(force_rollback=True):
            for table in tables:
                ident = sql.Identifier("read_model", table)
                last = sql.Identifier(conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                    " AND NOT attisdropped ORDER BY attnum DESC LIMIT 1",
                    (f"read_model.{table}",)).fetchone()[0])
                conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(ident))
                conn.execute(sql.SQL("UPDATE {} SET {} = {} WHERE false").format(ident, last, last))
                conn.execute(sql.SQL("DELETE FROM {} WHERE false").format(ident))
                conn.execute(sql.SQL("TRUNCATE {}").format(ident))
            conn.execute("""INSERT INTO read_model.projection_metadata (projection_name) VALUES ('p')""")
            # The checkpoint: one UPDATE of the status row (src/runner_sql.h, SQL_CHECKPOINT_ON).
            assert conn.execute("""UPDATE read_model.projection_metadata
                                      SET checkpoint_seq = checkpoint_seq + 1, status = 'live'
                                    WHERE projection_name = 'p' AND checkpoint_seq = 0
                                   RETURNING checkpoint_seq""").fetchone()[0] == 1
            # The checkpoint statement's compare-and-set fails through this one.
            with pytest.raises(psycopg.Error) as moved, conn.transaction():
                conn.execute("SELECT read_model.projectord_checkpoint_moved('p', 7)")
            assert moved.value.sqlstate == "PJ001", moved.value
            conn.execute("""INSERT INTO read_model.projection_dead_letter
                                (projection_name, global_position, event_id, event_type, error, payload)
                            VALUES ('p', 1, gen_random_uuid(), 'X', 'bad', '{}')""")
            conn.execute("INSERT INTO read_model.added_later VALUES (1)")
            assert conn.execute("SELECT count(*) FROM read_model.projection_status").fetchone()[0] == 1
            # A rebuild's shadow tables, through V008's definer functions.
            conn.execute("SELECT read_model.projectord_begin_rebuild('users', ARRAY['users'], 'me')")
            conn.execute("INSERT INTO projectord_rebuild_users.users SELECT * FROM read_model.users")
            conn.execute("SELECT read_model.projectord_abandon_rebuild('users', 'test')")
        privileges = conn.execute("""SELECT p, has_table_privilege('read_model.projection_status', p)
                                       FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                                                         'TRUNCATE']) AS p""").fetchall()
        assert dict(privileges) == {"SELECT": True, "INSERT": False, "UPDATE": False,
                                    "DELETE": False, "TRUNCATE": False}


def test_daemon_runs_as_projectord(db, start_daemon):
    """The harness runs every daemon as the projectord role; it projects."""
    sc = users_scenario()
    daemon = start_daemon()
    db.append(sc.script.commands)
    daemon.wait_caught_up()
    users = db.query("""SELECT DISTINCT usename FROM pg_stat_activity
                         WHERE application_name LIKE 'projectord/%%' AND datname = %s""", (db.name,))
    assert users == [("projectord",)]
    with db.connect() as conn:
        oracle.assert_same_rows("users", sc.expected["users"], oracle.read_table(conn, "users"))
    proc = run_cli(["-c", daemon.config_path, "status", "--check"])
    assert proc.returncode == EXIT_OK, proc.stderr


# --------------------------------------------------------------------------
# A cluster that demands passwords (SCRAM) and offers TLS
# --------------------------------------------------------------------------

def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_ca(cwd, name):
    openssl(cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=projectord test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return os.path.join(cwd, f"{name}.crt")


def make_server_cert(cwd, ca):
    """server.crt/server.key for localhost and 127.0.0.1, signed by ca."""
    with open(os.path.join(cwd, "server.ext"), "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n"
                "extendedKeyUsage = serverAuth\n")
    openssl(cwd, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    openssl(cwd, "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")


@pytest.fixture(scope="module")
def pki():
    """{'ca': path, 'wrong_ca': path} and the server's certificate and key."""
    path = tempfile.mkdtemp(prefix="projectord-pki-")
    make_ca(path, "ca")
    make_ca(path, "wrong_ca")
    make_server_cert(path, "ca")
    yield {"dir": path, "ca": os.path.join(path, "ca.crt"),
           "wrong_ca": os.path.join(path, "wrong_ca.crt")}
    if not KEEP_TMP:
        subprocess.run(["rm", "-rf", path])


@pytest.fixture(scope="module")
def secure_cluster(pki):
    """postgres trusted, every other role needs its SCRAM password; TLS on."""
    def install_pki(c):
        c.install_file(os.path.join(pki["dir"], "server.crt"), "server.crt", 0o644)
        c.install_file(os.path.join(pki["dir"], "server.key"), "server.key", 0o600)

    with own_cluster("projectord-pg-sec-", before_start=install_pki, hba=PASSWORD_HBA,
                     settings={"ssl": "on", "ssl_cert_file": "'server.crt'",
                               "ssl_key_file": "'server.key'",
                               "password_encryption": "'scram-sha-256'"}) as c:
        yield c


_sdb_seq = iter(range(1, 1000))


@pytest.fixture
def sdb(secure_cluster):
    """A database on the secure cluster; projectord's password is SECRET."""
    name = f"s{os.getpid()}_{next(_sdb_seq)}"
    secure_cluster.create_database(name)
    db = Database(secure_cluster, name)
    db.execute(sql.SQL("ALTER ROLE projectord PASSWORD {}").format(sql.Literal(SECRET)))
    yield db
    if secure_cluster.is_running():
        secure_cluster.drop_database(name)


# One-shot commands wait 5 s for a connection (src/cli.c), TLS handshake and
# SCRAM's 4096 iterations included; under valgrind those alone take longer.
# A conninfo's own connect_timeout wins, so slow builds stretch it here.
SLOW_CONNECT = {"connect_timeout": str(int(5 * SLOWDOWN))} if SLOWDOWN > 1 else {}


def kv(db, password=None, **extra):
    """A key=value conninfo for projectord on db (libpq quoting)."""
    params = dict(host="127.0.0.1", port=db.cluster.port, dbname=db.name, user="projectord",
                  **SLOW_CONNECT)
    params.update(extra)
    if password is not None:
        params["password"] = password
    return psycopg.conninfo.make_conninfo(**params)


def uri(db, password, port=None):
    query = "".join(f"?{k}={v}" for k, v in SLOW_CONNECT.items())
    return (f"postgresql://projectord:{quote(password, safe='')}@127.0.0.1:"
            f"{port or db.cluster.port}/{db.name}{query}")


def passfile(workdir, db, password, port=None):
    path = os.path.join(workdir, "pgpass")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        f.write(f"127.0.0.1:{port or db.cluster.port}:{db.name}:projectord:{password}\n")
    return path


def source(kind, db, workdir, password, port=None):
    """(conninfo for the config file or None, environment) giving password by `kind`."""
    if kind == "conninfo":
        return kv(db, password, port=port or db.cluster.port), {}
    if kind == "uri":
        return uri(db, password, port), {}
    if kind == "database_url":
        return None, {"PROJECTORD_DATABASE_URL": uri(db, password, port)}
    if kind == "pgpassfile":
        return kv(db, port=port or db.cluster.port), {"PGPASSFILE": passfile(workdir, db, password, port)}
    if kind == "pgpassword":
        return kv(db, port=port or db.cluster.port), {"PGPASSWORD": password}
    raise ValueError(kind)


SOURCES = ["conninfo", "uri", "database_url", "pgpassfile", "pgpassword"]


@pytest.fixture
def sdaemon(request, workdir):
    """sdaemon(db, conninfo, env, **config) -> a started Daemon that connects
    with conninfo (as written in its config file) and env; the test
    inspects db as postgres."""
    with daemon_starter(request, workdir) as start:
        yield lambda db, conninfo, env=None, **config: start(
            conninfo=db.conninfo, env=env, daemon_conninfo=conninfo, **config)


def cli(daemon, *args):
    return run_cli(["-c", daemon.config_path, *args], env=clean_env(**daemon.env), timeout=30)


def wait_for_log(daemon, pattern, timeout=15):
    deadline = time.monotonic() + timeout * SLOWDOWN
    while time.monotonic() < deadline:
        if re.search(pattern, daemon.log(tail=100000)):
            return
        assert daemon.alive(), f"projectord exited ({daemon.proc.returncode}) before logging {pattern!r}"
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in the log within {timeout}s:\n{daemon.log()}")


def assert_nothing_leaked(daemon, outputs, words=SECRET_WORDS, server_log=None):
    """The password is in none of: the daemon's log, the given CLI outputs,
    the server log."""
    for proc in outputs:
        assert_no_secret(f"the output of {proc.args}", proc.stdout + proc.stderr, words)
    assert_no_secret("the daemon's log", daemon.log(tail=100000), words)
    if server_log is not None:
        with open(server_log, errors="replace") as f:
            assert_no_secret("the server log", f.read(), words)


def assert_not_in_cmdline(daemon, words=SECRET_WORDS):
    """Nor in the process title (/proc/PID/cmdline) of the running daemon."""
    assert daemon.alive()
    assert_no_secret("/proc/PID/cmdline", cmdline(daemon.proc.pid), words)


def test_cluster_refuses_projectord_without_password(sdb, workdir, sdaemon):
    """The secure cluster really demands the password: without one the
    daemon can not connect (it keeps retrying) and status exits 77 (refused)."""
    daemon = sdaemon(sdb, kv(sdb))
    wait_for_log(daemon, r"no password supplied|password authentication failed")
    proc = cli(daemon, "status")
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    assert "password" in one_line(proc)
    assert daemon.alive()


@pytest.mark.parametrize("kind", SOURCES)
def test_password_source_works_and_never_shows(sdb, workdir, sdaemon, kind):
    conninfo, env = source(kind, sdb, workdir, SECRET)
    daemon = sdaemon(sdb, conninfo, env)
    sc = users_scenario()
    sdb.append(sc.script.commands)
    daemon.wait_caught_up(timeout=30)
    with sdb.connect() as conn:
        oracle.assert_same_rows("users", sc.expected["users"], oracle.read_table(conn, "users"))
    users = sdb.query("""SELECT DISTINCT usename FROM pg_stat_activity
                          WHERE application_name LIKE 'projectord/%%' AND datname = %s""", (sdb.name,))
    assert users == [("projectord",)]
    outputs = [cli(daemon, "status"), cli(daemon, "status", "--json"), cli(daemon, "check-config")]
    assert [p.returncode for p in outputs] == [EXIT_OK] * 3, [p.stderr for p in outputs]
    assert "********" in outputs[2].stdout or kind in ("pgpassfile", "pgpassword")
    assert "readable by group or others" not in outputs[2].stderr, "the config file is 0600"
    assert_not_in_cmdline(daemon)
    assert daemon.stop() == 0
    assert_nothing_leaked(daemon, outputs, server_log=sdb.cluster.logfile)


@pytest.mark.parametrize("kind", ["conninfo", "uri", "database_url", "pgpassword"])
def test_wrong_password_is_a_clear_error_without_the_password(sdb, workdir, sdaemon, kind):
    conninfo, env = source(kind, sdb, workdir, WRONG)
    daemon = sdaemon(sdb, conninfo, env)
    wait_for_log(daemon, r"cannot connect: .*password authentication failed for user \"projectord\"")
    time.sleep(3)  # several retries of each of its connections
    assert daemon.alive(), "a refused password is retried, not fatal"
    # Said once, as an ERROR, for the whole daemon; the retries only at debug.
    said = [line for line in daemon.log(tail=100000).splitlines()
            if "password authentication failed" in line and " DEBUG " not in line]
    assert len(said) == 1 and " ERROR " in said[0], said
    assert "refused by the server" in said[0]
    started = time.monotonic()
    outputs = [cli(daemon, "status"), cli(daemon, "status", "--check"), cli(daemon, "check-config")]
    # The server answered and refused: 77, not 69 ("unreachable").
    assert [p.returncode for p in outputs] == [EXIT_REFUSED, EXIT_REFUSED, EXIT_OK]
    assert time.monotonic() - started < 10 * SLOWDOWN
    for proc in outputs[:2]:
        assert "password authentication failed" in one_line(proc)
    assert_not_in_cmdline(daemon, WRONG_WORDS)
    assert daemon.stop() == 0
    assert_nothing_leaked(daemon, outputs, WRONG_WORDS, server_log=sdb.cluster.logfile)


@pytest.mark.parametrize("kind", ["conninfo", "uri", "database_url"])
def test_unreachable_server_error_without_the_password(sdb, workdir, sdaemon, kind):
    conninfo, env = source(kind, sdb, workdir, SECRET, port=free_port())
    daemon = sdaemon(sdb, conninfo, env)
    wait_for_log(daemon, r"cannot connect: .*(refused|failed)")
    started = time.monotonic()
    outputs = [cli(daemon, "status"), cli(daemon, "check-config")]
    assert time.monotonic() - started < 10 * SLOWDOWN
    assert [p.returncode for p in outputs] == [EXIT_UNAVAILABLE, EXIT_OK]
    assert "cannot connect" in one_line(outputs[0])
    assert_not_in_cmdline(daemon)
    assert daemon.stop() == 0
    assert_nothing_leaked(daemon, outputs)


def test_server_restart_and_query_errors_without_the_password(sdb, workdir, sdaemon):
    """A restart under the running daemon (connection lost, reconnect), and
    query errors (permission denied while its SELECT grant is revoked): both
    logged, recovered from, and never with the password."""
    conninfo, env = source("uri", sdb, workdir, SECRET)
    daemon = sdaemon(sdb, conninfo, env, poll_interval_ms=200)
    sdb.append(users_scenario().script.commands)
    daemon.wait_caught_up()

    sdb.cluster.restart("fast")
    uid = uuid.uuid4()
    sdb.append([Command("User", uid, 0, [event("UserRegistered", {
        "email": f"{uid}@example.com", "first_name": "A", "last_name": "B"})])])
    daemon.wait_caught_up(timeout=30)
    wait_for_log(daemon, r"connection lost|cannot connect")

    sdb.execute("REVOKE SELECT ON event_store.domain_event FROM projectord")
    uid = uuid.uuid4()
    sdb.append([Command("User", uid, 0, [event("UserRegistered", {
        "email": f"{uid}@example.com", "first_name": "C", "last_name": "D"})])])
    wait_for_log(daemon, r"permission denied for table domain_event")
    wait_for_log(daemon, r"failed again: .*permission denied for table domain_event")
    # A permanent error is said once per projection at ERROR; its retries at debug only.
    said = [line for line in daemon.log(tail=1_000_000).splitlines()
            if "permission denied for table domain_event" in line and " ERROR " in line]
    per_projection = collections.Counter(line.split(" ERROR ", 1)[1].split(":", 1)[0] for line in said)
    assert said and max(per_projection.values()) == 1, said
    failing = cli(daemon, "status")
    sdb.execute("GRANT SELECT ON event_store.domain_event TO projectord")
    rows = daemon.wait_caught_up(timeout=60)
    assert rows["users"]["events_skipped"] == 0
    assert sdb.scalar("SELECT count(*) FROM read_model.users WHERE id = %s", (uid,)) == 1
    assert failing.returncode == EXIT_OK, failing.stderr
    assert_not_in_cmdline(daemon)
    assert daemon.stop() == 0
    assert_nothing_leaked(daemon, [failing, cli(daemon, "check-config")],
                          server_log=sdb.cluster.logfile)


# --------------------------------------------------------------------------
# Errors in the connection string itself: exit 78, one line, no password
# --------------------------------------------------------------------------

BAD_CONNINFOS = [
    # An unquoted password with a space: libpq quotes the word after it.
    ("unquoted-space", "host=127.0.0.1 dbname=x password=Tr0ub4dor horse'staple"),
    ("typo-after-password", "host=127.0.0.1 password=Tr0ub4dor hots=x"),
    ("unterminated-quote", "host=127.0.0.1 password='Tr0ub4dor horse'staple"),
    ("uri-bad-parameter", "postgresql://projectord:Tr0ub4dor@127.0.0.1:5/x?bogus=horse'staple"),
    ("uri-bad-host", "postgresql://projectord:Tr0ub4dor@[::1:5/horse'staple"),
    ("uri-bad-percent", "postgresql://projectord:Tr0ub4dor%zz@127.0.0.1/horse'staple"),
]


@pytest.mark.parametrize("where", ["file", "env"])
@pytest.mark.parametrize("conninfo", [c for _, c in BAD_CONNINFOS], ids=[i for i, _ in BAD_CONNINFOS])
@pytest.mark.parametrize("command", ["check-config", "run", "status"])
def test_bad_conninfo_error_never_quotes_the_password(workdir, where, conninfo, command):
    path = os.path.join(workdir, "p.conf")
    env = clean_env()
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        if where == "file":
            f.write(config_text(conninfo))
        else:
            f.write(config_text(None))
            env["PROJECTORD_DATABASE_URL"] = conninfo
    proc = run_cli(["-c", path, command], env=env, timeout=15)
    assert proc.returncode == EXIT_CONFIG, proc.stdout + proc.stderr
    line = one_line(proc)
    assert ("conninfo" if where == "file" else "PROJECTORD_DATABASE_URL") in line
    assert_no_secret("the error", proc.stdout + proc.stderr)


def test_readable_config_with_password_warns(workdir):
    def check(text, mode):
        path = os.path.join(workdir, "w.conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        proc = run_cli(["-c", path, "check-config"])
        assert proc.returncode == EXIT_OK, proc.stderr
        assert_no_secret("check-config", proc.stdout + proc.stderr)
        return "readable by group or others" in proc.stderr

    port = free_port()
    with_password = config_text(f"host=127.0.0.1 port={port} dbname=x password='{SECRET.replace(chr(39), '')}'")
    with_uri = config_text(f"postgresql://projectord:{quote(SECRET, safe='')}@127.0.0.1:{port}/x")
    without = config_text(f"host=127.0.0.1 port={port} dbname=x")
    assert check(with_password, 0o644)
    assert check(with_password, 0o640)
    assert check(with_password, 0o604)
    assert check(with_uri, 0o644)
    assert not check(with_password, 0o600)
    assert not check(with_password, 0o400)
    assert not check(with_uri, 0o600)
    assert not check(without, 0o644), "no password, nothing to warn about"


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

def test_tls_verify_full(sdb, pki, sdaemon):
    conninfo = kv(sdb, host="localhost", sslmode="verify-full", sslrootcert=pki["ca"])
    daemon = sdaemon(sdb, conninfo, {"PGPASSWORD": SECRET})
    sc = users_scenario()
    sdb.append(sc.script.commands)
    daemon.wait_caught_up(timeout=30)
    with sdb.connect() as conn:
        oracle.assert_same_rows("users", sc.expected["users"], oracle.read_table(conn, "users"))
    ssl = sdb.query("""SELECT s.ssl, count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                        WHERE a.application_name LIKE 'projectord/%%' AND a.datname = %s GROUP BY 1""",
                    (sdb.name,))
    assert ssl and all(on for on, _ in ssl), f"every daemon connection uses TLS: {ssl}"
    proc = cli(daemon, "status")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert daemon.stop() == 0


def test_tls_wrong_ca_is_refused_clearly(sdb, pki, sdaemon):
    conninfo = kv(sdb, host="localhost", sslmode="verify-full", sslrootcert=pki["wrong_ca"])
    daemon = sdaemon(sdb, conninfo, {"PGPASSWORD": SECRET})
    wait_for_log(daemon, r"cannot connect: .*certificate verify failed")
    time.sleep(0.5)
    assert daemon.alive(), "a refused certificate is retried, not fatal"
    assert not sdb.query("SELECT 1 FROM read_model.projection_metadata")
    proc = cli(daemon, "status")
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert "certificate verify failed" in one_line(proc)
    assert daemon.stop() == 0
