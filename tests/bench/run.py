#!/usr/bin/python3
"""projectord benchmark (issue 4): numbers printed, never asserted.

    /usr/bin/python3 tests/bench/run.py [--events N] [--quick] [--big] [--profile]

Starts its own throwaway PostgreSQL 15 cluster (tests/integration/pgcluster.py,
fsync off, track_commit_timestamp on, shared_buffers 512MB), then:

 1. generates N valid events (default 1,000,000; --quick: 100,000) set-based
    in SQL (generate.sql), and times a cold `projectord run` until every
    projection has caught up;
 2. runs the PL/pgSQL reference (reference.sql) over the same events into
    schema `ref`, times it, and compares its tables with projectord's row
    for row (and checks projectord's tables against the event store);
 3. "rebuilds" each projection (emulated: stop, TRUNCATE its tables, reset its
    checkpoint row, run the daemon with only that projection) and times it;
 4. appends OrderPlaced events with pgbench (append_order.pgbench) at 1,000
    and 5,000 events/s and measures commit-to-read-model latency with
    pg_xact_commit_timestamp;
 5. with the declared forms of the examples (projections/declared, SPEC §8;
    --no-declared skips them): the same cold catch-up (rows compared with the
    reference) and the same live runs, reported next to the compiled-in ones;
 6. reports the daemon's peak RSS while catching up (and with --big, for a
    5,000,000-event backlog in a second database) and its CPU while idle.

A results table is printed at the end and written to --out (default
tests/bench/last-run.txt, plus .json). Everything it started (daemon, pgbench,
cluster) is stopped on exit, also on Ctrl-C or an exception.
"""

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from pgcluster import PG_BIN, PgCluster  # noqa: E402

PROJECTIONS = ["catalog", "users", "orders", "event_stats"]
TABLES = {
    "catalog": ["categories", "products"],
    "users": ["users"],
    "orders": ["orders", "daily_sales"],
    "event_stats": ["event_type_stats"],
}
HANDLED = {
    "catalog": {"CategoryCreated", "CategoryRenamed", "ProductCreated", "ProductRenamed",
                "ProductPriceChanged", "ProductCategorized", "ProductDiscontinued"},
    "users": {"UserRegistered", "UserEmailVerified", "UserEmailChanged", "UserLoggedIn",
              "UserRoleChanged", "UserDeactivated", "UserReactivated"},
    "orders": {"OrderPlaced", "OrderItemAdded", "OrderShipped", "OrderCancelled"},
    "event_stats": None,  # every event
}

# Extra server settings on top of pgcluster's (which has fsync = off,
# full_page_writes = off, track_commit_timestamp = on).
SERVER_SETTINGS = {
    "shared_buffers": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "track_commit_timestamp": "on",
    "fsync": "off",
}

