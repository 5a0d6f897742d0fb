#!/usr/bin/python3
"""A throwaway PostgreSQL cluster for tests and demos.

Each cluster lives in its own directory (data dir, unix socket, server log)
and listens on 127.0.0.1 on a free port, so several clusters can run side by
side (ctest runs test files in parallel). PostgreSQL refuses to run as root,
so when we are root the server binaries run as the `postgres` user.

As a module:   c = PgCluster(tempdir); c.start(); c.create_database("app")
               PgCluster(tempdir, settings={"ssl": "on"}, hba=PASSWORD_HBA) for
               a cluster with extra server settings or its own pg_hba.conf
As a CLI:      pgcluster.py start DIR            -> prints a conninfo
               pgcluster.py createdb DIR NAME [--empty]
                                                 -> applies sql/ (not with --empty),
                                                    prints a conninfo
               pgcluster.py stop DIR [--mode immediate]
"""

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SQL_DIR = os.environ.get("PROJECTORD_SQL_DIR", os.path.join(REPO_ROOT, "sql"))
STATE_FILE = "cluster.json"

# Durability is worthless for a throwaway cluster; speed is not. Commit
# timestamps are on because operators may enable them and the daemon must
# not mind. A non-UTC server time zone makes "day = placed_at in UTC" bugs
# show up in the tests.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "track_commit_timestamp": "on",
    "timezone": "'Asia/Kolkata'",
    "log_timezone": "'UTC'",
    "log_line_prefix": "'%m [%p] %q%a@%d '",
    "log_min_messages": "warning",
    "log_connections": "off",
}

# pg_hba.conf for a cluster where every role but postgres needs a password
# over TCP (SCRAM): the harness itself keeps connecting as postgres without
# one. The default (hba=None) is initdb's: trust for everyone.
PASSWORD_HBA = [
    "local all all trust",
    "host all postgres 127.0.0.1/32 trust",
    "host all postgres ::1/128 trust",
    "host all all 127.0.0.1/32 scram-sha-256",
    "host all all ::1/128 scram-sha-256",
]


# Transaction ids per pg_xact segment: pg_resetwal -x takes the first id of one.
XACT_SEGMENT = 1048576


