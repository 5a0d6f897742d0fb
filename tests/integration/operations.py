#!/usr/bin/python3
"""The randomized operations test (issue 16): a seeded schedule of operator
actions and faults, Jepsen-nemesis style, under concurrent appends, then an
exact check.

    /usr/bin/python3 tests/integration/operations.py --seed 7 --minutes 60
    /usr/bin/python3 tests/integration/operations.py --seed 7 --minutes 2 --print-schedule

The schedule is a pure function of (seed, seconds, profile): `make_schedule`
draws the whole list of operations from random.Random(seed) before anything
runs, and the run prints it. Running a seed again runs the same operations
in the same order with the same arguments; only their timing against the
daemons varies.

What runs throughout: writers (faults.Writers: plain ones, one that takes
its transaction id early and appends later, one holding long transactions
that append nothing) appending valid event mixes with *bad events* mixed in
(see BAD_KINDS: each is bad whatever happens around it, and carries
`metadata.ops_bad` so the check knows which ones the test meant to be bad).

The operations (OP_KINDS):

    sighup        a random valid config change (batch_size, poll_interval_ms,
                  min_read_interval_ms, on_error, enabling and disabling
                  projections), written to every instance's file (or, now
                  and then, to one instance's only) and SIGHUP
    burst         a backlog of events in big transactions, then SIGHUPs that
                  toggle batch_size while the daemons catch up
    rebuild       `projectord rebuild NAME...|--all` in the background; some
                  interrupted by kill -9 of the command, or of the instance
                  doing the rebuild (the command itself when it rebuilds
                  in-process)
    rebuild_request  the status table's request column set directly
                  (rebuild_requested_at), as the command does
    resume        `projectord resume NAME`
    replay        `projectord replay-dead-letters NAME`
    start         a second or third instance started
    kill          kill -9 of an instance (the first one is restarted after a
                  moment; the others stay down until a later `start`)
    terminate     pg_terminate_backend of a random subset of the daemons'
                  sessions
    pg_restart    PostgreSQL restarted, fast or immediate
    declared      the projections switched between their compiled-in and
                  declared forms (projection_dir = projections/declared, or
                  unset) by SIGHUP, on every instance or on one
    restore       the database dumped (pg_dump -Fc) under load and restored
                  into the other cluster (a spare one, made at the first
                  restore; then back and forth), whose transaction-id
                  counter is behind the dump's ids or ahead of them
                  (pg_resetwal -x moves one forward, never back); the read
                  model and checkpoints from the dump or from scratch; the
                  writers, commands and instances on the old cluster
                  stopped (SIGTERM or kill -9), everything pointed at the new
                  one, `adopt-restored-store` run as the owner before the
                  instances start or after (behind: they must first refuse,
                  PJ003, nothing applied past the window the dump left
                  open, status --check 1, then resume once adopted; ahead:
                  nothing reported); before new writers start, a
                  projection live at the head must have counted every
                  stored event it handles; then a new set of writers. Events committed
                  after the dump are lost, as in reality: the final check's
                  bookkeeping restarts from what the new cluster holds.

The end: writers stopped; every instance's config set to a known state
(every projection enabled, on_error = "skip"), SIGHUP; the first instance
started if it is down; every failed projection resumed (one that failed
under on_error = "stop" before the switch needs it); every background
command must then finish; every projection caught up to the head, live, with
no request pending; a probe of fresh events must be applied (so "caught up"
means "live", not "stopped at the head by chance"). Then the exact check
(`final_check`):

- every read-model table equals the oracle's fold of the stored events
  minus the bad ones (a skipped bad event has no effect), event_type_stats
  the count of all stored events;
- per projection, events_processed equals the stored events it handles that
  are not bad, events_skipped its bad events, events_ignored 0,
  last_position the head;
- the dead letters are exactly the bad events, per projection, each one
  bad by an independent reading of its payload (`truly_bad`);
- the store holds exactly the events the writers and the test committed
  (since the last restore: what it restored, then their commits);
- every instance exits 0 on SIGTERM.

A failure names the projection and, where the read model allows it, the
positions of the events that are missing or applied twice (`diagnose`),
prints the status rows and each daemon's log tail, and keeps the logs.
"""

import argparse
import collections
import dataclasses
import heapq
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import faults  # noqa: E402
import oracle  # noqa: E402
from daemon import (BIN, DAEMON_USER, DECLARED_DIR, EXIT_FAILURE, PROJECTIONS, SLOWDOWN, Daemon,  # noqa: E402
                    as_user, clean_env, command, config_text, metadata)
from eventgen import Command, append_all, event  # noqa: E402
from pgcluster import (XACT_SEGMENT, PgCluster, dump_database, restore_database,  # noqa: E402
                       xid_segment_above)

OWNER = {t: p for p, types in oracle.HANDLED.items() for t in types}
INSTANCES = (1, 2, 3)

# The reserved address: registered once before anything else, so a later
# registration with it (in any case) is a unique violation (SQLSTATE 23505)
# whatever the order of the other appends.
TAKEN_EMAIL = "taken@ops.example"

# Config values a SIGHUP may choose (all valid per SPEC §7 / README).
BATCH_SIZES = [1, 7, 100, 1000, 5000]
POLL_INTERVALS = [50, 200, 1000, 5000]
MIN_READ_INTERVALS = [0, 2, 50, 500]
DEFAULT_CONFIG = {"batch_size": 1000, "poll_interval_ms": 200, "min_read_interval_ms": 2,
                  "projections": {p: {"enabled": True, "on_error": "skip"} for p in PROJECTIONS}}

# Relative weights of the operations; a profile can narrow them (the
# fixed-seed regression tests do).
OP_WEIGHTS = {"sighup": 10, "burst": 4, "rebuild": 5, "rebuild_request": 2, "resume": 3,
              "replay": 2, "start": 3, "kill": 3, "terminate": 4, "pg_restart": 2, "declared": 2,
              "restore": 1}   # rare: a restore takes seconds (dump, restore, restarts)
PROFILES = {
    "all": OP_WEIGHTS,
    # SIGHUPs that change batch_size while a backlog is caught up (issue 16 defect 1).
    # The instances start with one projection enabled (it reads its windows
    # by itself, not through the shared reads) and the bursts never change
    # the enabled set.
    "batch-toggle": {"burst": 1},
    # Enabling and disabling by SIGHUP with several instances (defects 3 and 4).
    "enable-disable": {"sighup": 6, "start": 2, "kill": 1},
    # Rebuilds while ownership moves between instances (defect 7).
    "rebuild-ownership": {"rebuild": 4, "start": 2, "kill": 2, "burst": 1},
    # Restores into the other cluster (defect 2) among what they meet most:
    # rebuilds in progress, several instances, reloads, PostgreSQL restarts.
    "restore": {"restore": 3, "sighup": 2, "rebuild": 2, "start": 1, "kill": 1, "terminate": 1,
                "pg_restart": 1, "burst": 1},
}

# How long the end phase may take to bring every projection live at the
# head, with every command finished (scaled by SLOWDOWN).
SETTLE_DEADLINE_S = 120
# The most the end phase waits while projections still move (scaled too).
SETTLE_CAP_S = 600


def takes_sighup(pid, timeout=5.0):
    """Wait until process pid blocks or catches SIGHUP (projectord blocks it
    from main()'s first line until its watcher takes it): before that, in
    the dynamic loader or the sanitizer's start-up, SIGHUP's default action
    kills it, which no operator's reload can meet (systemd reloads a
    Type=notify service only once it said READY=1). False if it never does."""
    deadline = time.monotonic() + timeout * SLOWDOWN
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                masks = [line.split(":", 1)[1] for line in f if line.startswith(("SigBlk", "SigCgt"))]
        except OSError:
            return False
        if any(int(v.strip(), 16) & (1 << (signal.SIGHUP - 1)) for v in masks):
            return True
        time.sleep(0.01)
    return False


# --------------------------------------------------------------------------
# The schedule: a pure function of the seed
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Op:
    n: int
    at: float              # seconds after the schedule starts
    kind: str
    args: tuple            # ((key, value), ...): hashable, printable, replayable

    @property
    def a(self):
        return dict(self.args)

    def __str__(self):
        shown = ", ".join(f"{k}={v}" for k, v in self.args if k != "config")  # config: the changes
        return f"#{self.n:03d} t+{self.at:6.1f}s {self.kind}({shown})"


def _freeze(d):
    return tuple((k, _freeze_value(v)) for k, v in d.items())


def _freeze_value(v):
    if isinstance(v, dict):
        return _freeze(v)
    if isinstance(v, list):
        return tuple(_freeze_value(x) for x in v)
    return v


def _config_change(rng, cfg):
    """Mutate cfg (the model of the fleet's config) by 1-3 random valid
    changes; returns a description of them."""
    changes = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        what = rng.choice(["batch_size", "poll_interval_ms", "min_read_interval_ms", "on_error",
                           "on_error", "enabled", "enabled"])
        if what == "batch_size":
            cfg["batch_size"] = rng.choice(BATCH_SIZES)
            changes.append(f"batch_size={cfg['batch_size']}")
        elif what == "poll_interval_ms":
            cfg["poll_interval_ms"] = rng.choice(POLL_INTERVALS)
            changes.append(f"poll_interval_ms={cfg['poll_interval_ms']}")
        elif what == "min_read_interval_ms":
            cfg["min_read_interval_ms"] = rng.choice(MIN_READ_INTERVALS)
            changes.append(f"min_read_interval_ms={cfg['min_read_interval_ms']}")
        elif what == "on_error":
            p = rng.choice(PROJECTIONS)
            cfg["projections"][p]["on_error"] = rng.choice(["stop", "skip"])
            changes.append(f"{p}.on_error={cfg['projections'][p]['on_error']}")
        else:
            p = rng.choice(PROJECTIONS)
            cfg["projections"][p]["enabled"] = not cfg["projections"][p]["enabled"]
            changes.append(f"{p}.enabled={cfg['projections'][p]['enabled']}")
    return changes


