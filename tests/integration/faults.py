"""Fault injection for the fault suite (test_fault_suite.py) and the soak
(tests/soak/soak.py): writers that keep appending through faults without
losing or repeating a command, and ways to hurt the daemon.

Writers
-------
`Writers` appends a generated event mix (eventgen) from several threads
while faults happen. Every command carries its stream's exact expected
version, so an append whose COMMIT outcome is unknown (the server went away
mid-commit) is never blindly retried: the writer reconnects, reads the
streams' versions and learns whether the transaction committed (all its
streams moved) or not (none did); anything else fails the test. A retry
that still meets a version conflict (SQLSTATE P0409: the first attempt was
committing while we looked) is resolved the same way.

Commands come from one shared queue that hands out, for each stream, only
its next command, and only while no other transaction holds one of that
stream: a stream's events are appended in order, but consecutive commands
of one stream may go to different writers. Writer kinds:

- plain: claim 1-4 commands, append them in one transaction, commit;
- early: take a transaction id first (insert into a command_model table),
  sleep a little, then claim and append. Another writer may commit the
  stream's previous command meanwhile, so the stream ends up with a later
  version in a transaction with a smaller id (SPEC §3's hard case);
- holder: a long transaction that writes to command_model and appends
  nothing, then rolls back (must not stall the daemon).

Writers' sessions run with lock_timeout = statement_timeout = 0 whatever
the database says, so timeout scenarios only hit the daemon.
"""

import collections
import itertools
import random
import threading
import time

import psycopg

import oracle
from eventgen import APPEND_SQL, Command, EventMix

# Our own sessions ignore database-level timeouts the scenarios set.
SAFE_OPTIONS = "-c lock_timeout=0 -c statement_timeout=0 -c idle_in_transaction_session_timeout=0"
APP_NAME = "projectord/%"    # a LIKE pattern: the daemon's sessions are projectord/NAME (src/pgconn.h)
COMMAND_TABLE = "command_model.fault_cmd"

RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError)


def connect(conninfo, autocommit=True, timeout=5):
    """A session of our own: short connect timeout, timeouts disabled."""
    return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=timeout,
                           options=SAFE_OPTIONS)


def connect_retry(conninfo, deadline, autocommit=True, stop=None):
    """connect(), retried while the server is down (restarting) until
    `deadline` (time.monotonic()); None if `stop` is set first."""
    delay = 0.05
    while True:
        try:
            return connect(conninfo, autocommit)
        except RETRYABLE:
            if time.monotonic() > deadline:
                raise
            if stop is not None and stop.is_set():
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


# --------------------------------------------------------------------------
# The command queue
# --------------------------------------------------------------------------

def stream_key(command):
    return (command.aggregate_type, command.aggregate_id)


