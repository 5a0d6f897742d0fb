"""The independent oracle: what the read model must contain, computed from
event_store alone, without any of the daemon's code.

- `fold(events)` replays events (in global_position order) through a plain
  Python reading of SPEC §4 and returns the expected rows of every table;
- `expected_event_stats` and the invariant queries are SQL over the tables;
- `read_model(conn)` fetches the actual rows in the same shape, and
  `assert_same_rows` compares them with a readable diff.

Streams are independent in the example domain, so the final state does not
depend on how the daemon interleaved streams, only on each stream's order.
"""

import datetime as dt
import uuid
from collections import defaultdict

UTC = dt.timezone.utc

EVENTS_SQL = """
SELECT e.global_position, s.aggregate_type, s.aggregate_id, e.event_type,
       e.aggregate_version, e.event_data, e.occurred_at
  FROM event_store.domain_event e
  JOIN event_store.event_stream s USING (stream_id)
 ORDER BY e.global_position
"""

EVENT_STATS_SQL = """
SELECT event_type, count(*), min(global_position), max(global_position), max(occurred_at)
  FROM event_store.domain_event GROUP BY 1
"""

# Each table: primary key column, compared columns (in this order).
TABLES = {
    "categories": ("id", ["name", "product_count", "created_at", "updated_at"]),
    "products": ("id", ["sku", "name", "price_cents", "category_id", "status", "version",
                        "created_at", "updated_at"]),
    "users": ("id", ["email", "first_name", "last_name", "role", "status", "email_verified",
                     "email_verified_at", "last_login_at", "login_count", "created_at", "updated_at"]),
    "orders": ("id", ["customer_id", "status", "item_count", "total_cents", "placed_at",
                      "shipped_at", "cancelled_at", "updated_at"]),
    "daily_sales": ("day", ["orders_placed", "orders_cancelled", "revenue_cents"]),
    "event_type_stats": ("event_type", ["event_count", "first_position", "last_position",
                                        "last_occurred_at"]),
}

# Event types each projection handles (event_stats handles all of them).
HANDLED = {
    "catalog": {"CategoryCreated", "CategoryRenamed", "ProductCreated", "ProductRenamed",
                "ProductPriceChanged", "ProductCategorized", "ProductDiscontinued"},
    "users": {"UserRegistered", "UserEmailVerified", "UserEmailChanged", "UserLoggedIn",
              "UserRoleChanged", "UserDeactivated", "UserReactivated"},
    "orders": {"OrderPlaced", "OrderItemAdded", "OrderShipped", "OrderCancelled"},
}
# The example projections this oracle knows (their tables are TABLES). The
# build's full list, with any projection added to it, is daemon.PROJECTIONS
# (`projectord list --names`): the oracle's exact checks cover these four.
KNOWN = ["catalog", "users", "orders", "event_stats"]


# --------------------------------------------------------------------------
# The fold
# --------------------------------------------------------------------------