def initial_config(seed, profile="all"):
    """The config every instance starts with (part of what a seed replays)."""
    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
    if profile == "batch-toggle":
        only = random.Random(f"projectord-ops/{seed}/{profile}/initial").choice(PROJECTIONS)
        for p in PROJECTIONS:
            cfg["projections"][p]["enabled"] = p == only
    return cfg


def describe_config(cfg):
    off = [p for p in PROJECTIONS if not cfg["projections"][p]["enabled"]]
    stop = [p for p in PROJECTIONS if cfg["projections"][p]["on_error"] == "stop"]
    return (f"batch_size={cfg['batch_size']} poll_interval_ms={cfg['poll_interval_ms']} "
            f"min_read_interval_ms={cfg['min_read_interval_ms']} disabled={off or 'none'} "
            f"on_error=stop: {stop or 'none'} declared={bool(cfg.get('declared'))}")


def make_schedule(seed, seconds, profile="all"):
    """The list of operations for this seed, duration and profile: drawn
    from random.Random(seed) alone, before anything runs (so a seed replays
    exactly). Times are spread over `seconds` with jitter."""
    rng = random.Random(f"projectord-ops/{seed}/{profile}")
    weights = PROFILES[profile]
    kinds, w = list(weights), list(weights.values())
    count = max(3, round(seconds / 5.0))          # about one operation every 5 s
    start, end = min(5.0, 0.05 * seconds), seconds * 0.95
    slot = (end - start) / count
    cfg = initial_config(seed, profile)
    up = {1}                                       # the model's running instances
    ops = []
    for n in range(count):
        at = round(start + n * slot + rng.uniform(0, 0.8 * slot), 1)
        kind = rng.choices(kinds, w)[0]
        if kind == "start" and up >= set(INSTANCES):
            kind = "kill"
        if kind == "kill" and not up:
            kind = "start"
        args = {}
        if kind == "declared":
            # The four projections switched between their compiled-in and
            # declared forms (projection_dir), on every instance or on one:
            # same tables, so the read model must go on as if nothing happened.
            cfg["declared"] = not cfg.get("declared", False)
            args["changes"] = [f"projection_dir={'projections/declared' if cfg['declared'] else 'unset'}"]
            args["config"] = json.loads(json.dumps(cfg))
            args["scope"] = "all" if rng.random() < 0.7 else f"inst{rng.choice(INSTANCES)}"
        elif kind == "sighup":
            args["changes"] = _config_change(rng, cfg)
            args["config"] = json.loads(json.dumps(cfg))
            args["scope"] = "all" if rng.random() < 0.85 else f"inst{rng.choice(INSTANCES)}"
        elif kind == "burst":
            args["events"] = rng.choice([5000, 10000, 20000, 40000])
            args["seed"] = rng.randrange(1 << 30)
            args["bad"] = rng.choice([0, 2, 5])
            # One transaction makes one big window, which a small batch_size
            # takes many fetches to work through; smaller ones come as
            # several windows while the daemon is live.
            args["per_tx"] = rng.choice([args["events"], args["events"], 2000])
            toggles, t = [], 0.0
            for _ in range(rng.randint(6, 16)):
                t = round(t + rng.uniform(0.02, 0.4), 2)
                toggles.append((t, rng.choice([100, 5000, 1, 1000, 100, 5000])))
            args["toggles"] = toggles
            cfg["batch_size"] = toggles[-1][1]
            # Now and then the burst comes with a change of the enabled set
            # (one projection alone reads windows by itself, not through
            # the instance's shared reads), or with a rebuild of one
            # projection (its shadow reads by itself too), both of which
            # the batch_size toggles then meet.
            r = rng.random()
            if r < 0.35 and profile != "batch-toggle":
                only = rng.choice(PROJECTIONS)
                for p in PROJECTIONS:
                    cfg["projections"][p]["enabled"] = p == only
                args["enable_only"] = only
            elif r < 0.6:
                args["rebuild"] = rng.choice(PROJECTIONS)
        elif kind == "rebuild":
            r = rng.random()
            names = ["--all"] if r < 0.25 else sorted(rng.sample(PROJECTIONS, rng.choice([1, 1, 2])))
            args["names"] = names
            args["interrupt"] = rng.choices(["none", "kill_command", "kill_doer"], [5, 2, 3])[0]
            args["after"] = round(rng.uniform(0.2, 4.0), 2)
            args["restart_after"] = round(rng.uniform(0.0, 3.0), 2)
        elif kind in ("rebuild_request", "resume", "replay"):
            args["name"] = rng.choice(PROJECTIONS)
        elif kind == "start":
            idx = rng.choice(sorted(set(INSTANCES) - up))
            up.add(idx)
            args["instance"] = idx
        elif kind == "kill":
            idx = rng.choice(sorted(up))
            args["instance"] = idx
            # The first instance is always restarted; the others stay down
            # until a later `start`, or come back at once now and then.
            if idx == 1 or rng.random() < 0.3:
                args["restart_after"] = round(rng.uniform(0.0, 3.0), 2)
            else:
                up.discard(idx)
        elif kind == "terminate":
            args["seed"] = rng.randrange(1 << 30)
        elif kind == "pg_restart":
            args["mode"] = rng.choice(["fast", "immediate"])
        elif kind == "restore":
            # The new cluster's counter behind the old one's (the restored
            # ids are beyond its snapshots: refused until adopted) or ahead
            # (nothing to report); the read model and checkpoints from the
            # dump or from scratch; adopt-restored-store before the
            # instances start or after (they must refuse with PJ003 first
            # when behind); the old instances stopped by SIGTERM or kill -9.
            args["direction"] = rng.choice(["behind", "ahead"])
            args["checkpoints"] = rng.choice(["dump", "scratch"])
            args["adopt"] = rng.choice(["before", "after"])
            args["stop"] = rng.choice(["term", "kill"])
            args["segments"] = rng.choice([1, 2, 4])    # how far a counter moves (pg_xact segments)
            args["seed"] = rng.randrange(1 << 30)
        ops.append(Op(n, at, kind, _freeze(args)))
    return ops


# --------------------------------------------------------------------------
# Events: valid mixes with bad events mixed in
# --------------------------------------------------------------------------

def _bad_marker(kind):
    return {"ops_bad": kind}


def bad_commands(rng, count):
    """`count` commands, each in a fresh stream, each holding one bad event
    (some with valid events around it in the same stream)."""
    out = []
    for _ in range(count):
        kind = rng.choice(BAD_KINDS)
        out.append(BAD_BUILDERS[kind](rng, kind))
    return out


def _fresh(rng):
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _bad(event_type, data, kind):
    return event(event_type, data, metadata=_bad_marker(kind))


def _b_user_no_email(rng, kind):
    return Command("User", _fresh(rng), 0, [_bad("UserRegistered", {"first_name": "no email",
                                                                  "last_name": "L"}, kind)])


def _b_user_taken_email(rng, kind):
    email = "".join(c.upper() if rng.random() < 0.5 else c for c in TAKEN_EMAIL)
    return Command("User", _fresh(rng), 0, [_bad("UserRegistered", {
        "email": email, "first_name": "dup", "last_name": "L"}, kind)])


def _b_user_change_to_taken(rng, kind):
    """A valid registration, an email change to the reserved address (a
    unique violation found by PostgreSQL, maybe in a bulk statement), then
    a login that applies."""
    uid = _fresh(rng)
    return Command("User", uid, 0, [
        event("UserRegistered", {"email": f"ops.{uid.hex}@example.com", "first_name": "F",
                                 "last_name": "L"}),
        _bad("UserEmailChanged", {"email": TAKEN_EMAIL.upper()}, kind),
        event("UserLoggedIn", {})])


def _b_product_price_string(rng, kind):
    return Command("Product", _fresh(rng), 0, [_bad("ProductCreated", {
        "sku": "BAD", "name": "price as a string", "price_cents": "5"}, kind)])


def _b_category_not_object(rng, kind):
    return Command("Category", _fresh(rng), 0, [_bad("CategoryCreated", [], kind)])


def _b_order_bad_customer(rng, kind):
    return Command("Order", _fresh(rng), 0, [_bad("OrderPlaced", {
        "customer_id": "not-a-uuid", "items": []}, kind)])


def _b_order_item_zero(rng, kind):
    """A valid order, an item of quantity 0 (bad), then a shipment that applies."""
    return Command("Order", _fresh(rng), 0, [
        event("OrderPlaced", {"customer_id": str(_fresh(rng)), "items": [
            {"product_id": str(_fresh(rng)), "quantity": 1, "unit_price_cents": 100}]}),
        _bad("OrderItemAdded", {"product_id": str(_fresh(rng)), "quantity": 0,
                                "unit_price_cents": 5}, kind),
        event("OrderShipped", {})])


