"""Hand-written scenarios for the example projections (SPEC §4), each with
the exact rows it must produce. Used by test_projections (the daemon and
the oracle's fold must both produce them) and as sample data elsewhere."""

import uuid
from collections import namedtuple

from eventgen import Script, at


def ids(*names):
    """Readable fixed uuids: ids('p1', 'p2') -> {'p1': UUID(...), ...}."""
    return {n: uuid.uuid5(uuid.NAMESPACE_DNS, f"{n}.projectord.test") for n in names}


# missing: events that update a missing row (ignored and counted, exactly);
# other: events ignored for another reason (a second creation, an order no
# longer placed); whether those count as ignored too the SPEC leaves open.
Scenario = namedtuple("Scenario", "script expected missing other")


def catalog_scenario():
    i = ids("kitchen", "garden", "ghost", "late", "p1", "p2", "p3", "p4", "p5", "p6", "nop")
    s = Script()
    # p1 names 'kitchen' before it exists; p6 names 'late' and is
    # discontinued before 'late' is created; p3 names a category never created.
    s.emit("Product", i["p1"], "ProductCreated",
           {"sku": "K-1", "name": "Kettle", "price_cents": 2599, "category_id": str(i["kitchen"])}, at(0, 8))
    s.emit("Product", i["p6"], "ProductCreated",
           {"sku": "L-6", "name": "Lamp", "price_cents": 4000, "category_id": str(i["late"])}, at(0, 8, 30))
    s.emit("Product", i["p6"], "ProductDiscontinued", {}, at(0, 8, 45))
    s.emit("Category", i["kitchen"], "CategoryCreated", {"name": "Kitchen"}, at(0, 9))
    s.emit("Product", i["p2"], "ProductCreated",
           {"sku": "K-2", "name": "Knife", "price_cents": 1500, "category_id": str(i["kitchen"])}, at(0, 10))
    s.emit("Product", i["p3"], "ProductCreated",
           {"sku": "G-3", "name": "Ghost", "price_cents": 100, "category_id": str(i["ghost"])}, at(0, 11))
    s.emit("Product", i["p4"], "ProductCreated",
           {"sku": "N-4", "name": "Null cat", "price_cents": 0, "category_id": None}, at(0, 12))
    s.emit("Product", i["p5"], "ProductCreated",
           {"sku": "A-5", "name": "Absent cat", "price_cents": 42}, at(0, 13))
    s.emit("Category", i["garden"], "CategoryCreated", {"name": "Garden"}, at(1, 9))
    s.emit("Category", i["late"], "CategoryCreated", {"name": "Late"}, at(1, 9, 30))
    s.emit("Product", i["p2"], "ProductCategorized", {"category_id": str(i["garden"])}, at(1, 10))
    s.emit("Product", i["p1"], "ProductRenamed", {"name": "Electric kettle"}, at(1, 11))
    s.emit("Product", i["p1"], "ProductPriceChanged", {"price_cents": 2999}, at(1, 12))
    s.emit("Product", i["p1"], "ProductDiscontinued", {}, at(1, 13))
    s.emit("Product", i["p1"], "ProductDiscontinued", {}, at(1, 14))          # twice: no double decrement
    s.emit("Product", i["p1"], "ProductRenamed", {"name": "Old kettle"}, at(1, 15))  # after discontinue: applies
    s.emit("Product", i["p1"], "ProductCategorized", {"category_id": str(i["garden"])}, at(1, 16))
    s.emit("Product", i["p3"], "ProductCategorized", {"category_id": None}, at(1, 17))
    s.emit("Product", i["p5"], "ProductCategorized", {"category_id": str(i["kitchen"])}, at(1, 18))
    s.emit("Category", i["kitchen"], "CategoryRenamed", {"name": "Kitchenware"}, at(2, 9))
    s.emit("Category", i["kitchen"], "CategoryCreated", {"name": "Duplicate"}, at(2, 10))  # second creation
    s.emit("Product", i["p4"], "ProductCreated",                                          # second creation
           {"sku": "DUP", "name": "Dup", "price_cents": 1, "category_id": str(i["kitchen"])}, at(2, 11))
    s.emit("Category", i["nop"], "CategoryRenamed", {"name": "Nobody"}, at(2, 12))         # missing row
    s.emit("Product", i["nop"], "ProductPriceChanged", {"price_cents": 5}, at(2, 13))      # missing row
    p = {
        i["p1"]: dict(sku="K-1", name="Old kettle", price_cents=2999, category_id=i["garden"],
                      status="discontinued", version=7, created_at=at(0, 8), updated_at=at(1, 16)),
        i["p2"]: dict(sku="K-2", name="Knife", price_cents=1500, category_id=i["garden"],
                      status="active", version=2, created_at=at(0, 10), updated_at=at(1, 10)),
        i["p3"]: dict(sku="G-3", name="Ghost", price_cents=100, category_id=None,
                      status="active", version=2, created_at=at(0, 11), updated_at=at(1, 17)),
        i["p4"]: dict(sku="N-4", name="Null cat", price_cents=0, category_id=None,
                      status="active", version=1, created_at=at(0, 12), updated_at=at(0, 12)),
        i["p5"]: dict(sku="A-5", name="Absent cat", price_cents=42, category_id=i["kitchen"],
                      status="active", version=2, created_at=at(0, 13), updated_at=at(1, 18)),
        i["p6"]: dict(sku="L-6", name="Lamp", price_cents=4000, category_id=i["late"],
                      status="discontinued", version=2, created_at=at(0, 8, 30), updated_at=at(0, 8, 45)),
    }
    c = {
        i["kitchen"]: dict(name="Kitchenware", product_count=1, created_at=at(0, 9), updated_at=at(2, 9)),
        i["garden"]: dict(name="Garden", product_count=1, created_at=at(1, 9), updated_at=at(1, 9)),
        i["late"]: dict(name="Late", product_count=0, created_at=at(1, 9, 30), updated_at=at(1, 9, 30)),
    }
    return Scenario(s, {"products": p, "categories": c}, missing=2, other=2)


