"""Fixtures for the integration tests.

- `cluster`: one throwaway PostgreSQL per test file (session), port free on
  127.0.0.1, so ctest can run files in parallel;
- `db`: a fresh database per test with sql/ applied;
- `start_daemon`: starts the real projectord against `db`, connected as the
  least-privilege role `projectord` (sql/V007; daemon.DAEMON_USER) while
  the tests append and inspect as `postgres`;
- `projection_case`: one projection on a list of events, its rows asserted
  (projection_harness.py: the harness for projection authors);
- on failure, the server log tail and every daemon's log are attached to
  the report (pytest prints them under the failure).
"""

import contextlib
import itertools
import os
import shutil
import tempfile

import psycopg
import pytest

from daemon import TEST_DECLARED, Daemon, run_cli
from eventgen import append, append_all
from pgcluster import PgCluster
from projection_harness import ProjectionCase

_db_seq = itertools.count(1)
_current = {"cluster": None}
KEEP_TMP = os.environ.get("PROJECTORD_KEEP_TMP") == "1"


@pytest.fixture(scope="session", autouse=True)
def declared_form():
    """Under PROJECTORD_TEST_DECLARED=1 every example projection must really
    run in its declared form, or the run proves nothing about it."""
    if TEST_DECLARED:
        out = run_cli(["list"]).stdout
        assert out.count("  declared (") == 4, out


@pytest.fixture(scope="session")
def cluster():
    basedir = tempfile.mkdtemp(prefix="projectord-pg-")
    c = PgCluster(basedir)
    c.start()
    _current["cluster"] = c
    yield c
    _current["cluster"] = None
    if KEEP_TMP:
        c.stop("fast")
        print(f"\nkept {basedir}")
    else:
        c.cleanup()


@contextlib.contextmanager
def own_cluster(prefix, before_start=None, **kwargs):
    """A cluster of a test module's own (kwargs: PgCluster's settings, hba),
    removed afterwards (stopped and kept with PROJECTORD_KEEP_TMP=1).
    before_start(cluster) runs between initdb and the first start."""
    c = PgCluster(tempfile.mkdtemp(prefix=prefix), **kwargs)
    if before_start:
        c.init()
        before_start(c)
    c.start()
    try:
        yield c
    finally:
        if KEEP_TMP:
            c.stop("fast")
        else:
            c.cleanup()


class Database:
    """One test database: its conninfo plus small helpers for the tests."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.conninfo = cluster.conninfo(name)

    def connect(self, autocommit=True):
        return psycopg.connect(self.conninfo, autocommit=autocommit)

    def query(self, sql, params=None):
        """All rows of one statement, on a short-lived connection (so it
        works across server restarts)."""
        with self.connect() as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql, params=None):
        """Run one statement that returns no rows."""
        with self.connect() as conn:
            conn.execute(sql, params)

    def scalar(self, sql, params=None):
        return self.query(sql, params)[0][0]

    def append(self, commands):
        """Append commands one by one, each in its own transaction."""
        with self.connect() as conn:
            for command in commands:
                append(conn, command)

    def append_all(self, commands, per_transaction=1000):
        append_all(self.conninfo, commands, per_transaction)


@pytest.fixture
def db(cluster):
    name = f"t{os.getpid()}_{next(_db_seq)}"
    cluster.create_database(name)
    yield Database(cluster, name)
    if cluster.is_running():
        cluster.drop_database(name)


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="projectord-test-")
    yield path
    if not KEEP_TMP:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def daemon_starter(request, workdir, default_conninfo=None):
    """The body of a start_daemon-like fixture: yields start(**kwargs) ->
    a running Daemon (kwargs: see Daemon; conninfo defaults to
    default_conninfo). At teardown each daemon still running must stop
    cleanly on SIGTERM (else it is killed and the test errors)."""
    daemons = request.node.daemons = []

    def start(name=None, conninfo=None, **config):
        d = Daemon(conninfo or default_conninfo, workdir, name=name or f"projectord{len(daemons) + 1}",
                   **config)
        daemons.append(d)
        return d.start()

    yield start
    try:
        check_clean_exit(request, daemons)
    finally:
        for d in daemons:
            d.close()


@pytest.fixture
def start_daemon(request, db, workdir):
    """start_daemon(**config) -> a running Daemon on `db` (config: see
    daemon.config_text; also env, user, daemon_conninfo, target: see
    Daemon)."""
    with daemon_starter(request, workdir, db.conninfo) as start:
        yield start


@pytest.fixture
def projection_case(request, db, workdir):
    """projection_case(name, batch_size=1000) -> a ProjectionCase of that
    projection on `db`: emit events, run(), assert_rows (see
    projection_harness.py)."""
    daemons = request.node.daemons = []

    def make(projection, batch_size=1000, projection_dir=None):
        case = ProjectionCase(db, workdir, projection, batch_size, projection_dir)
        daemons.append(case.daemon)
        return case

    yield make
    for d in daemons:
        d.close()


def check_clean_exit(request, daemons):
    """After a passing test, every daemon still running must stop cleanly on
    SIGTERM, and no log may hold a sanitizer report (leaks show at exit)."""
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        return
    problems = []
    for d in daemons:
        rc = d.stop() if d.alive() else None
        if rc not in (None, 0):
            problems.append(f"{d.log_path}: exit code {rc} on SIGTERM at teardown")
        report = d.sanitizer_report()
        if report:
            problems.append(f"{d.log_path}: {report}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report (teardown checks look at it) and attach
    the server log tail and the daemons' logs to a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if not report.failed:
        return
    for d in getattr(item, "daemons", []):
        report.sections.append((f"projectord log ({d.log_path})", d.log()))
    if _current["cluster"] is not None:
        report.sections.append(("postgres log tail", _current["cluster"].log_tail(60)))
