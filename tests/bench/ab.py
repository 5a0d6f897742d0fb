#!/usr/bin/python3
"""A/B runs of projectord binaries on one generated backlog, alternating.

    /usr/bin/python3 tests/bench/ab.py catchup --events 1000000 --rounds 2 BIN_A BIN_B
    /usr/bin/python3 tests/bench/ab.py live --events 300000 --rounds 3 --rate 1000 BIN_A BIN_B

On a shared VM whose speed drifts by tens of percent over minutes, two full
benchmark runs taken at different times do not compare two commits; runs
that alternate on the same data do. The backlog is generated once (run.py's
generator); each run gets a fresh copy of that database (CREATE DATABASE ...
TEMPLATE) and a cold daemon:

- catchup: time until every projection has caught up, CPU of the daemon and
  of its backends;
- live: the daemon catches up, then pgbench appends at --rate for --seconds,
  and commit-to-read-model latency is read from commit timestamps (as in
  run.py).

A binary may carry a projection directory, BIN@DIR: that run loads the
declared projections of DIR (`build/projectord build/projectord@projections/declared`
compares the compiled-in and the declared forms on one backlog).

Binaries: build each commit apart, e.g. `git worktree add /tmp/a COMMIT &&
cmake -S /tmp/a -B /tmp/a/build -DCMAKE_BUILD_TYPE=Release && cmake --build
/tmp/a/build --target projectord`. Numbers are printed, never asserted.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import run as bench  # noqa: E402
from pgcluster import PgCluster  # noqa: E402


def fresh_copy(cluster):
    with bench.connect(cluster.conninfo()) as conn:
        conn.execute("DROP DATABASE IF EXISTS ab_run")
        conn.execute("CREATE DATABASE ab_run TEMPLATE ab_backlog")
        conn.execute("CHECKPOINT")
    return cluster.conninfo("ab_run")


def split(binary):
    """BIN or BIN@DIR: the binary and its projection_dir (or None)."""
    b, _, d = binary.partition("@")
    return b, (os.path.abspath(d) if d else None)


def catchup_run(args, cluster, workdir, binary):
    args.bin, projection_dir = split(binary)
    c = bench.catch_up(args, workdir, fresh_copy(cluster), "ab", bench.PROJECTIONS, args.events, 900,
                       projection_dir=projection_dir)
    return (f"{c['seconds']:.1f} s = {c['eps']:,.0f} events/s; daemon {c['daemon_cpu_s']:.1f} s, "
            f"backends {c['backends_cpu_s']:.1f} s CPU")


def live_run(args, cluster, workdir, binary):
    conninfo = fresh_copy(cluster)
    binary, projection_dir = split(binary)
    d = bench.Daemon(binary, workdir, "ab-live", conninfo, bench.PROJECTIONS,
                     projection_dir=projection_dir).start()
    try:
        bench.wait_caught_up(conninfo, d, bench.PROJECTIONS, 900)
        time.sleep(1)
        lv = bench.live_run(args, cluster, "ab_run", d, args.rate, args.seconds, 4 if args.rate <= 1000 else 8)
    finally:
        d.stop()
    return (f"{lv['tps']:.0f}/s; p50 {lv['p50']:.2f} p95 {lv['p95']:.2f} p99 {lv['p99']:.2f} "
            f"max {lv['max']:.2f} ms; daemon {lv['daemon_cpu_pct']:.1f} %, "
            f"backends {lv['backends_cpu_pct']:.1f} % of a core")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["catchup", "live"])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=15)
    args = ap.parse_args()
    for b in args.binaries:
        b, projection_dir = split(b)
        if projection_dir and not os.path.isdir(projection_dir):
            raise SystemExit(f"{projection_dir}: not a directory")
        if not os.access(b, os.X_OK):
            raise SystemExit(f"{b}: not an executable")
    base = tempfile.mkdtemp(prefix="projectord-ab-")
    os.chmod(base, 0o755)  # the server runs as postgres when we are root
    cluster = PgCluster(os.path.join(base, "pg"))
    bench.LOAD = bench.LoadMeter(cluster)
    try:
        cluster.start()
        with bench.connect(cluster.conninfo()) as conn:
            for k, v in bench.SERVER_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {k} = '{v}'")
        cluster.restart()
        bench.log(f"generating {args.events:,} events")
        bench.generate(cluster.create_database("ab_backlog"), args.events)
        run_one = catchup_run if args.mode == "catchup" else live_run
        for r in range(args.rounds):
            for b in args.binaries:
                print(f"round {r + 1} {b}: {run_one(args, cluster, base, b)}", flush=True)
    finally:
        if cluster.is_running():
            cluster.stop("fast")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