BAD_BUILDERS = {
    "user_no_email": _b_user_no_email,
    "user_taken_email": _b_user_taken_email,
    "user_change_to_taken": _b_user_change_to_taken,
    "product_price_string": _b_product_price_string,
    "category_not_object": _b_category_not_object,
    "order_bad_customer": _b_order_bad_customer,
    "order_item_zero": _b_order_item_zero,
}
BAD_KINDS = sorted(BAD_BUILDERS)


def _is_uuid(text):
    if not isinstance(text, str) or len(text) != 36:
        return False
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def truly_bad(event_type, data):
    """Whether an event is bad by SPEC §4, read from its payload alone,
    without the test's marker: for the kinds this test appends (and a few
    more general rules). Returns the reason, or None."""
    if not isinstance(data, dict):
        return "payload is not an object"
    if event_type == "UserRegistered":
        if not isinstance(data.get("email"), str):
            return "no email"
        if data["email"].lower() == TAKEN_EMAIL:
            return "email taken"
    if event_type == "UserEmailChanged" and isinstance(data.get("email"), str) \
            and data["email"].lower() == TAKEN_EMAIL:
        return "email taken"
    if event_type == "ProductCreated" and (not isinstance(data.get("price_cents"), int)
                                           or isinstance(data.get("price_cents"), bool)):
        return "price_cents is not an integer"
    if event_type == "OrderPlaced" and not _is_uuid(data.get("customer_id")):
        return "customer_id is not a uuid"
    if event_type == "OrderItemAdded" and not (isinstance(data.get("quantity"), int)
                                               and data["quantity"] > 0):
        return "quantity is not positive"
    return None


def valid_mix(seed, n_events):
    return faults.mix(seed, n_events, days=5)


def chunk_with_bad(seed, n_events, n_bad):
    """A valid mix of about n_events with n_bad bad commands at random places.
    seed: an int, or a str (hashed whole by random.Random: no two alias)."""
    commands = valid_mix(seed, n_events)
    rng = random.Random(seed ^ 0x5EED if isinstance(seed, int) else f"{seed}/bad")
    for bad in bad_commands(rng, n_bad):
        commands.insert(rng.randrange(len(commands) + 1), bad)
    return commands


def bad_feeder(seed, chunk_events=2000, bad_per_chunk=6):
    """Writers' refill: endless independent chunks, each with bad events."""
    state = {"n": 0}

    def refill():
        state["n"] += 1
        n = state["n"]
        return chunk_with_bad(seed * 1000 + n if isinstance(seed, int) else f"{seed}/{n}",
                              chunk_events, bad_per_chunk)
    return refill


def n_events(commands):
    return sum(len(c.events) for c in commands)


# --------------------------------------------------------------------------
# The exact check
# --------------------------------------------------------------------------

EVENTS_BUT_BAD_SQL = oracle.EVENTS_SQL.replace(
    " ORDER BY", " WHERE NOT coalesce(e.metadata ? 'ops_bad', false)\n ORDER BY")

BAD_EVENTS_SQL = """
SELECT e.global_position, e.event_type, e.event_data, e.metadata->>'ops_bad'
  FROM event_store.domain_event e
 WHERE coalesce(e.metadata ? 'ops_bad', false)
 ORDER BY 1"""

STREAM_EVENTS_SQL = """
SELECT e.global_position, s.aggregate_type, s.aggregate_id, e.event_type,
       e.aggregate_version, e.event_data, e.occurred_at, coalesce(e.metadata ? 'ops_bad', false)
  FROM event_store.domain_event e JOIN event_store.event_stream s USING (stream_id)
 WHERE s.aggregate_id = %s
 ORDER BY e.global_position"""

# Entity tables whose key is the aggregate id of the stream that built them.
ENTITY_TABLES = {"categories": "catalog", "products": "catalog", "users": "users", "orders": "orders"}


def status_lines(rows, expected=None):
    out = []
    for name in sorted(rows):
        r = rows[name]
        want = f" (expected {expected[name]})" if expected and name in expected else ""
        out.append(f"  {name}: status={r['status']} last_position={r['last_position']} "
                   f"processed={r['events_processed']}{want} skipped={r['events_skipped']} "
                   f"ignored={r['events_ignored']} owner={r['owner']} "
                   f"rebuild_requested_at={r.get('rebuild_requested_at')} "
                   f"last_error={(r.get('last_error') or '')[:160]!r}")
    return out


def diagnose_row(conn, table, key, actual):
    """Which of the stream's events explain an actual row that differs from
    the fold: fold the stream with one event left out, or one event applied
    twice, and name the positions that reproduce the row."""
    events = conn.execute(STREAM_EVENTS_SQL, (key,)).fetchall()
    good = [e[:7] for e in events if not e[7]]
    if not good:
        return f"{table} {key}: no stored event builds this row"

    def row_of(evs):
        rows = oracle.fold(evs).rows[table]
        return rows.get(key)
    missing = [e[0] for i, e in enumerate(good) if row_of(good[:i] + good[i + 1:]) == actual]
    twice = [e[0] for i, e in enumerate(good) if row_of(good[:i + 1] + good[i:]) == actual]
    positions = [e[0] for e in good]
    parts = [f"{table} {key} (stream events at {positions})"]
    if actual is None:
        parts.append("row missing: its creating event was not applied")
    if missing:
        parts.append(f"consistent with the event(s) at {missing} NOT applied")
    if twice:
        parts.append(f"consistent with the event(s) at {twice} applied TWICE")
    if not missing and not twice and actual is not None:
        parts.append("not explained by one lost or repeated event")
    return "; ".join(parts)


def _ranges(positions, limit=12):
    """'1-3, 7, 9-12' for sorted positions (the first `limit` runs)."""
    runs = []
    for p in positions:
        if runs and p <= runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (f", ... ({len(runs)} runs)" if len(runs) > limit else "")


def final_check(conn, committed_events):
    """The exact check of the end phase; returns a list of problems ('' when
    none), each actionable."""
    problems = []
    head = conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]
    stored = conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]
    if committed_events is not None and stored != committed_events:
        problems.append(f"the store holds {stored} events, the writers and the test committed "
                        f"{committed_events}")

    # The bad events: what the test meant, each bad by its payload too.
    bad = conn.execute(BAD_EVENTS_SQL).fetchall()
    bad_by_projection = collections.defaultdict(set)
    for pos, event_type, data, kind in bad:
        if not truly_bad(event_type, data):
            problems.append(f"test bug: event {pos} ({kind}, {event_type}) is marked bad but is not")
        bad_by_projection[OWNER[event_type]].add(pos)

    # The read model against the fold of every event but the bad ones.
    expected = oracle.fold(conn.execute(EVENTS_BUT_BAD_SQL).fetchall()).rows
    expected["event_type_stats"] = oracle.expected_event_stats(conn)
    lost_or_twice = collections.defaultdict(list)
    for table in oracle.TABLES:
        actual = oracle.read_table(conn, table)
        diff = oracle.diff_rows(expected[table], actual, limit=4)
        if not diff:
            continue
        diff = "\n".join(line if len(line) < 400 else line[:400] + " ..." for line in diff.splitlines())
        n_diff = sum(1 for k in set(expected[table]) | set(actual) if expected[table].get(k) != actual.get(k))
        problems.append(f"read_model.{table}: {n_diff} row(s) differ from the fold "
                        f"({len(expected[table])} expected, {len(actual)} actual):\n{diff}")
        if table in ENTITY_TABLES:
            keys = sorted((k for k in set(expected[table]) | set(actual)
                           if expected[table].get(k) != actual.get(k)), key=str)
            lines = [diagnose_row(conn, table, key, actual.get(key)) for key in keys[:200]]
            lost_or_twice[ENTITY_TABLES[table]] += lines[:6]
            lost = sorted(int(p) for line in lines if "NOT applied" in line
                          for p in line.split("at [")[-1].split("]")[0].split(", "))
            if lost:
                lost_or_twice[ENTITY_TABLES[table]].append(
                    f"{table}: of {len(lines)} differing rows diagnosed, "
                    f"{sum('NOT applied' in line for line in lines)} are explained by an event not "
                    f"applied: {len(lost)} event(s) between positions {lost[0]} and {lost[-1]}: "
                    f"{_ranges(lost)}")
        if table == "event_type_stats":
            for t in sorted(set(expected[table]) | set(actual)):
                e = expected[table].get(t, {}).get("event_count", 0)
                a = actual.get(t, {}).get("event_count", 0)
                if e != a:
                    lost_or_twice["event_stats"].append(
                        f"{t}: {e} stored, {a} counted ({'missing' if a < e else 'extra'} {abs(e - a)})")
    for name, lines in sorted(lost_or_twice.items()):
        problems.append(f"{name}: lost or repeated events:\n    " + "\n    ".join(lines))

    # The counters and the head.
    handled = oracle.handled_counts(conn)
    rows = metadata(conn)
    want_processed = {}
    for name in PROJECTIONS:
        r = rows.get(name)
        if r is None:
            problems.append(f"{name}: no status row")
            continue
        facts = []
        # A projection the oracle does not know (one added to the build):
        # only live at the head, below.
        if name in handled:
            want_processed[name] = handled[name] - len(bad_by_projection.get(name, ()))
        if name in handled and r["events_processed"] != want_processed[name]:
            facts.append(f"events_processed {r['events_processed']} != {want_processed[name]} "
                         "(stored events it handles, minus bad ones)")
        if name in handled and r["events_skipped"] != len(bad_by_projection.get(name, ())):
            facts.append(f"events_skipped {r['events_skipped']} != {len(bad_by_projection.get(name, ()))} "
                         "bad events")
        if r["events_ignored"] != 0:
            facts.append(f"events_ignored {r['events_ignored']} != 0 (applied out of order?)")
        if r["last_position"] != head:
            facts.append(f"last_position {r['last_position']} != head {head}")
        if r["status"] != "live":
            facts.append(f"status {r['status']} (last_error {r['last_error']!r})")
        if facts:
            problems.append(f"{name}: " + "; ".join(facts))

    # The dead letters: exactly the bad events, once each.
    letters = conn.execute("""
        SELECT d.projection_name, d.global_position, d.event_type, e.event_type, e.event_data,
               d.event_id = e.event_id, d.payload = e.event_data
          FROM read_model.projection_dead_letter d
          LEFT JOIN event_store.domain_event e USING (global_position)""").fetchall()
    got = collections.defaultdict(list)
    for name, pos, d_type, e_type, data, same_id, same_payload in letters:
        got[name].append(pos)
        if e_type is None:
            problems.append(f"dead letter {name}@{pos}: no such event")
            continue
        reason = truly_bad(e_type, data)
        if not reason:
            problems.append(f"dead letter {name}@{pos} ({e_type}) is not a bad event: {data}")
        if OWNER.get(e_type) != name:
            problems.append(f"dead letter {name}@{pos}: {e_type} is not {name}'s")
        if not (same_id and same_payload and d_type == e_type):
            problems.append(f"dead letter {name}@{pos} differs from the stored event")
    for name in PROJECTIONS:
        have, want = got.get(name, []), bad_by_projection.get(name, set())
        if len(have) != len(set(have)):
            problems.append(f"{name}: a dead letter recorded twice")
        if set(have) != want:
            problems.append(f"{name}: dead letters differ from the bad events: not dead-lettered "
                            f"{sorted(want - set(have))[:20]}, dead-lettered but not bad "
                            f"{sorted(set(have) - want)[:20]}")
    if problems:
        problems.append("status rows at the check:\n" + "\n".join(status_lines(rows, want_processed)))
    return problems


