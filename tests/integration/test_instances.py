"""Several instances against one database (SPEC §6, issue 3): each
projection is owned by exactly one instance at a time (an advisory lock held
by the owning connection), the instances share the projections, and when an
owner dies another instance takes its projections over within seconds,
without losing or repeating an event.

The ownership lock is key (1886546532, hashtext(name)); see src/fleet.h.
"""

import collections
import signal
import subprocess
import time

import oracle
from daemon import PROJECTIONS, SLOWDOWN, clean_env, command, ONLY_EVENT_STATS
from eventgen import bulk_events, generate_mix
from oracle import assert_event_stats_exact

PROJECTION_LOCK = 1886546532
ALL = set(PROJECTIONS)


def lock_holders(conn):
    """How many ownership locks are held right now, per projection name."""
    rows = conn.execute(
        """SELECT p.name, count(l.pid)
             FROM unnest(%s::text[]) AS p(name)
             LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.classid = %s::oid
                  AND l.objid = (hashtext(p.name)::bigint & 4294967295)::oid
                  AND l.objsubid = 2 AND l.granted
            GROUP BY p.name""", (sorted(ALL), PROJECTION_LOCK)).fetchall()
    return dict(rows)


def owners_by_pid(conn):
    """{pid: set of projections} from the status table's owner column."""
    by_pid = collections.defaultdict(set)
    for name, owner in conn.execute("SELECT projection_name, owner FROM read_model.projection_metadata"):
        by_pid[int(owner.rsplit(":", 1)[1])].add(name)
    return by_pid


def spread(daemons, most):
    """A wait_until predicate: every projection has exactly one lock holder,
    the owners are among the given daemons and none owns more than `most`
    (ceil(P/N): with 4 projections and 3 instances one may stand by whole)."""
    pids = {d.proc.pid for d in daemons}

    def check(conn):
        if any(n != 1 for n in lock_holders(conn).values()):
            return False
        owned = {pid: names for pid, names in owners_by_pid(conn).items() if names}
        return (set(owned) <= pids and all(len(n) <= most for n in owned.values())
                and set().union(*owned.values()) == ALL) and owned
    return check


def assert_exact(db, daemon):
    rows = daemon.wait_caught_up(timeout=60)
    with db.connect() as conn:
        oracle.assert_invariants(conn)
        oracle.assert_read_model_matches_fold(conn)
        handled = oracle.handled_counts(conn)
    for name in oracle.KNOWN:
        assert rows[name]["events_processed"] == handled[name], f"{name}: an event applied twice or lost"


