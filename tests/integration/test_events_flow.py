"""Events between real users and orders containers on a real RabbitMQ (SQLite and PostgreSQL)."""

import uuid

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter
from sqlalchemy import func, select

from orders.models import OutboxEvent
from shared.db import find_dependency
from shared.exceptions import InvalidInput
from tests.helpers import wait_until

ITEMS = [{"sku": "BOOK-1", "quantity": 1, "unit_price": "5.00"}]
PASSWORD = "correct horse battery"
CLOSED_PORT_URI = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture
def user_id(users, rpc):
    return rpc.users.create_user(f"{uuid.uuid4().hex[:8]}@example.com", "Ann", PASSWORD)["id"]


def test_an_order_raises_the_users_order_count(users, orders, user_id, rpc):
    with entrypoint_waiter(users, "handle_order_created", timeout=5):
        rpc.orders.create_order(user_id, ITEMS)
    assert rpc.users.get_user(user_id)["order_count"] == 1
    with entrypoint_waiter(users, "handle_order_created", timeout=5):
        rpc.orders.create_order(user_id, ITEMS)
    assert rpc.users.get_user(user_id)["order_count"] == 2


def test_a_replayed_idempotency_key_counts_once(users, orders, user_id, rpc):
    with entrypoint_waiter(users, "handle_order_created", timeout=5):
        rpc.orders.create_order(user_id, ITEMS, idempotency_key="once")
    rpc.orders.create_order(user_id, ITEMS, idempotency_key="once")
    # a later order proves that nothing from the replay was on its way
    with entrypoint_waiter(users, "handle_order_created", timeout=5):
        rpc.orders.create_order(user_id, ITEMS)
    assert rpc.users.get_user(user_id)["order_count"] == 2


def test_the_same_order_created_delivered_twice_counts_once(users, user_id, rabbit_config, rpc):
    dispatch = event_dispatcher(rabbit_config)
    payload = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "order_id": 1,
        "user_id": user_id,
    }
    for _ in range(2):
        with entrypoint_waiter(users, "handle_order_created", timeout=5):
            dispatch("orders", "order_created", payload)
    assert rpc.users.get_user(user_id)["order_count"] == 1
    registry = find_dependency(users, "metrics").registry
    queue = {"queue": "evt-orders-order_created--users.handle_order_created"}
    assert registry.get_sample_value("events_processed_total", queue) == 1
    assert registry.get_sample_value("events_duplicates_total", queue) == 1


def test_deleting_a_user_cancels_their_open_orders(users, orders, user_id, rpc):
    def new_order(*statuses):
        order_id = rpc.orders.create_order(user_id, ITEMS)["order"]["id"]
        for status in statuses:
            rpc.orders.set_status(order_id, status)
        return order_id

    pending, paid, shipped = new_order(), new_order("paid"), new_order("paid", "shipped")
    with entrypoint_waiter(orders, "handle_user_deleted", timeout=5):
        rpc.users.delete_user(user_id)
    statuses = {o["id"]: o["status"] for o in rpc.orders.list_orders(user_id=user_id)["items"]}
    assert statuses == {pending: "cancelled", paid: "cancelled", shipped: "shipped"}


def test_the_same_user_deleted_delivered_twice_cancels_once(orders, user_id, rabbit_config, rpc):
    order_id = rpc.orders.create_order(user_id, ITEMS)["order"]["id"]
    payload = {"event_id": str(uuid.uuid4()), "occurred_at": "x", "user_id": user_id}
    dispatch = event_dispatcher(rabbit_config)
    with entrypoint_waiter(orders, "handle_user_deleted", timeout=5):
        dispatch("users", "user_deleted", payload)
    assert rpc.orders.get_order(order_id)["status"] == "cancelled"
    outbox = find_dependency(orders, "outbox")
    with entrypoint_waiter(orders, "handle_user_deleted", timeout=5):
        dispatch("users", "user_deleted", payload)
    # one order_status_changed for the order, not two
    with outbox.session_factory() as session:
        kinds = session.scalars(select(OutboxEvent.event_type).order_by(OutboxEvent.id)).all()
    assert kinds == ["order_created", "order_status_changed"]


def test_an_event_committed_while_the_broker_is_unreachable_arrives_later(
    users, orders, user_id, rpc
):
    outbox = find_dependency(orders, "outbox")
    broker_uri = outbox.publisher.amqp_uri
    outbox.publisher.amqp_uri = CLOSED_PORT_URI
    try:
        rpc.orders.create_order(user_id, ITEMS)
        # committed, tried, not sent: the relay has met the closed port at least once
        assert wait_until(lambda: outbox.pending() == 1 and _attempts(outbox) >= 1, timeout=10)
        assert rpc.users.get_user(user_id)["order_count"] == 0
        with entrypoint_waiter(users, "handle_order_created", timeout=15):
            outbox.publisher.amqp_uri = broker_uri
    finally:
        outbox.publisher.amqp_uri = broker_uri
    assert rpc.users.get_user(user_id)["order_count"] == 1
    # marked sent once its batch is confirmed, which may be just after users has it
    assert wait_until(lambda: outbox.pending() == 0, timeout=5)


def _attempts(outbox):
    with outbox.session_factory() as session:
        return session.scalar(select(func.max(outbox.model.attempts)))


def test_orders_learns_of_a_new_user_from_user_created_and_needs_users_no_more(users, orders, rpc):
    with entrypoint_waiter(orders, "handle_user_created", timeout=5):
        user_id = rpc.users.create_user(f"{uuid.uuid4().hex[:8]}@example.com", "Ann", PASSWORD)[
            "id"
        ]
    users.stop()
    # with users gone, only orders' read model can say that the user exists
    assert rpc.orders.create_order(user_id, ITEMS)["created"] is True


def test_a_deleted_user_can_order_no_more(users, orders, user_id, rpc):
    rpc.orders.create_order(user_id, ITEMS)
    with entrypoint_waiter(orders, "handle_user_deleted", timeout=5):
        rpc.users.delete_user(user_id)
    with pytest.raises(InvalidInput):
        rpc.orders.create_order(user_id, ITEMS)
