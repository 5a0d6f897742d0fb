"""Driving the real projectord binary: config files, processes, waiting.

The tests only use the external contract (SPEC §5–§7): the command line,
exit codes, signals and the read_model.projection_metadata table.
"""

import os
import re
import shlex
import signal
import subprocess
import time

import psycopg
from psycopg.conninfo import make_conninfo

from oracle import KNOWN

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("PROJECTORD_BIN", os.path.join(REPO_ROOT, "build", "projectord")))

# ASan builds are several times slower, valgrind much more; deadlines scale
# with this.
SLOWDOWN = float(os.environ.get("PROJECTORD_TEST_SLOWDOWN", "1"))

# A command prefixed to every projectord process the tests start, e.g.
# "valgrind --leak-check=full --error-exitcode=99 --log-file=/tmp/vg.%p"
# (scripts/valgrind.sh).
WRAPPER = shlex.split(os.environ.get("PROJECTORD_WRAPPER", ""))

# The role the daemon connects as: the least-privilege role of
# sql/V007__projectord_role.sql (the test clusters trust local TCP, so no
# password), while the tests append and inspect as the owner, postgres.
DAEMON_USER = os.environ.get("PROJECTORD_TEST_DAEMON_USER", "projectord")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_CONFIG = 0, 1, 64, 69, 78
EXIT_REFUSED = 77  # the server answered and refused (password, no such database or role)

# The runner's line for a state change its transition table does not hold.
REFUSED_TRANSITION = "internal error: state transition"

# A valgrind summary line with something in it (when its log goes to stderr).
VALGRIND_ERROR = re.compile(r"==\d+== (ERROR SUMMARY: [1-9]|\s*definitely lost: [1-9])")


class ProjectordError(AssertionError):
    """A daemon misbehaved (died, failed a projection, missed a deadline)."""


# PROJECTORD_TEST_DECLARED=1 runs every projectord process with the four
# example projections in their declared form (SPEC §8, projections/declared),
# so the same tests prove the same read models for both forms.
# PROJECTORD_TEST_PROJECTION_DIR=DIR gives every process that projection_dir
# instead (test_fifth_projection.py: the examples plus a fifth projection).
DECLARED_DIR = os.path.join(REPO_ROOT, "projections", "declared")
TEST_DECLARED = os.environ.get("PROJECTORD_TEST_DECLARED") == "1"
TEST_PROJECTION_DIR = os.environ.get("PROJECTORD_TEST_PROJECTION_DIR") or (
    DECLARED_DIR if TEST_DECLARED else None)


def clean_env(**overrides):
    """The environment for a projectord process: without the caller's PG*
    and PROJECTORD_* variables (they would change what a test means), but
    with PROJECTORD_PROJECTION_DIR under PROJECTORD_TEST_DECLARED=1 or
    PROJECTORD_TEST_PROJECTION_DIR."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and not k.startswith("PROJECTORD_")}
    if TEST_PROJECTION_DIR:
        env["PROJECTORD_PROJECTION_DIR"] = TEST_PROJECTION_DIR
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    return env


def build_projections():
    """The projections of the binary under test, compiled-in and declared
    (`projectord list --names`): the four examples the oracle knows first,
    in oracle.KNOWN's order (the seeded operations tests draw from this
    list), then any other in the build's order. A projection the oracle does
    not know is still enabled, waited for and checked for liveness; only the
    oracle's exact row checks leave it out. Without a binary: the four
    examples (starting a daemon then says to build first)."""
    if not os.path.exists(BIN):
        return list(KNOWN)
    out = subprocess.run([BIN, "-c", "/dev/null", "list", "--names"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=clean_env(), timeout=30 * SLOWDOWN)
    if out.returncode != 0:
        raise ProjectordError(f"{BIN} list --names exited {out.returncode}: {out.stderr.strip()}")
    names = out.stdout.split()
    return [n for n in KNOWN if n in names] + [n for n in names if n not in KNOWN]


# Every projection of the build; enabled by default in the tests' configs.
PROJECTIONS = build_projections()

# event_stats alone enabled: one projection reading its windows by itself
# (not through the instance's shared reads), the quickest to check exactly
# (oracle.assert_event_stats_exact).
ONLY_EVENT_STATS = {name: {"enabled": name == "event_stats"} for name in PROJECTIONS}


def libconfig_string(text):
    """text as a libconfig string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(conninfo=None, batch_size=1000, poll_interval_ms=1000, level="debug",
                projections=None, extra="", target=None, log_format="text"):
    """A libconfig file in SPEC §7's format.

    target: database.target, a separate read-model database (None: unset).

    projections: {name: {"enabled": bool, "on_error": str}}; by default
    every projection of the build is enabled with on_error = "stop".
    """
    if projections is None:
        projections = {name: {} for name in PROJECTIONS}
    lines = []
    database = [f"{key} = {libconfig_string(value)};"
                for key, value in (("conninfo", conninfo), ("target", target)) if value is not None]
    if database:
        lines.append(f'database = {{ {" ".join(database)} }};')
    lines += [f"batch_size = {batch_size};",
              f"poll_interval_ms = {poll_interval_ms};",
              f'log = {{ level = "{level}"; format = "{log_format}"; }};',
              "projections = {"]
    for name, settings in projections.items():
        enabled = "true" if settings.get("enabled", True) else "false"
        on_error = settings.get("on_error", "stop")
        lines.append(f'  {name} = {{ enabled = {enabled}; on_error = "{on_error}"; }};')
    lines.append("};")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def as_user(conninfo, user):
    """conninfo (key=value or URI) connecting as `user` instead; unchanged
    when user is None or conninfo is empty."""
    if not user or not conninfo:
        return conninfo
    return make_conninfo(conninfo, user=user)