# --------------------------------------------------------------------------
# Running a schedule
# --------------------------------------------------------------------------

class Finding(Exception):
    pass


class Instance:
    """One projectord instance of the run: its Daemon, whether the schedule
    wants it up, and its own copy of the config."""

    def __init__(self, run, idx):
        self.idx = idx
        self.name = f"inst{idx}"
        self.daemon = Daemon(run.conninfo, run.workdir, name=self.name, level="info")
        self.config = json.loads(json.dumps(run.config))
        self.write_config(run)
        self.wanted = False
        self.restart_at = None

    def write_config(self, run, cfg=None):
        if cfg is not None:
            self.config = json.loads(json.dumps(cfg))
        c = self.config
        extra = f"min_read_interval_ms = {c['min_read_interval_ms']};"
        if c.get("declared"):
            extra += f'\nprojection_dir = "{DECLARED_DIR}";'
        text = config_text(self.daemon.daemon_conninfo, batch_size=c["batch_size"],
                           poll_interval_ms=c["poll_interval_ms"], level="info",
                           projections=c["projections"], extra=extra)
        tmp = self.daemon.config_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write(text)
        os.replace(tmp, self.daemon.config_path)   # a reload never reads half a file
        self.daemon.projections = c["projections"]

    def repoint(self, run, conninfo):
        """The instance's database is now `conninfo` (a restore moved the
        store to another cluster): the tests' view of it and its config
        file, with its own settings otherwise (database.conninfo takes a
        restart, docs/reference.md)."""
        d = self.daemon
        d.events_conninfo = d.conninfo = conninfo
        d.daemon_conninfo = as_user(conninfo, DAEMON_USER)
        self.write_config(run)

    @property
    def pid(self):
        return self.daemon.proc.pid if self.daemon.proc else None

    def alive(self):
        return self.daemon.alive()


class Background:
    """A one-shot command running beside the schedule."""

    def __init__(self, op, argv, log_path):
        self.op = op
        self.argv = argv
        self.log_path = log_path
        self.out = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, env=clean_env())
        self.started = time.monotonic()
        self.killed = False

    def done(self):
        return self.proc.poll() is not None

    def output(self):
        self.out.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


