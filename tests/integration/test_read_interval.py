"""min_read_interval_ms (docs/design.md, "Pacing the reads"): while events
keep coming, windows are opened at most that often, so the events committed
in between are applied together; the first event after a quiet spell is
read at once. Both halves, with the runners sharing their reads and with a
runner alone."""

import time
import uuid

import pytest

from daemon import PROJECTIONS
from eventgen import Command, event

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


@pytest.mark.parametrize("projections", [SHARED, ALONE], ids=["shared", "alone"])
def test_events_that_keep_coming_are_read_together(db, start_daemon, projections):
    # No poll: only notifications (and the pause's end) make a runner read.
    daemon = start_daemon(poll_interval_ms=600_000, projections=projections,
                          extra=f"min_read_interval_ms = {INTERVAL_MS};")
    daemon.wait_caught_up()
    time.sleep(INTERVAL_MS / 1000 + 0.2)  # a quiet spell longer than the interval

    first = uuid.uuid4()
    db.append([user(first)])
    daemon.wait_until(users_applied([first]), 10, "the first event")
    # Commit to commit, inside the server (track_commit_timestamp): the
    # test's own connections and polling do not count.
    took = db.scalar("""SELECT extract(epoch FROM pg_xact_commit_timestamp(u.xmin)
                                              - pg_xact_commit_timestamp(e.xmin))
                          FROM read_model.users u
                          JOIN event_store.event_stream s ON s.aggregate_id = u.id
                          JOIN event_store.domain_event e ON e.stream_id = s.stream_id
                         WHERE u.id = %s""", (first,))
    assert took < INTERVAL_MS / 1000 / 2, f"the first event after a quiet spell waited {took:.3f} s"

    # Each in its own transaction and notification, well inside the interval.
    followers = [uuid.uuid4() for _ in range(FOLLOWERS)]
    with db.connect() as conn:
        for uid in followers:
            conn.execute("SELECT event_store.append_events(%s, %s, %s, %s::jsonb[])",
                         user(uid).params())
            time.sleep(0.02)
    daemon.wait_until(users_applied(followers), 10, "the followers")
    batches = db.scalar("SELECT count(DISTINCT xmin::text) FROM read_model.users WHERE id = ANY(%s)",
                        (followers,))
    assert batches <= 2, f"{FOLLOWERS} events 20 ms apart were applied in {batches} transactions"