class CommandQueue:
    """Commands in generation order, each stamped with its stream's exact
    expected version; hands out only each stream's next command."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = collections.OrderedDict()   # seq -> Command
        self.inflight = set()
        self.versions = {}                          # stream -> version after every queued command
        self.seq = 0
        self.refill = None                          # callable() -> more commands, or None

    def add(self, commands):
        with self.lock:
            self._add(commands)

    def _add(self, commands):
        for c in commands:
            key = stream_key(c)
            version = self.versions.get(key, 0)
            self.pending[self.seq] = Command(c.aggregate_type, c.aggregate_id, version, c.events)
            self.versions[key] = version + len(c.events)
            self.seq += 1

    def claim(self, k, scan_limit=400):
        """Up to k (seq, command) pairs, each the next command of its stream
        with no other command of its stream in flight."""
        with self.lock:
            if len(self.pending) - len(self.inflight) < 4 * k and self.refill is not None:
                more = self.refill()
                if more:
                    self._add(more)
            taken, blocked = [], set()
            for n, (seq, c) in enumerate(self.pending.items()):
                if len(taken) >= k or n >= scan_limit:
                    break
                key = stream_key(c)
                if key in blocked:
                    continue
                blocked.add(key)
                if seq in self.inflight:
                    continue
                self.inflight.add(seq)
                taken.append((seq, c))
            return taken

    def done(self, seqs):
        with self.lock:
            for s in seqs:
                self.inflight.discard(s)
                del self.pending[s]

    def release(self, seqs):
        with self.lock:
            for s in seqs:
                self.inflight.discard(s)

    def remaining(self):
        with self.lock:
            return len(self.pending)


class UniqueMix(EventMix):
    """EventMix whose emails are unique across mixes too: two mixes with
    different seeds would otherwise both register e.g. bob.7@Example.com,
    and the second registration is a bad event (SPEC §4)."""

    _tags = itertools.count(1)

    def __init__(self, seed, n_events, days=5):
        super().__init__(seed, n_events, days)
        self.tag = f"m{next(self._tags)}s{seed}"

    def _email(self):
        local, domain = super()._email().split("@")
        return f"{local}.{self.tag}@{domain}"


def mix(seed, n_events, days=5):
    """The commands of a valid mix that can be appended next to any other
    mix from this function (distinct streams, distinct emails)."""
    return UniqueMix(seed, n_events, days).generate()


def mix_feeder(seed, chunk_events=5000, days=5):
    """An endless source of valid mixes: each chunk is a fresh mix with its
    own streams, so chunks are independent (for the soak)."""
    state = {"n": 0}

    def refill():
        state["n"] += 1
        return mix(seed * 1000 + state["n"], chunk_events, days)
    return refill


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------

class WriterFailed(AssertionError):
    pass


class Writers:
    """Background writer threads (see the module docstring).

    plain/early/holders: how many threads of each kind. hold: (min, max)
    seconds an early writer sleeps between taking its xid and appending;
    long_hold: the same for holders. pace: (min, max) seconds a writer waits
    between transactions (throttles the load).
    """

    def __init__(self, conninfo, commands=(), plain=2, early=1, holders=1, seed=1,
                 hold=(0.0, 0.15), long_hold=(0.5, 2.0), pace=(0.0, 0.02), per_tx=(1, 4),
                 refill=None, name="writers"):
        self.conninfo = conninfo
        self.queue = CommandQueue()
        self.queue.refill = refill
        self.queue.add(list(commands))
        self.kinds = ["plain"] * plain + ["early"] * early + ["holder"] * holders
        self.rng = random.Random(seed)
        self.hold, self.long_hold, self.pace, self.per_tx = hold, long_hold, pace, per_tx
        self.name = name
        self.stop_event = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.lock = threading.Lock()
        self.errors = []
        self.threads = []
        self.stats = collections.Counter()

    # -- control -----------------------------------------------------------

    def start(self):
        with connect(self.conninfo) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {COMMAND_TABLE} "
                         "(id bigserial PRIMARY KEY, writer text, note text, at timestamptz DEFAULT now())")
        for n, kind in enumerate(self.kinds):
            t = threading.Thread(target=self._thread, name=f"{self.name}-{kind}-{n}",
                                 args=(kind, random.Random(self.rng.getrandbits(64))), daemon=True)
            self.threads.append(t)
            t.start()
        return self

    def pause(self):
        """Writers finish the transaction in hand and wait (resume() goes on)."""
        self.running.clear()

    def resume(self):
        self.running.set()

    def stop(self, timeout=120):
        """Stop after the transactions in hand (their outcome resolved) and
        raise if a writer failed."""
        self.stop_event.set()
        self.running.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        self.check()
        if alive:
            raise WriterFailed(f"writers did not stop within {timeout}s: {alive}")
        return self.snapshot()

    def check(self):
        if self.errors:
            raise WriterFailed(f"{len(self.errors)} writer error(s); first: {self.errors[0]}")

    def idle(self):
        """Paused and no transaction in hand."""
        return not self.running.is_set() and self.stats_get("busy") == 0

    def finished(self):
        return all(not t.is_alive() for t in self.threads if "holder" not in t.name)

    def snapshot(self):
        with self.lock:
            return dict(self.stats)

    def stats_get(self, key):
        with self.lock:
            return self.stats[key]

    def wait_commits(self, n, timeout):
        """Wait until n more transactions with appends have committed."""
        target = self.stats_get("commits") + n
        deadline = time.monotonic() + timeout
        while self.stats_get("commits") < target:
            self.check()
            if self.finished():
                return
            if time.monotonic() > deadline:
                raise WriterFailed(f"writers made no progress for {timeout}s ({self.snapshot()})")
            time.sleep(0.02)

    def _count(self, **deltas):
        with self.lock:
            self.stats.update(deltas)

    # -- threads -----------------------------------------------------------

    def _thread(self, kind, rng):
        conn = None
        try:
            while not self.stop_event.is_set():
                if not self.running.is_set():
                    self.running.wait(0.1)
                    continue
                if conn is None or conn.closed:
                    conn = connect_retry(self.conninfo, time.monotonic() + 120, autocommit=False,
                                         stop=self.stop_event)
                    if conn is None:
                        break
                self._count(busy=1)
                try:
                    if kind == "holder":
                        conn = self._hold(conn, rng)
                    else:
                        conn, more = self._transaction(conn, kind, rng)
                        if not more:
                            break
                finally:
                    self._count(busy=-1)
                if self.pace[1] > 0:
                    time.sleep(rng.uniform(*self.pace))
        except Exception as exc:  # reported by the main thread via check()
            self.errors.append(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                conn.close()

    def _hold(self, conn, rng):
        """A long transaction that appends nothing."""
        try:
            conn.execute(f"INSERT INTO {COMMAND_TABLE} (writer, note) VALUES ('holder', 'long, no append')")
            end = time.monotonic() + rng.uniform(*self.long_hold)
            while time.monotonic() < end and not self.stop_event.is_set():
                time.sleep(0.05)
            conn.rollback()
            self._count(holds=1)
        except RETRYABLE:
            self._count(holder_errors=1)
            conn.close()
        return conn

    def _transaction(self, conn, kind, rng):
        """One transaction; returns (connection, whether to go on)."""
        claimed = []
        try:
            if kind == "early":
                conn.execute(f"INSERT INTO {COMMAND_TABLE} (writer, note) VALUES ('early', 'xid first')")
                time.sleep(rng.uniform(*self.hold))
            claimed = self.queue.claim(rng.randint(*self.per_tx))
            if not claimed:
                conn.rollback()
                if self.queue.remaining() == 0:
                    return conn, False    # all appended
                time.sleep(0.01)          # every stream in hand elsewhere
                return conn, True
            for _, c in claimed:
                conn.execute(APPEND_SQL, c.params())
            conn.commit()
        except psycopg.Error as exc:
            if claimed and not isinstance(exc, RETRYABLE) and getattr(exc, "sqlstate", None) != "P0409":
                self.queue.release([s for s, _ in claimed])
                raise
            if conn.closed or conn.broken:
                self._count(connection_errors=1)
            else:
                try:
                    conn.rollback()
                except psycopg.Error:
                    conn.close()
            if not claimed:
                return conn, True
            conn = self._resolve(conn, claimed, exc)
            return conn, True
        self.queue.done([s for s, _ in claimed])
        self._count(commits=1, commands=len(claimed), events=sum(len(c.events) for _, c in claimed),
                    early_commits=int(kind == "early"))
        return conn, True

    def _resolve(self, conn, claimed, exc):
        """The transaction failed somewhere, maybe in COMMIT: find out from
        the streams' versions whether it committed, on a fresh connection if
        the old one is gone."""
        deadline = time.monotonic() + 120
        while True:
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                conn = connect_retry(self.conninfo, deadline, autocommit=False)
            try:
                outcome = self._outcome(conn, [c for _, c in claimed])
                conn.rollback()
                break
            except RETRYABLE:
                if time.monotonic() > deadline:
                    raise
                conn.close()
                time.sleep(0.1)
        seqs = [s for s, _ in claimed]
        if outcome == "committed":
            self.queue.done(seqs)
            self._count(commits=1, commands=len(claimed), events=sum(len(c.events) for _, c in claimed),
                        unknown_committed=1)
        else:
            self.queue.release(seqs)
            self._count(unknown_rolled_back=1)
        return conn

    @staticmethod
    def _outcome(conn, commands):
        before, after = {}, {}
        for c in commands:
            key = stream_key(c)
            before.setdefault(key, c.expected_version)
            after[key] = c.expected_version + len(c.events)
        seen = set()
        for key in before:
            row = conn.execute("SELECT version FROM event_store.event_stream "
                               "WHERE aggregate_type = %s AND aggregate_id = %s", key).fetchone()
            version = row[0] if row else 0
            if version == after[key]:
                seen.add("committed")
            elif version == before[key]:
                seen.add("rolled back")
            else:
                raise WriterFailed(f"stream {key} is at version {version}: neither {before[key]} "
                                   f"(not committed) nor {after[key]} (committed)")
        if len(seen) != 1:
            raise WriterFailed(f"a transaction committed on some streams only: {commands}")
        return seen.pop()


# --------------------------------------------------------------------------
# Hurting the daemon
# --------------------------------------------------------------------------

def daemon_backends(conn, dbname, app=APP_NAME):
    """[(pid, backend_start)] of the daemon's sessions on dbname."""
    return conn.execute("SELECT pid, backend_start FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name LIKE %s AND pid <> pg_backend_pid() "
                        "ORDER BY pid", (dbname, app)).fetchall()


