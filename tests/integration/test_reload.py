"""SIGHUP reloads the configuration (SPEC §6, issue 3): log level, batch
size, poll interval, on_error and enabling or disabling a projection take
effect live; a changed database says it needs a restart; a broken file is
refused and the daemon goes on with what it had."""

import os
import signal
import subprocess
import time
import uuid

from daemon import config_text, as_user, clean_env, command, DAEMON_USER, PROJECTIONS, ONLY_EVENT_STATS
import oracle
from eventgen import Command, bulk_events, event, generate_mix
from oracle import assert_event_stats_exact

ALL_ON = {name: {} for name in PROJECTIONS}


def rewrite(daemon, **config):
    """Replace the config file at once: a command started meanwhile (the
    one-shot `rebuild` below) must never read it truncated, half written."""
    tmp = daemon.config_path + ".new"
    st = os.stat(daemon.config_path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, st.st_mode & 0o777)
    with os.fdopen(fd, "w") as f:
        f.write(config_text(daemon.daemon_conninfo, **config))
    os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, daemon.config_path)


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


# -- a reload during a catch-up (issue 16, defect 1) ---------------------------


def toggle_batch_size(daemon, until, projections=ONLY_EVENT_STATS):
    """SIGHUP every 5-15 ms, batch_size switching between 100 and 5000, until
    until() holds; returns the number of reloads."""
    # Before main() the default action of SIGHUP is still to end the process.
    daemon.wait_until(lambda conn: "starting as" in daemon.log(), 30, "the daemon to start")
    reloads = 0
    deadline = time.monotonic() + 120
    while not until() and time.monotonic() < deadline:
        rewrite(daemon, poll_interval_ms=200, level="info", projections=projections,
                batch_size=100 if reloads % 2 == 0 else 5000)
        daemon.kill(signal.SIGHUP)
        reloads += 1
        time.sleep(0.005 + 0.01 * (reloads % 2))
    return reloads


def test_sighup_changing_batch_size_during_a_catch_up_loses_nothing(db, start_daemon):
    """A fetch sent with batch_size 100 whose result came back after a
    reload to 5000 looked like the window's end: 72,000 of 200,000 applied,
    status live. Judged against the limit it was sent with, nothing is lost."""
    bulk_events(db, 100, 1000)
    daemon = start_daemon(poll_interval_ms=200, level="info", batch_size=100,
                          projections=ONLY_EVENT_STATS)

    def done():
        return db.query("SELECT last_position FROM read_model.projection_metadata "
                        "WHERE projection_name = 'event_stats'") in ([(100_000,)],)
    reloads = toggle_batch_size(daemon, done)
    print(f"{reloads} reloads during the catch-up")
    daemon.wait_caught_up(timeout=60)
    assert_event_stats_exact(db)


def test_sighup_changing_batch_size_during_a_rebuild_loses_nothing(db, start_daemon):
    """The same for a rebuild's shadow: one reload swapped in a table holding
    13,100 of 100,000 events, and `rebuild` printed "rebuilt"."""
    bulk_events(db, 100, 1000)
    daemon = start_daemon(poll_interval_ms=200, level="info", batch_size=100,
                          projections=ONLY_EVENT_STATS)
    daemon.wait_caught_up(timeout=120)
    cmd = subprocess.Popen(command(["-c", daemon.config_path, "rebuild", "event_stats"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=clean_env())
    reloads = toggle_batch_size(daemon, lambda: cmd.poll() is not None)
    out, _ = cmd.communicate(timeout=120)
    print(f"{reloads} reloads during the rebuild; {out.strip()}")
    assert cmd.returncode == 0, out
    assert_event_stats_exact(db)


# -- enabling and disabling under way (issue 16, defects 3 and 4) --------------

def test_disabling_one_projection_keeps_the_others_owned(db, start_daemon):
    """Disabling users lowered the projection total but not the count of
    projections this instance owned (users' runner finished without it):
    another projection then handed itself over to nobody and stood by for
    good, also after users came back."""
    daemon = start_daemon(poll_interval_ms=200, level="info")
    daemon.wait_caught_up()
    rewrite(daemon, poll_interval_ms=200, level="info", projections=dict(ALL_ON, users={"enabled": False}))
    daemon.kill(signal.SIGHUP)
    daemon.wait_until(lambda conn: "reload: users disabled" in daemon.log()
                      and conn.execute("SELECT status FROM read_model.projection_metadata "
                                       "WHERE projection_name = 'users'").fetchone()[0] == "stopped",
                      10, "users to stop")
    commands = generate_mix(seed=16, n_events=1500, days=2)
    db.append_all(commands[:len(commands) // 2])
    daemon.projections = dict(ALL_ON, users={"enabled": False})
    daemon.wait_caught_up(timeout=30)

    rewrite(daemon, poll_interval_ms=200, level="info", projections=ALL_ON)
    daemon.kill(signal.SIGHUP)
    db.append_all(commands[len(commands) // 2:])
    daemon.projections = ALL_ON
    daemon.wait_caught_up(timeout=30)
    assert "handing over" not in daemon.log(1000), "a projection was handed over to nobody"
    with db.connect() as conn:
        oracle.assert_read_model_matches_fold(conn)


def test_enabling_a_projection_while_its_runner_still_stops(db, start_daemon):
    """users' status row held locked for 3 s, so its runner could not write
    'stopped' yet, then enabled again: the new runner stood by forever (the
    old one, mid-request, was freed and counted twice) and SIGTERM took 30 s
    and exited 1. Now the new runner starts once the old one is done."""
    daemon = start_daemon(poll_interval_ms=200, level="info")
    daemon.wait_caught_up()
    with db.connect(autocommit=False) as holder:
        holder.execute("SELECT 1 FROM read_model.projection_metadata "
                       "WHERE projection_name = 'users' FOR UPDATE")
        rewrite(daemon, poll_interval_ms=200, level="info",
                projections=dict(ALL_ON, users={"enabled": False}))
        daemon.kill(signal.SIGHUP)
        daemon.wait_until(lambda conn: "reload: users disabled" in daemon.log(), 10, "the disable")
        rewrite(daemon, poll_interval_ms=200, level="info", projections=ALL_ON)
        daemon.kill(signal.SIGHUP)
        daemon.wait_until(lambda conn: "reload: users enabled" in daemon.log(), 10, "the enable")
        time.sleep(3)
        holder.rollback()
    db.append_all(generate_mix(seed=17, n_events=800, days=1))
    daemon.wait_caught_up(timeout=30)
    with db.connect() as conn:
        oracle.assert_read_model_matches_fold(conn)
    started = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    print(f"stopped in {time.monotonic() - started:.1f}s")
