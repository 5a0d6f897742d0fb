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
import time
import uuid

import psycopg
import pytest

import oracle
from conftest import Database, daemon_starter
from daemon import EXIT_CONFIG, run_cli
from eventgen import Command, event, generate_mix

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
