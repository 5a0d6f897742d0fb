#!/usr/bin/python3
"""projectord soak: minutes of load with periodic faults, then an exact check.

    /usr/bin/python3 tests/soak/soak.py --minutes 30

Starts its own throwaway PostgreSQL and the real build/projectord (on_error
= "skip" everywhere, so a batch wrongly skipped would show as a dead letter),
runs writers (plain ones, one taking its transaction id early, one holding
long transactions that append nothing; tests/integration/faults.py) for the
whole run, and injects, spread over the run with random jitter:

    PostgreSQL restarts (fast and immediate, alternating)   10 per 30 minutes
    pg_terminate_backend of the daemon's sessions            30 per 30 minutes
    kill -9 of the daemon (restarted at once)                30 per 30 minutes
    a read-model table held locked under lock_timeout=200ms  5 per 30 minutes

(counts scale with --minutes, at least one of each). It samples the
daemon's VmRSS and lag every few seconds, pauses the writers for an exact
check every --check-every minutes, and at the end lets the daemon catch up
and checks the read model exactly against an independent fold of the event
table (nothing lost, duplicated, reordered, skipped or dead-lettered; the
writers' own count of committed events equals the store's), stops the daemon
with SIGTERM (exit 0 expected) and prints its findings. Exit status 0 when
everything held, 1 otherwise. It always stops by itself (hard limit:
--minutes plus 20) and removes its cluster; on failure the logs are kept
and their directory printed.
"""

import argparse
import collections
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import faults  # noqa: E402
from daemon import BIN, PROJECTIONS, Daemon  # noqa: E402
from pgcluster import PgCluster  # noqa: E402