class OperationsRun:
    def __init__(self, cluster, seed, seconds, profile="all", workdir=None, dbname=None,
                 writers=True, out=print, settle_s=SETTLE_DEADLINE_S):
        self.cluster = cluster
        self.seed = seed
        self.seconds = seconds
        self.profile = profile
        self.schedule = make_schedule(seed, seconds, profile)
        self.workdir = workdir or tempfile.mkdtemp(prefix="projectord-ops-")
        self.dbname = dbname or f"ops_{seed % 100000}_{os.getpid()}"
        self.use_writers = writers
        self.settle_s = settle_s * SLOWDOWN
        self.out = out
        self.config = initial_config(seed, profile)
        self.instances = {}
        self.background = []
        self.deferred = []                  # heap of (time, seq, description, callable)
        self._seq = 0
        # Operations and deferred actions (batch_size toggles, restarts,
        # interruptions) run one at a time; the deferred ones on a thread of
        # their own, so that they come on time while an operation appends a
        # burst.
        self.lock = threading.RLock()
        self.stop_deferred = threading.Event()
        self.deferred_thread = None
        self.findings = []
        self.notes = []
        self.committed_extra = 0            # events appended by the test itself
        self.writers = None
        self.t0 = None
        self.stats = collections.Counter()
        self.conninfo = None
        # Restores move the store between the run's cluster and a spare one
        # (made at the first restore), back and forth: self.cluster is the
        # one in use.
        self.home = cluster
        self.spare = None
        self.writer_gen = 0                 # writers replaced by restores so far
        self.writer_totals = collections.Counter()   # their stats, summed

    # -- output --------------------------------------------------------------

    def elapsed(self):
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def say(self, msg):
        self.out(f"[{self.elapsed():7.1f}s] {msg}")

    def finding(self, msg):
        self.findings.append(msg)
        self.say(f"FINDING: {msg.splitlines()[0]}")

    def print_schedule(self):
        self.out(f"operations schedule: seed {self.seed}, {self.seconds:.0f} s, profile {self.profile}, "
                 f"{len(self.schedule)} operations (replay: operations.py --seed {self.seed} "
                 f"--seconds {self.seconds:g} --profile {self.profile})")
        self.out(f"  initial config: {describe_config(self.config)}")
        for op in self.schedule:
            self.out(f"  {op}")

    # -- setup ---------------------------------------------------------------

    def admin(self):
        return faults.connect(self.conninfo)

    def setup(self):
        if not os.path.exists(BIN):
            raise SystemExit(f"{BIN} does not exist: build first (cmake -B build && cmake --build build)")
        self.conninfo = self.cluster.create_database(self.dbname)
        with self.admin() as conn:
            from eventgen import append
            append(conn, Command("User", uuid.uuid5(uuid.NAMESPACE_DNS, "taken.ops.projectord"), 0, [
                event("UserRegistered", {"email": TAKEN_EMAIL, "first_name": "Taken", "last_name": "T"})]))
        self.committed_extra += 1
        # A backlog to start with, bad events in it.
        initial = chunk_with_bad(self.seed * 7919 + 1, 3000, 4)
        append_all(self.conninfo, initial, per_transaction=500)
        self.committed_extra += n_events(initial)
        for idx in INSTANCES:
            self.instances[idx] = Instance(self, idx)
        self.start_instance(1)
        if self.use_writers:
            self.start_writers()

    def start_writers(self):
        """The writers, on the store in use. After a restore, a new set with
        chunks of their own (fresh streams): the old set's idea of its
        streams' versions died with the events the restore lost."""
        # Another generation's seeds as strings: random.Random aliases some
        # ints (Random(2001) and Random(2001 + (2000 << 32)) are the same
        # stream), and a stream id drawn twice is a writer's version conflict.
        seed = self.seed if not self.writer_gen else f"{self.seed}w{self.writer_gen}"
        self.writers = faults.Writers(self.conninfo, refill=bad_feeder(seed), plain=2, early=1,
                                      holders=1, seed=seed, hold=(0.0, 0.2),
                                      long_hold=(0.5, 3.0), pace=(0.01, 0.05),
                                      name=f"ops-writers{self.writer_gen or ''}").start()

    # -- instances -----------------------------------------------------------

    def start_instance(self, idx):
        inst = self.instances[idx]
        inst.wanted = True
        inst.restart_at = None
        if inst.alive():
            return
        inst.write_config(self, self.config)
        inst.daemon.start()
        self.stats["instance_starts"] += 1
        self.say(f"{inst.name} started (pid {inst.pid})")

    def kill9(self, inst, why):
        if not inst.alive():
            return False
        pid = inst.pid
        inst.daemon.kill(signal.SIGKILL)
        rc = inst.daemon.wait(timeout=30)
        if rc != -signal.SIGKILL:
            self.finding(f"{inst.name} (pid {pid}) exited {rc} before kill -9 ({why}); log tail:\n"
                         + inst.daemon.log(tail=30))
        self.stats["kill9"] += 1
        self.say(f"kill -9 {inst.name} (pid {pid}) {why}")
        return True

    def check_instances(self, context):
        """Every instance the schedule wants up must be up (they are only
        killed on purpose)."""
        for inst in self.instances.values():
            if inst.wanted and inst.restart_at is None and inst.daemon.proc is not None and not inst.alive():
                rc = inst.daemon.proc.returncode
                self.finding(f"{inst.name} (pid {inst.pid}) exited with {rc} {context}; log tail:\n"
                             + inst.daemon.log(tail=40))
                inst.daemon.start()

    def instance_of_pid(self, pid):
        for inst in self.instances.values():
            if inst.alive() and inst.pid == pid:
                return inst
        return None

    # -- deferred actions ----------------------------------------------------

    def defer(self, delay, what, fn):
        with self.lock:
            self._seq += 1
            heapq.heappush(self.deferred, (time.monotonic() + delay, self._seq, what, fn))

    def run_deferred(self):
        """Run the deferred actions that are due; returns whether any is left."""
        while True:
            with self.lock:
                if not self.deferred:
                    return False
                if self.deferred[0][0] > time.monotonic():
                    return True
                _, _, what, fn = heapq.heappop(self.deferred)
                try:
                    fn()
                except Exception as exc:   # a harness step failing (the server restarting) is a note
                    self.notes.append(f"{what}: {type(exc).__name__}: {exc}")
                    self.say(f"note: {what}: {type(exc).__name__}: {exc}")

    def _deferred_loop(self):
        while not self.stop_deferred.is_set():
            self.run_deferred()
            self.stop_deferred.wait(0.01)

    def drain_deferred(self, timeout=60):
        """Wait until every deferred action has run (on time)."""
        deadline = time.monotonic() + timeout * SLOWDOWN
        while self.run_deferred() and time.monotonic() < deadline:
            time.sleep(0.02)

    def poll_background(self):
        for b in self.background:
            if b.done() and not getattr(b, "reported", False):
                b.reported = True
                tail = " | ".join(line for line in b.output().splitlines()[-3:] if line.strip())
                self.say(f"{b.op.kind} #{b.op.n} ({' '.join(b.argv[3:])}) exited {b.proc.returncode}"
                         f"{' (killed by us)' if b.killed else ''}: {tail[:300]}")

    def wait(self, seconds):
        end = time.monotonic() + seconds
        while True:
            self.poll_background()
            if self.writers is not None:
                self.writers.check()
            now = time.monotonic()
            if now >= end:
                return
            time.sleep(min(0.05, end - now))

    # -- the operations ------------------------------------------------------

    def reload(self, targets, cfg, why):
        for inst in targets:
            inst.write_config(self, cfg)
            if inst.alive() and takes_sighup(inst.daemon.proc.pid):
                inst.daemon.kill(signal.SIGHUP)
        self.stats["sighup"] += 1
        self.say(f"SIGHUP {','.join(i.name for i in targets)}: {why}")

    def op_sighup(self, op):
        a = op.a
        cfg = _thaw(a["config"])
        if a["scope"] == "all":
            self.config = cfg
            targets = list(self.instances.values())
        else:
            targets = [self.instances[int(a["scope"][4:])]]
        self.reload(targets, cfg, ", ".join(a["changes"]))

    def op_declared(self, op):
        self.op_sighup(op)

    def op_burst(self, op):
        """Append a backlog (without holding the lock: deferred toggles of
        earlier bursts go on meanwhile), then toggle batch_size by SIGHUP
        while it is caught up."""
        a = op.a
        if "enable_only" in a:
            cfg = json.loads(json.dumps(self.config))
            for p in PROJECTIONS:
                cfg["projections"][p]["enabled"] = p == a["enable_only"]
            self.config = cfg
            self.reload(list(self.instances.values()), cfg, f"only {a['enable_only']} enabled (burst #{op.n})")
        commands = chunk_with_bad(a["seed"], a["events"], a["bad"])
        t = time.monotonic()
        self.lock.release()
        try:
            append_all(self.conninfo, commands, per_transaction=a["per_tx"])
        finally:
            self.lock.acquire()
        self.committed_extra += n_events(commands)
        self.stats["burst_events"] += n_events(commands)
        self.say(f"burst: {n_events(commands)} events ({a['bad']} bad commands) appended in "
                 f"{time.monotonic() - t:.1f}s; toggling batch_size {[b for _, b in a['toggles']]}")
        if "rebuild" in a:
            self._command(op, ["rebuild", a["rebuild"]])
        for delay, batch_size in a["toggles"]:
            self.defer(delay, f"burst #{op.n} batch_size={batch_size}",
                       lambda bs=batch_size: self.set_batch_size(bs, f"burst #{op.n}"))

    def set_batch_size(self, batch_size, why):
        """batch_size changed on the fleet's current config (whatever else
        changed since the burst), written everywhere, SIGHUP."""
        self.config = dict(self.config, batch_size=batch_size)
        self.reload(list(self.instances.values()), self.config, f"batch_size={batch_size} ({why})")

    def op_rebuild(self, op):
        a = op.a
        self._command(op, ["rebuild"] + list(a["names"]))
        b = self.background[-1]
        if a["interrupt"] == "kill_command":
            self.defer(a["after"], f"rebuild #{op.n}: kill -9 of the command",
                       lambda: self._kill_command(b))
        elif a["interrupt"] == "kill_doer":
            name = PROJECTIONS[0] if a["names"] == ("--all",) else a["names"][0]
            self.defer(a["after"], f"rebuild #{op.n}: kill -9 of who rebuilds {name}",
                       lambda: self._kill_doer(b, name, a["restart_after"]))

    def _kill_command(self, b):
        if not b.done():
            b.proc.kill()
            b.killed = True
            self.stats["kill9_command"] += 1
            self.say(f"kill -9 of {b.op.kind} #{b.op.n} (pid {b.proc.pid})")

    def _kill_doer(self, b, name, restart_after):
        """kill -9 whoever works on `name`'s rebuild: the owning instance,
        or the command when it rebuilds in-process."""
        if b.done():
            return
        with self.admin() as conn:
            row = conn.execute("SELECT owner FROM read_model.projection_metadata WHERE projection_name = %s",
                               (name,)).fetchone()
        owner = row[0] if row else None
        pid = None
        if owner and ":" in owner:
            try:
                pid = int(owner.rsplit(":", 1)[1].split()[0])
            except ValueError:
                pid = None
        inst = self.instance_of_pid(pid) if pid else None
        if inst is not None:
            if self.kill9(inst, f"(doing {name}'s rebuild for #{b.op.n})"):
                inst.restart_at = True
                self.defer(restart_after, f"restart {inst.name}", lambda: self._restart(inst))
        else:
            self._kill_command(b)

    def _restart(self, inst):
        inst.restart_at = None
        if inst.wanted and not inst.alive():
            inst.write_config(self, self.config)
            inst.daemon.start()
            self.stats["instance_starts"] += 1
            self.say(f"{inst.name} restarted (pid {inst.pid})")

    def _command(self, op, args):
        cfg_path = self.instances[1].daemon.config_path
        argv = command(["-c", cfg_path] + list(args))
        log = os.path.join(self.workdir, f"cmd-{op.n:03d}-{op.kind}.log")
        b = Background(op, argv, log)
        self.background.append(b)
        self.stats[f"cmd_{op.kind}"] += 1
        self.say(f"{op.kind}: {' '.join(args)} (pid {b.proc.pid})")
        return b

    def op_rebuild_request(self, op):
        name = op.a["name"]
        with self.admin() as conn:
            n = conn.execute("UPDATE read_model.projection_metadata SET rebuild_requested_at = clock_timestamp() "
                             "WHERE projection_name = %s", (name,)).rowcount
        self.stats["rebuild_request"] += 1
        self.say(f"rebuild_requested_at set for {name} ({n} row)")

    def op_resume(self, op):
        self._command(op, ["resume", op.a["name"]])

    def op_replay(self, op):
        self._command(op, ["replay-dead-letters", op.a["name"]])

    def op_start(self, op):
        self.start_instance(op.a["instance"])

    def op_kill(self, op):
        a = op.a
        inst = self.instances[a["instance"]]
        self.kill9(inst, "(scheduled)")
        if "restart_after" in a:
            inst.wanted = True
            inst.restart_at = True
            self.defer(a["restart_after"], f"restart {inst.name}", lambda: self._restart(inst))
        else:
            inst.wanted = False

    def op_terminate(self, op):
        with self.admin() as conn:
            n = faults.terminate_backends(conn, self.dbname, random.Random(op.a["seed"]))
        self.stats["sessions_terminated"] += n
        self.say(f"pg_terminate_backend: {n} session(s)")

    def op_pg_restart(self, op):
        self.say(f"PostgreSQL restart ({op.a['mode']})")
        self.cluster.restart(op.a["mode"])
        self.stats[f"pg_restart_{op.a['mode']}"] += 1

    def op_restore(self, op):
        """The store (events, read model, checkpoints) dumped with pg_dump -Fc
        under load, restored into the other cluster, everything pointed at
        it, `adopt-restored-store` run as the owner, and on. Events committed
        after the dump are lost, as in reality: the bookkeeping of the final
        check restarts from what the new cluster holds."""
        a = op.a
        started = time.monotonic()
        src, dst = self.cluster, self.other_cluster()
        tag = f"restore #{op.n}"

        # 1. The counters. Behind: the dump must hold ids beyond the
        # target's counter (with room for what the restore itself takes):
        # when the target is not that far behind, the source's counter moves
        # forward first (a PostgreSQL restart for everyone on it); events
        # with the newest ids are appended before the dump. Only forward:
        # an id handed out twice would corrupt the cluster itself.
        if a["direction"] == "behind":
            s_next, d_next = src.next_xid(), dst.next_xid()
            if s_next < d_next + XACT_SEGMENT:
                to = xid_segment_above(max(s_next, d_next), a["segments"])
                self.say(f"{tag}: source counter {s_next} -> {to} (pg_resetwal; PostgreSQL restarted), "
                         f"target's {d_next}")
                src.set_next_xid(to)
                self.stats["restore_source_moved"] += 1
            newer = chunk_with_bad(a["seed"], 300, 2)
            append_all(self.conninfo, newer, per_transaction=50)
            self.committed_extra += n_events(newer)

        # 2. The dump, under load: daemons, writers, commands all going.
        t = time.monotonic()
        dump = dump_database(self.conninfo)
        s_next = src.next_xid()
        dump_s = time.monotonic() - t

        # 3. Everything on the old cluster stopped, as an operator would
        # before pointing it elsewhere: the writers (every commit outcome
        # known), the commands (kill -9: a rebuild's command cannot follow
        # it), the instances (SIGTERM, which must exit 0, or kill -9).
        old_writer_events = 0
        if self.writers is not None:
            self.writers.stop(timeout=180)
            w = self.writers.snapshot()
            old_writer_events = w.get("events", 0)
            self.writer_totals.update({k: w.get(k, 0) for k in ("events", "commits", "early_commits")})
            self.writers = None
        for b in self.background:
            if not b.done():
                b.proc.kill()
                b.proc.wait()
                b.killed = True
                self.stats["restore_commands_killed"] += 1
        restart = [inst for inst in self.instances.values() if inst.wanted]
        for inst in self.instances.values():
            if not inst.alive():
                continue
            if a["stop"] == "kill":
                self.kill9(inst, f"({tag})")
                continue
            pid = inst.pid
            inst.daemon.kill(signal.SIGTERM)
            try:
                rc = inst.daemon.wait(timeout=60)
            except AssertionError:
                inst.daemon.kill(signal.SIGKILL)
                rc = f"{inst.daemon.wait(timeout=30)} (no exit within 60 s of SIGTERM, killed)"
            if rc != 0:
                self.finding(f"{inst.name} (pid {pid}) exited {rc} on SIGTERM ({tag}); log tail:\n"
                             + inst.daemon.log(tail=30))
        for inst in restart:
            inst.restart_at = True              # down on purpose until step 6
        with self.admin() as conn:
            old_count = conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]
        if self.use_writers and old_count != old_writer_events + self.committed_extra:
            self.finding(f"{tag}: before the restore the store holds {old_count} events, the writers and "
                         f"the test committed {old_writer_events + self.committed_extra}")

        # 4. The new cluster: its counter, the database (dropped and made
        # anew: the store may have been here before), the dump restored.
        if a["direction"] == "ahead":
            d_next = dst.next_xid()
            if d_next <= s_next:
                dst.set_next_xid(xid_segment_above(max(s_next, d_next), a["segments"]))
        t = time.monotonic()
        conninfo = restore_database(dst, self.dbname, dump)
        restore_s = time.monotonic() - t
        with faults.connect(conninfo) as conn:
            if a["checkpoints"] == "scratch":
                # The read model from scratch: every table of it emptied
                # (checkpoints, dead letters, a rebuild's row too), the
                # shadows of rebuilds in progress dropped.
                tables = [r[0] for r in conn.execute(
                    "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                    "WHERE schemaname = 'read_model'").fetchall()]
                conn.execute(f"TRUNCATE {', '.join(tables)}")
                for (schema,) in conn.execute("SELECT nspname FROM pg_namespace "
                                              "WHERE nspname LIKE 'projectord_rebuild%'").fetchall():
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            restored = conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]
            max_id = int(conn.execute("SELECT coalesce(max(transaction_id)::text, '0') "
                                      "FROM event_store.domain_event").fetchone()[0])
            before_rows = metadata(conn)
        d_next = dst.next_xid()
        behind = max_id >= d_next
        if behind != (a["direction"] == "behind"):
            raise Finding(f"{tag}: test bug: the target's counter {d_next}, the dump's ids up to "
                          f"{max_id}: not {a['direction']}")
        lost = old_count - restored
        self.stats["restore_lost_events"] += lost
        self.stats[f"restore_{a['direction']}"] += 1
        self.stats[f"restore_{a['checkpoints']}"] += 1
        self.stats[f"restore_adopt_{a['adopt']}"] += 1
        self.say(f"{tag}: {os.path.basename(src.basedir)} -> {os.path.basename(dst.basedir)}: "
                 f"{restored} events ({len(dump) // 1024} KiB dumped in {dump_s:.1f}s, restored in "
                 f"{restore_s:.1f}s; {lost} committed after the dump lost); ids up to {max_id}, "
                 f"new counter {d_next} ({a['direction']}); read model from {a['checkpoints']}")

        # 5. Everything pointed at the new cluster: the harness's own
        # connections, later restarts and terminations, every instance's
        # config file (commands read the first one's), the final check.
        self.cluster, self.conninfo = dst, conninfo
        for inst in self.instances.values():
            inst.repoint(self, conninfo)
        # From here the store holds `restored` events plus what is committed next.
        self.committed_extra = restored

        # 6. adopt-restored-store, before the instances start or after.
        with self.admin() as conn:
            since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        if a["adopt"] == "before":
            self._adopt(tag)
            self._restart_after_restore(restart, tag)
        else:
            self._restart_after_restore(restart, tag)
            enabled = sorted({p for inst in restart for p in PROJECTIONS
                              if inst.config["projections"][p]["enabled"]})
            if behind:
                self._expect_refusal(tag, enabled, before_rows, since)
            else:
                self._expect_no_refusal(tag, enabled, since)
            self._adopt(tag)
            if behind:
                self._expect_resumed(tag, enabled)
        self._check_live_means_complete(tag, 5 * SLOWDOWN, since, restart)
        if self.use_writers:
            self.writer_gen += 1
            self.start_writers()
        self.stats["restore_seconds"] += round(time.monotonic() - started)
        self.say(f"{tag}: done in {time.monotonic() - started:.1f}s")

    def other_cluster(self):
        """The cluster a restore goes to: the spare (made at the first
        restore) or, from the spare, the run's own."""
        if self.spare is None:
            self.spare = PgCluster(tempfile.mkdtemp(prefix="projectord-ops-pg2-"))
            self.spare.start()
        return self.spare if self.cluster is self.home else self.home

    def _restart_after_restore(self, instances, tag):
        for inst in instances:
            inst.restart_at = None
            if not inst.alive():
                inst.write_config(self)         # its own settings, the new conninfo
                inst.daemon.start()
                self.stats["instance_starts"] += 1
        self.say(f"{tag}: started {', '.join(f'{i.name} (pid {i.pid})' for i in instances) or 'no instance'}")

    def _adopt(self, tag):
        """adopt-restored-store as the owner (the daemon's role may not
        rewrite events), with the first instance's config."""
        out = subprocess.run(command(["-c", self.instances[1].daemon.config_path, "adopt-restored-store"]),
                             capture_output=True, text=True, timeout=120 * SLOWDOWN,
                             env=clean_env(PROJECTORD_DATABASE_URL=self.conninfo))
        self.stats["adopt_restored_store"] += 1
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        self.say(f"{tag}: adopt-restored-store exited {out.returncode}: {' | '.join(lines)[:400]}")
        if out.returncode != 0:
            raise Finding(f"{tag}: adopt-restored-store exited {out.returncode}: {out.stderr.strip()} "
                          f"{out.stdout.strip()}")

    def _wait_rows(self, predicate, timeout):
        """Poll the status rows until predicate(rows) holds; the last rows
        and whether it held."""
        deadline = time.monotonic() + timeout
        rows = {}
        while True:
            try:
                with self.admin() as conn:
                    rows = metadata(conn)
                if predicate(rows):
                    return rows, True
            except faults.RETRYABLE:
                pass
            if time.monotonic() > deadline:
                return rows, False
            time.sleep(0.1)

    def _expect_refusal(self, tag, enabled, before_rows, since):
        """The instances started on a store restored into a cluster behind:
        every projection they run must refuse it (docs/reference.md): failed
        with PJ003 and a message naming adopt-restored-store, nothing
        applied beyond the window the dump's checkpoint had open (the check
        is made when a window opens: a window already open is finished
        first, judged by its own snapshots, which come from the same dump),
        and status --check failing."""
        def refused(rows):
            return all(p in rows and rows[p]["status"] == "failed" and rows[p]["last_error_sqlstate"] == "PJ003"
                       and rows[p]["last_error_at"] is not None and rows[p]["last_error_at"] >= since
                       for p in enabled)
        rows, ok = self._wait_rows(refused, 30 * SLOWDOWN)
        if not ok:
            raise Finding(f"{tag}: on a store restored into a cluster behind, not every projection "
                          f"refused to read (failed, PJ003) within 30 s:\n" + "\n".join(status_lines(rows)))
        for p in enabled:
            r = rows[p]
            if "adopt-restored-store" not in (r["last_error"] or ""):
                self.finding(f"{tag}: {p} refused without naming the remedy: {r['last_error']!r}")
            b = before_rows.get(p, {})
            was = b.get("last_position", 0)
            bound = max(was, b.get("tail_window_max", 0))
            if r["last_position"] > bound:
                self.finding(f"{tag}: {p} refused the store but moved from {was} to {r['last_position']} "
                             f"(beyond the window the dump left open: {bound})")
        check = subprocess.run(command(["-c", self.instances[1].daemon.config_path, "status", "--check"]),
                               capture_output=True, text=True, env=clean_env(), timeout=60 * SLOWDOWN)
        if check.returncode != EXIT_FAILURE:
            self.finding(f"{tag}: status --check exited {check.returncode} with every projection refusing "
                         f"the restored store (1 expected): {check.stdout.strip()[:300]}")
        self.stats["restore_refused"] += len(enabled)
        self.say(f"{tag}: refused as documented by {', '.join(enabled) or 'no projection'} (PJ003); "
                 f"status --check exit {check.returncode}")

    def _expect_no_refusal(self, tag, enabled, since):
        """Restored into a cluster ahead: nothing is wrong and nothing may be
        reported. Watched for a few seconds (or until every projection is
        live at the head). A refusal recorded before the restart (an earlier
        restore's, restored with the status rows) is history, not news."""
        with self.admin() as conn:
            head = conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]

        def refused(r):
            return r["last_error_sqlstate"] == "PJ003" and r["last_error_at"] is not None \
                and r["last_error_at"] >= since

        def settled_or_refused(rows):
            return (any(refused(r) for r in rows.values())
                    or all(p in rows and rows[p]["status"] == "live" and rows[p]["last_position"] >= head
                           for p in enabled))
        rows, _ = self._wait_rows(settled_or_refused, 3 * SLOWDOWN)
        wrong = [p for p, r in rows.items() if refused(r)]
        if wrong:
            self.finding(f"{tag}: restored into a cluster ahead, {wrong} refused it (nothing is wrong there):\n"
                         + "\n".join(status_lines(rows)))

    def _expect_resumed(self, tag, enabled):
        """adopt-restored-store asks running instances to resume (within 5 s):
        no projection still failed with PJ003 soon after."""
        rows, ok = self._wait_rows(lambda rows: not any(
            rows.get(p, {}).get("status") == "failed" and rows[p]["last_error_sqlstate"] == "PJ003"
            for p in enabled), 30 * SLOWDOWN)
        if not ok:
            self.finding(f"{tag}: 30 s after adopt-restored-store, projections still refuse the store:\n"
                         + "\n".join(status_lines(rows)))

    def _check_live_means_complete(self, tag, timeout, since, instances):
        """No appends meanwhile (the writers start after this): a projection
        `live` at the head must have applied or skipped every event it
        handles, restored ones included (defect 2 showed `live`, lag 0, with
        the restored events never applied). Only a status row written since
        the instances started, by one of them (a row as the dump left it
        says what the old cluster's daemon had done). Checked as the
        projections get there, for a few seconds; the end phase's exact
        check covers the rest."""
        deadline = time.monotonic() + timeout
        checked = set()
        pids = {str(inst.pid) for inst in instances if inst.alive()}
        enabled = {p for inst in instances for p in oracle.KNOWN if inst.config["projections"][p]["enabled"]}
        while time.monotonic() < deadline and not enabled <= checked:
            try:
                with self.admin() as conn:
                    head = conn.execute("SELECT coalesce(max(global_position), 0) "
                                        "FROM event_store.domain_event").fetchone()[0]
                    handled = oracle.handled_counts(conn)
                    rows = metadata(conn)
            except faults.RETRYABLE:
                time.sleep(0.2)
                continue
            for p, r in rows.items():
                if p in checked or p not in handled or r["status"] != "live" or r["last_position"] < head \
                        or r["updated_at"] < since or (r["owner"] or "").rsplit(":", 1)[-1] not in pids:
                    continue
                checked.add(p)
                seen = r["events_processed"] + r["events_skipped"] + r["events_ignored"]
                if seen != handled[p]:
                    self.finding(f"{tag}: {p} is live at the head ({head}) having applied or skipped {seen} "
                                 f"of the {handled[p]} stored events it handles:\n" + "\n".join(status_lines(rows)))
            time.sleep(0.2)
        self.stats["restore_live_checked"] += len(checked)
        self.say(f"{tag}: live at the head with every event counted: {', '.join(sorted(checked)) or 'none yet'}")

    # -- the run -------------------------------------------------------------

    def run_schedule(self):
        self.t0 = time.monotonic()
        self.deferred_thread = threading.Thread(target=self._deferred_loop, name="ops-deferred", daemon=True)
        self.deferred_thread.start()
        for op in self.schedule:
            while self.elapsed() < op.at:
                self.wait(min(0.25, op.at - self.elapsed()))
            with self.lock:
                self.check_instances(f"before operation #{op.n}")
                try:
                    getattr(self, f"op_{op.kind}")(op)
                except faults.RETRYABLE as exc:
                    self.notes.append(f"{op}: {type(exc).__name__}: {exc}")
                    self.say(f"note: {op}: {type(exc).__name__}: {str(exc).strip()[:200]}")
                self.stats[op.kind] += 1
        while self.elapsed() < self.seconds:
            self.wait(min(0.25, self.seconds - self.elapsed()))
        self.check_instances("at the end of the schedule")

    def stop_commands(self):
        """Commands still running at the end are stopped as an operator
        would: SIGTERM. A rebuild read the config of its start (batch_size
        may have been 1: minutes for a large store); stopped, it must give
        its rebuild up cleanly, exit 0 or 1 (never die of the signal), and
        leave the live projection to the instances."""
        running = [b for b in self.background if not b.done() and b.op.kind in ("rebuild", "burst")]
        for b in running:
            self.say(f"end: SIGTERM to {b.op.kind} #{b.op.n} (pid {b.proc.pid})")
            b.proc.send_signal(signal.SIGTERM)
            self.stats["cmd_stopped_at_end"] += 1
        for b in running:
            try:
                rc = b.proc.wait(timeout=60 * SLOWDOWN)
            except subprocess.TimeoutExpired:
                raise Finding(f"{b.op} did not exit within 60 s of SIGTERM: {b.output()[-300:]!r}")
            if rc not in (0, 1):
                raise Finding(f"{b.op} exited {rc} on SIGTERM (0 or 1 expected): {b.output()[-300:]!r}")

    def end_phase(self):
        """Bring everything to a known state, then check exactly."""
        self.say("schedule over: stopping the writers")
        writer_events = None
        if self.writers is not None:
            self.writers.stop(timeout=180)
            w = self.writers.snapshot()
            writer_events = w.get("events", 0)    # of the writers on the store in use
            self.stats["writer_events"] = self.writer_totals["events"] + writer_events
            self.stats["writer_commits"] = self.writer_totals["commits"] + w.get("commits", 0)
            self.stats["early_commits"] = self.writer_totals["early_commits"] + w.get("early_commits", 0)
        self.drain_deferred()                    # pending restarts and toggles, on time
        self.stop_deferred.set()
        final = json.loads(json.dumps(DEFAULT_CONFIG))
        self.config = final
        if not self.instances[1].alive():
            self.start_instance(1)
        self.instances[1].wanted = True
        self.reload([i for i in self.instances.values()], final,
                    "end: every projection enabled, on_error=skip, batch_size=1000")
        self.stop_commands()
        resumed = collections.Counter()
        # settle_s without progress: a projection still moving towards the
        # head (a 40,000-event window read under batch_size = 1 until the
        # end's reload, on a loaded machine) is slow, not stuck. Progress
        # extends the deadline, up to SETTLE_CAP_S in all.
        started = time.monotonic()
        deadline = started + self.settle_s
        last_seen = {}
        head = None
        settled_rows = None
        while time.monotonic() < deadline:
            self.wait(0.5)
            self.check_instances("in the end phase")
            try:
                with self.admin() as conn:
                    rows = metadata(conn)
                    head = conn.execute("SELECT coalesce(max(global_position), 0) "
                                        "FROM event_store.domain_event").fetchone()[0]
            except faults.RETRYABLE:
                continue
            moved = {n: r["last_position"] for n, r in rows.items() if r["last_position"] > last_seen.get(n, -1)}
            if last_seen and moved:
                deadline = min(max(deadline, time.monotonic() + self.settle_s),
                               started + SETTLE_CAP_S * SLOWDOWN)
            last_seen.update(moved)
            for name, r in rows.items():
                if r["status"] == "failed" and r.get("resume_requested_at") is None:
                    resumed[name] += 1
                    if resumed[name] > 5:
                        continue
                    self.say(f"end: resume {name} (failed: {(r['last_error'] or '')[:120]})")
                    out = subprocess.run(command(["-c", self.instances[1].daemon.config_path, "resume", name]),
                                         capture_output=True, text=True, env=clean_env(),
                                         timeout=60 * SLOWDOWN)
                    if out.returncode != 0:
                        self.notes.append(f"end: resume {name} exited {out.returncode}: {out.stderr.strip()}")
            pending = [b for b in self.background if not b.done()]
            ok = (all(n in rows and rows[n]["status"] == "live" and rows[n]["last_position"] >= head
                      and rows[n]["rebuild_requested_at"] is None and rows[n]["resume_requested_at"] is None
                      and rows[n]["replay_requested_at"] is None for n in PROJECTIONS)
                  and not pending)
            if ok:
                settled_rows = rows
                break
        self.poll_background()
        self.stats["end_resumes"] = sum(resumed.values())
        if settled_rows is None:
            pending = [b for b in self.background if not b.done()]
            with self.admin() as conn:
                rows = metadata(conn)
                rebuilds = conn.execute("SELECT projection_name, last_position, events_total "
                                        "FROM read_model.projection_rebuild").fetchall()
                locks = lock_holders(conn)
                sessions = lock_sessions(conn)
            detail = "\n".join(status_lines(rows)) + "\n  instances: " + ", ".join(
                f"{i.name} pid {i.pid} {'up' if i.alive() else 'down'}"
                for i in self.instances.values() if i.daemon.proc is not None)
            cmds = "".join(f"\n  still running: {b.op} (pid {b.proc.pid}), output tail: "
                           f"{b.output()[-300:]!r}" for b in pending)
            raise Finding(f"not settled within {time.monotonic() - started:.0f}s after the end of the schedule "
                          f"(head {head}; {self.settle_s:.0f}s without progress, or the cap): some projection is "
                          f"not live at the head, or a request or a command is still pending\n{detail}\n  rebuild rows: {rebuilds}\n"
                          f"  ownership locks held: {locks}{cmds}\n{sessions}")
        for b in self.background:
            if not b.killed and b.op.kind == "rebuild" and b.proc.returncode != 0:
                self.notes.append(f"{b.op} exited {b.proc.returncode}: {b.output()[-300:]!r}")

        # A probe: fresh events must be applied by every projection, so each
        # is live (owned and progressing), not just sitting at the head.
        probe = chunk_with_bad(self.seed * 7919 + 2, 300, 2)
        append_all(self.conninfo, probe, per_transaction=50)
        self.committed_extra += n_events(probe)
        self.say(f"probe: {n_events(probe)} fresh events")
        try:
            self.instances[1].daemon.projections = {p: {"enabled": True} for p in PROJECTIONS}
            self.instances[1].daemon.wait_until(_all_at_head, 60, "every projection to apply the probe")
        except AssertionError as exc:
            with self.admin() as conn:
                rows = metadata(conn)
                locks = lock_holders(conn)
            raise Finding(f"the probe's events were not applied: {exc}\n" + "\n".join(status_lines(rows))
                          + f"\n  ownership locks held: {locks}") from None
        self.say("settled; probe applied; exact check")
        committed = None
        if writer_events is not None:
            # Since the last restore (if any): what it left, then the
            # writers' and the test's commits.
            committed = writer_events + self.committed_extra
        with self.admin() as conn:
            problems = final_check(conn, committed)
            # An interrupted rebuild leaves its shadow and its row for the
            # next rebuild to clean up (README): worth a note, not a finding.
            shadows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'projectord_rebuild%'").fetchall()
            leftover = conn.execute("SELECT projection_name FROM read_model.projection_rebuild").fetchall()
            self.stats["dead_letters"] = conn.execute("SELECT count(*) FROM read_model.projection_dead_letter").fetchone()[0]
            self.stats["events_in_store"] = conn.execute("SELECT count(*) FROM event_store.domain_event").fetchone()[0]
        if shadows or leftover:
            self.notes.append(f"left by interrupted rebuilds: shadow schemas {[s[0] for s in shadows]}, "
                              f"rebuild rows {[r[0] for r in leftover]}")
        for p in problems:
            self.finding(f"exact check: {p}")

    def stop_all(self):
        for inst in self.instances.values():
            if inst.alive():
                pid = inst.pid
                inst.daemon.kill(signal.SIGTERM)
                try:
                    rc = inst.daemon.wait(timeout=30)
                except AssertionError:
                    rc = "no exit within 30 s"
                if rc != 0:
                    self.finding(f"{inst.name} (pid {pid}): exit {rc} on SIGTERM at the end; log tail:\n"
                                 + inst.daemon.log(tail=30))
                report = inst.daemon.sanitizer_report()
                if report:
                    self.finding(f"{inst.name}: {report}")

    def run(self):
        self.print_schedule()
        self.setup()
        try:
            self.run_schedule()
            self.end_phase()
            self.stop_all()
        except Finding as exc:
            self.finding(str(exc))
        finally:
            self.stop_deferred.set()
            if self.deferred_thread is not None:
                self.deferred_thread.join(30)
            if self.writers is not None:
                self.writers.stop_event.set()
            for b in self.background:
                b.close()
        return not self.findings

    def logs(self, tail=40):
        out = []
        for inst in self.instances.values():
            if inst.daemon.proc is not None:
                out.append(f"----- {inst.name} log tail ({inst.daemon.log_path})\n{inst.daemon.log(tail=tail)}")
        return "\n".join(out)

    def close(self):
        for inst in self.instances.values():
            inst.daemon.close()
        for b in self.background:
            b.close()
        if self.spare is not None:
            self.spare.cleanup()

    def keep_logs(self, kept):
        """Copy the logs worth keeping (daemons, commands, both clusters) to kept."""
        for name in os.listdir(self.workdir):
            if name.endswith(".log"):
                shutil.copy(os.path.join(self.workdir, name), kept)
        for c, name in ((self.home, "postgres.log"), (self.spare, "postgres-spare.log")):
            if c is not None and os.path.exists(c.logfile):
                shutil.copy(c.logfile, os.path.join(kept, name))

    def report(self):
        lines = [f"operations run: seed {self.seed}, {self.seconds:.0f} s, profile {self.profile}: "
                 f"{'PASS' if not self.findings else 'FAIL'}",
                 f"  stats: {dict(sorted(self.stats.items()))}"]
        lines += [f"  note: {n}" for n in self.notes[:30]]
        lines += [f"  FINDING: {f}" for f in self.findings]
        lines.append(f"  replay: /usr/bin/python3 tests/integration/operations.py --seed {self.seed} "
                     f"--seconds {self.seconds:g} --profile {self.profile}")
        return "\n".join(lines)


