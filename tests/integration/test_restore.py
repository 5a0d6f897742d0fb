"""An event store restored into another cluster (issue 16, defect 2).

transaction_id values belong to the cluster that wrote them. Two real
clusters here: `small`, fresh (its transaction id counter near 750), and
`big`, whose counter `pg_resetwal -x` moved to 10,485,760. A whole database
is dumped from one with pg_dump and restored into the other with
pg_restore, both ways:

- into `small` (the new counter behind the old one): the restored ids lie
  beyond every snapshot of the new cluster. The daemon must refuse to read
  (every projection `failed`, one error line each naming
  `adopt-restored-store`, `status --check` exit 1), and after the command
  every event is applied exactly once (the oracle's exact check);
- into `big` (the new counter ahead): the restored checkpoints judge the
  restored ids as the old cluster did, and every new id is newer than all
  of them, so nothing is wrong and nothing may be reported; the command is
  harmless there too.

Each way with the checkpoints (and read model) restored from the dump, taken
while a transaction that appended an event below the checkpoint's position
was still open (so the dump holds an event the checkpoint has not applied
though its position is lower), and with the checkpoints starting from
scratch. Plus events inserted with an explicit transaction_id, ahead of and
behind the checkpoint.
"""

import os
import re
import time
import uuid

import psycopg
import pytest

import faults
import oracle
from conftest import daemon_starter, own_cluster
from daemon import EXIT_FAILURE, EXIT_OK, clean_env, config_text, run_cli
from eventgen import Command, append, append_all, event, generate_mix
from pgcluster import XACT_SEGMENT, dump_database, restore_database

BIG_XID = 10 * XACT_SEGMENT  # the first id of a pg_xact segment: pg_resetwal's safe values


def move_xid_counter(cluster, xid):
    """Stop the cluster, set its next transaction id with pg_resetwal -x, start it."""
    cluster.set_next_xid(xid)


@pytest.fixture(scope="module")
def small():
    with own_cluster("projectord-small-") as c:
        yield c


@pytest.fixture(scope="module")
def big():
    with own_cluster("projectord-big-") as c:
        move_xid_counter(c, BIG_XID)
        yield c


_seq = iter(range(1, 10**6))


def new_db(cluster, schema=True):
    name = f"r{os.getpid()}_{next(_seq)}"
    cluster.create_database(name, schema=schema)
    return cluster.conninfo(name)


def next_xid(conninfo):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0])


def session_command(rng_id=None):
    """An event only event_stats handles, on a stream of its own."""
    return Command("Session", rng_id or uuid.uuid4(), 0,
                   [event("PageViewed", {"path": "/restored"})])


def dump_and_restore(src_cluster, src, dst_cluster):
    """pg_dump the whole database src, pg_restore it into a new database of dst_cluster."""
    # The daemon's role is per cluster; the dump grants to it (restore_database creates it).
    return restore_database(dst_cluster, f"r{os.getpid()}_{next(_seq)}", dump_database(src))


def build_source(cluster, request, workdir):
    """A store with a read model part way: 600 events applied, then a
    transaction's event below the checkpoint's position committed after the
    daemon stopped, then 300 events no daemon saw."""
    src = new_db(cluster)
    commands = generate_mix(16, 900)
    append_all(src, commands[:400], per_transaction=50)
    held = psycopg.connect(src)
    append(held, session_command())  # its transaction stays open
    append_all(src, commands[400:600], per_transaction=50)
    with daemon_starter(request, workdir, src) as start:
        d = start(name="source")
        d.wait_caught_up(timeout=60)
        assert d.stop() == EXIT_OK
    held.commit()
    held.close()
    append_all(src, commands[600:], per_transaction=50)
    with psycopg.connect(src) as conn:
        late = conn.execute("""
            SELECT count(*) FROM event_store.domain_event e, read_model.projection_metadata m
             WHERE m.projection_name = 'event_stats' AND e.global_position < m.last_position
               AND NOT pg_visible_in_snapshot(e.transaction_id, m.tail_snapshot_lo::pg_snapshot)
        """).fetchone()[0]
    assert late == 1, "the dump must hold an event below the checkpoint's position not yet applied"
    return src


