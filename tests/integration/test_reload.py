"""SIGHUP reloads the configuration (SPEC §6, issue 3): log level, batch
size, poll interval, on_error and enabling or disabling a projection take
effect live; a changed database says it needs a restart; a broken file is
refused and the daemon goes on with what it had."""

import signal
import uuid

from daemon import config_text, as_user, DAEMON_USER, PROJECTIONS
from eventgen import Command, event

ALL_ON = {name: {} for name in PROJECTIONS}


def rewrite(daemon, **config):
    with open(daemon.config_path, "w") as f:
        f.write(config_text(daemon.daemon_conninfo, **config))


def user(uid, n):
    return Command("User", uid, 0, [event("UserRegistered", {
        "email": f"u{n}@example.com", "first_name": "F", "last_name": "L"})])


def test_sighup_disables_and_enables_a_projection_and_sets_the_log_level(db, start_daemon):
    daemon = start_daemon(poll_interval_ms=200, level="info")
    daemon.wait_caught_up()
    assert "DEBUG" not in daemon.log()

    rewrite(daemon, poll_interval_ms=300, batch_size=7, level="debug",
            projections=dict(ALL_ON, users={"enabled": False}))
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT status = 'stopped' FROM read_model.projection_metadata WHERE projection_name = 'users'"
    ).fetchone()[0], 10, "users to stop after the reload")
    # users' stopped status is written while the reload goes on: its last
    # log line may come a moment later (slow builds: valgrind).
    daemon.wait_until(lambda conn: "batch_size 7" in daemon.log(), 10, "the reload to be logged")
    assert "reload: users disabled" in daemon.log()

    uid = uuid.uuid4()
    db.append([user(uid, 1)])
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT event_count FROM read_model.event_type_stats WHERE event_type = 'UserRegistered'"
    ).fetchone(), 10, "event_stats to go on")
    assert db.query("SELECT count(*) FROM read_model.users") == [(0,)], "a disabled projection ran"
    assert "DEBUG" in daemon.log(), "the new log level did not apply"

    rewrite(daemon, poll_interval_ms=300, level="info", projections=ALL_ON)
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: conn.execute(
        "SELECT count(*) FROM read_model.users WHERE id = %s", (uid,)).fetchone()[0] == 1,
        10, "users to catch up once enabled again")
    assert daemon.alive()


def test_sighup_with_a_broken_file_keeps_running(db, start_daemon):
    daemon = start_daemon(poll_interval_ms=200)
    daemon.wait_caught_up()
    rewrite(daemon, poll_interval_ms=200, extra="bacth_size = 10;")
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: "keeping the running configuration" in daemon.log(), 10,
                      "the reload to be refused")
    assert "bacth_size: unknown key" in daemon.log()
    db.append([user(uuid.uuid4(), 2)])
    daemon.wait_caught_up()
    assert db.query("SELECT count(*) FROM read_model.users") == [(1,)]


def test_sighup_with_a_new_database_says_restart(db, start_daemon):
    daemon = start_daemon(poll_interval_ms=200)
    daemon.wait_caught_up()
    with open(daemon.config_path, "w") as f:
        f.write(config_text(as_user(db.conninfo, DAEMON_USER) + " application_name=other"))
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: "database.conninfo changed: restart projectord" in daemon.log(),
                      10, "the restart warning")
    assert daemon.alive()