def command(args):
    """argv for projectord with args, behind PROJECTORD_WRAPPER if set."""
    return WRAPPER + [BIN] + list(args)


def run_cli(args, env=None, timeout=30):
    """Run a one-shot projectord command; returns the CompletedProcess."""
    return subprocess.run(command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", env=env if env is not None else clean_env(),
                          timeout=timeout * SLOWDOWN)


class Daemon:
    """One `projectord -c FILE run` process writing to a log file.

    conninfo: the database, as the tests connect to it (status, waiting);
    user: the role the daemon connects as (default DAEMON_USER; None keeps
    conninfo's own); daemon_conninfo: what goes in the config file instead
    of conninfo with that user (None: no conninfo in the file at all, e.g.
    when the environment gives it); workdir: a directory for the config
    file and the log; target: a separate read-model database
    (database.target) as the tests connect to it: status and waiting then
    look there, and the head position in conninfo's event store.
    """

    _UNSET = object()

    def __init__(self, conninfo, workdir, name="projectord", env=None, user=DAEMON_USER,
                 daemon_conninfo=_UNSET, target=None, **config):
        self.events_conninfo = conninfo
        self.conninfo = target or conninfo
        if target:
            config["target"] = as_user(target, user)
        if daemon_conninfo is Daemon._UNSET:
            daemon_conninfo = as_user(conninfo, user)
        self.daemon_conninfo = daemon_conninfo
        self.workdir = workdir
        self.config_path = os.path.join(workdir, f"{name}.conf")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.env = env or {}
        self.projections = config.get("projections") or {p: {} for p in PROJECTIONS}
        # 0600: it may hold a password (the daemon warns about a readable one).
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write(config_text(daemon_conninfo, **config))
        self.proc = None
        self.starts = 0
        self._saved_log = None

    @property
    def enabled(self):
        return [n for n, s in self.projections.items() if s.get("enabled", True)]

    # -- process -----------------------------------------------------------

    def start(self):
        """Start (or start again, appending to the same log)."""
        if not os.path.exists(BIN):
            raise ProjectordError(f"{BIN} does not exist: build it first (cmake -B build && "
                                  "cmake --build build) or set PROJECTORD_BIN")
        self.starts += 1
        argv = command(["-c", self.config_path, "run"])
        with open(self.log_path, "a") as log:
            log.write(f"----- start #{self.starts}: {shlex.join(argv)}\n")
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=clean_env(**self.env))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=10):
        """Wait for the process to exit; returns its exit code (negative: signal)."""
        try:
            return self.proc.wait(timeout=timeout * SLOWDOWN)
        except subprocess.TimeoutExpired:
            raise ProjectordError(f"projectord did not exit within {timeout}s") from None

    def stop(self, timeout=10):
        """SIGTERM and wait; returns the exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.kill(signal.SIGTERM)
        return self.wait(timeout)

    def close(self):
        """Teardown: make sure the process is gone, whatever happened, and
        keep the log in memory (the report hook runs after workdir is gone)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._saved_log = self._read_log()

    def sanitizer_report(self):
        """The first line of an ASan/UBSan/LSan or valgrind report in the
        log, or of a state transition the runner refused (src/rstate.c: a
        bug of its state machine), or None."""
        for line in self._read_log().splitlines():
            if (
                "Sanitizer" in line
                or "runtime error:" in line
                or VALGRIND_ERROR.search(line)
                or REFUSED_TRANSITION in line
            ):
                return line.strip()
        return None

    def log(self, tail=200):
        """The last `tail` lines of the daemon's output."""
        text = self._saved_log if self._saved_log is not None else self._read_log()
        return "".join(text.splitlines(keepends=True)[-tail:])

    def _read_log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return "(no log)"

    # -- status ------------------------------------------------------------

    def status(self):
        """{projection_name: row dict} from read_model.projection_metadata."""
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            return metadata(conn)

    def wait_until(self, predicate, timeout, what, interval=0.05):
        """Poll predicate(conn) until it returns truthy; fail with `what` if
        the deadline passes or the daemon dies. Connection errors (the server
        may be restarting) are retried until the deadline."""
        deadline = time.monotonic() + timeout * SLOWDOWN
        last = None
        while True:
            if not self.alive():
                raise ProjectordError(f"projectord exited with {self.proc.returncode} while "
                                      f"waiting for {what}")
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    while True:
                        last = predicate(conn)
                        if last:
                            return last
                        if time.monotonic() > deadline:
                            raise ProjectordError(f"timed out after {timeout}s waiting for {what}")
                        if not self.alive():
                            break
                        time.sleep(interval)
            except psycopg.OperationalError as exc:
                last = exc
                if time.monotonic() > deadline:
                    raise ProjectordError(f"timed out after {timeout}s waiting for {what}: {exc}")
                time.sleep(0.2)

    def wait_started(self, timeout=30):
        """Wait until every enabled projection has its status row and none
        has failed: the daemon is up and tailing."""
        def started(conn):
            rows = metadata(conn)
            check_sane(rows, self.enabled, self.head(conn))
            return all(n in rows for n in self.enabled) and rows
        return self.wait_until(started, timeout, "the projections to start")

    def wait_caught_up(self, timeout=30, allow_skipped=False):
        """Wait until every enabled projection has applied or passed every
        event committed so far (last_position >= head) and says it is
        catching_up or live; fail at once if one has failed."""
        def caught_up(conn):
            head = self.head(conn)
            rows = metadata(conn)
            check_sane(rows, self.enabled, head, allow_skipped)
            return all(n in rows and rows[n]["last_position"] >= head
                       and rows[n]["status"] in ("live", "catching_up") for n in self.enabled) and rows
        return self.wait_until(caught_up, timeout, "the projections to catch up")

    def wait_ignored(self, at_least, timeout=10):
        """Wait until each named projection's events_ignored has reached
        at_least[name]: a batch's ignored count is known only from its
        statements' results, after its commit went out, and the checkpoint
        after it writes the count (within about 50 ms)."""
        def reached(conn):
            rows = metadata(conn)
            return all(n in rows and rows[n]["events_ignored"] >= k for n, k in at_least.items()) and rows
        return self.wait_until(reached, timeout, f"events_ignored to reach {at_least}")

    def head(self, conn):
        """The event store's head position; conn is the status database."""
        if self.events_conninfo == self.conninfo:
            return head_position(conn)
        with psycopg.connect(self.events_conninfo, autocommit=True, connect_timeout=5) as events:
            return head_position(events)


def head_position(conn):
    return conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]


def metadata(conn):
    cur = conn.execute("SELECT * FROM read_model.projection_metadata")
    names = [d.name for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def check_sane(rows, enabled, head, allow_skipped=False):
    """What must hold in the status table at any moment."""
    for name in enabled:
        row = rows.get(name)
        if row is None:
            continue
        if row["status"] == "failed":
            raise ProjectordError(f"projection {name} failed: {row['last_error']} "
                                  f"(sqlstate {row.get('last_error_sqlstate')})")
        if row["last_position"] > head:
            raise ProjectordError(f"{name}.last_position {row['last_position']} is beyond the head {head}")
        if row["events_processed"] < 0 or row["events_processed"] > head:
            raise ProjectordError(f"{name}.events_processed {row['events_processed']} is not in [0, {head}]")
        if not allow_skipped and row["events_skipped"]:
            raise ProjectordError(f"{name} skipped {row['events_skipped']} events: {row['last_error']}")
