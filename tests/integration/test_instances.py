"""Several instances against one database (SPEC §6, issue 3): each
projection is owned by exactly one instance at a time (an advisory lock held
by the owning connection), the instances share the projections, and when an
owner dies another instance takes its projections over within seconds,
without losing or repeating an event.

The ownership lock is key (1886546532, hashtext(name)); see src/fleet.h.
"""

import collections
import signal
import time

import oracle
from daemon import SLOWDOWN
from eventgen import generate_mix

PROJECTION_LOCK = 1886546532
ALL = set(oracle.PROJECTIONS)


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
    for name in oracle.PROJECTIONS:
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
