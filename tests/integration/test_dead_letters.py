"""Bad events under on_error = skip | stop and the operator's commands for
them (SPEC §6, §7; issue 3): `dead-letters`, `replay-dead-letters` (with and
without a running instance) and `resume`.

The scenario: a second user registers with an email the first already has
(case-insensitively): a unique violation, so a bad event. Then the first
user changes email, which is the "fix" that lets a replay apply it.
"""

import uuid

from daemon import Daemon, run_cli
from eventgen import Command, event

ANN, BOB, CARL = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def register(uid, email):
    return Command("User", uid, 0, [event("UserRegistered", {
        "email": email, "first_name": "F", "last_name": "L"})])


def scenario(db):
    db.append([register(ANN, "ann@example.com"),
               register(BOB, "ANN@example.com"),                      # duplicate: bad
               Command("User", BOB, 1, [event("UserLoggedIn", {})]),  # missing row: ignored
               Command("User", CARL, 0, [event("UserRegistered", {"first_name": "no email"})])])  # bad
    return {row[0]: row[1] for row in db.query(
        "SELECT s.aggregate_id, e.global_position FROM event_store.domain_event e "
        "JOIN event_store.event_stream s USING (stream_id) WHERE e.event_type = 'UserRegistered'")}


def fix(db):
    """The first user moves away from the contested address."""
    db.append([Command("User", ANN, 1, [event("UserEmailChanged", {"email": "ann@elsewhere.org"})])])


def replay_after_fix(daemon, events_db, read_model_db):
    """Fix the scenario, let the daemon see the fix, replay users' dead
    letters through it: Bob's registration applies now, Carl's (no email)
    still fails."""
    fix(events_db)
    daemon.wait_caught_up(timeout=30, allow_skipped=True)
    replay = run_cli(["-c", daemon.config_path, "replay-dead-letters", "users"], timeout=60)
    # Carl's still fails: not done, so not 0.
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert "2 dead letter(s) before, 1 applied, 1 still failing" in replay.stdout
    assert users(read_model_db) == {ANN: "ann@elsewhere.org", BOB: "ANN@example.com"}


def users(db):
    return dict(db.query("SELECT id, email FROM read_model.users"))


def dead_letters(db):
    return db.query("SELECT global_position, event_type, sqlstate, error IS NOT NULL, payload IS NOT NULL "
                    "FROM read_model.projection_dead_letter WHERE projection_name = 'users' ORDER BY 1")


def test_skip_dead_letters_then_replay_through_the_running_instance(db, start_daemon):
    positions = scenario(db)
    daemon = start_daemon(poll_interval_ms=200, projections={
        "catalog": {}, "event_stats": {}, "orders": {}, "users": {"on_error": "skip"}})
    daemon.wait_caught_up(timeout=30, allow_skipped=True)
    rows = daemon.wait_ignored({"users": 1})
    assert users(db) == {ANN: "ann@example.com"}
    assert dead_letters(db) == [(positions[BOB], "UserRegistered", "23505", True, True),
                                (positions[CARL], "UserRegistered", None, True, True)]
    assert rows["users"]["events_skipped"] == 2
    assert rows["users"]["events_ignored"] == 1
    assert rows["users"]["status"] == "live"
    assert rows["event_stats"]["events_processed"] == 4

    listed = run_cli(["-c", daemon.config_path, "dead-letters", "users"])
    assert listed.returncode == 0, listed.stderr
    assert str(positions[BOB]) in listed.stdout and "23505" in listed.stdout
    assert "(2 dead letters)" in listed.stdout

    replay_after_fix(daemon, db, db)
    assert [d[0] for d in dead_letters(db)] == [positions[CARL]]
    row = daemon.status()["users"]
    assert row["events_skipped"] == 1
    assert row["replayed_at"] is not None


def test_replay_without_a_running_instance(db, workdir, start_daemon):
    positions = scenario(db)
    daemon = start_daemon(poll_interval_ms=200, projections={
        "catalog": {}, "event_stats": {}, "orders": {}, "users": {"on_error": "skip"}})
    daemon.wait_caught_up(timeout=30, allow_skipped=True)
    fix(db)
    daemon.wait_caught_up(timeout=30, allow_skipped=True)
    assert daemon.stop() == 0

    replay = run_cli(["-c", daemon.config_path, "replay-dead-letters", "users"], timeout=60)
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert "1 applied, 1 still failing" in replay.stdout
    assert users(db)[BOB] == "ANN@example.com"
    assert [d[0] for d in dead_letters(db)] == [positions[CARL]]