def terminate_backends(conn, dbname, rng=None, app=APP_NAME):
    """pg_terminate_backend on a random non-empty subset (all without rng)
    of the daemon's sessions; returns how many were terminated."""
    pids = [pid for pid, _ in daemon_backends(conn, dbname, app)]
    if rng is not None and pids:
        pids = rng.sample(pids, rng.randint(1, len(pids)))
    n = 0
    for pid in pids:
        n += bool(conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0])
    return n


def terminate_in_transaction(conn, dbname, timeout=2.0, app=APP_NAME):
    """Wait (up to `timeout` s) for one of the daemon's sessions to be
    inside a batch's write transaction (state active or idle in transaction,
    last statement a write or the checkpoint: applying, or between its
    statements and its checkpoint, or committing) and terminate it right
    then. Returns (state, statement) of the session hit, or None if none
    was caught."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT pid, state, left(query, 70) FROM pg_stat_activity "
                           "WHERE datname = %s AND application_name LIKE %s AND xact_start IS NOT NULL "
                           "AND query ~* '\\m(insert|update|delete)\\M|checkpoint' "
                           "AND pid <> pg_backend_pid() LIMIT 1", (dbname, app)).fetchone()
        if row and conn.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone()[0]:
            return row[1], " ".join(row[2].split())
        time.sleep(0.002)
    return None


def wait_backends(conninfo, dbname, count, timeout, since=None, alive=lambda: True, app=APP_NAME):
    """Wait until the daemon has `count` sessions, all started after `since`
    (a server timestamp) when given; fails early if alive() turns false."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError("the daemon died while waiting for its connections")
        try:
            with connect(conninfo) as conn:
                got = daemon_backends(conn, dbname, app)
            if len(got) >= count and (since is None or all(t > since for _, t in got)):
                return got
        except RETRYABLE:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the daemon has {len(got or [])} connections, not {count}, after {timeout}s")