def users_scenario():
    i = ids("alice", "bob", "carol", "ghost")
    s = Script()
    s.emit("User", i["alice"], "UserRegistered",
           {"email": "Alice@Example.com", "first_name": "Alice", "last_name": "Liddell"}, at(0, 9))
    s.emit("User", i["bob"], "UserRegistered",
           {"email": "bob@example.com", "first_name": "Bob", "last_name": "Builder", "role": "admin"}, at(0, 10))
    s.emit("User", i["carol"], "UserRegistered",
           {"email": "carol@example.com", "first_name": "Carol", "last_name": "Danvers", "role": None}, at(0, 11))
    s.emit("User", i["alice"], "UserEmailVerified", {}, at(0, 12))
    s.emit("User", i["bob"], "UserEmailVerified", {}, at(0, 12, 30))
    s.emit("User", i["alice"], "UserLoggedIn", {}, at(1, 8))
    s.emit("User", i["alice"], "UserLoggedIn", {}, at(1, 20))
    s.emit("User", i["alice"], "UserEmailChanged", {"email": "alice@wonderland.example"}, at(1, 21))
    s.emit("User", i["bob"], "UserRoleChanged", {"role": "editor"}, at(2, 8))
    s.emit("User", i["bob"], "UserDeactivated", {}, at(2, 9))
    s.emit("User", i["carol"], "UserDeactivated", {}, at(2, 10))
    s.emit("User", i["carol"], "UserReactivated", {}, at(2, 11))
    s.emit("User", i["ghost"], "UserLoggedIn", {}, at(2, 12))                       # missing row
    s.emit("User", i["alice"], "UserRegistered",                                    # second creation
           {"email": "alice2@example.com", "first_name": "A", "last_name": "L", "role": "admin"}, at(3, 9))
    u = {
        i["alice"]: dict(email="alice@wonderland.example", first_name="Alice", last_name="Liddell",
                         role="user", status="active", email_verified=False, email_verified_at=None,
                         last_login_at=at(1, 20), login_count=2, created_at=at(0, 9), updated_at=at(1, 21)),
        i["bob"]: dict(email="bob@example.com", first_name="Bob", last_name="Builder", role="editor",
                       status="inactive", email_verified=True, email_verified_at=at(0, 12, 30),
                       last_login_at=None, login_count=0, created_at=at(0, 10), updated_at=at(2, 9)),
        i["carol"]: dict(email="carol@example.com", first_name="Carol", last_name="Danvers", role="user",
                         status="active", email_verified=False, email_verified_at=None,
                         last_login_at=None, login_count=0, created_at=at(0, 11), updated_at=at(2, 11)),
    }
    return Scenario(s, {"users": u}, missing=1, other=1)


