"""Hostile and odd input (issue 5): events that are huge, deeply nested, not
objects, full of unicode, at the edges of bigint and uuid syntax, with
255-character or look-alike event types and unknown aggregate types; and
odd command lines and config files.

Each event is handled per SPEC §4/§7: applied, ignored, or a bad event under
the projection's on_error policy (skip: a dead letter and the projection
goes on, with exact counts; stop: that projection fails at exactly that
event and the others go on) — never a crash or a stuck projection. Events
the event store itself refuses (jsonb's and varchar(255)'s limits) are
checked to be refused at append time.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg
import pytest

import oracle
from daemon import (BIN, PROJECTIONS, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE,
                    SLOWDOWN, clean_env, config_text, metadata, run_cli)
from daemon import command as daemon_command
from pgcluster import free_port

MB = 1 << 20
OWNER = {t: p for p, types in oracle.HANDLED.items() for t in types}


class Raw(str):
    """Event data given as JSON text, sent as is (jsonb parses it)."""


def json_text(data):
    return data if isinstance(data, Raw) else json.dumps(data, ensure_ascii=False)


def nested(depth, leaf="[]"):
    """JSON text of `depth` arrays nested in each other."""
    return "[" * (depth - 1) + leaf + "]" * (depth - 1)


@dataclass
class Ev:
    aggregate_type: str
    aggregate_id: uuid.UUID
    event_type: str
    data: object
    outcome: str               # applied | ignored | bad | unhandled (by the owning projection)
    sqlstate: str = None       # of a bad event found by a failing statement
    metadata: object = None
    occurred_at: str = None    # default: now()
    position: int = None

    @property
    def owner(self):
        return OWNER.get(self.event_type)


@dataclass
class Script:
    events: list = field(default_factory=list)
    checks: list = field(default_factory=list)   # (what, sql, params, expected first value)

    def ev(self, aggregate_type, aggregate_id, event_type, data, outcome, **kw):
        e = Ev(aggregate_type, aggregate_id, event_type, data, outcome, **kw)
        if outcome != "unhandled":
            assert e.owner, f"{event_type} has no projection"
        self.events.append(e)
        return aggregate_id

    def check(self, what, sql, params, expected):
        self.checks.append((what, sql, params, expected))


APPEND_RAW = """
SELECT event_store.append_events(%s, %s, NULL,
       ARRAY[jsonb_build_object('event_type', %s::text, 'event_data', %s::jsonb,
                                'metadata', %s::jsonb, 'occurred_at', %s::text)])"""


def append_raw(conn, e):
    conn.execute(APPEND_RAW, (e.aggregate_type, e.aggregate_id, e.event_type, json_text(e.data),
                              None if e.metadata is None else json_text(e.metadata), e.occurred_at))


def append_script(db, script):
    with db.connect() as conn:
        for e in script.events:
            append_raw(conn, e)
            e.position = conn.execute("SELECT max(global_position) FROM event_store.domain_event"
                                      ).fetchone()[0]


def new():
    return uuid.uuid4()


def user(email, **extra):
    return {"email": email, "first_name": "F", "last_name": "L", **extra}


def product(price_cents=100, category_id=None, **extra):
    return {"sku": "SKU", "name": "P", "price_cents": price_cents, "category_id": category_id,
            **extra}


# --------------------------------------------------------------------------
# The events
# --------------------------------------------------------------------------

UNICODE = ("Ünïcödé 名前 😀 👩‍👩‍👧 עברית مرحبا e\u0301 \t\n\r \"quoted\" 'single' back\\slash "
           "\u2028\u2029 \ufeff \uffff \U0010ffff ; DROP TABLE users; --")


def big_payloads(s):
    cid = s.ev("Category", new(), "CategoryCreated", {"name": "n" * MB}, "applied")
    s.check("1 MB name", "SELECT length(name) FROM read_model.categories WHERE id = %s", (cid,), MB)
    cid = s.ev("Category", new(), "CategoryCreated", {"name": "n"}, "applied")
    s.ev("Category", cid, "CategoryRenamed", {"name": "r" * (8 * MB)}, "applied")
    s.check("8 MB name", "SELECT length(name) FROM read_model.categories WHERE id = %s", (cid,), 8 * MB)
    uid = s.ev("User", new(), "UserRegistered",
               user(f"{uuid.uuid4()}@big.example", first_name="名" * (MB // 3)), "applied")
    s.check("1 MB of 3-byte characters", "SELECT octet_length(first_name) FROM read_model.users "
            "WHERE id = %s", (uid,), MB // 3 * 3)
    uid = s.ev("User", new(), "UserRegistered",
               user(f"{uuid.uuid4()}@big.example", extra="x" * MB), "applied",
               metadata={"trace": "m" * MB})
    s.check("1 MB extra field and metadata", "SELECT count(*) FROM read_model.users WHERE id = %s",
            (uid,), 1)
    s.ev("Blob", new(), "BlobUploaded", {"blob": "b" * MB}, "unhandled")
    # Bad, with 1 MB in the dead letter's payload.
    s.ev("Product", new(), "ProductCreated", {"sku": "s" * MB, "name": "no price"}, "bad")


def deep_nesting(s):
    # jsonb accepts thousands of levels (its limit is the server's stack);
    # the contract reads only the top levels.
    for depth in (100, 2047, 2048, 5000, 10000):
        uid = s.ev("User", new(), "UserRegistered",
                   Raw(json.dumps(user(f"{uuid.uuid4()}@deep.example"))[:-1]
                       + f', "deep": {nested(depth)}}}'), "applied")
        s.check(f"{depth} nested arrays in an extra field",
                "SELECT count(*) FROM read_model.users WHERE id = %s", (uid,), 1)
    s.ev("Category", new(), "CategoryCreated", Raw('{"name": ' + nested(5000, '["x"]') + "}"), "bad")
    tricky = nested(5000, '["]\\"[{", {"k]": "}{"}]')     # brackets and quotes inside strings
    cid = s.ev("Category", new(), "CategoryCreated", Raw(f'{{"x": {tricky}, "name": "tricky"}}'),
               "applied")
    s.check("a field after deep strings with brackets",
            "SELECT name FROM read_model.categories WHERE id = %s", (cid,), "tricky")
    s.ev("Deep", new(), "DeeplyNested", Raw(nested(10000)), "unhandled")
    deep_objects = '{"a":' * 5000 + "{}" + "}" * 5000
    cid = s.ev("Category", new(), "CategoryCreated", Raw(f'{{"x": {deep_objects}, "name": "after"}}'),
               "applied")
    s.check("a field after 5000 nested objects", "SELECT name FROM read_model.categories "
            "WHERE id = %s", (cid,), "after")


def non_objects(s):
    for data in ([], ["email"], "a string", 42, 4.5, True, None, Raw('"{\\"name\\": \\"x\\"}"')):
        s.ev("User", new(), "UserRegistered", data, "bad")
        s.ev("Category", new(), "CategoryCreated", data, "bad")
    oid = s.ev("Order", new(), "OrderPlaced", {"customer_id": str(new()), "items": []}, "applied")
    s.ev("Order", oid, "OrderShipped", [], "bad")       # reads no field, still not an object
    s.ev("Order", oid, "OrderShipped", None, "bad")
    s.ev("Order", oid, "OrderShipped", {}, "applied")
    s.check("OrderShipped after two bad ones", "SELECT status FROM read_model.orders WHERE id = %s",
            (oid,), "shipped")


def unicode_everywhere(s, folds_non_ascii):
    cid = s.ev("Catégorie💥", new(), "CategoryCreated", {"name": UNICODE, "ключ": "значение"},
               "applied", metadata={"ユーザー": UNICODE})
    s.check("unicode category name", "SELECT name FROM read_model.categories WHERE id = %s",
            (cid,), UNICODE)
    pid = s.ev("Product", new(), "ProductCreated",
               {"sku": "SKU-" + UNICODE, "name": UNICODE, "price_cents": 1, "category_id": str(cid)},
               "applied")
    s.check("unicode sku", "SELECT sku FROM read_model.products WHERE id = %s", (pid,),
            "SKU-" + UNICODE)
    s.check("product counted in its unicode category",
            "SELECT product_count FROM read_model.categories WHERE id = %s", (cid,), 1)
    uid = s.ev("User", new(), "UserRegistered",
               {"email": "zoë.ünïcode@例え.jp", "first_name": UNICODE, "last_name": "😀" * 100,
                "role": "管理者"}, "applied")
    for col, want in (("email", "zoë.ünïcode@例え.jp"), ("first_name", UNICODE),
                      ("last_name", "😀" * 100), ("role", "🦄")):
        s.check(f"unicode users.{col}", f"SELECT {col} FROM read_model.users WHERE id = %s",
                (uid,), want)
    s.ev("User", uid, "UserRoleChanged", {"role": "🦄"}, "applied")
    # Case: ASCII letters fold whatever the collation; the unique index is
    # on lower(email), so this is the same email.
    s.ev("User", new(), "UserRegistered", user("Zoë@Example.COM"), "applied")
    s.ev("User", new(), "UserRegistered", user("zoë@example.com"), "bad", sqlstate="23505")
    # Non-ASCII letters fold only where the database's LC_CTYPE says so
    # (the test clusters use C, where lower('Å') = 'Å').
    s.ev("User", new(), "UserRegistered", user("ÅSA@example.com"), "applied")
    s.ev("User", new(), "UserRegistered", user("åsa@example.com"),
         "bad" if folds_non_ascii else "applied", sqlstate="23505" if folds_non_ascii else None)
    oid = s.ev("Order", new(), "OrderPlaced", {"customer_id": str(new()), "items": [],
                                               "note": UNICODE}, "applied")
    s.ev("Order", oid, "OrderCancelled", {"reason": UNICODE}, "applied")
    s.check("unicode cancel reason", "SELECT status FROM read_model.orders WHERE id = %s",
            (oid,), "cancelled")
    s.ev("Événement", new(), "Événement💥", {"x": UNICODE}, "unhandled")


def event_types(s):
    s.ev("Odd", new(), "E" * 255, {}, "unhandled")
    s.ev("Odd", new(), "É" * 255, {}, "unhandled")          # 510 bytes: varchar counts characters
    s.ev("Odd", new(), "*", {}, "unhandled")                 # not a wildcard for anyone but event_stats
    s.ev("Odd", new(), "userregistered", user("lower@case.example"), "unhandled")
    s.ev("Odd", new(), " UserRegistered", user("space@case.example"), "unhandled")
    s.ev("Odd", new(), "UserRegistered\n", user("newline@case.example"), "unhandled")
    s.ev("Odd", new(), "x'); DROP TABLE read_model.users; --", {}, "unhandled")


def aggregate_types(s):
    # Dispatch is on event_type alone.
    uid = s.ev("Spaceship", new(), "UserRegistered", user(f"{uuid.uuid4()}@ship.example"), "applied")
    s.check("a user from a Spaceship stream", "SELECT count(*) FROM read_model.users WHERE id = %s",
            (uid,), 1)
    cid = s.ev("A" * 255, new(), "CategoryCreated", {"name": "from a 255-character type"}, "applied")
    s.check("a category from a 255-character aggregate type",
            "SELECT name FROM read_model.categories WHERE id = %s", (cid,), "from a 255-character type")
    oid = s.ev("User", new(), "OrderPlaced", {"customer_id": str(new()), "items": []}, "applied")
    s.check("an order from a User stream", "SELECT status FROM read_model.orders WHERE id = %s",
            (oid,), "placed")


def numbers(s):
    cases = [
        ("9223372036854775807", "applied", 9223372036854775807),
        ("9223372036854775808", "bad", None),
        ("-9223372036854775808", "applied", -9223372036854775808),
        ("-9223372036854775809", "bad", None),
        ("1e19", "bad", None),
        ("-1e19", "bad", None),
        ("1e400", "bad", None),
        ("99999999999999999999999999999999999999", "bad", None),
        ("5.0", "applied", 5),
        ("5.5", "bad", None),
        ("0.0000001", "bad", None),
        ("1E2", "applied", 100),
        ("-0.0", "applied", 0),
        ("4611686018427387904.0", "applied", 4611686018427387904),   # 2^62, exact as a double
        ('"5"', "bad", None),
        ("true", "bad", None),
        ("[5]", "bad", None),
        ("{}", "bad", None),
    ]
    for literal, outcome, stored in cases:
        data = Raw(f'{{"sku": "n", "name": "number", "price_cents": {literal}}}')
        pid = s.ev("Product", new(), "ProductCreated", data, outcome)
        if stored is not None:
            s.check(f"price_cents {literal}", "SELECT price_cents FROM read_model.products "
                    "WHERE id = %s", (pid,), stored)
    pid = s.ev("Product", new(), "ProductCreated", product(1), "applied")
    s.ev("Product", pid, "ProductPriceChanged", Raw('{"price_cents": 9223372036854775808}'), "bad")
    s.ev("Product", pid, "ProductPriceChanged", Raw('{"price_cents": -9223372036854775808}'), "applied")
    s.check("price changed to the bigint minimum", "SELECT price_cents FROM read_model.products "
            "WHERE id = %s", (pid,), -9223372036854775808)

    # Arithmetic beyond bigint: found in C (one line's product, the sum of
    # lines) or by PostgreSQL (adding to an order's total, or to the day's
    # revenue). On a day of their own, so the other orders' revenue stays apart.
    cust = str(new())
    big = 9223372036854775807
    day = "2001-02-03T04:05:06Z"
    s.ev("Order", new(), "OrderPlaced", {"customer_id": cust, "items": [
        {"product_id": str(new()), "quantity": 2, "unit_price_cents": big // 2 + 1}]}, "bad")
    s.ev("Order", new(), "OrderPlaced", {"customer_id": cust, "items": [
        {"product_id": str(new()), "quantity": 1, "unit_price_cents": big},
        {"product_id": str(new()), "quantity": 1, "unit_price_cents": 1}]}, "bad")
    s.ev("Order", new(), "OrderPlaced", {"customer_id": cust, "items": [
        {"product_id": str(new()), "quantity": big, "unit_price_cents": 0},
        {"product_id": str(new()), "quantity": 1, "unit_price_cents": 0}]}, "bad")
    oid = s.ev("Order", new(), "OrderPlaced", {"customer_id": cust, "items": [
        {"product_id": str(new()), "quantity": 1, "unit_price_cents": big}]}, "applied",
        occurred_at=day)
    s.ev("Order", oid, "OrderItemAdded", {"product_id": str(new()), "quantity": 1,
                                          "unit_price_cents": 1}, "bad", sqlstate="22003",
         occurred_at=day)
    s.ev("Order", oid, "OrderItemAdded", {"product_id": str(new()), "quantity": 0,
                                          "unit_price_cents": 1}, "bad", occurred_at=day)
    s.ev("Order", oid, "OrderItemAdded", {"product_id": str(new()), "quantity": 1,
                                          "unit_price_cents": -1}, "bad", occurred_at=day)
    s.ev("Order", oid, "OrderItemAdded", {"product_id": str(new()), "quantity": 1,
                                          "unit_price_cents": 0}, "applied", occurred_at=day)
    s.ev("Order", new(), "OrderPlaced", {"customer_id": cust, "items": [
        {"product_id": str(new()), "quantity": 1, "unit_price_cents": 1}]}, "bad",
        sqlstate="22003", occurred_at=day)
    s.check("the day's revenue at the bigint maximum", "SELECT revenue_cents FROM "
            "read_model.daily_sales WHERE day = '2001-02-03'", (), big)
    s.check("total at the bigint maximum", "SELECT (total_cents, item_count)::text FROM "
            "read_model.orders WHERE id = %s", (oid,), f"({big},2)")


def hyphens_moved(text):
    """The same 32 hex digits grouped 7-5-4-4-12."""
    h = text.replace("-", "")
    return f"{h[:7]}-{h[7:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuids(s):
    cat = new()
    upper = str(cat).upper()
    pid = s.ev("Product", new(), "ProductCreated", product(category_id=upper), "applied")
    s.ev("Category", cat, "CategoryCreated", {"name": "named in upper case"}, "applied")
    s.check("an upper-case category_id is the same uuid",
            "SELECT product_count FROM read_model.categories WHERE id = %s", (cat,), 1)
    s.check("stored in canonical form", "SELECT category_id FROM read_model.products WHERE id = %s",
            (pid,), cat)
    good = str(new())
    for bad in ("{" + good + "}", good.replace("-", ""), "urn:uuid:" + good, good + " ",
                " " + good, good[:-1], good + "0", good.replace("-", "_"), good[:-1] + "g",
                "", "not-a-uuid", hyphens_moved(good)):
        s.ev("Product", new(), "ProductCreated", product(category_id=bad), "bad")
        s.ev("Order", new(), "OrderPlaced", {"customer_id": bad, "items": []}, "bad")
    s.ev("Product", new(), "ProductCreated", product(category_id=None), "applied")
    s.ev("Product", new(), "ProductCreated", {k: v for k, v in product().items() if k != "category_id"},
         "applied")
    s.ev("Order", new(), "OrderPlaced", {"customer_id": good, "items": [
        {"product_id": good.replace("-", ""), "quantity": 1, "unit_price_cents": 1}]}, "bad")
    s.ev("Order", new(), "OrderPlaced", {"customer_id": good.upper(), "items": [
        {"product_id": good.upper(), "quantity": 1, "unit_price_cents": 1}]}, "applied")
    cat = new()
    s.ev("Category", cat, "CategoryCreated", {"name": "uncategorized again"}, "applied")
    pid = s.ev("Product", new(), "ProductCreated", product(category_id=str(cat)), "applied")
    s.ev("Product", pid, "ProductCategorized", {"category_id": 12345}, "bad")
    s.ev("Product", pid, "ProductCategorized", {"category_id": "{" + str(cat) + "}"}, "bad")
    s.ev("Product", pid, "ProductCategorized", {"category_id": None}, "applied")
    s.check("uncategorized again", "SELECT product_count FROM read_model.categories WHERE id = %s",
            (cat,), 0)


def repeated_and_missing(s):
    """Ignored events (SPEC §4): a second creation, an update of a missing row."""
    uid = s.ev("User", new(), "UserRegistered", user(f"{uuid.uuid4()}@twice.example"), "applied")
    s.ev("User", uid, "UserRegistered", user(f"{uuid.uuid4()}@twice.example"), "ignored")
    s.ev("User", new(), "UserLoggedIn", {}, "ignored")
    s.ev("Product", new(), "ProductRenamed", {"name": UNICODE}, "ignored")
    # Duplicate keys: jsonb keeps the last.
    cid = s.ev("Category", new(), "CategoryCreated", Raw('{"name": "first", "name": "last"}'), "applied")
    s.check("duplicate keys: the last wins", "SELECT name FROM read_model.categories WHERE id = %s",
            (cid,), "last")


def hostile_script(folds_non_ascii):
    s = Script()
    for part in (big_payloads, deep_nesting, non_objects, event_types, aggregate_types, numbers,
                 uuids, repeated_and_missing):
        part(s)
    unicode_everywhere(s, folds_non_ascii)
    return s


def folds_non_ascii(db):
    return db.scalar("SELECT lower('ÅSA') = 'åsa'")


# --------------------------------------------------------------------------
# What the event store refuses outright
# --------------------------------------------------------------------------

REFUSED = [
    ("nul-character", "UserRegistered", Raw('{"email": "a\\u0000b"}'), "22P05"),
    ("lone-surrogate", "UserRegistered", Raw('{"email": "\\ud800"}'), "22P02"),
    ("not-json", "UserRegistered", Raw('{"email": '), "22P02"),
    ("nesting-beyond-the-server-stack", "DeeplyNested", Raw(nested(200_000)), "54001"),
    ("256-character-event-type", "E" * 256, {}, "22001"),
]


@pytest.mark.parametrize("event_type,data,sqlstate", [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_event_store_refuses_at_append(db, event_type, data, sqlstate):
    with db.connect() as conn:
        with pytest.raises(psycopg.Error) as err:
            append_raw(conn, Ev("X", new(), event_type, data, "unhandled"))
    assert err.value.sqlstate == sqlstate, err.value
    assert db.scalar("SELECT count(*) FROM event_store.domain_event") == 0


# --------------------------------------------------------------------------
# on_error = "skip": dead letters, exact counts, the rest applied
# --------------------------------------------------------------------------

def expected_counts(script):
    """{projection: {outcome: count}} for catalog, users, orders."""
    counts = {p: {"applied": 0, "ignored": 0, "bad": 0} for p in oracle.HANDLED}
    for e in script.events:
        if e.owner and e.outcome != "unhandled":
            counts[e.owner][e.outcome] += 1
    return counts


def run_checks(db, script):
    failures = []
    with db.connect() as conn:
        for what, sql, params, want in script.checks:
            row = conn.execute(sql, params).fetchone()
            got = row[0] if row else None
            if got != want:
                shown = got if not isinstance(got, str) or len(got) < 200 else got[:200] + "..."
                failures.append(f"{what}: got {shown!r}")
    assert not failures, "\n".join(failures)


# The payload fields SPEC §4's projections read; everything else (megabytes
# of extra fields, thousands of nesting levels) is left out of what the
# oracle decodes.
CONTRACT_FIELDS = ["name", "sku", "price_cents", "category_id", "email", "first_name", "last_name",
                   "role", "customer_id", "items", "quantity", "unit_price_cents"]

EVENTS_BUT_SQL = """
SELECT e.global_position, s.aggregate_type, s.aggregate_id, e.event_type, e.aggregate_version,
       coalesce((SELECT jsonb_object_agg(k, v) FROM jsonb_each(e.event_data) AS f(k, v)
                  WHERE k = ANY(%s)), '{}'), e.occurred_at
  FROM event_store.domain_event e JOIN event_store.event_stream s USING (stream_id)
 WHERE e.global_position <> ALL(%s) AND jsonb_typeof(e.event_data) = 'object'
 ORDER BY e.global_position"""


def assert_read_model_is_the_fold_without_bad_events(conn, script):
    """Every read-model table equals the independent oracle's fold of the
    stored events minus the bad ones: a bad event skipped under on_error =
    "skip" has no effect at all (no half-applied handler, no row from a
    failed statement), and every other hostile event has exactly the
    effect SPEC §4 gives it. event_type_stats counts bad events too; it is
    compared with the oracle's count of all events separately."""
    bad = [e.position for e in script.events if e.outcome == "bad"]
    expected = oracle.fold(conn.execute(EVENTS_BUT_SQL, (CONTRACT_FIELDS, bad)).fetchall()).rows
    for table in oracle.TABLES:
        if table != "event_type_stats":
            try:
                oracle.assert_same_rows(table, expected[table], oracle.read_table(conn, table))
            except AssertionError as exc:     # rows hold megabytes: keep the report readable
                raise AssertionError(str(exc)[:4000]) from None


