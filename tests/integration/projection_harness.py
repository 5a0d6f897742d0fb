"""A projection author's test harness: run one projection on a list of
events against a throwaway database and assert the rows it writes
(README, "Adding a projection").

    from eventgen import at

    def test_a_widget_seen_twice(projection_case):
        w = uuid.uuid4()
        case = projection_case("widgets")
        case.emit("Widget", w, "WidgetSeen", {"colour": "red"}, at(0, 9))
        case.emit("Widget", w, "WidgetSeen", {"colour": "blue"}, at(0, 10))
        case.emit("Widget", w, "WidgetSeen", {}, at(0, 11))        # bad: no colour
        case.run()
        case.assert_rows("widgets", {w: {"seen": 2, "updated_at": at(0, 10)}})
        assert case.bad == [("WidgetSeen", "field 'colour' is missing")]

`run()` appends the events, runs the real daemon with only that projection
enabled (on_error = "skip", so a bad event is dead-lettered and listed in
`case.bad`) until it has passed them all, and stops it. Then it rebuilds
the projection from scratch with the one-shot `projectord rebuild NAME`: a
rebuild sees only the projection's own tables (src/projection.h), so SQL
that names another projection's table fails here, in the projection's own
test, with the rebuild's error. `assert_rows` checks the rows as the
daemon left them and as the rebuild made them.
"""

import os
import subprocess

from daemon import (BIN, Daemon, EXIT_OK, ProjectordError, command, head_position, libconfig_string,
                    metadata, run_cli)
from eventgen import Script


def compiled_projections(projection_dir=None):
    """{name: [table, ...]} of the projections compiled into the binary
    (and declared in projection_dir), from `projectord list`."""
    env = dict(os.environ, PROJECTORD_PROJECTION_DIR=projection_dir) if projection_dir else None
    out = subprocess.run(command(["list"]), stdout=subprocess.PIPE, check=True, text=True,
                         env=env).stdout
    projections, name = {}, None
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.split(" ", 1)[0]
            projections[name] = []
        elif line.strip().startswith("tables:"):
            projections[name] = [t.split(".", 1)[1] for t in line.split()[1:]]
    return projections


def read_rows(conn, table):
    """read_model.table as {primary key: {column: value}}; a composite key
    is a tuple."""
    key = [r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_index i"
        "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)", (f"read_model.{table}",)).fetchall()]
    if not key:
        raise AssertionError(f"read_model.{table} has no primary key: the harness keys rows by it")
    cur = conn.execute(f'SELECT * FROM read_model."{table}"')
    names = [d.name for d in cur.description]
    rows = {}
    for values in cur.fetchall():
        row = dict(zip(names, values))
        k = tuple(row.pop(c) for c in key)
        rows[k[0] if len(k) == 1 else k] = row
    return rows


def diff(expected, actual):
    """What differs, comparing only the columns each expected row names."""
    lines = []
    for k in sorted(set(expected) | set(actual), key=str):
        if k not in actual:
            lines.append(f"  missing row {k!r}: {expected[k]}")
        elif k not in expected:
            lines.append(f"  unexpected row {k!r}: {actual[k]}")
        else:
            lines += [f"  row {k!r}: {c} expected {v!r}, got {actual[k].get(c, '(no such column)')!r}"
                      for c, v in expected[k].items() if actual[k].get(c) != v]
    return "\n".join(lines)


class ProjectionCase:
    """One projection, one list of events, the rows they give. See the
    module's docstring."""

    def __init__(self, db, workdir, projection, batch_size=1000, projection_dir=None):
        self.db = db
        self.projection = projection
        compiled = compiled_projections(projection_dir)
        if projection not in compiled:
            raise AssertionError(f"{BIN} has no projection {projection!r} (it has {sorted(compiled)})")
        self.tables = compiled[projection]
        settings = {name: {"enabled": name == projection, "on_error": "skip"} for name in compiled}
        self.daemon = Daemon(db.conninfo, workdir, name=f"case-{projection}",
                             projections=settings, batch_size=batch_size,
                             extra=f"projection_dir = {libconfig_string(projection_dir)};"
                             if projection_dir else "")
        self.script = Script()
        self.live_rows = None
        self.status = None  # the status row the daemon left (events_processed, _ignored, ...)
        self.bad = None     # [(event_type, error)] of the dead letters, in position order

    def emit(self, aggregate_type, aggregate_id, event_type, data, at=None):
        """Add one event to the aggregate's stream (versions are counted)."""
        self.script.emit(aggregate_type, aggregate_id, event_type, data, at)
        return self

    def append(self, commands):
        """Add eventgen Commands (e.g. a Script's), in order."""
        self.script.commands += list(commands)
        return self

    def run(self, timeout=30):
        """Append, apply with the daemon, rebuild with the one-shot command."""
        self.db.append(self.script.commands)
        self.daemon.start()
        try:
            self.daemon.wait_caught_up(timeout=timeout, allow_skipped=True)
        finally:
            rc = self.daemon.stop()
        if rc != EXIT_OK:
            raise ProjectordError(f"projectord exited with {rc}:\n{self.daemon.log(40)}")
        with self.db.connect() as conn:
            self.status = metadata(conn)[self.projection]
            if self.status["last_position"] < head_position(conn):
                raise ProjectordError(f"{self.projection} stopped before the last event: {self.status}")
            self.live_rows = {t: read_rows(conn, t) for t in self.tables}
            self.bad = [tuple(r) for r in conn.execute(
                "SELECT event_type, error FROM read_model.projection_dead_letter"
                " WHERE projection_name = %s ORDER BY global_position", (self.projection,))]
        result = run_cli(["-c", self.daemon.config_path, "rebuild", self.projection], timeout=timeout)
        if result.returncode != EXIT_OK:
            raise ProjectordError(f"`projectord rebuild {self.projection}` exited with "
                                  f"{result.returncode}:\n{result.stdout}{result.stderr}")
        return self

    def rows(self, table):
        """The table's rows now (after run(): as the rebuild made them)."""
        with self.db.connect() as conn:
            return read_rows(conn, table)

    def assert_rows(self, table, expected):
        """The table holds exactly the rows of expected ({key: {column:
        value}}; only the columns named are compared), both as the daemon
        left it and as the rebuild made it."""
        assert self.live_rows is not None, "run() first"
        for when, actual in (("applied by the daemon", self.live_rows[table]),
                             ("rebuilt", self.rows(table))):
            d = diff(expected, actual)
            assert not d, f"read_model.{table} {when} differs:\n{d}"