def orders_scenario():
    i = ids("o1", "o2", "o3", "o4", "o5", "cust1", "cust2", "prodA", "prodB")
    item = lambda prod, q, price: {"product_id": str(i[prod]), "quantity": q, "unit_price_cents": price}
    s = Script()
    # o1 is placed at 22:30 UTC on day 0: already the next day in most of Asia
    # (the test cluster's time zone), still day 0 for daily_sales.
    s.emit("Order", i["o1"], "OrderPlaced", {"customer_id": str(i["cust1"]),
           "items": [item("prodA", 2, 1500), item("prodB", 1, 999)]}, at(0, 22, 30))
    s.emit("Order", i["o2"], "OrderPlaced", {"customer_id": str(i["cust2"]), "items": []}, at(0, 23))
    s.emit("Order", i["o1"], "OrderItemAdded", item("prodB", 1, 500), at(1, 1))   # next day: revenue of day 0
    s.emit("Order", i["o1"], "OrderShipped", {}, at(1, 2))
    s.emit("Order", i["o1"], "OrderItemAdded", item("prodA", 5, 100), at(1, 3))   # after ship: ignored
    s.emit("Order", i["o1"], "OrderCancelled", {"reason": "too late"}, at(1, 4))  # after ship: ignored
    s.emit("Order", i["o2"], "OrderCancelled", {"reason": "changed mind"}, at(1, 5))
    s.emit("Order", i["o3"], "OrderPlaced", {"customer_id": str(i["cust1"]),
           "items": [item("prodA", 3, 250)]}, at(1, 6))
    s.emit("Order", i["o3"], "OrderCancelled", {"reason": "duplicate"}, at(1, 7))  # keeps its total
    s.emit("Order", i["o4"], "OrderPlaced", {"customer_id": str(i["cust2"]),
           "items": [item("prodB", 1, 10000)]}, at(1, 8))
    s.emit("Order", i["o1"], "OrderPlaced", {"customer_id": str(i["cust2"]),        # second creation
           "items": [item("prodA", 9, 9999)]}, at(2, 9))
    s.emit("Order", i["o5"], "OrderShipped", {}, at(2, 10))                         # missing row
    o = {
        i["o1"]: dict(customer_id=i["cust1"], status="shipped", item_count=4, total_cents=4499,
                      placed_at=at(0, 22, 30), shipped_at=at(1, 2), cancelled_at=None, updated_at=at(1, 2)),
        i["o2"]: dict(customer_id=i["cust2"], status="cancelled", item_count=0, total_cents=0,
                      placed_at=at(0, 23), shipped_at=None, cancelled_at=at(1, 5), updated_at=at(1, 5)),
        i["o3"]: dict(customer_id=i["cust1"], status="cancelled", item_count=3, total_cents=750,
                      placed_at=at(1, 6), shipped_at=None, cancelled_at=at(1, 7), updated_at=at(1, 7)),
        i["o4"]: dict(customer_id=i["cust2"], status="placed", item_count=1, total_cents=10000,
                      placed_at=at(1, 8), shipped_at=None, cancelled_at=None, updated_at=at(1, 8)),
    }
    d = {
        at(0).date(): dict(orders_placed=2, orders_cancelled=1, revenue_cents=4499),
        at(1).date(): dict(orders_placed=2, orders_cancelled=1, revenue_cents=10000),
    }
    return Scenario(s, {"orders": o, "daily_sales": d}, missing=1, other=3)


SCENARIOS = {"catalog": catalog_scenario, "users": users_scenario, "orders": orders_scenario}