def start_from_scratch(conninfo):
    """Forget the restored checkpoints and read model."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE read_model.categories, read_model.products, read_model.users,"
                     " read_model.orders, read_model.daily_sales, read_model.event_type_stats,"
                     " read_model.projection_metadata, read_model.projection_dead_letter")


def error_lines(d):
    return [line for line in d.log(tail=100000).splitlines() if "adopt-restored-store" in line]


def adopt(d, *args, owner=True):
    """Run adopt-restored-store with the daemon's config, as the owner (postgres) or as the daemon's role."""
    env = clean_env(PROJECTORD_DATABASE_URL=d.events_conninfo) if owner else None
    return run_cli(["-c", d.config_path, "adopt-restored-store", *args], env=env, timeout=120)


def wait_resumed(d, timeout=30):
    """Until no projection is failed (the owner resumed them), then caught up."""
    d.wait_until(lambda conn: all(r["status"] != "failed" for r in faults.metadata(conn).values()),
                 timeout, "the projections to resume")
    return d.wait_caught_up(timeout=60)


def assert_refuses_to_read(d):
    """Every projection failed, said once, nothing applied past the restore, --check fails."""
    def failed(conn):
        rows = faults.metadata(conn)
        return len(rows) == 4 and all(r["status"] == "failed" for r in rows.values()) and rows
    rows = d.wait_until(failed, 30, "every projection to refuse the restored store")
    for name, r in rows.items():
        assert r["last_error_sqlstate"] == "PJ003", (name, r["last_error"])
        assert "adopt-restored-store" in r["last_error"], r["last_error"]
    time.sleep(2)  # no retry storm: still one line per projection
    lines = error_lines(d)
    said = sorted(re.search(r"ERROR (\w+): ", line).group(1) for line in lines)
    assert said == sorted(rows), "\n".join(lines)
    check = run_cli(["-c", d.config_path, "status", "--check"])
    assert check.returncode == EXIT_FAILURE, check.stderr


def ids_of(conninfo):
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT global_position, transaction_id::text FROM event_store.domain_event"
                            " ORDER BY 1").fetchall()


@pytest.mark.parametrize("checkpoints", ["dump", "scratch"])
def test_restore_into_a_cluster_behind_is_refused_then_adopted(big, small, request, workdir,
                                                               checkpoints):
    src = build_source(big, request, workdir)
    dst = dump_and_restore(big, src, small)
    assert next_xid(dst) < BIG_XID
    if checkpoints == "scratch":
        start_from_scratch(dst)
    with psycopg.connect(dst, autocommit=True) as conn:
        for _ in range(5):  # appended after the restore, with this cluster's ids
            append(conn, session_command())
    with daemon_starter(request, workdir, dst) as start:
        d = start(name=f"behind-{checkpoints}")
        assert_refuses_to_read(d)

        before = ids_of(dst)
        dry = adopt(d, "--dry-run")
        assert dry.returncode == EXIT_OK, dry.stderr
        assert "nothing changed" in dry.stdout and f"{len(before)} events" in dry.stdout, dry.stdout
        assert ids_of(dst) == before

        denied = adopt(d, owner=False)  # the daemon's own role may not rewrite the store
        assert denied.returncode == EXIT_FAILURE
        assert "permission denied" in denied.stderr and len(denied.stderr.splitlines()) == 1, \
            denied.stderr
        assert ids_of(dst) == before

        done = adopt(d)
        assert done.returncode == EXIT_OK, done.stderr
        print(done.stdout)
        wait_resumed(d)
        with psycopg.connect(dst, autocommit=True) as conn:
            for _ in range(5):
                append(conn, session_command())
        d.wait_caught_up(timeout=30)
        with psycopg.connect(dst) as conn:
            faults.assert_exact(conn)
        again = adopt(d)  # a second run changes nothing that matters
        assert again.returncode == EXIT_OK, again.stderr
        counts = [line for line in again.stdout.splitlines() if "to apply" in line]
        assert len(counts) == 4 and all(line.endswith(", 0 to apply") for line in counts), again.stdout
        wait_resumed(d)
        with psycopg.connect(dst) as conn:
            faults.assert_exact(conn)
        assert run_cli(["-c", d.config_path, "status", "--check"]).returncode == EXIT_OK


@pytest.mark.parametrize("checkpoints", ["dump", "scratch"])
def test_restore_into_a_cluster_ahead_just_works(big, small, request, workdir, checkpoints):
    src = build_source(small, request, workdir)
    dst = dump_and_restore(small, src, big)
    assert next_xid(dst) > BIG_XID
    if checkpoints == "scratch":
        start_from_scratch(dst)
    with psycopg.connect(dst, autocommit=True) as conn:
        for _ in range(5):
            append(conn, session_command())
    with daemon_starter(request, workdir, dst) as start:
        d = start(name=f"ahead-{checkpoints}")
        d.wait_caught_up(timeout=60)
        with psycopg.connect(dst) as conn:
            faults.assert_exact(conn)
        assert not error_lines(d)
        done = adopt(d)  # not needed here, and harmless
        assert done.returncode == EXIT_OK, done.stderr
        wait_resumed(d)
        with psycopg.connect(dst, autocommit=True) as conn:
            append(conn, session_command())
        d.wait_caught_up(timeout=30)
        with psycopg.connect(dst) as conn:
            faults.assert_exact(conn)


def insert_with_transaction_id(conninfo, xid):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        sid = conn.execute("INSERT INTO event_store.event_stream (aggregate_type, aggregate_id, version)"
                           " VALUES ('Session', %s, 1) RETURNING stream_id", (uuid.uuid4(),)).fetchone()[0]
        conn.execute("INSERT INTO event_store.domain_event (transaction_id, stream_id, event_type,"
                     " event_version, aggregate_version, event_data)"
                     " VALUES (%s::text::xid8, %s, 'PageViewed', 1, 1, '{\"path\": \"/x\"}')", (str(xid), sid))


@pytest.mark.parametrize("where", ["ahead", "behind"])
def test_explicit_transaction_id_is_refused_then_adopted(small, request, workdir, where):
    dst = new_db(small)
    append_all(dst, generate_mix(17, 200), per_transaction=20)
    with daemon_starter(request, workdir, dst) as start:
        d = start(name=f"explicit-{where}")
        d.wait_caught_up(timeout=60)
        insert_with_transaction_id(dst, next_xid(dst) + 100000 if where == "ahead" else 5)
        with psycopg.connect(dst, autocommit=True) as conn:
            append(conn, session_command())
        d.wait_until(lambda conn: faults.metadata(conn)["event_stats"]["status"] == "failed", 30,
                     "event_stats to refuse the explicit id")
        row = d.status()["event_stats"]
        assert row["last_error_sqlstate"] == "PJ003" and where in row["last_error"] or \
            ("counts as applied" in row["last_error"] and where == "behind"), row["last_error"]
        done = adopt(d)
        assert done.returncode == EXIT_OK, done.stderr
        wait_resumed(d)
        with psycopg.connect(dst) as conn:
            faults.assert_exact(conn)


def test_explicit_transaction_id_with_a_separate_read_model_database(small, request, workdir):
    """database.target: the ids are judged on the event store, the
    checkpoints written in the read-model database (two transactions)."""
    src, tgt = new_db(small), new_db(small)
    append_all(src, generate_mix(18, 200), per_transaction=20)
    with daemon_starter(request, workdir, src) as start:
        d = start(name="apart", target=tgt)
        d.wait_caught_up(timeout=60)
        insert_with_transaction_id(src, next_xid(src) + 100000)
        d.wait_until(lambda conn: faults.metadata(conn)["event_stats"]["status"] == "failed", 30,
                     "event_stats to refuse the explicit id")
        admin = os.path.join(workdir, "admin.conf")
        with open(admin, "w") as f:
            f.write(config_text(src, target=tgt))
        done = run_cli(["-c", admin, "adopt-restored-store"], timeout=120)
        assert done.returncode == EXIT_OK, done.stderr
        assert "1 with transaction ids ahead" in done.stdout, done.stdout
        wait_resumed(d)
        with psycopg.connect(src) as events, psycopg.connect(tgt) as model:
            expected = oracle.fold_database(events).rows
            for table in oracle.TABLES:
                oracle.assert_same_rows(table, expected[table], oracle.read_table(model, table))
            handled = oracle.handled_counts(events)
            rows = faults.metadata(model)
            assert all(rows[n]["events_processed"] == handled[n] for n in handled), rows
