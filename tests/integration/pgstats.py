"""Reading PostgreSQL's cumulative statistics in tests.

A backend flushes its counts about once a second while it runs statements,
within 10 s once idle, and when it exits: measure around a daemon that has
stopped, or wait for the counts to settle."""

import time


def event_index_tuples_read(db, settle_s=5.0):
    """Tuples read so far from domain_event's global_position index: the
    index every fetch walks, so the measure of how much of the event table
    the daemon read."""
    query = ("SELECT coalesce(idx_tup_read, 0) FROM pg_stat_user_indexes"
             " WHERE indexrelname = 'domain_event_global_position_key'")
    last = db.scalar(query)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = db.scalar(query)
        if now == last:
            break
        last = now
    return last