def xid_segment_above(xid, segments=1):
    """The first id of the `segments`-th pg_xact segment after the one holding xid."""
    return (xid // XACT_SEGMENT + segments) * XACT_SEGMENT


def dump_database(conninfo):
    """pg_dump -Fc of a whole database (one snapshot: the events, the read
    model and the checkpoints agree); returns the archive's bytes."""
    proc = subprocess.run([f"{PG_BIN}/pg_dump", "-Fc", "-d", conninfo], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def restore_database(cluster, name, dump, roles=("projectord",)):
    """A database `name` of `cluster` holding exactly the pg_dump -Fc archive
    `dump` (dropped first if it exists, sessions and all); returns its
    conninfo. Roles are per cluster and the dump grants to them: `roles`
    are created first where missing."""
    cluster.drop_database(name)
    cluster.create_database(name, schema=False)
    for role in roles:
        cluster.psql("postgres", "-c", "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE "
                     f"rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF; END$$")
    proc = subprocess.run([f"{PG_BIN}/pg_restore", "--exit-on-error", "-d", cluster.conninfo(name)],
                          input=dump, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_restore exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return cluster.conninfo(name)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(argv):
    """Prefix argv so it runs as `postgres` when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


def run(argv, **kwargs):
    """Run a command, raising with its output when it fails."""
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


class PgCluster:
    """One initdb'd cluster in `basedir` (created if needed).

    The port is chosen at init time and kept in basedir/cluster.json, so a
    restart comes back on the same port (clients reconnect to it) and the
    CLI can find a cluster started by an earlier invocation.
    """

    def __init__(self, basedir, sql_dir=SQL_DIR, settings=None, hba=None):
        """settings: extra server settings {name: value as written in
        postgresql.conf}, on top of SERVER_SETTINGS; hba: the lines of
        pg_hba.conf (None: initdb's trust). Both apply from init on."""
        self.basedir = os.path.abspath(basedir)
        self.datadir = os.path.join(self.basedir, "data")
        self.logfile = os.path.join(self.basedir, "postgres.log")
        self.sql_dir = sql_dir
        self.port = None
        self.settings = dict(settings or {})
        self.hba = list(hba) if hba is not None else None
        self._load_state()

    # -- lifecycle ---------------------------------------------------------

    def init(self):
        """initdb into basedir/data; idempotent."""
        if os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            return
        os.makedirs(self.basedir, exist_ok=True)
        self._give_to_postgres(self.basedir)
        self._check_reachable()
        run(as_postgres([f"{PG_BIN}/initdb", "-D", self.datadir, "-A", "trust", "-U", "postgres",
                         "--nosync", "-E", "UTF8", "--locale=C", "--no-instructions"]))
        self.port = free_port()
        self._write_settings()
        if self.hba is not None:
            self._write_hba()
        self._save_state()

    def start(self, timeout=60):
        """Start the server and wait until it accepts connections.

        A free port may be taken by someone else between choosing and
        binding it (parallel test runs); then pick another and retry.
        """
        self.init()
        for attempt in range(3):
            try:
                self._pg_ctl("start", "-w", "-t", str(timeout), "-l", self.logfile)
                return self
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.log_tail(20):
                    raise
                self.port = free_port()
                self._write_settings()
                self._save_state()
        return self

    def stop(self, mode="fast"):
        """Stop the server: 'fast' (clean) or 'immediate' (crash, recovery on start)."""
        if self.is_running():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self, mode="fast"):
        """Stop with `mode`, then start again on the same port."""
        self.stop(mode)
        self.start()

    def reload(self):
        """Make the server re-read its configuration files (pg_hba.conf too)."""
        if self.is_running():
            self._pg_ctl("reload")

    def set_hba(self, lines):
        """Replace pg_hba.conf (initialising the cluster if needed); a
        running server reloads it."""
        self.init()
        self.hba = list(lines)
        self._write_hba()
        self._save_state()
        self.reload()

    def install_file(self, src, name, mode=0o600):
        """Copy src into the data directory as `name`, owned by the server
        user (e.g. TLS certificates and keys, which must not be readable by
        others); returns the path."""
        self.init()
        dest = os.path.join(self.datadir, name)
        shutil.copyfile(src, dest)
        os.chmod(dest, mode)
        self._give_to_postgres(dest)
        return dest

    def make_standby(self, basedir):
        """A streaming replica of this running cluster in basedir (a hot
        standby: pg_basebackup -R, its own port and socket), started;
        returns its PgCluster. The primary's initdb pg_hba.conf trusts
        replication connections from 127.0.0.1."""
        standby = PgCluster(basedir, sql_dir=self.sql_dir, hba=self.hba, settings=dict(
            self.settings, primary_conninfo=f"'host=127.0.0.1 port={self.port} user=postgres'"))
        os.makedirs(standby.basedir, exist_ok=True)
        standby._give_to_postgres(standby.basedir)
        standby._check_reachable()
        run(as_postgres([f"{PG_BIN}/pg_basebackup", "-D", standby.datadir, "-R", "-X", "stream",
                         "-c", "fast", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]))
        standby.port = free_port()
        standby._write_settings()  # replaces the primary_conninfo -R wrote with the same
        standby._save_state()
        return standby.start()

    def promote(self):
        """Promote a standby to a primary and wait until it is one."""
        self._pg_ctl("promote", "-w", "-t", "60")

    def wait_replayed(self, standby, timeout=30):
        """Wait until standby has replayed everything this primary wrote so far."""
        lsn = self.psql_value("postgres", "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while standby.psql_value("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") != "t":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{standby.basedir} did not replay up to {lsn} in {timeout}s")
            time.sleep(0.05)

    def next_xid(self):
        """The cluster's next transaction id (the xmax of a fresh snapshot)."""
        return int(self.psql_value("postgres", "SELECT pg_snapshot_xmax(pg_current_snapshot())"))

    def set_next_xid(self, xid):
        """Stop the cluster (fast), set its next transaction id with
        pg_resetwal -x, start it again on the same port. Only forward: ids
        already used would be handed out again. pg_resetwal's safe values
        are the first id of a pg_xact segment (xid_segment_above)."""
        if xid % XACT_SEGMENT:
            raise ValueError(f"{xid} is not the first id of a pg_xact segment")
        self.stop("fast")
        run(as_postgres([f"{PG_BIN}/pg_resetwal", "-x", str(xid), "-D", self.datadir]))
        self.start()

    def psql_value(self, dbname, sql):
        """The one value one statement returns, as psql prints it."""
        return self.psql(dbname, "-At", "-c", sql).strip()

    def cleanup(self):
        """Stop (immediately: nothing to keep) and remove everything."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def is_running(self):
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            return False
        proc = subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "status"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc.returncode == 0

    # -- databases ---------------------------------------------------------

    def conninfo(self, dbname="postgres"):
        if self.port is None:
            raise RuntimeError(f"no cluster in {self.basedir} (run start first)")
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user=postgres"

    def psql(self, dbname, *args):
        """Run psql against dbname, stopping at the first error."""
        return run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(dbname)] + list(args))

    def migrations(self, sql_dir=None):
        """The migrations of sql_dir (default: this cluster's) in the order
        Flyway applies them: the versioned sql/V*.sql in lexical order, then
        the repeatable sql/repeatable/R__*.sql in the order of their names
        (kept apart so that applying every sql/*.sql in lexical order, as
        SPEC §2 allows, never runs one first)."""
        sql_dir = sql_dir or self.sql_dir
        files = sorted(glob.glob(os.path.join(sql_dir, "V*.sql")))
        if not files:
            raise RuntimeError(f"no migrations in {sql_dir}")
        return files + sorted(glob.glob(os.path.join(sql_dir, "repeatable", "R__*.sql")))

    def apply_schema(self, dbname, files=None):
        """Apply files (default: every migration) to dbname with psql -v
        ON_ERROR_STOP=1 -f, in one psql run (-f FILE for each, in order; it
        stops at the first error): several times faster than one psql per
        file."""
        args = []
        for path in self.migrations() if files is None else files:
            args += ["-f", path]
        self.psql(dbname, *args)

    def create_database(self, name, schema=True, encoding=None):
        """CREATE DATABASE name (with sql/ applied); returns its conninfo.
        encoding: a server encoding other than the cluster's UTF8, e.g.
        "LATIN1" (from template0, locale C, as createdb -E ... --locale=C)."""
        options = f" ENCODING '{encoding}' TEMPLATE template0 LOCALE 'C'" if encoding else ""
        self.psql("postgres", "-c", f'CREATE DATABASE "{name}"{options}')
        if schema:
            self.apply_schema(name)
        return self.conninfo(name)

    def drop_database(self, name):
        self.psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- diagnostics -------------------------------------------------------

    def log_tail(self, lines=60):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    # -- internals ---------------------------------------------------------

    def _pg_ctl(self, *args):
        return run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.datadir] + list(args)))

    def _write_settings(self):
        """Our settings go to postgresql.auto.conf, which wins over postgresql.conf."""
        settings = dict(SERVER_SETTINGS, **self.settings, port=str(self.port),
                        unix_socket_directories=f"'{self.basedir}'")
        text = "".join(f"{k} = {v}\n" for k, v in settings.items())
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "w") as f:
            f.write(text)
        self._give_to_postgres(path)

    def _write_hba(self):
        path = os.path.join(self.datadir, "pg_hba.conf")
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in self.hba))
        self._give_to_postgres(path)

    def _check_reachable(self):
        """Fail clearly when the server user can not reach basedir
        (e.g. it is under a 0700 directory such as a root-owned mktemp -d)."""
        if subprocess.run(as_postgres(["test", "-w", self.basedir])).returncode != 0:
            raise RuntimeError(f"{self.basedir} is not writable by the postgres user: "
                               "choose a directory whose parents it can traverse")

    def _give_to_postgres(self, path):
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def _save_state(self):
        state = {"port": self.port, "settings": self.settings, "hba": self.hba}
        with open(os.path.join(self.basedir, STATE_FILE), "w") as f:
            json.dump(state, f)

    def _load_state(self):
        """A cluster made earlier (e.g. by the CLI) keeps its port, and its
        settings and pg_hba.conf unless the caller gave others."""
        try:
            with open(os.path.join(self.basedir, STATE_FILE)) as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        self.port = state["port"]
        if not self.settings:
            self.settings = state.get("settings") or {}
        if self.hba is None:
            self.hba = state.get("hba")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Throwaway PostgreSQL cluster for projectord tests")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="init (if needed) and start; print the conninfo")
    p.add_argument("dir")
    p = sub.add_parser("createdb", help="create a database with sql/ applied; print its conninfo")
    p.add_argument("dir")
    p.add_argument("name")
    p.add_argument("--empty", action="store_true", help="without the schema (projectord migrate makes it)")
    p = sub.add_parser("stop", help="stop the cluster")
    p.add_argument("dir")
    p.add_argument("--mode", default="fast", choices=["smart", "fast", "immediate"])
    p = sub.add_parser("destroy", help="stop the cluster and remove DIR")
    p.add_argument("dir")
    args = parser.parse_args(argv)

    cluster = PgCluster(args.dir)
    try:
        if args.command == "start":
            cluster.start()
            print(cluster.conninfo())
        elif args.command == "createdb":
            print(cluster.create_database(args.name, schema=not args.empty))
        elif args.command == "stop":
            cluster.stop(args.mode)
        elif args.command == "destroy":
            cluster.cleanup()
    except RuntimeError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        if cluster.port:
            print(cluster.log_tail(20), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
