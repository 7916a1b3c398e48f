"""orders.logic against a real database (SQLite and PostgreSQL), no broker."""

import json
import uuid
from datetime import timedelta

import eventlet
import pytest
from nameko_sqlalchemy.database import Session
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import sessionmaker

from orders import logic
from orders.models import Order, OrderItem, OutboxEvent
from shared.db import engine_for
from shared.exceptions import (
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    Unavailable,
)
from shared.outbox import OutboxWriter, utcnow

ANN, BOB = 1, 2
ITEM = {"sku": "BOOK-1", "quantity": 2, "unit_price": "19.99"}


@pytest.fixture
def session_factory(orders_db_uri):
    engine = engine_for(orders_db_uri)
    yield sessionmaker(bind=engine, class_=Session)
    engine.dispose()


@pytest.fixture
def orders_session(session_factory):
    session = session_factory()
    yield session
    session.close()


@pytest.fixture
def autocommit(orders_db_uri):
    """What the service passes as ``autocommit``: the one-statement create runs on it."""
    engine = engine_for(orders_db_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        yield connection
    engine.dispose()


@pytest.fixture
def outbox():
    return OutboxWriter(OutboxEvent)


class KnownUsers:
    """The users lookup as orders sees it: a fake of our own port, counting its calls."""

    def __init__(self, *user_ids):
        self.user_ids = set(user_ids)
        self.calls = 0

    def exists(self, user_id):
        self.calls += 1
        return user_id in self.user_ids


@pytest.fixture
def users():
    return KnownUsers(ANN, BOB)


@pytest.fixture
def create(orders_session, outbox, users, autocommit):
    def create(user_id=ANN, items=(ITEM,), key=None):
        return logic.create_order(
            orders_session, outbox, users.exists, user_id, list(items), key, autocommit
        )

    return create


def events(session):
    rows = session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()
    return [(row.event_type, json.loads(row.payload)) for row in rows]


def count(session, model=Order):
    session.rollback()
    return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def order_with_status(create, orders_session, outbox):
    """An order of ``user_id`` moved along the machine to ``status``."""
    paths = {
        "pending": [],
        "paid": ["paid"],
        "shipped": ["paid", "shipped"],
        "delivered": ["paid", "shipped", "delivered"],
        "cancelled": ["cancelled"],
    }

    def make(status, user_id=ANN):
        order = create(user_id=user_id)["order"]
        for step in paths[status]:
            order = logic.set_status(orders_session, outbox, order["id"], step)
        return order

    return make


# --- create_order ---------------------------------------------------------------------------------


def test_create_order_returns_a_pending_order_with_an_exact_total(create):
    result = create(items=[ITEM, {"sku": "PEN", "quantity": 3, "unit_price": "0.10"}])
    order = result["order"]
    assert result["created"] is True
    assert set(order) == {
        "id",
        "user_id",
        "status",
        "items",
        "total",
        "currency",
        "created_at",
        "updated_at",
    }
    assert order["status"] == "pending"
    assert order["currency"] == "EUR"
    assert order["total"] == "40.28"
    assert order["items"] == [
        {"sku": "BOOK-1", "quantity": 2, "unit_price": "19.99"},
        {"sku": "PEN", "quantity": 3, "unit_price": "0.10"},
    ]
    assert order["created_at"].endswith("+00:00")


def test_totals_are_exact_where_floats_would_drift(create):
    items = [{"sku": f"S{i}", "quantity": 1, "unit_price": "0.10"} for i in range(3)]
    assert create(items=items)["order"]["total"] == "0.30"


@pytest.mark.parametrize("number", [19.99, 20, 0.1 + 0.2])
def test_money_as_a_json_number_is_refused_naming_the_field(create, number):
    with pytest.raises(InvalidInput) as refused:
        create(items=[{"sku": "S", "quantity": 1, "unit_price": number}])
    # as a caller over RPC sees it: JSON keys
    details = json.loads(json.dumps(refused.value.details))
    [message] = details["items"]["0"]["unit_price"]
    assert "decimal string" in message


def test_the_largest_order_is_summed_without_overflow(create):
    items = [{"sku": f"S{i}", "quantity": 1000, "unit_price": "1000000.00"} for i in range(100)]
    assert create(items=items)["order"]["total"] == "100000000000.00"


def test_get_order_reads_back_what_create_order_returned(create, orders_session):
    order = create()["order"]
    assert logic.get_order(orders_session, order["id"]) == order


def test_create_order_records_order_created_in_the_outbox(create, orders_session):
    order = create()["order"]
    [(event_type, payload)] = events(orders_session)
    assert event_type == "order_created"
    assert payload["order_id"] == order["id"]
    assert payload["user_id"] == ANN
    assert payload["status"] == "pending"
    assert payload["total"] == "39.98"
    assert payload["currency"] == "EUR"
    assert payload["items"] == order["items"]
    assert uuid.UUID(payload["event_id"]) and payload["occurred_at"]


def test_an_unknown_user_is_invalid_input_and_writes_nothing(create, orders_session):
    with pytest.raises(InvalidInput) as error:
        create(user_id=99)
    assert error.value.details == {"user_id": ["Unknown user."]}
    assert count(orders_session) == 0
    assert events(orders_session) == []


def test_users_being_unavailable_writes_nothing(orders_session, outbox):
    def unavailable(user_id):
        raise Unavailable("the users service did not answer within 5s")

    with pytest.raises(Unavailable):
        logic.create_order(orders_session, outbox, unavailable, ANN, [ITEM])
    assert count(orders_session) == 0


@pytest.mark.parametrize(
    "price, stored",
    [
        ("19.99", "19.99"),
        ("19.9", "19.90"),
        ("20", "20.00"),
        ("0.01", "0.01"),
        ("1000000", "1000000.00"),
    ],
)
def test_unit_price_accepts_decimal_strings(create, price, stored):
    items = [{"sku": "X", "quantity": 1, "unit_price": price}]
    assert create(items=items)["order"]["items"][0]["unit_price"] == stored


@pytest.mark.parametrize(
    "item, field",
    [
        ({"unit_price": "19.999"}, "unit_price"),
        ({"unit_price": 19.999}, "unit_price"),
        ({"unit_price": 0.1 + 0.2}, "unit_price"),
        ({"unit_price": "0.00"}, "unit_price"),
        ({"unit_price": 0}, "unit_price"),
        ({"unit_price": "-1.00"}, "unit_price"),
        ({"unit_price": -5}, "unit_price"),
        ({"unit_price": "1000000.01"}, "unit_price"),
        ({"unit_price": "1e3"}, "unit_price"),
        ({"unit_price": float("nan")}, "unit_price"),
        ({"unit_price": float("inf")}, "unit_price"),
        ({"unit_price": " 19.99"}, "unit_price"),
        ({"unit_price": "abc"}, "unit_price"),
        ({"unit_price": True}, "unit_price"),
        ({"unit_price": None}, "unit_price"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1001}, "quantity"),
        ({"quantity": "2"}, "quantity"),
        ({"quantity": 2.5}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"sku": ""}, "sku"),
        ({"sku": "x" * 65}, "sku"),
        ({"sku": "bad\nsku"}, "sku"),
        ({"sku": "   "}, "sku"),
        ({"sku": 42}, "sku"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_create_order_refuses_a_bad_item_with_field_errors(create, orders_session, item, field):
    with pytest.raises(InvalidInput) as error:
        create(items=[ITEM, {**ITEM, **item}])
    assert field in error.value.details["items"][1]
    assert count(orders_session) == 0
    assert events(orders_session) == []


def test_a_missing_item_field_is_named(create):
    with pytest.raises(InvalidInput) as error:
        create(items=[{"sku": "X", "quantity": 1}])
    assert "unit_price" in error.value.details["items"][0]


@pytest.mark.parametrize("items", [[], [ITEM] * 101, "not a list", None, [42]])
def test_create_order_refuses_an_item_list_out_of_bounds(create, orders_session, items):
    with pytest.raises(InvalidInput) as error:
        logic.create_order(
            orders_session, OutboxWriter(OutboxEvent), KnownUsers(ANN).exists, ANN, items
        )
    assert "items" in error.value.details
    assert count(orders_session) == 0


def test_one_hundred_items_are_allowed(create):
    assert len(create(items=[ITEM] * 100)["order"]["items"]) == 100


@pytest.mark.parametrize("user_id", [0, -1, "1", None, 1.0, True])
def test_create_order_refuses_a_user_id_that_is_not_a_positive_integer(create, user_id):
    with pytest.raises(InvalidInput) as error:
        create(user_id=user_id)
    assert "user_id" in error.value.details


# --- idempotency ----------------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_first_order_and_writes_nothing_more(
    create, orders_session
):
    first = create(key="k-1")
    again = create(key="k-1")
    assert first["created"] is True
    assert again == {"order": first["order"], "created": False}
    assert count(orders_session) == 1
    assert len(events(orders_session)) == 1


def test_a_replay_with_a_different_body_is_refused_and_writes_nothing(create, orders_session):
    first = create(key="k-1")
    with pytest.raises(IdempotencyKeyReused) as refused:
        create(key="k-1", items=[{"sku": "OTHER", "quantity": 1, "unit_price": "1.00"}])
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert "idempotency_key" in refused.value.details
    assert count(orders_session) == 1
    assert len(events(orders_session)) == 1
    assert create(key="k-1")["order"] == first["order"]


def test_a_replay_compares_prices_by_value_not_by_spelling(create):
    first = create(key="k-2", items=[{**ITEM, "unit_price": "19.90"}])["order"]
    again = create(key="k-2", items=[{**ITEM, "unit_price": "19.9"}])
    assert again == {"order": first, "created": False}


def test_a_replay_needs_no_answer_from_users(create, orders_session, outbox):
    first = create(key="k-1")

    def unavailable(user_id):
        raise Unavailable("down")

    again = logic.create_order(orders_session, outbox, unavailable, ANN, [ITEM], "k-1")
    assert again["order"]["id"] == first["order"]["id"]


def test_the_same_key_from_another_user_is_another_order(create, orders_session):
    ann = create(user_id=ANN, key="shared-key")["order"]
    bob = create(user_id=BOB, key="shared-key")["order"]
    assert ann["id"] != bob["id"]
    assert count(orders_session) == 2


def test_no_key_means_no_deduplication(create, orders_session):
    create()
    create()
    assert count(orders_session) == 2


def test_a_key_older_than_24_hours_makes_a_new_order(create, orders_session):
    first = create(key="old")["order"]
    orders_session.execute(
        update(Order).values(created_at=utcnow() - timedelta(hours=24, minutes=1))
    )
    orders_session.commit()
    second = create(key="old")
    assert second["created"] is True
    assert second["order"]["id"] != first["id"]
    assert create(key="old")["order"]["id"] == second["order"]["id"]


def test_an_insert_that_loses_the_race_returns_the_winner(orders_session, session_factory, outbox):
    """The winner is written between our check and our insert, as a concurrent call would."""
    winner = {}

    def exists_while_another_call_wins(user_id):
        other = session_factory()
        result = logic.create_order(
            other, OutboxWriter(OutboxEvent), lambda _: True, user_id, [ITEM], "race"
        )
        other.close()
        winner.update(result["order"])
        return True

    result = logic.create_order(
        orders_session, outbox, exists_while_another_call_wins, ANN, [ITEM], "race"
    )
    assert result == {"order": winner, "created": False}
    assert count(orders_session) == 1
    assert count(orders_session, OutboxEvent) == 1


@pytest.mark.parametrize("key", ["", "k" * 256, 42, "bad\x00key"])
def test_create_order_refuses_a_bad_idempotency_key(create, orders_session, key):
    with pytest.raises(InvalidInput) as error:
        create(key=key)
    assert "idempotency_key" in error.value.details
    assert count(orders_session) == 0


# --- reading --------------------------------------------------------------------------------------


def test_get_order_of_an_unknown_id_is_not_found(orders_session):
    with pytest.raises(NotFound):
        logic.get_order(orders_session, 999)


def test_get_order_of_someone_else_looks_like_a_missing_order(create, orders_session):
    order = create(user_id=ANN)["order"]
    assert logic.get_order(orders_session, order["id"], user_id=ANN) == order
    with pytest.raises(NotFound) as other:
        logic.get_order(orders_session, order["id"], user_id=BOB)
    with pytest.raises(NotFound) as missing:
        logic.get_order(orders_session, 999)
    assert str(other.value) == f"order {order['id']} not found"
    assert str(missing.value) == "order 999 not found"


@pytest.mark.parametrize("order_id", ["abc", 0, -1, None, 1.5, True])
def test_get_order_refuses_an_id_that_is_not_a_positive_integer(orders_session, order_id):
    with pytest.raises(InvalidInput) as error:
        logic.get_order(orders_session, order_id)
    assert "order_id" in error.value.details


def test_list_orders_walks_every_page_once(create, orders_session):
    created = [create()["order"]["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = logic.list_orders(orders_session, limit=2, cursor=cursor)
        assert len(page["items"]) <= 2
        seen += [order["id"] for order in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created


def test_a_listed_order_is_the_order_as_get_order_gives_it(create, orders_session, autocommit):
    items = [{"sku": f"SKU-{n}", "quantity": n + 1, "unit_price": f"{n}.5{n}"} for n in range(1, 4)]
    created = [create(items=items[: n + 1])["order"] for n in range(3)] + [create()["order"]]
    for db in (orders_session, autocommit):
        page = logic.list_orders(db, limit=3)
        assert page["items"] == [logic.get_order(db, order["id"]) for order in created[:3]]
        assert [len(order["items"]) for order in page["items"]] == [1, 2, 3]
        rest = logic.list_orders(db, limit=3, cursor=page["next_cursor"])
        assert rest == {"items": [created[3]], "next_cursor": None}


def test_list_orders_filters_by_user_and_status(create, order_with_status, orders_session):
    ann_pending = create(user_id=ANN)["order"]
    ann_paid = order_with_status("paid", ANN)
    bob_pending = create(user_id=BOB)["order"]

    def ids(**filters):
        return [o["id"] for o in logic.list_orders(orders_session, **filters)["items"]]

    assert ids(user_id=ANN) == [ann_pending["id"], ann_paid["id"]]
    assert ids(status="pending") == [ann_pending["id"], bob_pending["id"]]
    assert ids(user_id=ANN, status="paid") == [ann_paid["id"]]
    assert ids(user_id=BOB, status="paid") == []


@pytest.mark.parametrize(
    "query, field",
    [
        ({"status": "lost"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"user_id": 0}, "user_id"),
        ({"cursor": "forged"}, "cursor"),
    ],
)
def test_list_orders_refuses_a_bad_query(orders_session, query, field):
    with pytest.raises(InvalidInput) as error:
        logic.list_orders(orders_session, **query)
    assert field in error.value.details


# --- the status machine ---------------------------------------------------------------------------

ALLOWED = [(old, new) for old, targets in logic.TRANSITIONS.items() for new in targets]
REFUSED = [
    (old, new)
    for old in logic.TRANSITIONS
    for new in logic.TRANSITIONS
    if new not in logic.TRANSITIONS[old]
]


@pytest.mark.parametrize("old, new", ALLOWED)
def test_set_status_makes_every_allowed_move_and_records_it(
    order_with_status, orders_session, outbox, old, new
):
    order = order_with_status(old)
    changed = logic.set_status(orders_session, outbox, order["id"], new)
    assert changed["status"] == new
    assert logic.get_order(orders_session, order["id"])["status"] == new
    event_type, payload = events(orders_session)[-1]
    assert event_type == "order_status_changed"
    assert {k: payload[k] for k in ("order_id", "user_id", "from", "to")} == {
        "order_id": order["id"],
        "user_id": ANN,
        "from": old,
        "to": new,
    }


@pytest.mark.parametrize("old, new", REFUSED)
def test_set_status_refuses_every_other_move_naming_both_states(
    order_with_status, orders_session, outbox, old, new
):
    order = order_with_status(old)
    written = len(events(orders_session))
    with pytest.raises(Conflict) as error:
        logic.set_status(orders_session, outbox, order["id"], new)
    assert old in str(error.value) and new in str(error.value)
    assert error.value.details == {"from": old, "to": new}
    assert logic.get_order(orders_session, order["id"])["status"] == old
    assert len(events(orders_session)) == written


@pytest.mark.parametrize("status", ["lost", "", None, 1, "PAID"])
def test_set_status_refuses_an_unknown_status(create, orders_session, outbox, status):
    order = create()["order"]
    with pytest.raises(InvalidInput) as error:
        logic.set_status(orders_session, outbox, order["id"], status)
    assert "status" in error.value.details
    assert logic.get_order(orders_session, order["id"])["status"] == "pending"


def test_set_status_of_an_unknown_order_is_not_found(orders_session, outbox):
    with pytest.raises(NotFound):
        logic.set_status(orders_session, outbox, 404, "paid")


def test_updated_at_moves_with_a_status_change(create, orders_session, outbox):
    order = create()["order"]
    paid = logic.set_status(orders_session, outbox, order["id"], "paid")
    assert paid["updated_at"] > order["updated_at"]
    assert paid["created_at"] == order["created_at"]


@pytest.mark.parametrize("status", ["pending", "paid"])
def test_cancel_order_cancels_an_open_order(order_with_status, orders_session, outbox, status):
    order = order_with_status(status)
    assert logic.cancel_order(orders_session, outbox, order["id"])["status"] == "cancelled"
    assert events(orders_session)[-1][1]["from"] == status


@pytest.mark.parametrize("status", ["shipped", "delivered", "cancelled"])
def test_cancel_order_refuses_an_order_past_paid(order_with_status, orders_session, outbox, status):
    order = order_with_status(status)
    with pytest.raises(Conflict) as error:
        logic.cancel_order(orders_session, outbox, order["id"])
    assert error.value.details == {"from": status, "to": "cancelled"}
    assert logic.get_order(orders_session, order["id"])["status"] == status


def test_cancel_order_of_someone_else_is_not_found_and_changes_nothing(
    create, orders_session, outbox
):
    order = create(user_id=ANN)["order"]
    with pytest.raises(NotFound):
        logic.cancel_order(orders_session, outbox, order["id"], user_id=BOB)
    assert logic.get_order(orders_session, order["id"])["status"] == "pending"
    assert logic.cancel_order(orders_session, outbox, order["id"], user_id=ANN)["status"] == (
        "cancelled"
    )


# --- user_deleted ---------------------------------------------------------------------------------


def user_deleted(user_id, event_id=None):
    return {"event_id": event_id or str(uuid.uuid4()), "occurred_at": "x", "user_id": user_id}


def test_a_deleted_users_open_orders_are_cancelled_and_the_rest_kept(
    order_with_status, orders_session, outbox
):
    orders = {status: order_with_status(status) for status in logic.TRANSITIONS}
    bobs = order_with_status("pending", BOB)
    before = len(events(orders_session))

    assert logic.cancel_orders_of_deleted_user(orders_session, outbox, user_deleted(ANN)) == 2

    def status(order):
        return logic.get_order(orders_session, order["id"])["status"]

    assert {s: status(o) for s, o in orders.items()} == {
        "pending": "cancelled",
        "paid": "cancelled",
        "shipped": "shipped",
        "delivered": "delivered",
        "cancelled": "cancelled",
    }
    assert status(bobs) == "pending"
    new = events(orders_session)[before:]
    assert [(t, p["order_id"], p["from"], p["to"]) for t, p in new] == [
        ("order_status_changed", orders["pending"]["id"], "pending", "cancelled"),
        ("order_status_changed", orders["paid"]["id"], "paid", "cancelled"),
    ]


def test_user_deleted_delivered_twice_cancels_and_records_once(
    order_with_status, orders_session, outbox
):
    order_with_status("pending")
    event = user_deleted(ANN)
    assert logic.cancel_orders_of_deleted_user(orders_session, outbox, event) == 1
    written = len(events(orders_session))
    # an open order written behind the logic's back (create_order now refuses
    # the deleted user) proves that the second delivery does nothing
    orders_session.add(
        Order(user_id=ANN, status="pending", currency=logic.CURRENCY, total_cents=100)
    )
    orders_session.commit()
    assert logic.cancel_orders_of_deleted_user(orders_session, outbox, event) is None
    assert len(events(orders_session)) == written
    orders_session.rollback()
    assert orders_session.scalars(select(Order.status).where(Order.user_id == ANN)).all() == [
        "cancelled",
        "pending",
    ]


@pytest.mark.parametrize(
    "payload", [{"user_id": 1}, {"event_id": "e-1"}, {"event_id": 5, "user_id": 1}, []]
)
def test_a_malformed_user_deleted_event_is_refused(orders_session, outbox, payload):
    with pytest.raises(InvalidInput):
        logic.cancel_orders_of_deleted_user(orders_session, outbox, payload)


# --- the customers read model ---------------------------------------------------------------------


def user_created(user_id, event_id=None):
    return {**user_deleted(user_id, event_id), "user": {"id": user_id}}


def test_a_user_known_from_user_created_orders_without_asking_users(create, orders_session, users):
    assert logic.record_user_created(orders_session, user_created(ANN)) is True
    create()
    assert users.calls == 0


def test_a_user_created_event_delivered_twice_is_applied_once(orders_session):
    event = user_created(ANN)
    assert logic.record_user_created(orders_session, event) is True
    assert logic.record_user_created(orders_session, event) is False


def test_a_user_not_heard_of_is_asked_once_then_remembered(create, users):
    create()
    create()
    assert users.calls == 1


def test_a_user_unknown_to_users_cannot_order_and_is_not_remembered(create, orders_session, users):
    for _ in range(2):
        with pytest.raises(InvalidInput) as error:
            create(user_id=99)
        assert error.value.details == {"user_id": ["Unknown user."]}
    assert users.calls == 2
    assert count(orders_session) == 0


def test_a_deleted_user_cannot_order_whatever_the_users_lookup_says(
    create, orders_session, outbox, users
):
    logic.cancel_orders_of_deleted_user(orders_session, outbox, user_deleted(ANN))
    with pytest.raises(InvalidInput):
        create()
    assert users.calls == 0
    assert count(orders_session) == 0


def test_a_late_user_created_does_not_revive_a_deleted_user(create, orders_session, outbox):
    logic.cancel_orders_of_deleted_user(orders_session, outbox, user_deleted(ANN))
    logic.record_user_created(orders_session, user_created(ANN))
    with pytest.raises(InvalidInput):
        create()


def test_a_user_deleted_while_users_was_asked_cannot_order(session_factory, orders_session, outbox):
    """The deletion lands between the users lookup and the write: the tombstone wins."""

    def exists_but_deleted_meanwhile(user_id):
        with session_factory() as other:
            logic.cancel_orders_of_deleted_user(other, OutboxWriter(OutboxEvent), user_deleted(ANN))
        return True

    with pytest.raises(InvalidInput):
        logic.create_order(orders_session, outbox, exists_but_deleted_meanwhile, ANN, [ITEM])
    assert count(orders_session) == 0


class DeletionDuringWrite(OutboxWriter):
    """An outbox whose ``add`` (inside create_order's transaction) lets a user_deleted race in."""

    def __init__(self, session_factory):
        super().__init__(OutboxEvent)
        self.session_factory = session_factory
        self.deletion = None
        self.waited_for_us = None

    def add(self, session, event_type, data):
        def delete_user():
            with self.session_factory() as other:
                return logic.cancel_orders_of_deleted_user(
                    other, OutboxWriter(OutboxEvent), user_deleted(data["user_id"])
                )

        self.deletion = eventlet.spawn(delete_user)
        eventlet.sleep(0.3)
        self.waited_for_us = not self.deletion.dead
        return super().add(session, event_type, data)


def test_on_postgresql_an_order_racing_its_users_deletion_is_cancelled(
    orders_db_uri, session_factory, orders_session
):
    if not orders_db_uri.startswith("postgresql"):
        # sqlite3 never yields to another greenthread, so one orders process (the
        # local default) runs a transaction from its first statement to its
        # commit undisturbed; this test's yield inside it has no real counterpart
        pytest.skip("on SQLite nothing runs between a transaction's statements")
    logic.record_user_created(orders_session, user_created(ANN))
    outbox = DeletionDuringWrite(session_factory)
    order = logic.create_order(orders_session, outbox, KnownUsers().exists, ANN, [ITEM])["order"]
    assert outbox.waited_for_us  # the share lock held the deletion back until our commit
    assert outbox.deletion.wait() == 1
    assert logic.get_order(orders_session, order["id"])["status"] == "cancelled"


def test_a_replay_needs_no_users_lookup(create, users):
    first = create(key="k")
    calls = users.calls
    assert create(key="k") == {"order": first["order"], "created": False}
    assert users.calls == calls


def test_order_items_are_rows_of_their_own(create, orders_session):
    create(items=[ITEM, ITEM])
    assert count(orders_session, OrderItem) == 2


# --- the one-statement create of PostgreSQL ------------------------------------------------------


def only_on_postgresql(orders_db_uri):
    if not orders_db_uri.startswith("postgresql"):
        pytest.skip("SQLite has no data-modifying WITH: every create goes through the session")


class StatementCounter:
    """Counts the statements an engine sends (BEGIN and COMMIT are not statements here)."""

    def __init__(self, engine):
        self.statements = []
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, _conn, _cursor, statement, *_args):
        self.statements.append(statement)


def test_on_postgresql_a_known_users_order_is_one_statement_and_no_session(
    orders_db_uri, orders_session, session_factory, outbox, autocommit
):
    only_on_postgresql(orders_db_uri)
    logic.record_user_created(orders_session, user_created(ANN))
    on_autocommit = StatementCounter(autocommit.engine)
    on_session = StatementCounter(session_factory.kw["bind"])
    items = [ITEM, {"sku": "PEN-2", "quantity": 1, "unit_price": "0.50"}]

    for key in ("k-1", "k-2"):
        result = logic.create_order(
            orders_session, outbox, KnownUsers().exists, ANN, items, key, autocommit
        )

    # the connection prepares it once, then each order is one EXECUTE
    assert [statement.split()[0] for statement in on_autocommit.statements] == [
        "PREPARE",
        "EXECUTE",
        "EXECUTE",
    ]
    assert on_session.statements == []
    order = result["order"]
    assert result["created"] is True and outbox.written == 2
    assert logic.get_order(autocommit, order["id"]) == order
    assert [line["sku"] for line in order["items"]] == ["BOOK-1", "PEN-2"]
    [_, (event_type, payload)] = events(orders_session)
    assert event_type == "order_created"
    assert payload["order_id"] == order["id"]
    assert payload["items"] == order["items"] and payload["total"] == "40.48"


def test_on_postgresql_a_replayed_key_is_found_by_the_one_statement(
    orders_db_uri, orders_session, outbox, autocommit, create
):
    only_on_postgresql(orders_db_uri)
    logic.record_user_created(orders_session, user_created(ANN))
    first = create(key="k")
    on_autocommit = StatementCounter(autocommit.engine)
    again = create(key="k")
    assert again == {"order": first["order"], "created": False}
    # the statement, then the first order read back
    assert [statement.split()[0] for statement in on_autocommit.statements] == ["EXECUTE", "SELECT"]
    assert count(orders_session) == 1 and count(orders_session, OutboxEvent) == 1


def test_on_postgresql_a_one_statement_create_that_loses_the_key_race_returns_the_winner(
    orders_db_uri, orders_session, session_factory, autocommit
):
    """The winner's insert is not committed yet when ours runs: ours waits on the key, fails."""
    only_on_postgresql(orders_db_uri)
    logic.record_user_created(orders_session, user_created(ANN))
    ours = {}

    class CommitsLate(OutboxWriter):
        def add(self, session, event_type, data):
            payload = super().add(session, event_type, data)
            ours["call"] = eventlet.spawn(
                logic.create_order,
                session_factory(),
                OutboxWriter(OutboxEvent),
                KnownUsers().exists,
                ANN,
                [ITEM],
                "race",
                autocommit,
            )
            eventlet.sleep(0.3)
            ours["waited"] = not ours["call"].dead
            return payload

    with session_factory() as winner_session:
        winner = logic.create_order(
            winner_session, CommitsLate(OutboxEvent), KnownUsers().exists, ANN, [ITEM], "race"
        )
    assert ours["waited"]  # held on the unique key until the winner committed
    assert ours["call"].wait() == {"order": winner["order"], "created": False}
    assert count(orders_session) == 1 and count(orders_session, OutboxEvent) == 1


def test_on_postgresql_a_one_statement_create_waits_for_a_deletion_and_refuses(
    orders_db_uri, orders_session, session_factory, outbox, autocommit
):
    """A user_deleted handler holds the customer's row: the create waits, sees the tombstone."""
    only_on_postgresql(orders_db_uri)
    logic.record_user_created(orders_session, user_created(ANN))
    with session_factory() as deletion:
        logic.forget_customer(deletion, ANN)  # its transaction is still open
        call = eventlet.spawn(
            logic.create_order,
            orders_session,
            outbox,
            KnownUsers().exists,
            ANN,
            [ITEM],
            None,
            autocommit,
        )
        eventlet.sleep(0.3)
        assert not call.dead
        deletion.commit()
    with pytest.raises(InvalidInput):
        call.wait()
    assert count(orders_session) == 0 and count(orders_session, OutboxEvent) == 0
