"""What the daemon's connections assume about the databases they reach
(issue 16, defects 5 and 6).

Encodings: every connection projectord makes asks for client_encoding
UTF8, so an event store or a read-model database in another server encoding
(LATIN1 here) is converted by the server both ways: payloads reach the
handlers as UTF-8 JSON and the read model gets the same text back, whatever
each side's encoding. The tests fold the source's events with the oracle
(psycopg decodes each database in its own encoding) and compare the target's
tables exactly.

Hot standbys: on a streaming replica pg_current_snapshot() does not list the
primary's transactions in progress, so a snapshot window taken there slides
past an event whose transaction is still open on the primary. Until reading
from a standby is proven safe the daemon refuses it: the projection is
`failed` with an error naming the cause and the remedy, the log says it once,
and it checks again with backoff (a promoted standby needs no restart);
one-shot commands that read the event store exit 78.
"""

import os
import signal
import tempfile
import time
import uuid

import psycopg
import pytest

import oracle
from conftest import KEEP_TMP, Database, daemon_starter, own_cluster
from daemon import DAEMON_USER, PROJECTIONS, EXIT_CONFIG, as_user, config_text, run_cli
from eventgen import Command, event, generate_mix
from pgcluster import SQL_DIR

ACCENTS = " José Muñoz Müller"


@pytest.fixture
def start(request, workdir):
    """start(conninfo, **config) -> a running Daemon (see conftest.daemon_starter)."""
    with daemon_starter(request, workdir) as start_daemon:
        yield lambda conninfo, **config: start_daemon(conninfo=conninfo, **config)


@pytest.fixture
def make_db(cluster):
    """make_db(encoding) -> a new Database with sql/ applied, in that server
    encoding (None: the cluster's UTF8); dropped afterwards."""
    made = []

    def make(encoding=None):
        name = f"c{os.getpid()}_{len(made) + 1}_{(encoding or 'utf8').lower()}"
        cluster.create_database(name, encoding=encoding)
        made.append(name)
        return Database(cluster, name)

    yield make
    if cluster.is_running():
        for name in made:
            cluster.drop_database(name)


def accented(commands):
    """The mix with non-ASCII text (é, ñ, ü; all in LATIN1) in every name,
    email and free-text field, and event and aggregate types of their own."""
    out = []
    for c in commands:
        events = []
        for e in c.events:
            data = dict(e["event_data"])
            for key in ("name", "first_name", "last_name", "reason", "path"):
                if isinstance(data.get(key), str):
                    data[key] += ACCENTS
            if isinstance(data.get("email"), str):
                data["email"] = data["email"].replace("@", ".ñü@exämple.")
            events.append(dict(e, event_data=data))
        out.append(Command(c.aggregate_type, c.aggregate_id, c.expected_version, events))
    for n in range(3):
        out.append(Command("Sesión", uuid.uuid4(), 0,
                           [event("PáginaVista", {"ruta": f"/niño/{n}", "año": 2024}),
                            event("Größe_geändert", {"größe": "über"})]))
    return out


def utf8(database):
    """A connection to database that reads its text as UTF-8 (psycopg decodes
    json as UTF-8 whatever the client encoding)."""
    return psycopg.connect(database.conninfo, autocommit=True, client_encoding="UTF8")


def assert_exact(source, target):
    """The target's read model is the oracle's fold of the source's events."""
    with utf8(source) as ev, utf8(target) as rm:
        expected = oracle.fold_database(ev).rows
        for table in oracle.TABLES:
            if table != "event_type_stats":
                oracle.assert_same_rows(table, expected[table], oracle.read_table(rm, table))
        oracle.assert_same_rows("event_type_stats", oracle.expected_event_stats(ev),
                                oracle.read_table(rm, "event_type_stats"))
        handled = oracle.handled_counts(ev)
        processed = dict(rm.execute("SELECT projection_name, events_processed"
                                    "  FROM read_model.projection_metadata").fetchall())
    assert processed == handled


@pytest.mark.parametrize("source_encoding, target_encoding", [
    ("LATIN1", None), ("LATIN1", "UTF8"), ("UTF8", "LATIN1")],
    ids=["latin1_store", "latin1_store_utf8_target", "utf8_store_latin1_target"])