TARGETS = {
    "catchup_eps": 50000,
    "ratio": 1.0,
    "p99_1000": 10.0,
    "p99_5000": 25.0,
    "rss_mb": 16.0,
    "idle_pct": 0.1,
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# /proc helpers
# ---------------------------------------------------------------------------

def proc_status_kb(pid, key):
    """VmRSS / VmHWM of pid in kB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def proc_cpu_ticks(pid):
    """utime + stime of pid (all threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_cpu_ns(pid):
    """On-CPU time of pid, summed over its threads, in ns (schedstat: finer
    than clock ticks, which matters for the idle measurement)."""
    total = 0
    found = False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
                found = True
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total if found else None


def total_busy_ticks():
    """Busy clock ticks of all CPUs since boot, and all ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def ppid_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


class LoadMeter:
    """How much CPU *other* processes used during a phase (the box may be
    shared): all busy CPU time minus ours (this script, the daemon, pgbench,
    and every process of our cluster), sampled often enough to catch most
    short-lived processes of ours before they exit."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.tracked = set()
        self.first = {}
        self.last = {}
        self.t0 = None

    def track(self, pid):
        self.tracked.add(pid)

    def _ours(self):
        pids = {os.getpid()} | self.tracked
        try:
            with open(os.path.join(self.cluster.datadir, "postmaster.pid")) as f:
                pm = int(f.readline())
            pids.add(pm)
            for d in os.listdir("/proc"):
                if d.isdigit() and ppid_of(int(d)) == pm:
                    pids.add(int(d))
        except (OSError, ValueError):
            pass
        return pids

    def start(self):
        self.first, self.last = {}, {}
        self.t0 = total_busy_ticks()
        self.sample()

    def sample(self):
        if self.t0 is None:
            return
        for pid in self._ours():
            t = proc_cpu_ticks(pid)
            if t is None:
                continue
            self.first.setdefault(pid, t if not self.last else 0)
            self.last[pid] = t

    def others_pct(self):
        """Percent of all cores used by other processes since start()."""
        self.sample()
        busy1, all1 = total_busy_ticks()
        ours = sum(self.last[p] - self.first[p] for p in self.last)
        return max(0.0, 100.0 * (busy1 - self.t0[0] - ours) / max(1, all1 - self.t0[1]))


LOAD = None  # the run's LoadMeter


# ---------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------

def daemon_env():
    """The caller's PG* / PROJECTORD_* variables would change what we measure."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PG") and not k.startswith("PROJECTORD_")}


class Daemon:
    """One `projectord -c FILE run` process, its config and log in workdir."""

    def __init__(self, binary, workdir, name, conninfo, enabled, batch_size=1000,
                 projection_dir=None):
        self.binary = binary
        self.name = name
        self.config_path = os.path.join(workdir, f"{name}.conf")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.enabled = list(enabled)
        lines = [f'database = {{ conninfo = "{conninfo}"; }};',
                 f"batch_size = {batch_size};",
                 'log = { level = "info"; };',
                 "projections = {"]
        if projection_dir:  # the declared forms of the examples replace the compiled-in ones
            lines.insert(0, f'projection_dir = "{projection_dir}";')
        for p in PROJECTIONS:
            on = "true" if p in self.enabled else "false"
            lines.append(f'  {p} = {{ enabled = {on}; on_error = "stop"; }};')
        lines.append("};")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.started_at = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        self.logf = open(self.log_path, "a")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "-c", self.config_path, "run"], stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=daemon_env())
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM, wait; SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: no exit {timeout}s after SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return "(no log)"


# ---------------------------------------------------------------------------
# Database helpers
# ---------------------------------------------------------------------------

def connect(conninfo):
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)


def head_position(conn):
    return conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]


def metadata(conn):
    cur = conn.execute("SELECT projection_name, status, last_position, events_processed, "
                       "events_ignored, events_skipped, last_error FROM read_model.projection_metadata")
    return {r[0]: dict(zip(["name", "status", "last_position", "processed", "ignored", "skipped",
                            "last_error"], r)) for r in cur.fetchall()}


def daemon_backend_pids(conn):
    return [r[0] for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'projectord' OR application_name LIKE 'projectord/%'").fetchall()]


class CpuMeter:
    """CPU time of the daemon and of its PostgreSQL backends between two points."""

    def __init__(self, daemon, conn):
        self.daemon = daemon
        self.conn = conn
        self.t0 = time.monotonic()
        self.d0 = proc_cpu_ns(daemon.pid) or 0
        self.dticks0 = proc_cpu_ticks(daemon.pid) or 0
        self.b0 = {pid: proc_cpu_ns(pid) or 0 for pid in daemon_backend_pids(conn)}

    def read(self):
        """(seconds elapsed, daemon cpu s, daemon ticks, backends cpu s)."""
        elapsed = time.monotonic() - self.t0
        d = ((proc_cpu_ns(self.daemon.pid) or 0) - self.d0) / 1e9
        ticks = (proc_cpu_ticks(self.daemon.pid) or 0) - self.dticks0
        b = 0.0
        for pid in daemon_backend_pids(self.conn):
            now = proc_cpu_ns(pid)
            if now is not None:
                b += (now - self.b0.get(pid, 0)) / 1e9
        return elapsed, d, ticks, b


def wait_caught_up(conninfo, daemon, names, timeout, t0=None, samples=None, interval=0.05):
    """Poll projection_metadata until every projection in names has
    last_position >= head. Returns {name: seconds since t0 when it got
    there}. Fails at once if the daemon dies or a projection fails or
    skips an event. samples: a list to append (t, min progress, VmRSS kB) to."""
    t0 = daemon.started_at if t0 is None else t0
    deadline = time.monotonic() + timeout
    reached = {}
    with connect(conninfo) as conn:
        head = head_position(conn)
        while True:
            if not daemon.alive():
                raise BenchError(f"projectord exited with {daemon.proc.returncode}:\n{daemon.log_tail()}")
            rows = metadata(conn)
            now = time.monotonic()
            if LOAD is not None:
                LOAD.sample()
            for n in names:
                row = rows.get(n)
                if row is None:
                    continue
                if row["status"] == "failed" or row["skipped"]:
                    raise BenchError(f"projection {n} {row['status']} (skipped {row['skipped']}): "
                                     f"{row['last_error']}\n{daemon.log_tail()}")
                if n not in reached and row["last_position"] >= head:
                    reached[n] = now - t0
            if samples is not None:
                progress = min((rows[n]["last_position"] if n in rows else 0) for n in names)
                samples.append((now - t0, progress / head if head else 1.0,
                                proc_status_kb(daemon.pid, "VmRSS")))
            if len(reached) == len(names):
                return reached
            if now > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {names} to reach "
                                 f"position {head}: { {n: rows.get(n, {}).get('last_position') for n in names} }"
                                 f"\n{daemon.log_tail()}")
            time.sleep(interval)


def event_counts(conn):
    return dict(conn.execute("SELECT event_type, count(*) FROM event_store.domain_event GROUP BY 1").fetchall())


def handled_count(counts, projection):
    types = HANDLED[projection]
    return sum(c for t, c in counts.items() if types is None or t in types)


def generate(conninfo, n, chunk=10000):
    """Generate n events; returns (seconds, check problems)."""
    with connect(conninfo) as conn:
        conn.execute(open(os.path.join(HERE, "generate.sql")).read())
        t = time.monotonic()
        conn.execute("CALL bench.generate_events(%s, %s)", (n, chunk))
        gen_s = time.monotonic() - t
        conn.execute("VACUUM (ANALYZE) event_store.event_stream, event_store.domain_event")
        conn.execute("CHECKPOINT")
        problems = [(p, c) for p, c in conn.execute("SELECT * FROM bench.check_events()").fetchall() if c]
    return gen_s, problems


def compare_tables(conn, left="read_model", right="ref"):
    """{table: (rows left, rows right, only-left rows, only-right rows, sample)}."""
    out = {}
    for proj in PROJECTIONS:
        for t in TABLES[proj]:
            nl = conn.execute(f"SELECT count(*) FROM {left}.{t}").fetchone()[0]
            nr = conn.execute(f"SELECT count(*) FROM {right}.{t}").fetchone()[0]
            only_l = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {left}.{t} EXCEPT ALL "
                                  f"SELECT * FROM {right}.{t}) x").fetchone()[0]
            only_r = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {right}.{t} EXCEPT ALL "
                                  f"SELECT * FROM {left}.{t}) x").fetchone()[0]
            sample = []
            if only_l or only_r:
                sample += [f"  {left}: {r}" for r in conn.execute(
                    f"SELECT * FROM (SELECT * FROM {left}.{t} EXCEPT ALL SELECT * FROM {right}.{t}) x "
                    f"ORDER BY 1 LIMIT 5").fetchall()]
                sample += [f"  {right}: {r}" for r in conn.execute(
                    f"SELECT * FROM (SELECT * FROM {right}.{t} EXCEPT ALL SELECT * FROM {left}.{t}) x "
                    f"ORDER BY 1 LIMIT 5").fetchall()]
            out[t] = (nl, nr, only_l, only_r, sample)
    return out


CONSISTENCY_SQL = {
    "event_type_stats = count/min/max grouped by event_type": """
        SELECT count(*) FROM (
          (SELECT event_type::text, count(*), min(global_position), max(global_position), max(occurred_at)
             FROM event_store.domain_event GROUP BY 1
           EXCEPT ALL SELECT * FROM {s}.event_type_stats)
          UNION ALL
          (SELECT * FROM {s}.event_type_stats
           EXCEPT ALL SELECT event_type::text, count(*), min(global_position), max(global_position), max(occurred_at)
             FROM event_store.domain_event GROUP BY 1)) x""",
    "product_count = active products naming the category": """
        SELECT count(*) FROM {s}.categories c
         WHERE product_count <> (SELECT count(*) FROM {s}.products p
                                  WHERE p.category_id = c.id AND p.status = 'active')""",
    "daily_sales = orders grouped by UTC day of placed_at": """
        SELECT count(*) FROM (
          (SELECT * FROM {s}.daily_sales
           EXCEPT ALL
           SELECT (placed_at AT TIME ZONE 'UTC')::date, count(*),
                  count(*) FILTER (WHERE status = 'cancelled'),
                  coalesce(sum(total_cents) FILTER (WHERE status <> 'cancelled'), 0)
             FROM {s}.orders GROUP BY 1)
          UNION ALL
          (SELECT (placed_at AT TIME ZONE 'UTC')::date, count(*),
                  count(*) FILTER (WHERE status = 'cancelled'),
                  coalesce(sum(total_cents) FILTER (WHERE status <> 'cancelled'), 0)
             FROM {s}.orders GROUP BY 1
           EXCEPT ALL SELECT * FROM {s}.daily_sales)) x""",
    "one row per creation stream (categories, products, users, orders)": """
        SELECT abs((SELECT count(*) FROM {s}.categories) - (SELECT count(*) FROM event_store.domain_event WHERE event_type = 'CategoryCreated'))
             + abs((SELECT count(*) FROM {s}.products) - (SELECT count(*) FROM event_store.domain_event WHERE event_type = 'ProductCreated'))
             + abs((SELECT count(*) FROM {s}.users) - (SELECT count(*) FROM event_store.domain_event WHERE event_type = 'UserRegistered'))
             + abs((SELECT count(*) FROM {s}.orders) - (SELECT count(*) FROM event_store.domain_event WHERE event_type = 'OrderPlaced'))""",
}


def consistency(conn, schema="read_model"):
    return {name: conn.execute(sql.format(s=schema)).fetchone()[0] for name, sql in CONSISTENCY_SQL.items()}


def reset_projection(conn, name):
    """Emulated rebuild, step 1: empty its tables and its checkpoint."""
    conn.execute("TRUNCATE " + ", ".join(f"read_model.{t}" for t in TABLES[name]))
    conn.execute("""UPDATE read_model.projection_metadata
                       SET tail_snapshot_lo = '1:1:', tail_snapshot_hi = '1:1:',
                           tail_window_position = 0, tail_window_max = 0, last_position = 0,
                           last_event_id = 0, events_processed = 0, events_ignored = 0,
                           events_skipped = 0
                     WHERE projection_name = %s""", (name,))


def top_statements(conn, limit=12):
    try:
        return conn.execute("""
            SELECT calls, round(total_exec_time::numeric, 0) AS total_ms,
                   round(mean_exec_time::numeric, 4) AS mean_ms, rows,
                   regexp_replace(left(query, 110), '\\s+', ' ', 'g')
              FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT %s""", (limit,)).fetchall()
    except psycopg.Error as exc:
        return [("pg_stat_statements unavailable", str(exc).strip())]


def reset_statements(conn):
    conn.execute("SELECT pg_stat_statements_reset()")


# ---------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------

def catch_up(args, workdir, conninfo, name, enabled, total_events, timeout, projection_dir=None):
    """A cold `projectord run` over the whole backlog; returns a result dict."""
    d = Daemon(args.bin, workdir, name, conninfo, enabled, projection_dir=projection_dir)
    samples = []
    try:
        d.start()
        LOAD.start()
        LOAD.track(d.pid)
        reached = wait_caught_up(conninfo, d, enabled, timeout, samples=samples)
        others = LOAD.others_pct()
        hwm = proc_status_kb(d.pid, "VmHWM")
        rss = proc_status_kb(d.pid, "VmRSS")
        cpu_d = (proc_cpu_ns(d.pid) or 0) / 1e9
        with connect(conninfo) as conn:
            # The daemon's backends started with it: their whole CPU time is
            # this catch-up (plus a negligible session setup).
            cpu_b = sum((proc_cpu_ns(pid) or 0) for pid in daemon_backend_pids(conn)) / 1e9
            rows = metadata(conn)
    finally:
        rc = d.stop()
    total_s = max(reached.values())
    rss_curve = []
    for frac in (0.25, 0.5, 0.75, 1.0):
        pts = [s for s in samples if s[1] >= frac and s[2]]
        if pts:
            rss_curve.append((frac, pts[0][2]))
    return {
        "seconds": total_s,
        "events": total_events,
        "eps": total_events / total_s if total_s else None,
        "per_projection": reached,
        "processed": {n: rows[n]["processed"] for n in enabled},
        "ignored": {n: rows[n]["ignored"] for n in enabled},
        "hwm_kb": hwm,
        "rss_end_kb": rss,
        "rss_curve": rss_curve,
        "daemon_cpu_s": cpu_d,
        "backends_cpu_s": cpu_b,
        "others_pct": others,
        "exit_code": rc,
    }


def run_reference(conninfo, timeout_s):
    with connect(conninfo) as conn:
        conn.execute(open(os.path.join(HERE, "reference.sql")).read())
        conn.execute("TRUNCATE ref.categories, ref.products, ref.users, ref.orders, ref.daily_sales, "
                     "ref.event_type_stats, ref.checkpoint")
        conn.execute(f"SET statement_timeout = '{int(timeout_s)}s'")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cpu0 = proc_cpu_ns(pid) or 0
        LOAD.start()
        t = time.monotonic()
        conn.execute("CALL ref.run_projections(1000)")
        return time.monotonic() - t, ((proc_cpu_ns(pid) or 0) - cpu0) / 1e9, LOAD.others_pct()


def parse_pgbench(text):
    out = {}
    m = re.search(r"number of transactions actually processed: (\d+)", text)
    out["transactions"] = int(m.group(1)) if m else None
    m = re.search(r"number of failed transactions: (\d+)", text)
    out["failed"] = int(m.group(1)) if m else 0
    m = re.search(r"tps = ([\d.]+)", text)
    out["tps"] = float(m.group(1)) if m else None
    m = re.search(r"latency average = ([\d.]+) ms", text)
    out["append_latency_ms"] = float(m.group(1)) if m else None
    m = re.search(r"rate limit schedule lag: avg ([\d.]+) \(max ([\d.]+)\) ms", text)
    out["schedule_lag_ms"] = (float(m.group(1)), float(m.group(2))) if m else None
    return out


LATENCY_SQL = """
SELECT count(*) AS n,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS p,
       max(ms), min(ms)
  FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(o.xmin)
                                - pg_xact_commit_timestamp(e.xmin)) * 1000 AS ms
          FROM event_store.domain_event e
          JOIN event_store.event_stream s ON s.stream_id = e.stream_id
          JOIN read_model.orders o ON o.id = s.aggregate_id
         WHERE e.global_position > %s AND e.event_type = 'OrderPlaced') x
