"""Health tells the truth, and big events take bounded memory (issue 16).

- Healthy means progressing (SPEC §3, §5): a projection held up on purpose
  (one of its tables locked ACCESS EXCLUSIVE in a transaction kept open)
  while events wait is reported unhealthy, for being stalled, by the status
  view, by `status --check` and by the metrics, within stall_timeout_ms and
  a margin, while its heartbeat is still fresh; released, it recovers.
  A projection idle at the head is progressing; one passing a long stretch
  of events it does not handle is too.
- Bounded memory: events with 5 MB payloads, some compressible 100-fold as
  stored, under batch_max_bytes = 8 MB with the four projections enabled,
  are applied exactly, and the daemon's peak RSS (VmHWM) stays within a
  few times the bound (docs/reliability.md has the 1 MB and 100 MB
  figures, measured by hand).
"""

import random
import re
import string
import time
import uuid

from daemon import run_cli
from eventgen import Command, event, generate_mix
from faults import assert_exact
from pgcluster import free_port
from test_metrics import scrape, value

STALL_MS = 2000
MB = 1 << 20


def health_config(port, stall_ms=STALL_MS, extra=""):
    return (f"stall_timeout_ms = {stall_ms};\n"
            f'metrics = {{ listen = "127.0.0.1:{port}"; }};\n' + extra)


