"""Writing events: a script builder for hand-written scenarios, a seeded
generator of valid event mixes for the four example projections, and fast
appending through event_store.append_events.

A *command* is one append_events call: one stream, its expected version and
one or more events. Commands are kept in the order they must be appended;
streams are independent, so any interleaving that keeps each stream's own
order is valid too (the concurrent-writer tests rely on that).
"""

import datetime as dt
import random
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

UTC = dt.timezone.utc
APPEND_SQL = "SELECT event_store.append_events(%s, %s, %s, %s::jsonb[])"


@dataclass
class Command:
    aggregate_type: str
    aggregate_id: uuid.UUID
    expected_version: int | None
    events: list = field(default_factory=list)  # dicts: event_type, event_data, occurred_at?

    def params(self):
        """The four parameters of append_events."""
        return (self.aggregate_type, self.aggregate_id, self.expected_version,
                [Jsonb(_encodable(e)) for e in self.events])


def event(event_type, data, at=None, **extra):
    """One element of append_events' p_events array."""
    ev = {"event_type": event_type, "event_version": 1, "event_data": data}
    if at is not None:
        ev["occurred_at"] = at
    ev.update(extra)
    return ev


def _encodable(ev):
    """Timestamps and uuids as JSON strings (append_events casts them back)."""
    out = dict(ev)
    if isinstance(out.get("occurred_at"), dt.datetime):
        out["occurred_at"] = out["occurred_at"].isoformat()
    return out


def at(day, hour=0, minute=0, second=0, micro=0, base=dt.datetime(2024, 3, 1, tzinfo=UTC)):
    """A UTC timestamp `day` days after 2024-03-01 (day 0)."""
    return base + dt.timedelta(days=day, hours=hour, minutes=minute, seconds=second, microseconds=micro)


def new_id(rng=None):
    """A uuid4; deterministic when an rng is given."""
    if rng is None:
        return uuid.uuid4()
    return uuid.UUID(int=rng.getrandbits(128), version=4)


class Script:
    """Builds commands by hand, tracking each stream's version so scenarios
    read as a list of events: s.emit("Product", p1, "ProductRenamed", {...})."""

    def __init__(self):
        self.commands = []
        self.versions = {}

    def emit(self, aggregate_type, aggregate_id, event_type, data, at=None):
        return self.emit_many(aggregate_type, aggregate_id, [event(event_type, data, at)])

    def emit_many(self, aggregate_type, aggregate_id, events):
        key = (aggregate_type, aggregate_id)
        version = self.versions.get(key, 0)
        self.commands.append(Command(aggregate_type, aggregate_id, version, list(events)))
        self.versions[key] = version + len(events)
        return self

    @property
    def n_events(self):
        return sum(len(c.events) for c in self.commands)


def append(conn, command):
    """Append one command on an open connection."""
    conn.execute(APPEND_SQL, command.params())


def append_all(conninfo, commands, per_transaction=1000):
    """Append commands in order, many per transaction, pipelined: fast enough
    to load 100,000 events in seconds."""
    with psycopg.connect(conninfo) as conn:
        for start in range(0, len(commands), per_transaction):
            chunk = commands[start:start + per_transaction]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(APPEND_SQL, [c.params() for c in chunk])


# --------------------------------------------------------------------------
# The generated mix
# --------------------------------------------------------------------------

ROLES = ["user", "admin", "editor", "viewer"]