def assert_log_sane(daemon):
    """No megabyte payload copied into the log."""
    longest = max((len(line) for line in daemon.log(tail=1_000_000).splitlines()), default=0)
    assert longest < 4096, f"a log line of {longest} characters"


def test_hostile_events_with_skip(db, start_daemon):
    script = hostile_script(folds_non_ascii(db))
    projections = {p: {"on_error": "skip"} for p in PROJECTIONS}
    daemon = start_daemon(batch_size=16, projections=projections)
    append_script(db, script)
    daemon.wait_caught_up(timeout=90, allow_skipped=True)
    counts = expected_counts(script)
    daemon.wait_ignored({name: c["ignored"] for name, c in counts.items()})
    rows = daemon.wait_until(lambda conn: all(r["status"] == "live" for r in metadata(conn).values())
                             and metadata(conn), 10, "every projection to be live")

    for name, c in counts.items():
        row = rows[name]
        assert (row["events_skipped"], row["events_ignored"], row["events_processed"]) == \
            (c["bad"], c["ignored"], c["applied"] + c["ignored"]), f"{name}: {c}"
    assert rows["event_stats"]["events_processed"] == len(script.events)
    assert rows["event_stats"]["events_skipped"] == 0

    want = {(e.owner, e.position) for e in script.events if e.outcome == "bad"}
    letters = db.query("""SELECT d.projection_name, d.global_position, d.error, d.sqlstate,
                                 d.event_id = e.event_id, d.event_type = e.event_type,
                                 d.payload = e.event_data
                            FROM read_model.projection_dead_letter d
                            JOIN event_store.domain_event e USING (global_position)""")
    assert {(r[0], r[1]) for r in letters} == want
    by_position = {e.position: e for e in script.events}
    for name, pos, error, sqlstate, same_id, same_type, same_payload in letters:
        e = by_position[pos]
        assert error and "\n" not in error, (pos, error)
        assert same_id and same_type and same_payload, f"dead letter {pos} differs from the event"
        if e.sqlstate:
            assert sqlstate == e.sqlstate, (pos, error, sqlstate)

    run_checks(db, script)
    with db.connect() as conn:
        oracle.assert_same_rows("event_type_stats", oracle.expected_event_stats(conn),
                                oracle.read_table(conn, "event_type_stats"))
        oracle.assert_invariants(conn)
        assert_read_model_is_the_fold_without_bad_events(conn, script)
    assert_log_sane(daemon)
    assert daemon.stop() == 0


