"""The orders service in a real container beside a real users service, on SQLite and PostgreSQL."""

import eventlet
import pytest
import requests
from nameko.events import event_handler
from nameko.exceptions import IncorrectSignature
from nameko.rpc import rpc as rpc_entrypoint
from nameko.testing.services import entrypoint_waiter

from orders.service import OrdersService
from shared.exceptions import Conflict, InvalidInput, NotFound, Unavailable

ITEMS = [{"sku": "BOOK-1", "quantity": 2, "unit_price": "19.99"}]
PASSWORD = "correct horse battery"


class OrderEvents:
    """A real consumer of the orders events, as another service would be."""

    name = "order_listener"
    received = []

    @event_handler("orders", "order_created")
    def order_created(self, payload):
        self.received.append(("order_created", payload))

    @event_handler("orders", "order_status_changed")
    def order_status_changed(self, payload):
        self.received.append(("order_status_changed", payload))


@pytest.fixture
def orders(container_factory, orders_config):
    container = container_factory(OrdersService, {**orders_config, "max_workers": 20})
    container.start()
    return container


@pytest.fixture
def listener(container_factory, rabbit_config):
    OrderEvents.received = []
    container = container_factory(OrderEvents, rabbit_config)
    container.start()
    return container


@pytest.fixture
def user_id(users, rpc):
    return rpc.users.create_user("ann@example.com", "Ann", PASSWORD)["id"]


@pytest.fixture
def other_user_id(users, rpc):
    return rpc.users.create_user("bob@example.com", "Bob", PASSWORD)["id"]


def test_create_get_list_round_trip(orders, user_id, rpc):
    result = rpc.orders.create_order(user_id, ITEMS)
    order = result["order"]
    assert result["created"] is True
    assert order["total"] == "39.98" and order["currency"] == "EUR"
    assert order["status"] == "pending"
    assert rpc.orders.get_order(order["id"]) == order
    assert rpc.orders.get_order(order["id"], user_id=user_id) == order
    assert rpc.orders.list_orders(user_id=user_id) == {"items": [order], "next_cursor": None}


