"""min_read_interval_ms (docs/design.md, "Pacing the reads"): while events
keep coming, windows are opened at most that often, so the events committed
in between are applied together; the first event after a quiet spell is
read at once. Both halves, with the runners sharing their reads and with a
runner alone. And while notifications come fast, the listener leaves the
channel and the ticks find the events, until it is quiet again (listener.h)."""

import time
import uuid

import pytest

from daemon import PROJECTIONS
from eventgen import Command, append, event

INTERVAL_MS = 1000  # the largest allowed: far above a test box's noise
FOLLOWERS = 10

SHARED = {name: {} for name in PROJECTIONS}
ALONE = {name: {"enabled": name == "users"} for name in PROJECTIONS}


def user(uid):
    return Command("User", uid, 0, [event("UserRegistered", {
        "email": f"{uid}@example.com", "first_name": "F", "last_name": "L"})])


def users_applied(ids):
    return lambda conn: conn.execute(
        "SELECT count(*) = %s FROM read_model.users WHERE id = ANY(%s)", (len(ids), ids)).fetchone()[0]


def commit_to_commit(db, ids):
    """Seconds from each user's event commit to its read-model commit, inside
    the server (track_commit_timestamp): the test's own connections and
    polling do not count."""
    return db.query("""SELECT extract(epoch FROM pg_xact_commit_timestamp(u.xmin)
                                             - pg_xact_commit_timestamp(e.xmin))
                         FROM read_model.users u
                         JOIN event_store.event_stream s ON s.aggregate_id = u.id
                         JOIN event_store.domain_event e ON e.stream_id = s.stream_id
                        WHERE u.id = ANY(%s)""", (ids,))


@pytest.mark.parametrize("projections", [SHARED, ALONE], ids=["shared", "alone"])
def test_events_that_keep_coming_are_read_together(db, start_daemon, projections):
    # No poll: only notifications (and the pause's end) make a runner read.
    daemon = start_daemon(poll_interval_ms=600_000, projections=projections,
                          extra=f"min_read_interval_ms = {INTERVAL_MS};")
    daemon.wait_caught_up()
    time.sleep(INTERVAL_MS / 1000 + 0.2)  # a quiet spell longer than the interval
    # A wake-up that finds nothing new (a poll, the listener's after it
    # connects) just before: it must not hold the first event back.
    db.execute("SELECT pg_notify('domain_event', 'nothing new')")
    time.sleep(0.1)

    first = uuid.uuid4()
    db.append([user(first)])
    daemon.wait_until(users_applied([first]), 10, "the first event")
    [(took,)] = commit_to_commit(db, [first])
    assert took < INTERVAL_MS / 1000 / 2, f"the first event after a quiet spell waited {took:.3f} s"

    # Each in its own transaction and notification, well inside the interval.
    followers = [uuid.uuid4() for _ in range(FOLLOWERS)]
    with db.connect() as conn:
        for uid in followers:
            append(conn, user(uid))
            time.sleep(0.02)
    daemon.wait_until(users_applied(followers), 10, "the followers")
    batches = db.scalar("SELECT count(DISTINCT xmin::text) FROM read_model.users WHERE id = ANY(%s)",
                        (followers,))
    # Two: the first may find the last open an interval old. A loaded box
    # that stretches the appends over more than an interval earns one more
    # per interval; without pacing it would be one per event.
    span = db.scalar("""SELECT extract(epoch FROM max(pg_xact_commit_timestamp(e.xmin))
                                         - min(pg_xact_commit_timestamp(e.xmin)))
                           FROM event_store.event_stream s
                           JOIN event_store.domain_event e ON e.stream_id = s.stream_id
                          WHERE s.aggregate_id = ANY(%s)""", (followers,))
    allowed = 2 + int(float(span) * 1000 // INTERVAL_MS)
    assert batches <= allowed, \
        f"{FOLLOWERS} events over {float(span):.3f} s were applied in {batches} transactions"


def listener_relistened(conn):
    """The listener's last statement is a LISTEN of its own: it left the
    channel and came back (a connect sends LISTEN and the presence lock
    query together, and the latter shows)."""
    return conn.execute("""SELECT count(*) FROM pg_stat_activity
                            WHERE datname = current_database() AND application_name LIKE 'projectord/%%'
                              AND query = 'LISTEN "domain_event"'""").fetchone()[0] == 1


def test_a_busy_channel_is_left_polled_and_listened_to_again(db, start_daemon):
    daemon = start_daemon(poll_interval_ms=600_000)  # only notifications and the ticks wake it
    daemon.wait_caught_up()
    with db.connect() as conn:
        assert not listener_relistened(conn)

    # 5,000 notifications, then one more: far above LISTENER_POLL_RATE.
    followers = [uuid.uuid4() for _ in range(20)]
    with db.connect() as conn:
        conn.execute("SELECT pg_notify('domain_event', i::text) FROM generate_series(1, 5000) i")
        time.sleep(0.05)
        conn.execute("SELECT pg_notify('domain_event', 'more')")
        # The channel is left now: only the ticks find these.
        for uid in followers:
            append(conn, user(uid))
            time.sleep(0.01)
    daemon.wait_until(users_applied(followers), 10, "the events appended while polling")
    waits = [w for (w,) in commit_to_commit(db, followers)]
    assert max(waits) < 0.5, f"events appended while the channel was left waited up to {max(waits):.3f} s"

    daemon.wait_until(listener_relistened, 10, "the listener to listen again once quiet")
    last = uuid.uuid4()
    db.append([user(last)])
    daemon.wait_until(users_applied([last]), 10, "an event after listening again")