def _all_at_head(conn):
    head = conn.execute("SELECT coalesce(max(global_position), 0) FROM event_store.domain_event").fetchone()[0]
    rows = metadata(conn)
    return all(n in rows and rows[n]["last_position"] >= head and rows[n]["status"] == "live"
               for n in PROJECTIONS) and rows


def _thaw(v):
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                                          for x in v):
        return {k: _thaw(x) for k, x in v}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


PROJECTION_LOCK = 1886546532   # src/fleet.h


def lock_holders(conn):
    """{projection: number of instances holding its ownership lock}."""
    return dict(conn.execute(
        """SELECT p.name, count(l.pid)
             FROM unnest(%s::text[]) AS p(name)
             LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.classid = %s::oid
                  AND l.objid = (hashtext(p.name)::bigint & 4294967295)::oid
                  AND l.objsubid = 2 AND l.granted
            GROUP BY p.name""", (sorted(PROJECTIONS), PROJECTION_LOCK)).fetchall())


def lock_sessions(conn):
    """The sessions holding ownership locks: who they are and what they wait
    for, one line each (for a finding: a lock nobody seems to hold)."""
    rows = conn.execute(
        """SELECT p.name, a.pid, a.application_name, a.client_port, a.state, a.wait_event_type,
                  a.wait_event, a.backend_start, now() - a.state_change, left(a.query, 160)
             FROM unnest(%s::text[]) AS p(name)
             JOIN pg_locks l ON l.locktype = 'advisory' AND l.classid = %s::oid
                  AND l.objid = (hashtext(p.name)::bigint & 4294967295)::oid
                  AND l.objsubid = 2 AND l.granted
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid
            ORDER BY 1""", (sorted(PROJECTIONS), PROJECTION_LOCK)).fetchall()
    return "\n".join(f"  lock {r[0]}: backend {r[1]} ({r[2]}, port {r[3]}) {r[4]}, waiting {r[5]}/{r[6]}, "
                     f"since {r[7]}, state for {r[8]}: {r[9]!r}" for r in rows)


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=None, help="the seed (default: random, printed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, help="length of the schedule in minutes")
    g.add_argument("--seconds", type=float, help="length of the schedule in seconds (default 180)")
    p.add_argument("--profile", default="all", choices=sorted(PROFILES),
                   help="which operations (default: all of them)")
    p.add_argument("--print-schedule", action="store_true", help="print the schedule and exit")
    p.add_argument("--keep", action="store_true", help="keep the cluster and logs even when it passes")
    args = p.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes else (args.seconds or 180.0)
    if seconds <= 0:
        p.error("the schedule must be longer than 0 s")
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
    if args.print_schedule:
        for op in make_schedule(seed, seconds, args.profile):
            print(op)
        return 0

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(int(seconds * SLOWDOWN + 30 * 60))   # it always stops by itself

    basedir = tempfile.mkdtemp(prefix="projectord-ops-pg-")
    cluster = PgCluster(basedir)
    cluster.start()

    def out(msg):
        print(msg, flush=True)
    run = OperationsRun(cluster, seed, seconds, args.profile, out=out)
    ok = False
    try:
        ok = run.run()
    except Interrupted as exc:
        run.findings.append(f"interrupted by {exc}")
    except Exception as exc:
        run.findings.append(f"harness error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        signal.alarm(0)
        if run.findings:
            print(run.logs(), flush=True)
        keep = args.keep or not ok
        if keep:
            kept = tempfile.mkdtemp(prefix="projectord-ops-logs-")
            run.keep_logs(kept)
            print(f"logs kept in {kept}")
        run.close()
        cluster.cleanup()
        shutil.rmtree(run.workdir, ignore_errors=True)
    print(run.report(), flush=True)
    return 0 if ok and not run.findings else 1


if __name__ == "__main__":
    sys.exit(main())