def test_two_instances_share_and_take_over_after_kill(db, start_daemon):
    first = start_daemon(poll_interval_ms=200)
    first.wait_started()
    second = start_daemon(poll_interval_ms=200)
    owned = first.wait_until(spread([first, second], most=2), 30, "two instances owning two each")
    assert sorted(len(n) for n in owned.values()) == [2, 2]

    commands = generate_mix(seed=7, n_events=5000, days=3)
    db.append_all(commands[:len(commands) // 2])
    first.wait_caught_up(timeout=60)

    first.kill(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    second.wait_until(spread([second], most=4), 10, "the survivor owning all four")
    took = time.monotonic() - killed_at
    print(f"took over in {took:.1f}s")
    assert took <= 5 * SLOWDOWN, f"takeover took {took:.1f}s"

    db.append_all(commands[len(commands) // 2:])
    assert_exact(db, second)


def test_three_instances_keep_their_share(db, start_daemon):
    daemons = [start_daemon(poll_interval_ms=200)]
    daemons[0].wait_started()
    daemons += [start_daemon(poll_interval_ms=200) for _ in range(2)]
    commands = generate_mix(seed=9, n_events=4000, days=2)
    db.append_all(commands[:len(commands) // 2])
    daemons[0].wait_until(spread(daemons, most=2), 40, "three instances, at most ceil(4/3) = 2 each")

    victim = daemons.pop(1)
    victim.kill(signal.SIGKILL)
    victim.wait()
    daemons[0].wait_until(spread(daemons, most=2), 20, "two instances owning two each")
    db.append_all(commands[len(commands) // 2:])
    assert_exact(db, daemons[0])


def test_standby_never_writes_over_the_owner(db, start_daemon):
    """Only the lock holder writes a projection's row: the owner column never
    names a standby, and checkpoints never go backwards while two instances
    run side by side under load."""
    first = start_daemon(poll_interval_ms=100, batch_size=50)
    first.wait_started()
    second = start_daemon(poll_interval_ms=100, batch_size=50)
    seen = {}
    deadline = time.monotonic() + 8
    db.append_all(generate_mix(seed=11, n_events=3000, days=2), per_transaction=50)
    while time.monotonic() < deadline:
        with db.connect() as conn:
            held = lock_holders(conn)
            assert all(n <= 1 for n in held.values()), f"a projection has two owners: {held}"
            for name, pos, seq in conn.execute(
                    "SELECT projection_name, last_position, checkpoint_seq FROM read_model.projection_metadata"):
                before = seen.get(name, (0, 0))
                assert pos >= before[0] and seq >= before[1], f"{name} went backwards"
                seen[name] = (pos, seq)
        time.sleep(0.05)
    assert second.alive(), "the second instance died beside the first"
    assert_exact(db, first)


# -- ownership that changes during a rebuild (issue 16, defect 7) ---------------


def lock_holder_pid(conn, name):
    row = conn.execute("""SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid
                             AND objid = (hashtext(%s)::bigint & 4294967295)::oid
                             AND objsubid = 2 AND granted""", (PROJECTION_LOCK, name)).fetchone()
    return row and row[0]


def owners_host(owners):
    return next(iter(owners)).rsplit(":", 1)[0]


def test_ownership_lost_during_a_rebuild_stops_that_rebuild(db, start_daemon):
    """A was rebuilding event_stats when its live runner lost the lock and B
    took over and started its own rebuild. A's shadow went on: it reloaded
    the live checkpoint, wrote the live row as owner, retried its swap
    forever, and after B was killed A never opened a window again (500
    events never applied, status 'rebuilding', healthy). A rebuild belongs
    to the owner and stops with the ownership."""
    bulk_events(db, 100, 1000)
    a = start_daemon(poll_interval_ms=100, level="info", batch_size=100, projections=ONLY_EVENT_STATS)
    a.wait_caught_up(timeout=120)
    b = start_daemon(poll_interval_ms=100, level="info", batch_size=100, projections=ONLY_EVENT_STATS)
    b.wait_until(lambda conn: "standing by" in b.log(), 20, "B to stand by")

    cmd = subprocess.Popen(command(["-c", a.config_path, "rebuild", "event_stats"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    a.wait_until(lambda conn: "rebuilding into shadow tables" in a.log(), 20, "A's rebuild to start")
    # Take the projection from A: A frozen, its live session ended, B claims it
    # and starts its own rebuild (the request is still in the status table).
    a.wait_until(lambda conn: conn.execute("SELECT last_position > 0 FROM read_model.projection_rebuild "
                                           "WHERE projection_name = 'event_stats'").fetchone(),
                 20, "A's shadow to make progress")
    a.kill(signal.SIGSTOP)
    try:
        with db.connect() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (lock_holder_pid(conn, "event_stats"),))
        b.wait_until(lambda conn: "event_stats: rebuilding into shadow tables" in b.log(), 30,
                     "B to own the projection and start its own rebuild")
    finally:
        a.kill(signal.SIGCONT)
    # Only the owner writes the live row: it names B from now on.
    owners = set()
    deadline = time.monotonic() + 180 * SLOWDOWN
    with db.connect() as conn:
        while cmd.poll() is None and time.monotonic() < deadline:
            owners |= {r[0] for r in conn.execute("SELECT owner FROM read_model.projection_metadata "
                                                  "WHERE projection_name = 'event_stats'")}
            time.sleep(0.02)
        time.sleep(1)  # a shadow left running would write on after the swap
        owners |= {r[0] for r in conn.execute("SELECT owner FROM read_model.projection_metadata "
                                              "WHERE projection_name = 'event_stats'")}
    out, _ = cmd.communicate(timeout=10)
    print(out.strip())
    assert cmd.returncode == 0, out
    assert owners == {f"{owners_host(owners)}:{b.proc.pid}"}, f"the live row named {owners}, not B alone"

    b.kill(signal.SIGKILL)
    b.wait()
    bulk_events(db, 5, 100)
    a.wait_until(lambda conn: conn.execute(
        "SELECT status = 'live' AND last_position = (SELECT max(global_position) FROM event_store.domain_event) "
        "FROM read_model.projection_metadata WHERE projection_name = 'event_stats'").fetchone()[0],
        30, "A to take the projection back and apply the 500 new events")
    assert_event_stats_exact(db)