"""


def live_series(args, cluster, daemon, rates, seconds, label, R):
    """live_run at each rate on database "bench"; a failed rate goes into
    R["errors"] and the others still run (they are worth having), unless
    the daemon died."""
    runs = []
    for rate in rates:
        clients = 4 if rate <= 1000 else 8
        try:
            lv = live_run(args, cluster, "bench", daemon, rate, seconds, clients)
        except BenchError as exc:
            R.setdefault("errors", []).append(f"{label} {rate}/s: {str(exc).splitlines()[0]}")
            log(f"{label} {rate}/s failed: {exc}")
            if not daemon.alive():
                raise
            continue
        runs.append(lv)
        log(f"{label} {rate}/s: achieved {lv['tps']:.0f}/s, {lv['measured']} measured, "
            f"p50 {lv['p50']:.2f} p95 {lv['p95']:.2f} p99 {lv['p99']:.2f} max {lv['max']:.2f} ms; "
            f"daemon {lv['daemon_cpu_pct']:.1f} % CPU, its backends {lv['backends_cpu_pct']:.1f} %; "
            f"orders drained {lv['drain_s']:.1f} s after the writers stopped")
    return runs


def live_run(args, cluster, dbname, daemon, rate, seconds, clients):
    conninfo = cluster.conninfo(dbname)
    with connect(conninfo) as conn:
        start = head_position(conn)
        meter = CpuMeter(daemon, conn)
        cmd = [f"{PG_BIN}/pgbench", "-n", "-M", "prepared", "-f", os.path.join(HERE, "append_order.pgbench"),
               "-c", str(clients), "-j", str(min(clients, 2)), "-R", str(rate), "-T", str(seconds),
               "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", dbname]
        log(f"live {rate}/s for {seconds}s: {' '.join(cmd[1:])}")
        LOAD.start()
        outf = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(cmd, stdout=outf, stderr=subprocess.STDOUT, text=True, env=daemon_env())
        LOAD.track(proc.pid)
        try:
            deadline = time.monotonic() + seconds + 60
            while proc.poll() is None and time.monotonic() < deadline:
                LOAD.sample()
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        others = LOAD.others_pct()
        outf.seek(0)
        out = outf.read()
        outf.close()
        if proc.returncode != 0:
            raise BenchError(f"pgbench exited {proc.returncode}:\n{out}")
        elapsed, dcpu, _, bcpu = meter.read()
        t_end = time.monotonic()
        # orders is the projection measured; the others must catch up too,
        # and how far behind they are is worth reporting if they do not.
        wait_caught_up(conninfo, daemon, ["orders"], 180, t0=t_end)
        drain_s = time.monotonic() - t_end
        lag = {}
        try:
            wait_caught_up(conninfo, daemon, daemon.enabled, 30, t0=t_end)
        except BenchError:
            head = head_position(conn)
            lag = {n: head - r["last_position"] for n, r in metadata(conn).items()
                   if n in daemon.enabled and r["last_position"] < head}
            log(f"after the live run, still behind the head by {lag} events after 30 s")
        appended = head_position(conn) - start
        n, p, mx, mn = conn.execute(LATENCY_SQL, (start,)).fetchone()
    res = parse_pgbench(out)
    res["drain_s"] = drain_s
    res["others_pct"] = others
    res["behind_after_30s"] = lag
    res.update({"rate": rate, "seconds": seconds, "clients": clients, "appended": appended,
                "measured": n, "p50": p[0] if p else None, "p95": p[1] if p else None,
                "p99": p[2] if p else None, "max": mx, "min": mn,
                "daemon_cpu_pct": 100 * dcpu / elapsed, "backends_cpu_pct": 100 * bcpu / elapsed})
    return res


def idle_run(daemon, conninfo, seconds):
    note = None
    with connect(conninfo) as conn:
        try:
            wait_caught_up(conninfo, daemon, daemon.enabled, 60, t0=time.monotonic())
        except BenchError as exc:
            if not daemon.alive():
                raise
            note = "not caught up before the idle measurement: " + str(exc).split("\n")[0]
            log(note)
        time.sleep(2)
        meter = CpuMeter(daemon, conn)
        LOAD.start()
        # Do not touch the database meanwhile: only the daemon's own work counts.
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            LOAD.sample()
        elapsed, dcpu, ticks, bcpu = meter.read()
        others = LOAD.others_pct()
    return {"seconds": elapsed, "daemon_cpu_s": dcpu, "daemon_ticks": ticks, "note": note, "others_pct": others,
            "daemon_pct": 100 * dcpu / elapsed, "backends_cpu_s": bcpu,
            "backends_pct": 100 * bcpu / elapsed}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def fmt_int(n):
    return f"{n:,.0f}" if n is not None else "-"


def met(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def live_verdict(lv, target):
    """A p99 at a rate the writers did not reach says nothing about the target at that rate."""
    if lv["tps"] < 0.95 * lv["rate"]:
        return "MISSED (rate not reached)"
    return met(lv["p99"] <= target)


def render(R):
    rows = []  # (measure, result, target, met)

    def add(measure, result, target="", ok=""):
        rows.append((measure, result, target, ok))

    N = R["events"]
    c = R.get("catchup")
    if c:
        add(f"Catch-up, {fmt_int(N)} events, 4 projections", f"{c['seconds']:.1f} s = {fmt_int(c['eps'])} events/s",
            f">= {fmt_int(TARGETS['catchup_eps'])} events/s", met(c["eps"] >= TARGETS["catchup_eps"]))
        add("  CPU during catch-up: daemon / its PostgreSQL backends",
            f"{c['daemon_cpu_s']:.1f} s / {c['backends_cpu_s']:.1f} s (wall {c['seconds']:.1f} s, 2 cores)")
        add("  other processes on the box meanwhile", f"{c['others_pct']:.0f} % of 2 cores")
        for p in PROJECTIONS:
            if p in c["per_projection"]:
                add(f"  {p} reached the head at", f"{c['per_projection'][p]:.1f} s "
                    f"({fmt_int(R['handled'][p])} events of its types)")
    ref = R.get("reference")
    if ref:
        add("PL/pgSQL reference, same events", f"{ref['seconds']:.1f} s = {fmt_int(ref['eps'])} events/s "
            f"(one backend, {ref['backend_cpu_s']:.1f} s CPU; others on the box {ref['others_pct']:.0f} %)")
        if c:
            ratio = c["eps"] / ref["eps"]
            add("projectord / reference throughput", f"{ratio:.2f}x", ">= 1.0x", met(ratio >= TARGETS["ratio"]))
        add("reference result = projectord result", "yes" if ref["same"] else f"NO ({ref['diff_rows']} rows differ)")
    cd = R.get("catchup_declared")
    if cd:
        ratio = cd["eps"] / c["eps"] if c and c.get("eps") else None
        add("Catch-up, declared forms (projections/declared)",
            f"{cd['seconds']:.1f} s = {fmt_int(cd['eps'])} events/s"
            + (f"; declared / compiled-in {ratio:.2f}x" if ratio else ""),
            ">= 0.90x compiled-in", met(ratio is not None and ratio >= 0.9))
        add("  CPU during catch-up: daemon / its PostgreSQL backends",
            f"{cd['daemon_cpu_s']:.1f} s / {cd['backends_cpu_s']:.1f} s; others {cd['others_pct']:.0f} % of 2 cores")
        add("  declared result = reference result",
            "yes" if R.get("declared_same") else "NO")
    if R.get("consistency") is not None:
        bad = {k: v for k, v in R["consistency"].items() if v}
        add("projectord result vs event store (invariants)", "ok" if not bad else f"VIOLATED: {bad}")
    for p, rb in R.get("rebuild", {}).items():
        add(f"Rebuild {p} (emulated)", f"{rb['seconds']:.1f} s = {fmt_int(N / rb['seconds'])} events/s scanned, "
            f"{fmt_int(R['handled'][p] / rb['seconds'])}/s its own; peak RSS {rb['hwm_kb'] / 1024:.1f} MB")
        # Alone, so its CPU split says where this projection's time goes.
        add("  CPU: daemon / its PostgreSQL backend / others",
            f"{rb['daemon_cpu_s']:.1f} s / {rb['backends_cpu_s']:.1f} s / {rb['others_pct']:.0f} % of 2 cores")
    if R.get("rebuild_same") is not None:
        add("rebuilt result = reference result", "yes" if R["rebuild_same"] else "NO")
    for lv in R.get("live", []):
        target = TARGETS["p99_1000"] if lv["rate"] <= 1000 else TARGETS["p99_5000"]
        add(f"Live {fmt_int(lv['rate'])} events/s ({lv['clients']} clients, {lv['seconds']} s): achieved",
            f"{lv['tps']:.0f} events/s, {fmt_int(lv['measured'])} of {fmt_int(lv['appended'])} measured; append {lv['append_latency_ms']:.2f} ms avg")
        add("  commit-to-read-model p50 / p95 / p99 / max",
            f"{lv['p50']:.2f} / {lv['p95']:.2f} / {lv['p99']:.2f} / {lv['max']:.2f} ms",
            f"p99 <= {target:g} ms", live_verdict(lv, target))
        add("  CPU: daemon / its PostgreSQL backends / other processes",
            f"{lv['daemon_cpu_pct']:.1f} % / {lv['backends_cpu_pct']:.1f} % of one core / "
            f"{lv['others_pct']:.0f} % of 2 cores")
        behind = "" if not lv["behind_after_30s"] else \
            "; still behind 30 s later: " + ", ".join(f"{k} {v:,}" for k, v in lv["behind_after_30s"].items())
        add("  orders caught up after the writers stopped", f"{lv['drain_s']:.1f} s{behind}")
    compiled_p99 = {lv["rate"]: lv["p99"] for lv in R.get("live", [])}
    for lv in R.get("live_declared", []):
        base = compiled_p99.get(lv["rate"])
        ratio = lv["p99"] / base if base else None
        add(f"Live {fmt_int(lv['rate'])} events/s, declared forms: p50 / p95 / p99 / max",
            f"{lv['p50']:.2f} / {lv['p95']:.2f} / {lv['p99']:.2f} / {lv['max']:.2f} ms"
            + (f"; p99 declared / compiled-in {ratio:.2f}x" if ratio else ""),
            "p99 <= 1.10x compiled-in", met(ratio is not None and ratio <= 1.1))
        add("  CPU: daemon / its PostgreSQL backends",
            f"{lv['daemon_cpu_pct']:.1f} % / {lv['backends_cpu_pct']:.1f} % of one core")
    if c:
        add(f"Peak RSS, {fmt_int(N)}-event catch-up", f"{c['hwm_kb'] / 1024:.1f} MB (VmHWM)",
            f"<= {TARGETS['rss_mb']:g} MB", met(c["hwm_kb"] / 1024 <= TARGETS["rss_mb"]))
        curve = ", ".join(f"{int(f * 100)}%: {kb / 1024:.1f}" for f, kb in c["rss_curve"])
        add("  VmRSS (MB) at catch-up progress", curve)
    big = R.get("big")
    if big:
        add(f"Catch-up, {fmt_int(big['events'])} events (--big)", f"{big['seconds']:.1f} s = {fmt_int(big['eps'])} events/s",
            f">= {fmt_int(TARGETS['catchup_eps'])} events/s", met(big["eps"] >= TARGETS["catchup_eps"]))
        add("  other processes on the box meanwhile", f"{big['others_pct']:.0f} % of 2 cores")
        add(f"Peak RSS, {fmt_int(big['events'])}-event catch-up", f"{big['hwm_kb'] / 1024:.1f} MB (VmHWM)",
            f"<= {TARGETS['rss_mb']:g} MB", met(big["hwm_kb"] / 1024 <= TARGETS["rss_mb"]))
        curve = ", ".join(f"{int(f * 100)}%: {kb / 1024:.1f}" for f, kb in big["rss_curve"])
        add("  VmRSS (MB) at catch-up progress", curve)
    idle = R.get("idle")
    if idle:
        add(f"Idle CPU, daemon, {idle['seconds']:.0f} s", f"{idle['daemon_pct']:.3f} % of one core "
            f"({idle['daemon_cpu_s'] * 1000:.1f} ms CPU)", f"<= {TARGETS['idle_pct']:g} %",
            met(idle["daemon_pct"] <= TARGETS["idle_pct"]))
        add("  its PostgreSQL backends while idle", f"{idle['backends_pct']:.3f} % of one core "
            f"(other processes on the box: {idle['others_pct']:.0f} % of 2 cores)")
        if idle.get("note"):
            add("  note", idle["note"])
    for e in R.get("errors", []):
        add("ERROR", e)

    w = [max(len(r[i]) for r in rows + [("Measure", "Result", "Target", "")]) for i in range(4)]
    lines = [f"| {'Measure'.ljust(w[0])} | {'Result'.ljust(w[1])} | {'Target'.ljust(w[2])} | {'Met?'.ljust(w[3])} |",
             f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|{'-' * (w[3] + 2)}|"]
    for r in rows:
        lines.append("| " + " | ".join(r[i].ljust(w[i]) for i in range(4)) + " |")
    return "\n".join(lines)


def header(R):
    return (f"projectord benchmark, {R['date']}, commit {R['commit']}{' (+ uncommitted changes)' if R['dirty'] else ''}\n"
            f"machine: {R['machine']}; {R.get('busy_before', 0):.0f} % busy before the run\n"
            f"PostgreSQL {R['server_version']} on the same box: {R['settings']}\n"
            f"events: {fmt_int(R['events'])} (generated in {R.get('generate_s', 0):.1f} s); mix: {R.get('mix', '')}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def git(*args):
    try:
        return subprocess.run(["git", "-C", REPO] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout.strip()
    except OSError:
        return ""


def other_cpu_busy(seconds=3.0):
    """Percent of all cores busy over a few seconds (before we start anything)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v) - idle, sum(v)
    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, help="events to generate (default 1,000,000; --quick: 100,000)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100k events, 10 s live runs, 10 s idle")
    ap.add_argument("--big", action="store_true", help="also catch up a --big-events backlog (peak RSS)")
    ap.add_argument("--big-events", type=int, default=5_000_000)
    ap.add_argument("--rates", default="1000,5000", help="live append rates, events/s (default 1000,5000)")
    ap.add_argument("--live-seconds", type=int, help="seconds per live run (default 25; --quick: 10)")
    ap.add_argument("--idle-seconds", type=int, help="idle measurement (default 30; --quick: 10)")
    ap.add_argument("--profile", action="store_true",
                    help="load pg_stat_statements and print the top statements of each phase")
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "projectord"), help="projectord binary")
    ap.add_argument("--no-build", action="store_true", help="do not run cmake --build first")
    ap.add_argument("--head", action="store_true",
                    help="benchmark the committed HEAD: build a clean copy (git archive) in the temp dir "
                         "and use its binary and sql/")
    ap.add_argument("--sql-dir", default=os.path.join(REPO, "sql"), help="schema migrations to apply")
    ap.add_argument("--workdir", help="parent directory of the throwaway cluster (default: $TMPDIR)")
    ap.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the machine to be under 15 %% busy (shared boxes)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster directory (stopped) at the end")
    ap.add_argument("--no-declared", action="store_true",
                    help="skip the declared forms' catch-up and live runs (projections/declared)")
    ap.add_argument("--out", default=os.path.join(HERE, "last-run.txt"), help="results file (.json alongside)")
    args = ap.parse_args(argv)
    n_events = args.events or (100_000 if args.quick else 1_000_000)
    live_s = args.live_seconds or (10 if args.quick else 25)
    idle_s = args.idle_seconds or (10 if args.quick else 30)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    # SIGTERM behaves like Ctrl-C: unwind through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    basedir = tempfile.mkdtemp(prefix="projectord-bench-", dir=args.workdir)
    os.chmod(basedir, 0o755)
    workdir = os.path.join(basedir, "run")
    os.makedirs(workdir)
    R = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "commit": git("rev-parse", "--short", "HEAD") or "unknown",
         "dirty": bool(git("status", "--porcelain", "--", "src", "projections", "sql", "CMakeLists.txt")),
         "machine": machine(), "events": n_events}
    if args.head:
        # A clean copy of the committed HEAD, built apart from the work tree.
        src = os.path.join(basedir, "src")
        os.makedirs(src)
        log(f"building HEAD ({R['commit']}) in {src}")
        subprocess.run(f"git -C {REPO} archive HEAD | tar -x -C {src}", shell=True, check=True)
        subprocess.run(["cmake", "-S", src, "-B", os.path.join(src, "build")], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", os.path.join(src, "build"), "-j2", "--target", "projectord"],
                       check=True, stdout=subprocess.DEVNULL)
        args.bin = os.path.join(src, "build", "projectord")
        args.sql_dir = os.path.join(src, "sql")
        R["dirty"] = False
    elif not args.no_build:
        log("building the work tree: cmake -B build && cmake --build build")
        subprocess.run(["cmake", "-B", "build"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "build", "-j2", "--target", "projectord"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    if not os.access(args.bin, os.X_OK):
        shutil.rmtree(basedir, ignore_errors=True)
        raise SystemExit(f"{args.bin} is missing: build it (cmake -B build && cmake --build build) or pass --bin")
    R["binary"] = args.bin
    R["busy_before"] = other_cpu_busy()
    if args.wait_quiet:
        deadline = time.monotonic() + args.wait_quiet
        while R["busy_before"] > 15 and time.monotonic() < deadline:
            log(f"the machine is {R['busy_before']:.0f} % busy; waiting for it to be quiet "
                f"(--wait-quiet, {deadline - time.monotonic():.0f} s left)")
            time.sleep(10)
            R["busy_before"] = other_cpu_busy(5)
    if R["busy_before"] > 10:
        log(f"WARNING: the machine is already {R['busy_before']:.0f} % busy (of 2 cores) before the "
            "benchmark starts: other processes will slow it down")
    cluster = PgCluster(os.path.join(basedir, "pg"), sql_dir=args.sql_dir)
    global LOAD
    LOAD = LoadMeter(cluster)
    daemon = None
    try:
        log(f"cluster in {basedir}")
        cluster.start()
        settings = dict(SERVER_SETTINGS)
        if args.profile:
            settings["shared_preload_libraries"] = "pg_stat_statements"
        with connect(cluster.conninfo()) as conn:
            for k, v in settings.items():
                conn.execute(f"ALTER SYSTEM SET {k} = '{v}'")
        cluster.restart()
        if args.profile:  # known only once the library is loaded
            with connect(cluster.conninfo()) as conn:
                conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
                conn.execute("SELECT pg_reload_conf()")
        with connect(cluster.conninfo()) as conn:
            R["server_version"] = conn.execute("SHOW server_version").fetchone()[0]
            shown = ["shared_buffers", "fsync", "full_page_writes", "synchronous_commit",
                     "track_commit_timestamp", "max_wal_size", "TimeZone"]
            R["settings"] = ", ".join(f"{k}={conn.execute(f'SHOW {k}').fetchone()[0]}" for k in shown)
        conninfo = cluster.create_database("bench")
        if args.profile:
            with connect(conninfo) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

        # ---- 1. data + catch-up ------------------------------------------
        log(f"generating {n_events:,} events")
        R["generate_s"], problems = generate(conninfo, n_events)
        if problems:
            raise BenchError(f"generated data is not valid: {problems}")
        with connect(conninfo) as conn:
            counts = event_counts(conn)
            R["events"] = N = sum(counts.values())
            R["by_type"] = counts
            R["handled"] = {p: handled_count(counts, p) for p in PROJECTIONS}
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('event_store.domain_event'))").fetchone()[0]
        R["mix"] = (", ".join(f"{p} {100 * R['handled'][p] / N:.0f} %" for p in PROJECTIONS[:3])
                    + f"; domain_event {size} with indexes")
        log(f"generated {N:,} events in {R['generate_s']:.1f} s ({R['mix']})")

        timeout = max(300, N / 2000)
        if args.profile:
            with connect(conninfo) as conn:
                reset_statements(conn)
        log("catch-up: cold start of projectord run, all projections")
        R["catchup"] = catch_up(args, workdir, conninfo, "catchup", PROJECTIONS, N, timeout)
        c = R["catchup"]
        log(f"caught up in {c['seconds']:.1f} s = {c['eps']:,.0f} events/s; "
            f"per projection {', '.join(f'{k} {v:.1f}s' for k, v in c['per_projection'].items())}; "
            f"VmHWM {c['hwm_kb'] / 1024:.1f} MB; daemon CPU {c['daemon_cpu_s']:.1f} s")
        if args.profile:
            with connect(conninfo) as conn:
                R["profile_catchup"] = top_statements(conn)
                reset_statements(conn)

        # ---- 2. the reference --------------------------------------------
        log("reference: CALL ref.run_projections(1000)")
        ref_s, ref_cpu, ref_others = run_reference(conninfo, timeout * 5)
        with connect(conninfo) as conn:
            cmp = compare_tables(conn)
            R["consistency"] = consistency(conn)
            if args.profile:
                R["profile_reference"] = top_statements(conn)
        diff_rows = sum(v[2] + v[3] for v in cmp.values())
        R["reference"] = {"seconds": ref_s, "eps": N / ref_s, "backend_cpu_s": ref_cpu, "others_pct": ref_others, "same": diff_rows == 0, "diff_rows": diff_rows,
                          "tables": {t: v[:4] for t, v in cmp.items()}}
        log(f"reference: {ref_s:.1f} s = {N / ref_s:,.0f} events/s; "
            f"{'same rows as projectord' if diff_rows == 0 else f'{diff_rows} rows DIFFER'}")
        for t, (nl, nr, ol, orr, sample) in cmp.items():
            if ol or orr:
                log(f"  {t}: read_model {nl} rows, ref {nr} rows; only in read_model {ol}, only in ref {orr}")
                for s in sample:
                    print(s)
        bad = {k: v for k, v in R["consistency"].items() if v}
        if bad:
            log(f"projectord's tables break invariants: {bad}")

        # ---- 3. rebuilds -------------------------------------------------
        R["rebuild"] = {}
        for p in PROJECTIONS:
            with connect(conninfo) as conn:
                reset_projection(conn, p)
            log(f"rebuild {p} (emulated: truncate, reset checkpoint, run only {p})")
            rb = catch_up(args, workdir, conninfo, f"rebuild-{p}", [p], N, timeout)
            R["rebuild"][p] = rb
            log(f"rebuilt {p} in {rb['seconds']:.1f} s; VmHWM {rb['hwm_kb'] / 1024:.1f} MB")
        with connect(conninfo) as conn:
            cmp2 = compare_tables(conn)
        R["rebuild_same"] = sum(v[2] + v[3] for v in cmp2.values()) == 0

        # ---- 3b. the declared forms: the same catch-up, the same rows ------
        declared_dir = os.path.join(os.path.dirname(os.path.abspath(args.sql_dir)), "projections",
                                    "declared")
        if not args.no_declared:
            with connect(conninfo) as conn:
                for p in PROJECTIONS:
                    reset_projection(conn, p)
                if args.profile:
                    reset_statements(conn)
            log(f"catch-up: cold start, the declared forms ({declared_dir})")
            R["catchup_declared"] = catch_up(args, workdir, conninfo, "catchup-declared", PROJECTIONS,
                                             N, timeout, projection_dir=declared_dir)
            cd = R["catchup_declared"]
            with connect(conninfo) as conn:
                if args.profile:
                    R["profile_catchup_declared"] = top_statements(conn)
                cmp3 = compare_tables(conn)
            R["declared_same"] = sum(v[2] + v[3] for v in cmp3.values()) == 0
            log(f"declared forms caught up in {cd['seconds']:.1f} s = {cd['eps']:,.0f} events/s "
                f"(compiled-in {c['eps']:,.0f}); "
                f"{'same rows as the reference' if R['declared_same'] else 'rows DIFFER'}")

        # ---- 4. live latency, 5. idle ------------------------------------
        daemon = Daemon(args.bin, workdir, "live", conninfo, PROJECTIONS).start()
        LOAD.track(daemon.pid)
        wait_caught_up(conninfo, daemon, PROJECTIONS, 60)
        R["live"] = []
        if args.profile:
            with connect(conninfo) as conn:
                reset_statements(conn)
        R["live"] = live_series(args, cluster, daemon, rates, live_s, "live", R)
        if args.profile:
            with connect(conninfo) as conn:
                R["profile_live"] = top_statements(conn)
                reset_statements(conn)
        log(f"idle: {idle_s} s")
        R["idle"] = idle_run(daemon, conninfo, idle_s)
        if args.profile:
            with connect(conninfo) as conn:
                R["profile_idle"] = top_statements(conn)
        log(f"idle CPU: daemon {R['idle']['daemon_pct']:.3f} % ({R['idle']['daemon_ticks']} ticks), "
            f"backends {R['idle']['backends_pct']:.3f} %")
        rc = daemon.stop()
        daemon = None
        if rc != 0:
            log(f"live daemon exited with {rc}")

        # ---- 4b. live latency of the declared forms ----------------------
        if not args.no_declared:
            daemon = Daemon(args.bin, workdir, "live-declared", conninfo, PROJECTIONS,
                            projection_dir=declared_dir).start()
            LOAD.track(daemon.pid)
            wait_caught_up(conninfo, daemon, PROJECTIONS, 60)
            R["live_declared"] = live_series(args, cluster, daemon, rates, live_s, "live declared", R)
            rc = daemon.stop()
            daemon = None
            if rc != 0:
                log(f"live declared daemon exited with {rc}")

        # ---- 5b. the big backlog -----------------------------------------
        if args.big:
            cluster.drop_database("bench")
            big_conninfo = cluster.create_database("bench_big")
            log(f"generating {args.big_events:,} events (--big)")
            big_gen_s, problems = generate(big_conninfo, args.big_events, chunk=50000)
            if problems:
                raise BenchError(f"generated data is not valid: {problems}")
            with connect(big_conninfo) as conn:
                nbig = head_position(conn)
            log(f"generated {nbig:,} events in {big_gen_s:.1f} s; catch-up")
            big = catch_up(args, workdir, big_conninfo, "big", PROJECTIONS, nbig, max(900, nbig / 2000))
            big["generate_s"] = big_gen_s
            R["big"] = big
            log(f"big catch-up {big['seconds']:.1f} s = {big['eps']:,.0f} events/s; VmHWM {big['hwm_kb'] / 1024:.1f} MB")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        raise
    finally:
        if daemon is not None:
            daemon.stop()
        if args.keep:
            cluster.stop()
            log(f"kept {basedir} (cluster stopped; start it with pgcluster.py start {cluster.basedir})")
        else:
            cluster.cleanup()
            shutil.rmtree(basedir, ignore_errors=True)

    text = header(R) + "\n\n" + render(R) + "\n"
    for key, title in (("profile_catchup", "top statements during the catch-up"),
                       ("profile_catchup_declared", "top statements during the declared forms' catch-up"),
                       ("profile_reference", "top statements during the reference"),
                       ("profile_live", "top statements during the live runs"),
                       ("profile_idle", "top statements while idle")):
        if R.get(key):
            text += f"\n{title} (pg_stat_statements: calls, total ms, mean ms, rows, query):\n"
            text += "\n".join("  " + " | ".join(str(x) for x in row) for row in R[key]) + "\n"
    print("\n" + text)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(R, f, indent=2, default=str)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