class EventMix:
    """A deterministic, valid mix of events for catalog, users, orders (and
    thus event_stats), plus some event types no projection but event_stats
    handles.

    Valid means: no bad event and no event a projection would ignore
    (updates only target rows that exist and are in the right state; emails
    stay unique because every email is fresh). So every handled event is
    applied, which lets tests compare events_processed exactly.

    The awkward cases are in: products created before their category,
    naming a category that is never created, or none; recategorizations;
    events after a discontinue; email changes; orders cancelled after items
    were added; occurred_at spread over several UTC days.
    """

    def __init__(self, seed, n_events, days=5, start=dt.datetime(2024, 3, 1, tzinfo=UTC)):
        self.rng = random.Random(seed)
        self.n_events = n_events
        self.start = start
        self.step = dt.timedelta(seconds=days * 86400 / max(n_events, 1))
        self.commands = []
        self.count = 0
        self.categories = []          # created
        self.pending_categories = []  # named by products, created later
        self.ghost_categories = [new_id(self.rng) for _ in range(3)]  # never created
        self.products = []            # [id, version]
        self.users = []               # [id, version, verified]
        self.placed_orders = []       # [id, version], status placed
        self.email_seq = 0

    def generate(self):
        """The commands, in append order (at least n_events events)."""
        actions = [
            (2, self._create_category), (1, self._rename_category),
            (8, self._create_product), (10, self._update_product),
            (6, self._register_user), (14, self._user_activity),
            (10, self._place_order), (10, self._order_activity),
            (2, self._unhandled),
        ]
        weights = [w for w, _ in actions]
        funcs = [f for _, f in actions]
        while self.count < self.n_events:
            self.rng.choices(funcs, weights)[0]()
        return self.commands

    # -- plumbing ----------------------------------------------------------

    def _now(self):
        return self.start + self.step * self.count

    def _emit(self, aggregate_type, aggregate_id, version, events):
        """Append a command of (event_type, data) pairs; returns the new version."""
        evs = []
        for event_type, data in events:
            evs.append(event(event_type, data, self._now()))
            self.count += 1
        self.commands.append(Command(aggregate_type, aggregate_id, version, evs))
        return None if version is None else version + len(evs)

    def _pick(self, items):
        return items[self.rng.randrange(len(items))] if items else None

    def _email(self):
        """A fresh address, unique even case-insensitively; mixed case on purpose."""
        self.email_seq += 1
        name = self.rng.choice(["Ann", "bob", "CHRIS", "dana", "Eve"])
        return f"{name}.{self.email_seq}@Example.com"

    def _category_ref(self):
        """What a product names: an existing, a later, a never-created or no category."""
        r = self.rng.random()
        if r < 0.60 and self.categories:
            return str(self._pick(self.categories))
        if r < 0.75:
            cid = new_id(self.rng)
            self.pending_categories.append(cid)
            return str(cid)
        if r < 0.85:
            return str(self._pick(self.ghost_categories))
        return None

    # -- catalog -----------------------------------------------------------

    def _create_category(self):
        if self.pending_categories and self.rng.random() < 0.6:
            cid = self.pending_categories.pop(self.rng.randrange(len(self.pending_categories)))
        else:
            cid = new_id(self.rng)
        self._emit("Category", cid, 0, [("CategoryCreated", {"name": f"Category {cid.hex[:6]}"})])
        self.categories.append(cid)

    def _rename_category(self):
        # Category versions are not tracked: NULL expected version appends.
        cid = self._pick(self.categories)
        if cid is not None:
            self._emit("Category", cid, None, [("CategoryRenamed", {"name": f"Renamed {self.count}"})])

    def _create_product(self):
        pid = new_id(self.rng)
        data = {"sku": f"SKU-{pid.hex[:10].upper()}", "name": f"Product {self.count}",
                "price_cents": self.rng.randrange(0, 100_000), "category_id": self._category_ref()}
        if data["category_id"] is None and self.rng.random() < 0.5:
            del data["category_id"]  # absent and null both mean "no category"
        version = self._emit("Product", pid, 0, [("ProductCreated", data)])
        self.products.append([pid, version])

    def _update_product(self):
        product = self._pick(self.products)
        if product is None:
            return self._create_product()
        events = []
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            kind = self.rng.random()
            if kind < 0.30:
                events.append(("ProductRenamed", {"name": f"Product {self.count}-{len(events)}"}))
            elif kind < 0.60:
                events.append(("ProductPriceChanged", {"price_cents": self.rng.randrange(0, 100_000)}))
            elif kind < 0.88:
                events.append(("ProductCategorized", {"category_id": self._category_ref()}))
            else:
                events.append(("ProductDiscontinued", {}))
        product[1] = self._emit("Product", product[0], product[1], events)

    # -- users -------------------------------------------------------------

    def _register_user(self):
        uid = new_id(self.rng)
        data = {"email": self._email(), "first_name": "First", "last_name": f"Last{self.count}"}
        r = self.rng.random()
        if r < 0.4:
            data["role"] = self.rng.choice(ROLES)
        elif r < 0.5:
            data["role"] = None
        version = self._emit("User", uid, 0, [("UserRegistered", data)])
        self.users.append([uid, version, False])

    def _user_activity(self):
        user = self._pick(self.users)
        if user is None:
            return self._register_user()
        events = []
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            kind = self.rng.random()
            if kind < 0.45:
                events.append(("UserLoggedIn", {}))
            elif kind < 0.60 and not user[2]:
                events.append(("UserEmailVerified", {}))
                user[2] = True
            elif kind < 0.72:
                events.append(("UserEmailChanged", {"email": self._email()}))
                user[2] = False
            elif kind < 0.82:
                events.append(("UserRoleChanged", {"role": self.rng.choice(ROLES)}))
            elif kind < 0.91:
                events.append(("UserDeactivated", {}))
            else:
                events.append(("UserReactivated", {}))
        if events:
            user[1] = self._emit("User", user[0], user[1], events)

    # -- orders ------------------------------------------------------------

    def _item(self):
        return {"product_id": str(self._pick(self.products)[0] if self.products else new_id(self.rng)),
                "quantity": self.rng.randrange(1, 5), "unit_price_cents": self.rng.randrange(0, 20_000)}

    def _place_order(self):
        oid = new_id(self.rng)
        items = [self._item() for _ in range(self.rng.choice([0, 1, 1, 2, 3]))]
        data = {"customer_id": str(self._pick(self.users)[0] if self.users else new_id(self.rng)),
                "items": items}
        version = self._emit("Order", oid, 0, [("OrderPlaced", data)])
        self.placed_orders.append([oid, version])

    def _order_activity(self):
        if not self.placed_orders:
            return self._place_order()
        index = self.rng.randrange(len(self.placed_orders))
        oid, version = self.placed_orders[index]
        events = [("OrderItemAdded", self._item()) for _ in range(self.rng.choice([0, 0, 1, 2]))]
        final = self.rng.random()
        if final < 0.45:
            events.append(("OrderShipped", {}))
        elif final < 0.70:
            events.append(("OrderCancelled", {"reason": "customer request"}))
        if not events:
            events.append(("OrderItemAdded", self._item()))
        version = self._emit("Order", oid, version, events)
        if events[-1][0] in ("OrderShipped", "OrderCancelled"):
            self.placed_orders.pop(index)
        else:
            self.placed_orders[index][1] = version

    # -- noise -------------------------------------------------------------

    def _unhandled(self):
        """Events only event_stats handles (unknown types are ignored)."""
        sid = new_id(self.rng)
        self._emit("Session", sid, 0, [("PageViewed", {"path": f"/p/{self.count}"}),
                                      ("CartAbandoned", {"items": self.rng.randrange(0, 4)})])


def generate_mix(seed, n_events, days=5):
    """The commands of an EventMix (see there)."""
    return EventMix(seed, n_events, days).generate()


def bulk_events(db, streams, per_stream):
    """streams × per_stream events of five types, appended in one
    transaction, so the catch-up reads them as one window of many batches."""
    with db.connect() as conn:
        conn.execute("""
            WITH s AS (
                INSERT INTO event_store.event_stream (aggregate_type, aggregate_id, version)
                SELECT 'Thing', gen_random_uuid(), %(n)s FROM generate_series(1, %(s)s)
                RETURNING stream_id)
            INSERT INTO event_store.domain_event
                   (stream_id, event_type, event_version, aggregate_version, event_data)
            SELECT s.stream_id, 'Thing' || (g %% 5), 1, g, '{}'
              FROM s, generate_series(1, %(n)s) g ORDER BY s.stream_id, g""",
                     {"s": streams, "n": per_stream})