class Fold:
    """Expected rows per table, keyed by primary key, plus the number of
    events each projection ignored because the target row was missing."""

    def __init__(self):
        self.rows = {name: {} for name in TABLES}
        self.ignored_missing = defaultdict(int)

    def apply(self, pos, agg_type, agg_id, event_type, version, data, occurred_at):
        self._stats(pos, event_type, occurred_at)
        handler = getattr(self, "_" + event_type, None)
        if handler is not None:
            handler(agg_id, version, data, occurred_at)

    def finish(self):
        """Derived columns: product_count and daily_sales are invariants over
        the final rows (SPEC §4), so compute them from those."""
        active = defaultdict(int)
        for p in self.rows["products"].values():
            if p["status"] == "active" and p["category_id"] is not None:
                active[p["category_id"]] += 1
        for cid, c in self.rows["categories"].items():
            c["product_count"] = active[cid]
        self.rows["daily_sales"] = daily_sales_from_orders(self.rows["orders"].values())
        return self

    # -- helpers -----------------------------------------------------------

    def _update(self, projection, table, key, occurred_at, **changes):
        row = self.rows[table].get(key)
        if row is None:
            self.ignored_missing[projection] += 1
            return None
        row.update(changes, updated_at=occurred_at)
        return row

    def _stats(self, pos, event_type, occurred_at):
        s = self.rows["event_type_stats"].setdefault(
            event_type, {"event_count": 0, "first_position": pos, "last_position": pos,
                         "last_occurred_at": occurred_at})
        s["event_count"] += 1
        s["first_position"] = min(s["first_position"], pos)
        s["last_position"] = max(s["last_position"], pos)
        s["last_occurred_at"] = max(s["last_occurred_at"], occurred_at)

    # -- catalog -----------------------------------------------------------

    def _CategoryCreated(self, cid, version, data, t):
        self.rows["categories"].setdefault(cid, {"name": data["name"], "product_count": 0,
                                                 "created_at": t, "updated_at": t})

    def _CategoryRenamed(self, cid, version, data, t):
        self._update("catalog", "categories", cid, t, name=data["name"])

    def _ProductCreated(self, pid, version, data, t):
        self.rows["products"].setdefault(pid, {
            "sku": data["sku"], "name": data["name"], "price_cents": data["price_cents"],
            "category_id": _uuid(data.get("category_id")), "status": "active", "version": version,
            "created_at": t, "updated_at": t})

    def _ProductRenamed(self, pid, version, data, t):
        self._update("catalog", "products", pid, t, name=data["name"], version=version)

    def _ProductPriceChanged(self, pid, version, data, t):
        self._update("catalog", "products", pid, t, price_cents=data["price_cents"], version=version)

    def _ProductCategorized(self, pid, version, data, t):
        self._update("catalog", "products", pid, t, category_id=_uuid(data.get("category_id")),
                     version=version)

    def _ProductDiscontinued(self, pid, version, data, t):
        self._update("catalog", "products", pid, t, status="discontinued", version=version)

    # -- users -------------------------------------------------------------

    def _UserRegistered(self, uid, version, data, t):
        self.rows["users"].setdefault(uid, {
            "email": data["email"], "first_name": data["first_name"], "last_name": data["last_name"],
            "role": data.get("role") or "user", "status": "active", "email_verified": False,
            "email_verified_at": None, "last_login_at": None, "login_count": 0,
            "created_at": t, "updated_at": t})

    def _UserEmailVerified(self, uid, version, data, t):
        self._update("users", "users", uid, t, email_verified=True, email_verified_at=t)

    def _UserEmailChanged(self, uid, version, data, t):
        self._update("users", "users", uid, t, email=data["email"], email_verified=False,
                     email_verified_at=None)

    def _UserLoggedIn(self, uid, version, data, t):
        row = self._update("users", "users", uid, t, last_login_at=t)
        if row is not None:
            row["login_count"] += 1

    def _UserRoleChanged(self, uid, version, data, t):
        self._update("users", "users", uid, t, role=data["role"])

    def _UserDeactivated(self, uid, version, data, t):
        self._update("users", "users", uid, t, status="inactive")

    def _UserReactivated(self, uid, version, data, t):
        self._update("users", "users", uid, t, status="active")

    # -- orders ------------------------------------------------------------

    def _OrderPlaced(self, oid, version, data, t):
        items = data["items"]
        self.rows["orders"].setdefault(oid, {
            "customer_id": _uuid(data["customer_id"]), "status": "placed",
            "item_count": sum(i["quantity"] for i in items),
            "total_cents": sum(i["quantity"] * i["unit_price_cents"] for i in items),
            "placed_at": t, "shipped_at": None, "cancelled_at": None, "updated_at": t})

    def _placed_order(self, oid):
        """The order if it may still change; a missing one counts as ignored."""
        row = self.rows["orders"].get(oid)
        if row is None:
            self.ignored_missing["orders"] += 1
        return row if row is not None and row["status"] == "placed" else None

    def _OrderItemAdded(self, oid, version, data, t):
        row = self._placed_order(oid)
        if row is not None:
            row["item_count"] += data["quantity"]
            row["total_cents"] += data["quantity"] * data["unit_price_cents"]
            row["updated_at"] = t

    def _OrderShipped(self, oid, version, data, t):
        row = self._placed_order(oid)
        if row is not None:
            row.update(status="shipped", shipped_at=t, updated_at=t)

    def _OrderCancelled(self, oid, version, data, t):
        row = self._placed_order(oid)
        if row is not None:
            row.update(status="cancelled", cancelled_at=t, updated_at=t)


def _uuid(value):
    return None if value is None else uuid.UUID(value)


def daily_sales_from_orders(orders):
    """SPEC §4's daily_sales invariant, recomputed from order rows."""
    days = {}
    for o in orders:
        day = o["placed_at"].astimezone(UTC).date()
        d = days.setdefault(day, {"orders_placed": 0, "orders_cancelled": 0, "revenue_cents": 0})
        d["orders_placed"] += 1
        if o["status"] == "cancelled":
            d["orders_cancelled"] += 1
        else:
            d["revenue_cents"] += o["total_cents"]
    return days