def status_rows(conn):
    cur = conn.execute("SELECT s.projection_name, s.healthy, s.status, h.stalled, h.unhealthy_reason,"
                       "       now() - s.heartbeat_at AS heartbeat_age, h.stall_after, s.lag_events"
                       "  FROM read_model.projection_status s"
                       "  JOIN read_model.projection_health h USING (projection_name)")
    names = [d.name for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def users_registered(n, rng):
    return [Command("User", uuid.UUID(int=rng.getrandbits(128)), 0,
                    [event("UserRegistered", {"email": f"u{i}-{rng.getrandbits(32)}@h.example",
                                              "first_name": "A", "last_name": "B"})])
            for i in range(n)]


def check(daemon):
    return run_cli(["-c", daemon.config_path, "status", "--check"])


def test_a_projection_held_up_is_unhealthy_whatever_its_heartbeat_says(db, start_daemon):
    port = free_port()
    rng = random.Random(16)
    db.append_all(generate_mix(seed=16, n_events=500, days=1))
    daemon = start_daemon(poll_interval_ms=200, extra=health_config(port))
    daemon.wait_caught_up(timeout=60)
    # Idle at the head for longer than the stall timeout: progressing, not stalled.
    time.sleep(STALL_MS / 1000 * 1.5)
    with db.connect() as conn:
        rows = status_rows(conn)
    assert all(r["healthy"] and not r["stalled"] for r in rows.values()), rows
    assert rows["users"]["stall_after"].total_seconds() == STALL_MS / 1000
    assert check(daemon).returncode == 0

    with db.connect(autocommit=False) as locker:
        locker.execute("LOCK TABLE read_model.users IN ACCESS EXCLUSIVE MODE")
        db.append_all(users_registered(20, rng))
        held_at = time.monotonic()

        def users_stalled(conn):
            rows = status_rows(conn)
            return rows if rows["users"]["stalled"] else None
        rows = daemon.wait_until(users_stalled, STALL_MS / 1000 + 10, "users to be reported stalled")
        print(f"users reported stalled {time.monotonic() - held_at:.1f} s after the events came "
              f"(stall_timeout_ms {STALL_MS})")
        users = rows["users"]
        assert users["healthy"] is False
        assert users["unhealthy_reason"] == "stalled"
        assert users["status"] == "stalled"
        assert users["lag_events"] >= 20
        # The heartbeat alone would call it healthy.
        assert users["heartbeat_age"].total_seconds() < 30, users
        for name in ("catalog", "orders", "event_stats"):
            assert rows[name]["healthy"], rows[name]

        proc = check(daemon)
        assert proc.returncode == 1, proc
        assert "users is unhealthy" in proc.stderr and "stalled" in proc.stderr, proc.stderr
        assert "catalog is unhealthy" not in proc.stderr, proc.stderr

        # The metrics judge from the daemon's own clock of progress, which
        # may have started a little later than the status row's.
        deadline = time.monotonic() + STALL_MS / 1000 + 10
        while True:
            samples = scrape(port)
            if value(samples, "projectord_projection_stalled", "users") == 1 \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert value(samples, "projectord_projection_stalled", "users") == 1
        assert value(samples, "projectord_projection_healthy", "users") == 0
        assert value(samples, "projectord_seconds_since_progress", "users") > STALL_MS / 1000
        assert value(samples, "projectord_projection_stalled", "catalog") == 0
        assert value(samples, "projectord_projection_healthy", "catalog") == 1
        locker.rollback()

    def users_healthy(conn):
        rows = status_rows(conn)
        return rows if all(r["healthy"] for r in rows.values()) else None
    daemon.wait_caught_up(timeout=60)
    daemon.wait_until(users_healthy, 30, "users to recover")
    assert check(daemon).returncode == 0
    samples = scrape(port)
    assert value(samples, "projectord_projection_stalled", "users") == 0
    assert value(samples, "projectord_projection_healthy", "users") == 1
    with db.connect() as conn:
        assert_exact(conn)


def test_passing_events_a_projection_does_not_handle_is_progress(db, start_daemon):
    """A catch-up of order events only: users and catalog handle none of
    them and pass them in shared batches without a write of their own (a
    whole backlog is one window); their progress must still be written, or
    they would look stalled until the window ends."""
    port = free_port()
    orders = [c for c in generate_mix(seed=7, n_events=60_000, days=2) if c.aggregate_type == "Order"]
    db.append_all(orders)
    daemon = start_daemon(batch_size=100, poll_interval_ms=200,
                          extra=health_config(port, stall_ms=1000))
    seen = set()

    def caught_up(conn):
        rows = status_rows(conn)
        seen.update(n for n, r in rows.items() if r["stalled"])
        head = daemon.head(conn)
        last = conn.execute("SELECT min(last_position) FROM read_model.projection_metadata"
                            " HAVING count(*) = 4").fetchone()
        return last is not None and last[0] >= head
    daemon.wait_until(caught_up, 180, "the catch-up", interval=0.2)
    assert not seen, f"reported stalled while passing events: {seen}"
    with db.connect() as conn:
        assert_exact(conn)


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def big_events(rng, n, size):
    """n commands of one event with a payload of about `size` bytes: half
    compressible (one repeated letter: stored ~100 times smaller), half
    random letters; of catalog, users and an unhandled type."""
    commands = []
    for i in range(n):
        text = ("n" * size if i % 2 == 0
                else "".join(rng.choices(string.ascii_letters, k=size)))
        kind = i % 3
        aggregate = uuid.UUID(int=rng.getrandbits(128))
        if kind == 0:
            commands.append(Command("Category", aggregate, 0,
                                    [event("CategoryCreated", {"name": text})]))
        elif kind == 1:
            commands.append(Command("User", aggregate, 0, [event(
                "UserRegistered", {"email": f"big{i}@h.example", "first_name": text,
                                   "last_name": "L"})]))
        else:
            commands.append(Command("Blob", aggregate, 0, [event("BlobUploaded", {"blob": text})]))
    return commands


def test_big_payloads_take_bounded_memory(db, start_daemon):
    bound = 8 * MB
    rng = random.Random(5)
    db.append_all(generate_mix(seed=5, n_events=300, days=1))
    daemon = start_daemon(poll_interval_ms=200,
                          extra=f"batch_max_bytes = {bound};\n")
    daemon.wait_caught_up(timeout=60)
    before = vm_hwm_kb(daemon.proc.pid)
    log_before = len(daemon.log(tail=10**9))
    db.append_all(big_events(rng, 20, 5 * MB), per_transaction=20)
    daemon.wait_caught_up(timeout=300)
    peak = vm_hwm_kb(daemon.proc.pid)
    print(f"VmHWM {before} kB before the 20 x 5 MB events, {peak} kB after "
          f"(batch_max_bytes {bound // MB} MB)")
    with db.connect() as conn:
        assert_exact(conn)
        assert conn.execute("SELECT count(*) FROM read_model.categories"
                            " WHERE length(name) = %s", (5 * MB,)).fetchone()[0] == 7
    # The bound itself: the 20 events came in one transaction, one window,
    # which batch_size (1000) would read in one batch; by bytes a batch
    # holds the events up to the one that reaches 8 MB, two of these. (The
    # memory this saves is measured, not asserted: docs/reliability.md,
    # scripts/big_events_rss.py; it was several hundred MB here.) With the
    # bound at 1 GB this fails: one batch of 20.
    batches = [int(n) for n in re.findall(r"event_stats: committed (\d+) events",
                                          daemon.log(tail=10**9)[log_before:])]
    print(f"event_stats' batches after the big events: {batches}")
    assert batches and max(batches) <= 2, f"a batch held more than the byte bound: {batches}"