def server_now(conninfo):
    with connect(conninfo) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def rss_kb(pid):
    """VmRSS of a process in kB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# --------------------------------------------------------------------------
# The exact check
# --------------------------------------------------------------------------

def metadata(conn):
    cur = conn.execute("SELECT * FROM read_model.projection_metadata")
    names = [d.name for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def assert_exact(conn, projections=tuple(oracle.KNOWN)):
    """The read model equals an independent fold of the event table, the
    SPEC §4 invariants hold, each projection applied each handled event
    exactly once (events_processed equals the count of stored events of its
    types, nothing ignored, skipped or dead-lettered) and reached the head.
    A lost, duplicated or reordered event fails one of these."""
    oracle.assert_invariants(conn)
    oracle.assert_read_model_matches_fold(conn)
    handled = oracle.handled_counts(conn)
    head = conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]
    rows = metadata(conn)
    for name in projections:
        r = rows[name]
        assert r["events_processed"] == handled[name], \
            f"{name}: events_processed {r['events_processed']} != {handled[name]} stored events it handles"
        assert r["events_ignored"] == 0, f"{name}: {r['events_ignored']} events ignored (applied out of order?)"
        assert r["events_skipped"] == 0, f"{name}: {r['events_skipped']} events skipped"
        assert r["last_position"] == head, f"{name}: last_position {r['last_position']} != head {head}"
        assert r["status"] != "failed", f"{name} failed: {r['last_error']}"
    dead = conn.execute("SELECT projection_name, global_position, sqlstate, error "
                        "FROM read_model.projection_dead_letter LIMIT 5").fetchall()
    assert not dead, f"dead letters: {dead}"
    return handled


def assert_stats_match_checkpoint(conn):
    """At any moment event_type_stats and event_stats' checkpoint agree
    (both are written in one transaction). No status row yet (a daemon
    killed while starting): nothing may be counted either."""
    counted = conn.execute("SELECT coalesce(sum(event_count), 0) FROM read_model.event_type_stats").fetchone()[0]
    processed = metadata(conn).get("event_stats", {}).get("events_processed", 0)
    assert counted == processed, f"event_type_stats counts {counted} events, its checkpoint {processed}"


def count_inversions(conn):
    """Consecutive events of one stream whose later version has the smaller
    transaction id: the 'took its xid early' case really happened."""
    return conn.execute("""
        SELECT count(*) FROM (
          SELECT transaction_id::text::bigint AS x,
                 lag(transaction_id::text::bigint) OVER (PARTITION BY stream_id ORDER BY aggregate_version) AS px
            FROM event_store.domain_event) t
         WHERE x < px""").fetchone()[0]