# --------------------------------------------------------------------------
# on_error = "stop": each projection fails at its first bad event
# --------------------------------------------------------------------------

def test_hostile_events_with_stop(db, start_daemon):
    script = hostile_script(folds_non_ascii(db))
    daemon = start_daemon(batch_size=16)     # on_error = "stop" for all
    append_script(db, script)
    head = script.events[-1].position
    first_bad = {}
    for e in script.events:
        if e.outcome == "bad":
            first_bad.setdefault(e.owner, e)
    assert set(first_bad) == set(oracle.HANDLED)

    def settled(conn, since=None):
        rows = metadata(conn)
        done = all(rows.get(p, {}).get("status") == "failed"
                   and (since is None or rows[p]["last_error_at"] > since) for p in first_bad)
        return done and rows.get("event_stats", {}).get("last_position", 0) >= head and rows
    rows = daemon.wait_until(settled, 90, "every payload projection failed, event_stats caught up")

    for name, e in first_bad.items():
        row = rows[name]
        assert row["last_error_position"] == e.position, (name, row["last_error"])
        assert row["last_error"], name
        assert row["last_position"] < e.position, f"{name} passed its bad event"
        if e.sqlstate:
            assert row["last_error_sqlstate"] == e.sqlstate, (name, row["last_error"])
        applied = sum(1 for x in script.events
                      if x.owner == name and x.position < e.position and x.outcome != "bad")
        assert row["events_processed"] == applied, name
    assert rows["event_stats"]["status"] == "live"
    assert rows["event_stats"]["events_processed"] == len(script.events)
    assert db.scalar("SELECT count(*) FROM read_model.projection_dead_letter") == 0
    with db.connect() as conn:
        oracle.assert_same_rows("event_type_stats", oracle.expected_event_stats(conn),
                                oracle.read_table(conn, "event_type_stats"))
    assert_log_sane(daemon)

    # A restarted daemon retries each failed projection from its checkpoint
    # and stops at the same event again.
    assert daemon.stop() == 0
    restarted = db.scalar("SELECT now()")
    daemon.start()
    try:
        rows = daemon.wait_until(lambda conn: settled(conn, restarted), 60,
                                 "the failed projections to fail again after a restart")
    except Exception:
        print({n: {k: r[k] for k in ("status", "last_position", "last_error_position", "last_error_at", "last_error")} for n, r in daemon.status().items()})
        raise
    for name, e in first_bad.items():
        assert rows[name]["last_error_position"] == e.position, name
        assert rows[name]["last_position"] < e.position, name
    assert daemon.stop() == 0