FULL_30_MIN = {"pg_restart": 10, "terminate": 30, "kill": 30, "lock": 5}
LOCKABLE = ["products", "categories", "users", "orders", "daily_sales", "event_type_stats"]
SAMPLE_S = 5.0


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def git_head():
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.findings = []            # problems, each one line (+ detail)
        self._once = set()
        self.injected = collections.Counter()
        self.sessions_terminated = 0
        self.samples = []             # (elapsed s, pid, rss kB, lag)
        self.checks = []              # (elapsed s, "pass" | message)
        self.daemon_starts = 0
        self.unexpected_exits = []
        self.final_check = "not run"
        self.final_exit = None
        self.writer_stats = {}
        self.events_total = None
        self.max_stall = 0.0
        self._progress = (None, time.monotonic())
        self.cluster = self.daemon = self.writers = None
        self.basedir = tempfile.mkdtemp(prefix="projectord-soak-pg-")
        self.workdir = tempfile.mkdtemp(prefix="projectord-soak-")

    # -- helpers -----------------------------------------------------------

    def elapsed(self):
        return time.monotonic() - self.t0

    def say(self, msg):
        print(f"[{self.elapsed():7.1f}s] {msg}", flush=True)

    def finding(self, msg, once=None):
        """Record a problem; with `once`, only the first finding of that kind."""
        if once is not None:
            if once in self._once:
                return
            self._once.add(once)
        self.findings.append(msg)
        self.say(f"FINDING: {msg.splitlines()[0]}")

    def admin(self):
        return faults.connect(self.conninfo)

    # -- setup -------------------------------------------------------------

    def setup(self):
        if not os.path.exists(BIN):
            raise SystemExit(f"{BIN} does not exist: build first (cmake -B build && cmake --build build)")
        self.cluster = PgCluster(self.basedir)
        self.cluster.start()
        self.conninfo = self.cluster.create_database("soak")
        with self.admin() as conn:
            conn.execute("ALTER DATABASE soak SET lock_timeout = '200ms'")
        skip = {name: {"on_error": "skip"} for name in PROJECTIONS}
        self.daemon = Daemon(self.conninfo, self.workdir, name="soak", batch_size=self.args.batch_size,
                             poll_interval_ms=1000, level="info", projections=skip)
        self.start_daemon()
        self.daemon.wait_started(timeout=60)
        self.writers = faults.Writers(self.conninfo, refill=faults.mix_feeder(self.args.seed),
                                      plain=2, early=1, holders=1, seed=self.args.seed,
                                      hold=(0.0, 0.2), long_hold=(0.5, 3.0), pace=(0.005, 0.04),
                                      name="soak-writers").start()

    def start_daemon(self):
        self.daemon.start()
        self.daemon_starts += 1
        self.pid = self.daemon.proc.pid

    def check_daemon(self, context):
        """The daemon must be alive (it is only killed on purpose)."""
        if self.daemon.alive():
            return
        rc = self.daemon.proc.returncode
        self.unexpected_exits.append((round(self.elapsed(), 1), rc, context))
        self.finding(f"the daemon (pid {self.pid}) exited with {rc} {context}; log tail:\n"
                     + self.daemon.log(tail=30))
        self.start_daemon()

    # -- faults ------------------------------------------------------------

    def schedule(self, duration):
        scale = self.args.minutes / 30.0
        counts = {k: max(1, round(v * scale)) for k, v in FULL_30_MIN.items()}
        kinds = [k for k, n in counts.items() for _ in range(n)]
        self.rng.shuffle(kinds)
        start, end = min(30.0, 0.05 * duration), duration - min(30.0, 0.05 * duration)
        slot = (end - start) / len(kinds)
        return counts, [(start + i * slot + self.rng.uniform(0, 0.8 * slot), k) for i, k in enumerate(kinds)]

    def inject(self, kind):
        if kind == "pg_restart":
            mode = ("fast", "immediate")[self.injected["pg_restart"] % 2]
            self.injected[f"pg_restart_{mode}"] += 1
            self.say(f"PostgreSQL restart ({mode})")
            self.cluster.restart(mode)
            self.check_daemon(f"across a PostgreSQL restart ({mode})")
        elif kind == "terminate":
            with self.admin() as conn:
                n = faults.terminate_backends(conn, "soak", self.rng)
            self.sessions_terminated += n
            self.say(f"pg_terminate_backend: {n} daemon session(s)")
            time.sleep(0.2)
            self.check_daemon("after pg_terminate_backend")
        elif kind == "kill":
            self.check_daemon("before kill -9")
            self.say(f"kill -9 {self.pid}")
            self.daemon.kill(signal.SIGKILL)
            rc = self.daemon.wait(timeout=30)
            if rc != -signal.SIGKILL:
                self.finding(f"kill -9 of pid {self.pid}: exit status {rc}")
            time.sleep(self.rng.uniform(0.0, 2.0))
            self.start_daemon()
        elif kind == "lock":
            table = self.rng.choice(LOCKABLE)
            hold = self.rng.uniform(2.0, 6.0)
            self.say(f"LOCK read_model.{table} for {hold:.1f}s (daemon lock_timeout 200ms)")
            with faults.connect(self.conninfo, autocommit=False) as conn:
                conn.execute(f"LOCK TABLE read_model.{table} IN ACCESS EXCLUSIVE MODE")
                self.wait(hold)
                conn.rollback()
            self.check_daemon("while a table was locked")
        self.injected[kind] += 1

    # -- sampling ----------------------------------------------------------

    def sample(self):
        rss = faults.rss_kb(self.pid) if self.daemon.alive() else None
        lag = None
        try:
            with self.admin() as conn:
                head = conn.execute("SELECT coalesce(max(global_position), 0) "
                                    "FROM event_store.domain_event").fetchone()[0]
                rows = faults.metadata(conn)
            if rows:
                low = min(r["last_position"] for r in rows.values())
                lag = head - low
                failed = [n for n, r in rows.items() if r["status"] == "failed"]
                if failed:
                    self.finding(f"projection(s) failed: {failed}: "
                                 f"{[rows[n]['last_error'] for n in failed]}", once=f"failed {failed}")
                dead = conn.execute("SELECT count(*) FROM read_model.projection_dead_letter").fetchone()[0]
                if dead:
                    self.finding(f"{dead} dead letter(s) appeared", once="dead letters")
                last, since = self._progress
                if last is None or low > last or lag == 0:
                    self._progress = (low, time.monotonic())
                else:
                    self.max_stall = max(self.max_stall, time.monotonic() - since)
        except faults.RETRYABLE:
            pass  # the server is restarting
        if rss is not None:
            self.samples.append((round(self.elapsed(), 1), self.pid, rss, lag))

    def wait(self, seconds):
        """Sleep, sampling on the way, and notice a stuck daemon."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if now - self._last_sample >= SAMPLE_S:
                self._last_sample = now
                self.sample()
                if self.max_stall > self.args.stall_s:
                    self.finding(f"no progress for {self.max_stall:.0f}s while events were waiting",
                                 once="stall")
                self.writers.check()
            time.sleep(min(0.25, max(0.0, end - time.monotonic())))

    _last_sample = 0.0

    # -- checks ------------------------------------------------------------

    def exact_check(self, timeout):
        """Writers paused (or stopped): catch up, then compare exactly.
        Returns 'pass' or the failure."""
        try:
            self.daemon.wait_caught_up(timeout=timeout)
            with self.admin() as conn:
                faults.assert_exact(conn)
            return "pass"
        except AssertionError as exc:  # ProjectordError is one too
            return f"{type(exc).__name__}: {exc}"

    def intermediate_check(self):
        self.say("pausing writers for an exact check")
        self.writers.pause()
        deadline = time.monotonic() + 120
        while not self.writers.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        result = self.exact_check(timeout=180)
        self.checks.append((round(self.elapsed(), 1), result))
        if result != "pass":
            self.finding(f"exact check at {self.elapsed():.0f}s failed: {result}")
        else:
            self.say("exact check passed")
        self.writers.resume()

    # -- the run -----------------------------------------------------------

    def run(self):
        duration = self.args.minutes * 60.0
        self.setup()
        counts, plan = self.schedule(duration)
        self.say(f"soak for {self.args.minutes} min, seed {self.args.seed}, faults planned: {counts}")
        check_every = self.args.check_every * 60.0
        next_check = check_every if check_every > 0 else float("inf")
        for at, kind in plan + [(duration, None)]:
            while self.elapsed() < at:
                if self.elapsed() >= next_check and next_check < duration - 60:
                    self.intermediate_check()
                    next_check += check_every
                self.wait(min(1.0, at - self.elapsed()))
            if kind is not None:
                self.inject(kind)
        self.say("load over: stopping writers, final catch-up and exact check")
        self.writers.stop(timeout=180)
        self.writer_stats = self.writers.snapshot()
        self.check_daemon("at the end of the load")
        self.final_check = self.exact_check(timeout=self.args.drain_s)
        with self.admin() as conn:
            self.events_total = conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]
        if self.final_check == "pass" and self.events_total != self.writer_stats.get("events", 0):
            self.final_check = (f"the store holds {self.events_total} events, the writers committed "
                                f"{self.writer_stats.get('events', 0)}")
        if self.final_check != "pass":
            self.finding(f"final exact check failed: {self.final_check}")
        self.sample()
        self.final_exit = self.daemon.stop(timeout=60)
        if self.final_exit != 0:
            self.finding(f"SIGTERM at the end: exit status {self.final_exit}")

    def cleanup(self, keep_logs):
        if self.writers is not None:
            self.writers.stop_event.set()
        if self.daemon is not None:
            self.daemon.close()
        kept = None
        if keep_logs:
            kept = tempfile.mkdtemp(prefix="projectord-soak-logs-")
            for path in (self.daemon and self.daemon.log_path, self.cluster and self.cluster.logfile):
                if path and os.path.exists(path):
                    shutil.copy(path, kept)
        if self.cluster is not None:
            self.cluster.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.basedir, ignore_errors=True)
        return kept

    # -- the report --------------------------------------------------------

    def report(self, status, kept=None):
        w = self.writer_stats or (self.writers.snapshot() if self.writers else {})
        rss = [s[2] for s in self.samples]
        lags = [s[3] for s in self.samples if s[3] is not None]
        per_pid = collections.OrderedDict()
        for t, pid, kb, _ in self.samples:
            per_pid.setdefault(pid, []).append((t, kb))
        longest = max(per_pid.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0]) if per_pid else None
        per_minute = collections.OrderedDict()
        for t, _, kb, _ in self.samples:
            m = int(t // 60)
            per_minute[m] = max(per_minute.get(m, 0), kb)
        out = {
            "result": status,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_head(),
            "minutes_requested": self.args.minutes,
            "minutes_run": round(self.elapsed() / 60, 1),
            "seed": self.args.seed,
            "faults": {"pg_restart": self.injected["pg_restart"],
                       "pg_restart_fast": self.injected["pg_restart_fast"],
                       "pg_restart_immediate": self.injected["pg_restart_immediate"],
                       "pg_terminate_backend": self.injected["terminate"],
                       "sessions_terminated": self.sessions_terminated,
                       "kill_9": self.injected["kill"],
                       "lock_timeout_episodes": self.injected["lock"]},
            "events_appended": w.get("events", 0),
            "writer_transactions": w.get("commits", 0),
            "early_xid_transactions": w.get("early_commits", 0),
            "long_transactions_held": w.get("holds", 0),
            "unknown_commit_outcomes": {"committed": w.get("unknown_committed", 0),
                                        "rolled_back": w.get("unknown_rolled_back", 0)},
            "events_in_store": self.events_total,
            "daemon_starts": self.daemon_starts,
            "unexpected_daemon_exits": self.unexpected_exits,
            "final_sigterm_exit": self.final_exit,
            "intermediate_checks": self.checks,
            "final_exact_check": self.final_check,
            "max_lag_events": max(lags) if lags else None,
            "longest_no_progress_s": round(self.max_stall, 1),
            "rss_kb": {"min": min(rss) if rss else None, "max": max(rss) if rss else None,
                       "samples": len(rss),
                       "longest_lived_process": None if not longest else {
                           "pid": longest[0], "seconds": round(longest[1][-1][0] - longest[1][0][0]),
                           "first": longest[1][0][1], "last": longest[1][-1][1],
                           "max": max(kb for _, kb in longest[1])},
                       "max_per_minute": list(per_minute.values())},
            "findings": self.findings,
            "logs_kept_in": kept,
        }
        print()
        print("=" * 72)
        print(f"projectord soak: {status}")
        print(f"  run:        {out['date']}, commit {out['commit']}, {out['minutes_run']} of "
              f"{self.args.minutes} min, seed {self.args.seed}")
        f = out["faults"]
        print(f"  faults:     PostgreSQL restarts {f['pg_restart']} (fast {f['pg_restart_fast']}, "
              f"immediate {f['pg_restart_immediate']}); pg_terminate_backend {f['pg_terminate_backend']} "
              f"({f['sessions_terminated']} sessions); kill -9 {f['kill_9']}; "
              f"lock_timeout episodes {f['lock_timeout_episodes']}")
        print(f"  writers:    {out['events_appended']} events in {out['writer_transactions']} transactions "
              f"({out['early_xid_transactions']} took their xid early; {out['long_transactions_held']} long "
              f"transactions held); unknown commit outcomes resolved: "
              f"{out['unknown_commit_outcomes']['committed']} committed, "
              f"{out['unknown_commit_outcomes']['rolled_back']} rolled back")
        print(f"  daemon:     {self.daemon_starts} starts, {len(self.unexpected_exits)} unexpected exits, "
              f"SIGTERM at the end -> exit {self.final_exit}")
        print(f"  lag:        max {out['max_lag_events']} events; longest stretch without progress "
              f"{out['longest_no_progress_s']}s")
        r = out["rss_kb"]
        print(f"  RSS (kB):   min {r['min']}, max {r['max']} over {r['samples']} samples")
        if r["longest_lived_process"]:
            p = r["longest_lived_process"]
            print(f"              longest-lived process {p['pid']}: {p['seconds']}s, "
                  f"{p['first']} -> {p['last']} (max {p['max']})")
        print(f"              max per minute: {r['max_per_minute']}")
        print(f"  checks:     intermediate {[c[1] if c[1] == 'pass' else 'FAIL' for c in self.checks]}; "
              f"final exact check: {self.final_check}")
        for line in self.findings:
            print(f"  finding:    {line}")
        if kept:
            print(f"  logs kept:  {kept}")
        print("=" * 72)
        if self.args.json:
            with open(self.args.json, "w") as fh:
                json.dump(out, fh, indent=2, default=str)
        return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the load (default 30)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--check-every", type=float, default=10.0,
                   help="minutes between intermediate exact checks (0: final only)")
    p.add_argument("--drain-s", type=float, default=300.0, help="final catch-up deadline, seconds")
    p.add_argument("--stall-s", type=float, default=120.0,
                   help="a finding when no projection progress for this long while behind")
    p.add_argument("--json", help="also write the findings as JSON to this file")
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be positive")
    if args.seed is None:
        args.seed = random.randrange(1, 1 << 30)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(args.minutes * 60 + 20 * 60))   # hard limit: it always stops by itself

    soak = Soak(args)
    status = "FAIL"
    try:
        soak.run()
        status = "PASS" if not soak.findings else "FAIL"
    except Interrupted as exc:
        soak.findings.append(f"interrupted by {exc}")
        status = "INTERRUPTED"
    except Exception as exc:  # a harness failure is a finding too
        soak.findings.append(f"soak harness error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        signal.alarm(0)
        kept = None
        try:
            kept = soak.cleanup(keep_logs=status != "PASS")
        except Exception as exc:
            print(f"cleanup: {exc}", file=sys.stderr)
    soak.report(status, kept)
    return 0 if status == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