def test_list_orders_pages_with_an_opaque_cursor_and_filters(orders, user_id, rpc):
    ids = [rpc.orders.create_order(user_id, ITEMS)["order"]["id"] for _ in range(3)]
    rpc.orders.set_status(ids[1], "paid")
    first = rpc.orders.list_orders(limit=2)
    second = rpc.orders.list_orders(limit=2, cursor=first["next_cursor"])
    assert [o["id"] for o in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None
    assert [o["id"] for o in rpc.orders.list_orders(status="paid")["items"]] == [ids[1]]
    with pytest.raises(InvalidInput):
        rpc.orders.list_orders(status="lost")


def test_the_status_machine_over_rpc(orders, user_id, rpc):
    order_id = rpc.orders.create_order(user_id, ITEMS)["order"]["id"]
    for status in ("paid", "shipped", "delivered"):
        assert rpc.orders.set_status(order_id, status)["status"] == status
    with pytest.raises(Conflict) as error:
        rpc.orders.set_status(order_id, "pending")
    assert error.value.details == {"from": "delivered", "to": "pending"}
    with pytest.raises(Conflict):
        rpc.orders.cancel_order(order_id)
    with pytest.raises(InvalidInput) as invalid:
        rpc.orders.set_status(order_id, "lost")
    assert "status" in invalid.value.details


def test_cancel_order_by_its_owner_only(orders, user_id, other_user_id, rpc):
    order_id = rpc.orders.create_order(user_id, ITEMS)["order"]["id"]
    with pytest.raises(NotFound):
        rpc.orders.cancel_order(order_id, user_id=other_user_id)
    with pytest.raises(NotFound):
        rpc.orders.get_order(order_id, user_id=other_user_id)
    assert rpc.orders.cancel_order(order_id, user_id=user_id)["status"] == "cancelled"


def test_errors_arrive_as_the_same_class_with_field_errors(orders, user_id, rpc):
    with pytest.raises(InvalidInput) as bad_item:
        rpc.orders.create_order(user_id, [{"sku": "", "quantity": 0, "unit_price": "1.999"}])
    assert set(bad_item.value.details["items"]["0"]) == {"sku", "quantity", "unit_price"}
    with pytest.raises(InvalidInput) as unknown_user:
        rpc.orders.create_order(user_id + 1000, ITEMS)
    assert unknown_user.value.details == {"user_id": ["Unknown user."]}
    with pytest.raises(NotFound):
        rpc.orders.get_order(999)
    assert rpc.orders.list_orders() == {"items": [], "next_cursor": None}


def test_a_replayed_idempotency_key_returns_the_first_order(orders, user_id, rpc):
    first = rpc.orders.create_order(user_id, ITEMS, idempotency_key="key-1")
    again = rpc.orders.create_order(user_id, ITEMS, idempotency_key="key-1")
    assert first["created"] is True and again["created"] is False
    assert again["order"] == first["order"]


def test_twenty_concurrent_calls_with_one_key_make_exactly_one_order(orders, user_id, rpc):
    calls = [
        rpc.orders.create_order.call_async(user_id, ITEMS, idempotency_key="race")
        for _ in range(20)
    ]
    results = [call.result() for call in calls]
    assert len({result["order"]["id"] for result in results}) == 1
    assert sum(result["created"] for result in results) == 1
    assert len(rpc.orders.list_orders(user_id=user_id)["items"]) == 1


def test_events_are_published_as_the_contract_says(orders, user_id, listener, rpc):
    with entrypoint_waiter(listener, "order_created", timeout=5):
        order = rpc.orders.create_order(user_id, ITEMS)["order"]
    with entrypoint_waiter(listener, "order_status_changed", timeout=5):
        rpc.orders.cancel_order(order["id"])
    (_, created), (_, changed) = OrderEvents.received
    assert {k: created[k] for k in ("order_id", "user_id", "status", "total", "items")} == {
        "order_id": order["id"],
        "user_id": user_id,
        "status": "pending",
        "total": "39.98",
        "items": ITEMS,
    }
    assert {k: changed[k] for k in ("order_id", "user_id", "from", "to")} == {
        "order_id": order["id"],
        "user_id": user_id,
        "from": "pending",
        "to": "cancelled",
    }
    for payload in (created, changed):
        assert len(payload["event_id"]) == 36 and payload["occurred_at"]


def test_a_refused_call_publishes_nothing(orders, user_id, listener, rpc):
    with pytest.raises(InvalidInput):
        rpc.orders.create_order(user_id, [])
    with entrypoint_waiter(listener, "order_created", timeout=5):
        order = rpc.orders.create_order(user_id, ITEMS)["order"]
    with pytest.raises(Conflict):
        rpc.orders.set_status(order["id"], "delivered")
    with entrypoint_waiter(listener, "order_status_changed", timeout=5):
        rpc.orders.set_status(order["id"], "paid")
    assert [(kind, p.get("to")) for kind, p in OrderEvents.received] == [
        ("order_created", None),
        ("order_status_changed", "paid"),
    ]


def test_health_over_rpc_and_http(orders, rpc, orders_config):
    assert rpc.orders.health()["status"] == "ok"
    base = f"http://{orders_config['WEB_SERVER_ADDRESS']}"
    assert requests.get(f"{base}/health", timeout=5).json()["status"] == "ok"
    ready = requests.get(f"{base}/ready", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


def test_metrics_count_orders_created_and_dead_letters(orders, user_id, rpc, orders_config):
    rpc.orders.create_order(user_id, ITEMS, idempotency_key="m")
    rpc.orders.create_order(user_id, ITEMS, idempotency_key="m")
    base = f"http://{orders_config['WEB_SERVER_ADDRESS']}"
    text = requests.get(f"{base}/metrics", timeout=5).text
    assert "orders_created_total 1.0" in text
    assert (
        'events_dead_lettered_total{queue="evt-users-user_deleted--orders.handle_user_deleted"} 0.0'
        in text
    )


def test_create_order_is_unavailable_while_users_is_not_running(orders, rpc):
    with pytest.raises(Unavailable):
        rpc.orders.create_order(1, ITEMS)
    assert rpc.orders.list_orders() == {"items": [], "next_cursor": None}


class HungUsers:
    """A users service that never answers in time."""

    name = "users"

    @rpc_entrypoint
    def get_user(self, user_id):
        eventlet.sleep(5)


def test_create_order_gives_up_on_users_after_rpc_timeout(
    container_factory, orders_config, rabbit_config, rpc
):
    container_factory(HungUsers, rabbit_config).start()
    container_factory(OrdersService, {**orders_config, "RPC_TIMEOUT": 0.3}).start()
    started = eventlet.hubs.get_hub().clock()
    with pytest.raises(Unavailable) as error:
        rpc.orders.create_order(1, ITEMS)
    assert eventlet.hubs.get_hub().clock() - started < 3
    assert "did not answer" in str(error.value)


def test_a_call_with_the_wrong_arguments_is_refused_as_nameko_refuses_it(orders, rpc):
    with pytest.raises(IncorrectSignature, match="too many positional arguments"):
        rpc.orders.get_order(1, 2, 3)
    with pytest.raises(IncorrectSignature, match="colour"):
        rpc.orders.get_order(order_id=1, colour="red")
    with pytest.raises(IncorrectSignature, match="missing a required argument"):
        rpc.orders.get_order()


@pytest.mark.parametrize("order_id", [0, -1, True, "1", 1.0, 2**63])
def test_anything_but_a_positive_integer_id_is_invalid_input(orders, rpc, order_id):
    with pytest.raises(InvalidInput) as error:
        rpc.orders.get_order(order_id)
    assert list(error.value.details) == ["order_id"]
