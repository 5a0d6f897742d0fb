#!/usr/bin/python3
"""Peak RSS of the daemon applying big events (issue 16, docs/reliability.md).

    PROJECTORD_BIN=build/projectord scripts/big_events_rss.py --size-mb 100 --count 4

A throwaway cluster, the four projections, `count` events of `size-mb` MB
(CategoryCreated with a name of one repeated letter, as stored 100 times
smaller, and UserRegistered with a first_name of random hex digits,
alternating), appended in
one transaction; prints the daemon's VmHWM before and after, and checks the
read model against the oracle. Not in CI: 100 MB events take minutes.
"""
import argparse
import os
import shutil
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))

from daemon import Daemon  # noqa: E402
from faults import assert_exact  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
import psycopg  # noqa: E402


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--batch-max-bytes", type=int, default=None, help="default: the daemon's")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="projectord-rss-")
    os.chmod(base, 0o755)
    cluster = PgCluster(os.path.join(base, "pg"))
    cluster.start()
    try:
        conninfo = cluster.create_database("rss")
        extra = (f"batch_max_bytes = {args.batch_max_bytes};\n"
                 if args.batch_max_bytes else "")
        d = Daemon(conninfo, base, level="info", poll_interval_ms=200, extra=extra).start()
        d.wait_started()
        before = vm_hwm_kb(d.proc.pid)
        size = args.size_mb << 20
        # Built by the server: a client sending 400 MB of JSON text is the slow part.
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("BEGIN")
            for i in range(args.count):
                if i % 2 == 0:
                    conn.execute(
                        "SELECT event_store.append_events('Category', gen_random_uuid(), 0,"
                        " ARRAY[jsonb_build_object('event_type', 'CategoryCreated',"
                        "  'event_version', 1, 'event_data',"
                        "  jsonb_build_object('name', repeat('n', %s::int)))])", (size,))
                else:
                    conn.execute(
                        "SELECT event_store.append_events('User', gen_random_uuid(), 0,"
                        " ARRAY[jsonb_build_object('event_type', 'UserRegistered',"
                        "  'event_version', 1, 'event_data', jsonb_build_object("
                        "  'email', %s::text, 'last_name', 'L', 'first_name',"
                        "  (SELECT left(string_agg(md5(g::text || random()::text), ''), %s::int)"
                        "     FROM generate_series(1, %s::int / 32 + 1) g)))])",
                        (f"big{i}@h.example", size, size))
            conn.execute("COMMIT")
        d.wait_caught_up(timeout=1800)
        peak = vm_hwm_kb(d.proc.pid)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert_exact(conn)
        print(f"{args.count} x {args.size_mb} MB, batch_max_bytes "
              f"{args.batch_max_bytes or 'default'}: VmHWM {before} kB before, {peak} kB after "
              f"(+{(peak - before) // 1024} MB); read model exact")
        assert d.stop() == 0
    finally:
        cluster.cleanup()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