def fold(events):
    """Expected final rows from (position, aggregate_type, aggregate_id,
    event_type, aggregate_version, event_data, occurred_at) tuples."""
    f = Fold()
    for ev in events:
        f.apply(*ev)
    return f.finish()


def fold_database(conn):
    """Fold every event of the store, in position order."""
    return fold(conn.execute(EVENTS_SQL).fetchall())


# --------------------------------------------------------------------------
# Reading the actual read model
# --------------------------------------------------------------------------

def read_table(conn, table):
    """Rows of read_model.table as {pk: {column: value}} in TABLES' shape."""
    pk, columns = TABLES[table]
    sql = f"SELECT {pk}, {', '.join(columns)} FROM read_model.{table}"
    return {r[0]: dict(zip(columns, r[1:])) for r in conn.execute(sql).fetchall()}


def read_model(conn):
    return {table: read_table(conn, table) for table in TABLES}


def expected_event_stats(conn):
    """event_type_stats as the SPEC defines it, straight from the events."""
    return {r[0]: dict(zip(TABLES["event_type_stats"][1], r[1:]))
            for r in conn.execute(EVENT_STATS_SQL).fetchall()}


def handled_counts(conn):
    """Per projection: how many stored events have a type it handles."""
    by_type = dict(conn.execute(
        "SELECT event_type, count(*) FROM event_store.domain_event GROUP BY 1").fetchall())
    counts = {name: sum(n for t, n in by_type.items() if t in types) for name, types in HANDLED.items()}
    counts["event_stats"] = sum(by_type.values())
    return counts


# --------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------

def diff_rows(expected, actual, limit=8):
    """Human-readable differences between two {pk: row} maps ('' if equal)."""
    lines = []
    for key in sorted(set(expected) | set(actual), key=str):
        e, a = expected.get(key), actual.get(key)
        if e == a:
            continue
        if e is None:
            lines.append(f"  unexpected row {key}: {a}")
        elif a is None:
            lines.append(f"  missing row {key}: {e}")
        else:
            cols = {c: (e.get(c), a.get(c)) for c in set(e) | set(a) if e.get(c) != a.get(c)}
            lines.append(f"  row {key}: " + ", ".join(
                f"{c} expected {ev!r} got {av!r}" for c, (ev, av) in sorted(cols.items())))
        if len(lines) >= limit:
            lines.append("  ...")
            break
    return "\n".join(lines)


def assert_same_rows(table, expected, actual):
    diff = diff_rows(expected, actual)
    assert not diff, (f"read_model.{table} differs ({len(expected)} expected rows, "
                      f"{len(actual)} actual):\n{diff}")


def assert_read_model_matches_fold(conn, tables=tuple(TABLES)):
    """Every table equals the fold of the event store, exactly."""
    expected = fold_database(conn).rows
    for table in tables:
        assert_same_rows(table, expected[table], read_table(conn, table))


def assert_invariants(conn):
    """The SPEC §4 invariants, checked over the read model itself and the
    event_stats equality with the event table (duplicates would show)."""
    wrong_counts = conn.execute("""
        SELECT c.id, c.product_count, count(p.id)
          FROM read_model.categories c
          LEFT JOIN read_model.products p ON p.category_id = c.id AND p.status = 'active'
         GROUP BY c.id, c.product_count
        HAVING c.product_count <> count(p.id)
         LIMIT 5""").fetchall()
    assert not wrong_counts, f"product_count invariant broken (id, stored, actual): {wrong_counts}"
    orders = read_table(conn, "orders").values()
    assert_same_rows("daily_sales", daily_sales_from_orders(orders), read_table(conn, "daily_sales"))
    assert_same_rows("event_type_stats", expected_event_stats(conn), read_table(conn, "event_type_stats"))


def assert_event_stats_exact(db):
    """event_type_stats equals the event table's own count, first and last
    position per type (event_stats alone, for tests that run only it)."""
    stats = db.query("SELECT event_type, event_count, first_position, last_position "
                     "FROM read_model.event_type_stats ORDER BY 1")
    truth = db.query("SELECT event_type, count(*), min(global_position), max(global_position) "
                     "FROM event_store.domain_event GROUP BY 1 ORDER BY 1")
    assert stats == truth, "event_type_stats differs from the event table"