# --------------------------------------------------------------------------
# The command line and config files
# --------------------------------------------------------------------------

def stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip()]


def closed_conninfo():
    return f"host=127.0.0.1 port={free_port()} dbname=nothing user=postgres"


@pytest.mark.parametrize("args", [
    ["-c"], ["-l"], ["--config"], ["-x", "list"], ["--config=a", "--bogus"], [""], ["LIST"],
    ["list", "extra"], ["check-config", "extra"], ["run", "extra"], ["status", "--json", "--bogus"],
    ["status", "json"], ["--", "frobnicate"],
], ids=lambda a: " ".join(a) or "empty-command")
def test_more_usage_errors_exit_64(workdir, args):
    path = os.path.join(workdir, "p.conf")
    with open(path, "w") as f:
        f.write(config_text(closed_conninfo()))
    argv = args if args and args[0].startswith("-") and args[0] not in ("--",) else ["-c", path] + args
    proc = run_cli(argv, timeout=15)
    assert proc.returncode == EXIT_USAGE, (argv, proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "a usage error says why on stderr"
    assert not proc.stdout.strip(), "usage errors go to stderr"


def nested_groups(depth):
    return "a = " + "{ a = " * (depth - 1) + "1;" + " };" * (depth - 1) + "\n"


ODD_CONFIGS = [
    ("binary-garbage", bytes(range(256)) * 4),
    ("nul-bytes", b'batch_size = 10;\x00\x00poll_interval_ms = 100;\n'),
    ("not-utf8", b'listen_channel = "\xff\xfe";\n'),
    ("control-characters", b'listen_channel = "a\\nb\\x01";\n'),
    ("huge-key", ("k" * 100_000 + " = 1;\n").encode()),
    ("huge-value", ('listen_channel = "' + "c" * 1_000_000 + '";\n').encode()),
    ("deeply-nested-groups", nested_groups(10_000).encode()),
    ("include-missing", b'@include "/nonexistent/projectord.conf"\n'),
    ("include-itself", None),
    ("integer-overflow", b"batch_size = 99999999999999999999999;\n"),
    ("int64", b"batch_size = 100L;\n"),
    ("negative", b"poll_interval_ms = -1;\n"),
    ("float", b"batch_size = 1.5;\n"),
    ("list", b'batch_size = [1, 2];\n'),
    ("duplicate-key", b"batch_size = 1;\nbatch_size = 2;\n"),
    ("empty-projection-group", b"projections = { users = 5; };\n"),
    ("projections-not-group", b'projections = "all";\n'),
    ("unterminated-string", b'listen_channel = "abc\n'),
    ("unterminated-group", b"log = { level = \"info\";\n"),
]


@pytest.mark.parametrize("text", [c[1] for c in ODD_CONFIGS], ids=[c[0] for c in ODD_CONFIGS])
def test_odd_config_files_exit_78_with_one_line(workdir, text):
    path = os.path.join(workdir, "odd.conf")
    if text is None:
        text = f'@include "{path}"\n'.encode()
    with open(path, "wb") as f:
        f.write(text)
    for command in ("check-config", "run"):
        proc = run_cli(["-c", path, command], timeout=30)
        assert proc.returncode == EXIT_CONFIG, (command, proc.stdout[-500:], proc.stderr[-2000:])
        lines = stderr_lines(proc)
        assert len(lines) == 1, (command, [line[:300] for line in lines])
        assert path in lines[0] or "odd.conf" in lines[0], lines[0][:300]
        assert len(lines[0]) < 2048, "the one line stays readable"


@pytest.mark.parametrize("kind", ["directory", "missing", "under-a-file", "empty-path", "dangling-link"])
def test_unreadable_config_exits_78_with_one_line(workdir, kind):
    path = {"directory": workdir,
            "missing": os.path.join(workdir, "absent.conf"),
            "under-a-file": os.path.join(workdir, "file", "projectord.conf"),
            "empty-path": "",
            "dangling-link": os.path.join(workdir, "link.conf")}[kind]
    if kind == "under-a-file":
        open(os.path.join(workdir, "file"), "w").close()
    if kind == "dangling-link":
        os.symlink(os.path.join(workdir, "nowhere"), path)
    for command in ("check-config", "run", "status"):
        proc = run_cli(["-c", path, command], timeout=15)
        assert proc.returncode == EXIT_CONFIG, (command, proc.stderr)
        lines = stderr_lines(proc)
        assert len(lines) == 1 and "cannot read" in lines[0], lines
        if path:
            assert path in lines[0]


class SilentServer:
    """A TCP port that accepts connections and never answers (a hung server)
    or closes them at once."""

    def __init__(self, close_at_once=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.close_at_once = close_at_once
        self.held = []
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.close_at_once:
                conn.close()
            else:
                self.held.append(conn)

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize("close_at_once", [False, True], ids=["hung-server", "closing-server"])
def test_status_against_a_broken_server_exits_69_within_the_connect_timeout(workdir, close_at_once):
    server = SilentServer(close_at_once)
    try:
        path = os.path.join(workdir, "p.conf")
        with open(path, "w") as f:
            f.write(config_text(f"host=127.0.0.1 port={server.port} dbname=x user=projectord"))
        started = time.monotonic()
        proc = run_cli(["-c", path, "status"], timeout=30)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert len(stderr_lines(proc)) == 1, proc.stderr
    assert elapsed < 12, f"status took {elapsed:.1f}s (connect timeout is 5 s)"
    if not close_at_once:
        assert "timeout" in proc.stderr.lower(), proc.stderr


# Every command that talks to the database and then exits (SPEC §6).
ONE_SHOT_COMMANDS = [["status", "--check"], ["rebuild", "--all"], ["dead-letters"],
                     ["replay-dead-letters", "users"], ["resume", "users"]]


@pytest.mark.parametrize("server", ["closed-port", "hung-server", "closing-server"])
@pytest.mark.parametrize("args", ONE_SHOT_COMMANDS, ids=lambda a: " ".join(a))
def test_one_shot_commands_exit_69_when_the_database_is_unreachable(workdir, args, server):
    """Every one-shot command, not only `status`, gives up on a database it
    cannot reach with exit 69 and one line on stderr, within the connect
    timeout (5 s): nothing refused, a server that never answers, one that
    hangs up. Without a connect timeout a hung server would hang `rebuild`
    or `resume` forever; retrying like `run` does would never exit."""
    silent = None if server == "closed-port" else SilentServer(close_at_once=server == "closing-server")
    try:
        conninfo = closed_conninfo() if silent is None else \
            f"host=127.0.0.1 port={silent.port} dbname=x user=projectord"
        path = os.path.join(workdir, "p.conf")
        with open(path, "w") as f:
            f.write(config_text(conninfo))
        started = time.monotonic()
        proc = run_cli(["-c", path] + args, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        if silent is not None:
            silent.close()
    assert proc.returncode == EXIT_UNAVAILABLE, (proc.returncode, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "connect" in lines[0], lines
    assert elapsed < 5 + 7 * SLOWDOWN, f"{args[0]} took {elapsed:.1f}s (connect timeout is 5 s)"


def test_config_without_read_permission_exits_78_with_one_line(workdir):
    """A config file that exists but that the daemon's user may not read
    (mode 000: open() fails with EACCES, unlike the missing/directory cases
    above) is a configuration error: exit 78 and one line naming the file,
    for every command, never a crash or a default configuration. Root reads
    any file, so as root the commands run as `nobody` (setpriv)."""
    path = os.path.join(workdir, "projectord.conf")
    with open(path, "w") as f:
        f.write(config_text(closed_conninfo()))
    os.chmod(path, 0)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot test an unreadable file")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        os.chmod(workdir, 0o711)          # nobody may reach the file, not read it
        if subprocess.run(prefix + ["test", "-x", BIN]).returncode != 0:
            pytest.skip(f"nobody cannot execute {BIN}")
    for command in ("check-config", "run", "status"):
        proc = subprocess.run(prefix + daemon_command(["-c", path, command]), capture_output=True,
                              text=True, env=clean_env(), timeout=15 * SLOWDOWN)
        assert proc.returncode == EXIT_CONFIG, (command, proc.returncode, proc.stderr)
        lines = stderr_lines(proc)
        assert len(lines) == 1 and path in lines[0] and "Permission denied" in lines[0], lines


def test_status_without_the_schema_exits_1_with_one_line(cluster, workdir):
    name = f"noschema{os.getpid()}"
    cluster.create_database(name, schema=False)
    try:
        path = os.path.join(workdir, "p.conf")
        with open(path, "w") as f:
            f.write(config_text(cluster.conninfo(name)))
        proc = run_cli(["-c", path, "status"])
        assert proc.returncode == EXIT_FAILURE, proc.stderr
        lines = stderr_lines(proc)
        assert len(lines) == 1 and "projectord migrate" in lines[0], lines
    finally:
        cluster.drop_database(name)


def test_run_without_the_schema_keeps_retrying_and_says_why(cluster, workdir):
    """A daemon pointed at a database without sql/ applied does not crash or
    exit: it says once that the schema is missing, naming `projectord
    migrate`, and retries (an operator may apply the migrations after
    starting it)."""
    from daemon import Daemon
    name = f"noschema_run{os.getpid()}"
    cluster.create_database(name, schema=False)
    d = Daemon(cluster.conninfo(name), workdir, name="noschema", user=None, poll_interval_ms=100)
    try:
        d.start()
        deadline = time.monotonic() + 15
        said = "has no projectord schema"
        while said not in d.log(tail=100000) and time.monotonic() < deadline:
            assert d.alive(), d.log()
            time.sleep(0.1)
        assert said in d.log(tail=100000) and "projectord migrate" in d.log(tail=100000), d.log()
        time.sleep(2)  # retried meanwhile (backoff from 1 s), not said again
        assert d.log(tail=100000).count(said) == 1, d.log()
        assert d.alive()
        cluster.apply_schema(name)
        db_rows = d.wait_started(timeout=60)
        assert set(db_rows) == set(PROJECTIONS)
        assert d.stop() == 0
    finally:
        d.close()
        cluster.drop_database(name)