def test_non_utf8_databases_apply_non_ascii_events(make_db, start, source_encoding, target_encoding):
    """Events with é, ñ and ü, catch-up then live, from a LATIN1 event store
    (the read model in the same database or a UTF8 one) and from a UTF8 one
    into a LATIN1 read model: all applied, exact; the daemon's environment
    asks for LATIN1 (PGCLIENTENCODING), which must not matter. Then a
    rebuild run by the one-shot command (its own connections) is exact too."""
    source = make_db(source_encoding)
    target = make_db(target_encoding) if target_encoding else None
    reads = target or source
    commands = accented(generate_mix(seed=16005, n_events=2_000, days=2))
    source.append_all(commands[:-100])
    daemon = start(source.conninfo, target=target and target.conninfo, poll_interval_ms=100,
                   env={"PGCLIENTENCODING": "LATIN1"})
    daemon.wait_caught_up(timeout=60)
    source.append_all(commands[-100:], per_transaction=10)
    daemon.wait_caught_up(timeout=30)
    assert_exact(source, reads)
    names = {r[0] for r in reads.query("SELECT first_name FROM read_model.users")}
    assert names == {"First" + ACCENTS}, names
    assert reads.scalar("SELECT count(*) FROM read_model.event_type_stats"
                        " WHERE event_type IN ('PáginaVista', 'Größe_geändert')") == 2
    if target:
        assert source.scalar("SELECT count(*) FROM read_model.projection_metadata") == 0

    assert daemon.stop() == 0
    rebuilt = run_cli(["-c", daemon.config_path, "rebuild", "users", "catalog"], timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert_exact(source, reads)


def test_one_shot_commands_print_utf8_from_a_latin1_database(make_db, start):
    """`status` and `dead-letters` read text written in a LATIN1 read-model
    database (a dead letter's error, a projection's last error) and print it
    as UTF-8."""
    source, target = make_db(), make_db("LATIN1")
    daemon = start(source.conninfo, target=target.conninfo, poll_interval_ms=100)
    daemon.wait_started()
    assert daemon.stop() == 0
    error = "champ « prénom » manquant: Müller"
    target.execute("INSERT INTO read_model.projection_dead_letter"
                   " (projection_name, global_position, event_id, event_type, error, payload)"
                   " VALUES ('users', 1, gen_random_uuid(), 'UserRegistered', %s, '{}')", (error,))
    target.execute("UPDATE read_model.projection_metadata SET last_error = %s"
                   " WHERE projection_name = 'users'", (error,))
    for args in (["dead-letters", "users"], ["status"]):
        out = run_cli(["-c", daemon.config_path] + args)
        assert out.returncode == 0, out.stderr
        assert error in out.stdout, out.stdout


@pytest.mark.parametrize("on_error", ["skip", "stop"])
def test_text_the_read_model_cannot_hold_is_a_bad_event(make_db, start, on_error):
    """A UTF8 event store and a LATIN1 read model: a user named in Japanese
    cannot be stored there (SQLSTATE 22P05). It is a bad event like any
    other data error: with on_error = "skip" it is dead-lettered (without its
    payload, which the LATIN1 dead-letter table cannot hold either, instead of
    retrying the batch forever) and the users after it are applied; with
    "stop" users fails at that event. The other projections go on."""
    source, target = make_db(), make_db("LATIN1")
    commands = [user_registered(1), user_registered(2), user_registered(3)]
    commands[1].events[0]["event_data"]["first_name"] = "日本"
    source.append(commands)
    bad = source.scalar("SELECT global_position FROM event_store.domain_event"
                        " ORDER BY global_position OFFSET 1 LIMIT 1")
    projections = {name: {} for name in PROJECTIONS}
    projections["users"] = {"on_error": on_error}
    daemon = start(source.conninfo, target=target.conninfo, poll_interval_ms=100,
                   projections=projections)

    def users_row():
        rows = daemon.status()
        return rows.get("users") if all(
            rows.get(n, {}).get("last_position") == 3 for n in ("catalog", "orders", "event_stats")) \
            else None
    if on_error == "skip":
        wait_for(lambda: (users_row() or {}).get("last_position") == 3, 20, "users to pass the event",
                 state=lambda: daemon.log(tail=5))
        row = users_row()
        assert row["status"] in ("live", "catching_up") and row["events_skipped"] == 1, row
        letters = target.query("SELECT global_position, sqlstate, payload, error"
                               "  FROM read_model.projection_dead_letter")
        assert len(letters) == 1 and letters[0][:3] == (bad, "22P05", None), letters
        assert "payload not kept" in letters[0][3], letters
        assert target.scalar("SELECT count(*) FROM read_model.users") == 2
        assert log_count(daemon, "keeps no payload") == 1, daemon.log()
        assert "retrying with backoff" not in daemon.log(tail=1_000_000)
    else:
        wait_for(lambda: (users_row() or {}).get("status") == "failed", 20, "users to fail",
                 state=lambda: daemon.log(tail=5))
        row = users_row()
        assert row["last_error_position"] == bad and row["last_error_sqlstate"] == "22P05", row
        assert target.scalar("SELECT count(*) FROM read_model.users") == 1


# --------------------------------------------------------------------------
# Hot standbys
# --------------------------------------------------------------------------

STANDBY_LINE = "database.conninfo names a hot standby"


@pytest.fixture(scope="module")
def primary():
    with own_cluster("projectord-primary-") as c:
        yield c


@pytest.fixture
def replica(primary):
    """replica(*dbnames) -> (events, reads, standby): new databases with
    sql/ applied on the primary, then a streaming replica of it (a hot
    standby, pg_basebackup -R); events is the first database as the
    standby serves it, reads the last one on the primary."""
    standbys, databases = [], []

    def make(*names):
        for name in names:
            primary.create_database(name)
            databases.append(name)
        standby = primary.make_standby(tempfile.mkdtemp(prefix="projectord-standby-"))
        standbys.append(standby)
        return Database(standby, names[0]), Database(primary, names[-1]), standby

    yield make
    for standby in standbys:
        if KEEP_TMP:
            standby.stop()
        else:
            standby.cleanup()
    for name in databases:
        primary.drop_database(name)


def user_registered(n):
    return Command("User", uuid.uuid4(), 0, [event("UserRegistered", {
        "email": f"user{n}@example.com", "first_name": "First", "last_name": f"Last{n}"})])


def log_count(daemon, text):
    return daemon.log(tail=1_000_000).count(text)


def wait_for(predicate, timeout, what, state=None):
    """Poll predicate(); on timeout fail naming `what` and, if given, state()."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, \
            f"timed out waiting for {what}" + (f": {state()}" if state else "")
        time.sleep(0.1)


def test_run_refuses_a_hot_standby_event_store(primary, replica, start):
    """database.conninfo on a streaming replica, database.target on the
    primary, and the issue's scenario: an event whose transaction stays open
    on the primary while five others commit (polled every 200 ms, as the
    standby sends no NOTIFY). Before the fix every projection went `live`
    with that event lost. Now every projection is `failed` with an error
    naming the cause and the remedy, `status --check` fails, the log says it
    once per projection (while the check is repeated with backoff), nothing
    is applied; once the standby is promoted the daemon goes on without a
    restart, applies all six events exactly, and listens there (with a 60 s
    poll only NOTIFY can bring the last event in time)."""
    name = f"hs{os.getpid()}_run"
    events, reads, standby = replica(name, name + "_reads")
    on_primary = Database(primary, name)
    daemon = start(events.conninfo, target=reads.conninfo, poll_interval_ms=200)

    with on_primary.connect(autocommit=False) as open_tx:
        open_tx.execute("SELECT event_store.append_events(%s, %s, %s, %s::jsonb[])",
                        user_registered(0).params())
        on_primary.append([user_registered(n) for n in range(1, 6)])
        primary.wait_replayed(standby)
        time.sleep(2)  # many polls
        open_tx.commit()
    primary.wait_replayed(standby)
    time.sleep(2)

    def outcome():
        rows = daemon.status()
        return ({n: r["status"] for n, r in rows.items()},
                reads.scalar("SELECT count(*) FROM read_model.users"))
    wait_for(lambda: set(outcome()[0].values()) == {"failed"}, 20,
             "every projection to be marked failed", state=lambda: "(status, users applied) = "
             f"{outcome()}; users in the event store: 6")
    assert outcome() == ({n: "failed" for n in PROJECTIONS}, 0)
    for row in daemon.status().values():
        assert STANDBY_LINE in row["last_error"] and "at the primary" in row["last_error"], row
        assert row["events_processed"] == 0 and row["last_position"] == 0, row
    check = run_cli(["-c", daemon.config_path, "status", "--check"])
    assert check.returncode == 1 and "unhealthy (status failed)" in check.stderr, check

    # Asked again with backoff, said once.
    wait_for(lambda: log_count(daemon, "users (event store): the server is a hot standby;"
                                       " asking again") >= 3, 30,
             "the standby check to be repeated")
    for projection in PROJECTIONS:
        assert log_count(daemon, f"{projection}: {STANDBY_LINE}") == 1, daemon.log()
    assert log_count(daemon, f"listener: {STANDBY_LINE}") == 1, daemon.log()

    standby.promote()
    # Each connection asks again after its backoff delay (at most about 10 s).
    wait_for(lambda: "failed" not in outcome()[0].values(), 30,
             "the projections to resume after the promotion")
    rows = daemon.wait_caught_up(timeout=60)
    assert {r["status"] for r in rows.values()} == {"live"}, rows
    assert_exact(events, reads)
    assert reads.scalar("SELECT count(*) FROM read_model.users") == 6
    assert log_count(daemon, "the event store is no longer a hot standby; resuming") == len(PROJECTIONS)
    assert run_cli(["-c", daemon.config_path, "status", "--check"]).returncode == 0

    with open(daemon.config_path, "w") as f:
        f.write(config_text(daemon.daemon_conninfo, target=as_user(reads.conninfo, DAEMON_USER),
                            poll_interval_ms=60_000))
    daemon.kill(signal.SIGHUP)
    wait_for(lambda: "poll_interval_ms 60000" in daemon.log(), 10, "the reload")
    wait_for(lambda: log_count(daemon, "listener: connected to") == 1, 30,
             "the listener to connect after the promotion")
    events.append([user_registered(6)])
    wait_for(lambda: reads.scalar("SELECT count(*) FROM read_model.users") == 7, 10,
             "an event appended after the promotion (NOTIFY)")


def test_run_on_a_hot_standby_alone_waits_for_its_promotion(replica, start):
    """database.conninfo on a standby and no target: nothing can be written
    there, the status row neither; each projection logs it once and keeps
    asking; promoted, the standby is used without a restart."""
    name = f"hs{os.getpid()}_alone"
    events, _, standby = replica(name)
    daemon = start(events.conninfo, poll_interval_ms=200)
    wait_for(lambda: log_count(daemon, "users: the server is a hot standby; asking again") >= 3,
             30, "the standby check to be repeated")
    assert daemon.alive()
    for projection in PROJECTIONS:
        assert log_count(daemon, f"{projection}: {STANDBY_LINE}") == 1, daemon.log()
    assert "the event store must be read and the read model written on the primary" in daemon.log()
    assert events.scalar("SELECT count(*) FROM read_model.projection_metadata") == 0
    standby.promote()
    events.append([user_registered(n) for n in range(3)])
    daemon.wait_caught_up(timeout=60)
    assert_exact(events, events)


def test_one_shot_commands_refuse_a_hot_standby(primary, replica, workdir):
    """Commands that read the event store (rebuild, replay-dead-letters) or
    write the read model (resume) or either (migrate, adopt-restored-store) exit 78 with one line naming the setting
    and the remedy when it names a hot standby; status still reads."""
    name = f"hs{os.getpid()}_cli"
    events, reads, standby = replica(name, name + "_reads")
    on_primary = Database(primary, name)

    def config(conninfo, target=None):
        path = os.path.join(workdir, f"cli{len(os.listdir(workdir))}.conf")
        with open(path, "w") as f:
            f.write(config_text(conninfo, target=target))
        return path

    cases = [
        (config(events.conninfo, reads.conninfo), ["rebuild", "users"], "database.conninfo"),
        (config(events.conninfo, reads.conninfo), ["replay-dead-letters", "users"], "database.conninfo"),
        (config(events.conninfo), ["rebuild", "--all"], "database.conninfo"),
        (config(events.conninfo), ["resume", "users"], "database.conninfo"),
        (config(on_primary.conninfo, Database(standby, reads.name).conninfo), ["rebuild", "users"],
         "database.target"),
        # migrate and adopt-restored-store write: never on a standby either
        (config(events.conninfo), ["migrate", "--sql-dir", SQL_DIR], "database.conninfo"),
        (config(on_primary.conninfo, Database(standby, reads.name).conninfo),
         ["migrate", "--sql-dir", SQL_DIR], "database.target"),
        (config(events.conninfo), ["adopt-restored-store"], "database.conninfo"),
        (config(events.conninfo, reads.conninfo), ["adopt-restored-store", "--dry-run"],
         "database.conninfo"),
    ]
    for path, args, setting in cases:
        out = run_cli(["-c", path] + args)
        assert out.returncode == EXIT_CONFIG, (args, out)
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and f"{setting} names a hot standby" in lines[0] \
            and f"point {setting} at the primary" in lines[0], (args, out.stderr)
        assert out.stdout == "", out.stdout
    status = run_cli(["-c", config(events.conninfo, reads.conninfo), "status"])
    assert status.returncode == 0, status