def test_stop_fails_only_that_projection_and_resume_retries_it(db, start_daemon):
    positions = scenario(db)
    daemon = start_daemon(poll_interval_ms=200)   # on_error = stop everywhere
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT EXISTS (SELECT 1 FROM read_model.projection_metadata"
        "                WHERE projection_name = 'users' AND status = 'failed')").fetchone()[0],
        30, "users to fail")
    row = daemon.status()["users"]
    assert row["last_error_position"] == positions[BOB]
    assert row["last_error_sqlstate"] == "23505"
    assert "duplicate key" in row["last_error"]
    assert users(db) == {ANN: "ann@example.com"}, "the events before the bad one are applied"
    assert db.query("SELECT count(*) FROM read_model.projection_dead_letter") == [(0,)]
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT count(*) = 3 FROM read_model.projection_metadata WHERE status = 'live'"
        "   AND projection_name IN ('catalog', 'event_stats', 'orders')").fetchone()[0],
        10, "the other projections to go on")

    # Resumed without a fix, it fails again at the same event: resume waits and says so.
    again = run_cli(["-c", daemon.config_path, "resume", "users"], timeout=60)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "users: failed again at the same event: " in again.stdout, again.stdout
    assert "duplicate key" in again.stdout
    # --timeout 0 only asks.
    asked = run_cli(["-c", daemon.config_path, "resume", "users", "--timeout", "0"], timeout=60)
    assert asked.returncode == 0 and "resume asked of the owning instance" in asked.stdout, asked
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT resume_requested_at IS NULL AND status = 'failed' FROM read_model.projection_metadata"
        " WHERE projection_name = 'users'").fetchone()[0], 30, "the request taken, users failed again")
    bad = run_cli(["-c", daemon.config_path, "resume", "users", "--timeout", "soon"])
    assert bad.returncode == 64 and "--timeout takes whole seconds" in bad.stderr, bad

    # The operator fixes the read model by hand, then resumes.
    db.execute("UPDATE read_model.users SET email = 'ann@elsewhere.org' WHERE id = %s", (ANN,))
    # resume waits for the outcome: past the duplicate, then failed at the next bad event.
    resumed = run_cli(["-c", daemon.config_path, "resume", "users"], timeout=60)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert "users: resumed, applied up to position" in resumed.stdout, resumed.stdout
    assert "then failed again at a later event" in resumed.stdout, resumed.stdout
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT last_position >= %s FROM read_model.projection_metadata WHERE projection_name = 'users'",
        (positions[CARL] - 1,)).fetchone()[0], 30, "users to get past the duplicate")
    assert users(db)[BOB] == "ANN@example.com"
    # ...and stops again at the next bad event, the one without an email.
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT status = 'failed' AND last_error_position = %s FROM read_model.projection_metadata "
        "WHERE projection_name = 'users'", (positions[CARL],)).fetchone()[0], 30, "the next bad event")


def test_a_resume_asked_while_the_heartbeat_waits_for_the_row_is_not_lost(db, start_daemon):
    """A resume request committed while the owner's heartbeat is waiting
    for the status row's lock must be honoured. The heartbeat clears the
    request and reports whether there was one; it read the old value in a
    join of the table with itself, and under READ COMMITTED a statement
    that waited for a row re-reads only the row it updates: it cleared the
    new request and reported none, so the projection stayed failed for good.
    Found by the randomized operations test (seed 100, 180 s, profile all):
    `adopt-restored-store` holds the status rows while it rewrites the ids
    (10 s for 100,000 events), and asks every projection to resume."""
    positions = scenario(db)
    daemon = start_daemon(poll_interval_ms=200)   # on_error = stop everywhere
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT EXISTS (SELECT 1 FROM read_model.projection_metadata WHERE projection_name = 'users'"
        "                  AND status = 'failed' AND last_error_position = %s)",
        (positions[BOB],)).fetchone()[0], 30, "users to fail")
    # What lets a resume get past the duplicate.
    db.execute("UPDATE read_model.users SET email = 'ann@elsewhere.org' WHERE id = %s", (ANN,))
    with db.connect(autocommit=False) as asker:
        asker.execute("UPDATE read_model.projection_metadata SET resume_requested_at = clock_timestamp()"
                      " WHERE projection_name = 'users'")
        # Until the owner's heartbeat waits for the row this transaction holds.
        daemon.wait_until(lambda conn: conn.execute(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
            "   AND wait_event_type = 'Lock' AND query LIKE '%read_model.projection_metadata m%'"
            "   AND query LIKE '%resume_requested_at%'").fetchone()[0], 30, "the heartbeat to wait for the row")
        asker.commit()
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT last_position >= %s FROM read_model.projection_metadata WHERE projection_name = 'users'",
        (positions[CARL] - 1,)).fetchone()[0], 30, "users resumed past the duplicate")
    assert users(db)[BOB] == "ANN@example.com"


def test_a_stopped_projection_stays_failed_when_its_counts_are_written(db, start_daemon):
    """The batch cut at a bad event (on_error = stop) commits the events
    before it; one of them was ignored, and that count is written by a
    checkpoint of its own right after (design.md). That write must keep the
    status 'failed' (it wrote 'catching_up', and the status view called the
    stopped projection healthy until the next heartbeat)."""
    ghost = uuid.uuid4()
    db.append([Command("User", ghost, 0, [event("UserLoggedIn", {})]),       # missing row: ignored
               register(ANN, "ann@example.com"),
               Command("User", CARL, 0, [event("UserRegistered", {"first_name": "no email"})])])  # bad
    daemon = start_daemon()   # on_error = stop everywhere
    rows = daemon.wait_ignored({"users": 1})
    assert rows["users"]["status"] == "failed", rows["users"]
    assert rows["users"]["events_processed"] == 2
    healthy = db.scalar("SELECT healthy FROM read_model.projection_status WHERE projection_name = 'users'")
    assert healthy is False


def test_resume_without_a_running_instance_resets_the_status(db, workdir):
    db.execute("INSERT INTO read_model.projection_metadata (projection_name, status) VALUES ('users', 'failed')")
    cli = Daemon(db.conninfo, workdir, name="cli")
    out = run_cli(["-c", cli.config_path, "resume", "users"])
    assert out.returncode == 0, out.stderr
    assert "retries from its checkpoint" in out.stdout
    assert db.scalar("SELECT status FROM read_model.projection_metadata WHERE projection_name = 'users'") == "stopped"
    assert run_cli(["-c", cli.config_path, "resume", "nosuch"]).returncode == 64
