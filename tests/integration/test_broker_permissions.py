"""Each service's own RabbitMQ user, as scripts/broker_setup.py makes it, on the real broker.

The users are created in a throwaway vhost with random names (see
``broker_accounts``); every refusal is checked beside the same operation that
the permission allows, so a test cannot pass because the operation failed for
another reason, and would fail if the permission were open.
"""

import secrets
import sqlite3
import uuid

import pytest
import requests
from amqp.exceptions import AccessRefused
from kombu import Exchange, Producer, Queue
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter

from shared import deadletters
from shared.events import event_handler
from tests.helpers import answers_ok, wait_until
from tests.integration.broker_accounts import BrokerAccounts
from tests.system.processes import ServiceProcess, migrate, system_env

pytestmark = pytest.mark.integration

RPC = Exchange("nameko-rpc", type="topic", durable=True)
USERS_EVENTS = Exchange("users.events", type="topic", durable=True)
USER_DELETED_QUEUE = "evt-users-user_deleted--orders.handle_user_deleted"
ITEMS = [{"sku": "BOOK-1", "quantity": 2, "unit_price": "5.00"}]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def broker(request):
    accounts = BrokerAccounts(request.config.getoption("RABBIT_API_URI"))
    try:
        accounts.create()
        # what the services declare when they start, each as itself
        with accounts.connection("users") as connection:
            channel = connection.channel()
            Queue("rpc-users", RPC, routing_key="users.*", durable=True, channel=channel).declare()
            USERS_EVENTS(channel).declare()
        with accounts.connection("orders") as connection:
            queue = Queue(USER_DELETED_QUEUE, USERS_EVENTS, routing_key="user_deleted")
            queue(connection.channel()).declare()
        yield accounts
    finally:
        accounts.delete()


def attempt(broker, service, action):
    """``None`` if ``action(channel)`` went through as ``service``, else the broker's refusal.

    Publishes are confirmed, consumes and binds wait for their answer, and one
    more round trip follows: a refusal (a channel error) has arrived by then.
    """
    with broker.connection(service) as connection:
        channel = connection.channel()
        try:
            action(channel)
            channel.basic_qos(0, 1, False)
        except AccessRefused as error:
            return error
    return None


def publish(exchange, routing_key):
    def action(channel):
        Producer(channel).publish(
            {"args": [], "kwargs": {}}, exchange=exchange, routing_key=routing_key
        )

    return action


def consume(queue_name):
    def action(channel):
        channel.basic_consume(queue_name, callback=lambda message: None)

    return action


def bind(queue_name, exchange, routing_key):
    def action(channel):
        Queue(queue_name, exchange, routing_key=routing_key, channel=channel).declare()

    return action


def test_the_orders_user_cannot_call_users_update_user(broker):
    refusal = attempt(broker, "orders", publish(RPC, "users.update_user"))
    assert refusal is not None and "users.update_user" in str(refusal), refusal
    assert attempt(broker, "orders", publish(RPC, "users.delete_user")) is not None
    # the same publish, allowed: orders asks users.get_user, the gateway anything
    assert attempt(broker, "orders", publish(RPC, "users.get_user")) is None
    assert attempt(broker, "gateway", publish(RPC, "users.update_user")) is None


def test_users_may_reply_to_uuid_keys_but_call_nothing(broker):
    assert attempt(broker, "users", publish(RPC, str(uuid.uuid4()))) is None
    assert attempt(broker, "users", publish(RPC, "orders.cancel_order")) is not None
    assert attempt(broker, "gateway", publish(RPC, str(uuid.uuid4()))) is not None


def test_the_gateway_user_cannot_consume_another_services_queues(broker):
    assert "rpc-users" in str(attempt(broker, "gateway", consume("rpc-users")))
    assert attempt(broker, "gateway", consume(USER_DELETED_QUEUE)) is not None
    assert attempt(broker, "users", consume("rpc-users")) is None
    assert attempt(broker, "orders", consume(USER_DELETED_QUEUE)) is None


def test_the_orders_user_cannot_publish_on_the_default_exchange(broker):
    refusal = attempt(broker, "orders", publish(Exchange(""), "rpc-users"))
    assert refusal is not None and "amq.default" in str(refusal), refusal
    for service in ("users", "gateway"):
        assert attempt(broker, service, publish(Exchange(""), "rpc-users")) is not None


def test_no_service_can_emit_another_services_events(broker):
    # user_created: no queue of this vhost is bound to it, so the allowed one goes nowhere
    assert attempt(broker, "orders", publish(USERS_EVENTS, "user_created")) is not None
    assert attempt(broker, "gateway", publish(USERS_EVENTS, "user_created")) is not None
    assert attempt(broker, "users", publish(USERS_EVENTS, "user_created")) is None
    assert attempt(broker, "users", publish(USERS_EVENTS, "order_created")) is not None


def test_a_service_cannot_bind_its_own_queue_to_listen_to_other_calls(broker):
    reply_queue = f"rpc.reply-orders-{uuid.uuid4()}"
    # its reply queue, bound to its reply key: allowed
    assert attempt(broker, "orders", bind(reply_queue, RPC, str(uuid.uuid4()))) is None
    # the same queue bound to every call to users (passwords in authenticate): refused
    refusal = attempt(broker, "orders", bind(reply_queue, RPC, "users.*"))
    assert refusal is not None and "users.*" in str(refusal), refusal
    assert attempt(broker, "orders", bind(reply_queue, RPC, "#")) is not None
    assert attempt(broker, "orders", bind(reply_queue, USERS_EVENTS, "user_updated")) is not None


class BrokenOrders:
    """orders' user_deleted handler, failing until told otherwise."""

    name = "orders"
    broken = True
    applied = []

    @event_handler("users", "user_deleted")
    def handle_user_deleted(self, payload):
        if BrokenOrders.broken:
            raise RuntimeError("broken")
        BrokenOrders.applied.append(payload["event_id"])


def test_retries_dead_letters_and_replay_work_as_the_services_own_user(broker, container_factory):
    """The retry path publishes on orders.retries, never the default exchange."""
    BrokenOrders.broken, BrokenOrders.applied = True, []
    uri = broker.uri("orders")
    config = {"AMQP_URI": uri, "EVENT_MAX_RETRIES": 1, "EVENT_RETRY_DELAY": 0.05}
    container = container_factory(BrokenOrders, config)
    container.start()
    event = {"event_id": str(uuid.uuid4()), "occurred_at": "x", "user_id": 1}
    event_dispatcher({"AMQP_URI": broker.uri("users")})("users", "user_deleted", event)

    dead_letters = f"{USER_DELETED_QUEUE}.dead-letter"
    assert wait_until(lambda: deadletters.count_dead_letters(uri, dead_letters) == 1, timeout=10)
    [letter] = deadletters.list_dead_letters(uri, dead_letters)
    assert letter["retries"] == 1 and letter["event_id"] == event["event_id"]

    BrokenOrders.broken = False
    with entrypoint_waiter(container, "handle_user_deleted", timeout=10):
        assert deadletters.replay(uri, dead_letters) == 1
    assert BrokenOrders.applied == [event["event_id"]]


# --- the whole system, each service as its own broker user --------------------------------------


@pytest.fixture
def system(broker, tmp_path):
    # the requests the tests above published (no reply_to) must not reach users
    with broker.connection("users") as connection:
        connection.channel().queue_purge("rpc-users")
    base = system_env(broker.uri("users"), tmp_path, JWT_SECRET=secrets.token_urlsafe(48))
    migrate(base)
    processes = {
        name: ServiceProcess(name, {**base, "AMQP_URI": broker.uri(name)}, tmp_path)
        for name in ("users", "orders", "gateway")
    }
    try:
        for process in processes.values():
            process.start(wait=False)
        for process in processes.values():
            process.wait_healthy()
        api = processes["gateway"].url
        ready = wait_until(lambda: answers_ok(f"{api}/ready", timeout=2), timeout=30)
        assert ready, processes["gateway"].log()[-3000:]
        yield api, tmp_path / "orders.sqlite3", processes
    finally:
        for process in processes.values():
            process.stop()


def test_each_service_works_end_to_end_with_its_own_user(system):
    api, orders_db, processes = system
    http = requests.Session()
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    response = http.post(
        f"{api}/v1/users", json={"email": email, "name": "Ann", "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 201, response.text
    user = response.json()
    response = http.post(
        f"{api}/v1/auth/token", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    auth = {"Authorization": f"Bearer {response.json()['access_token']}"}

    # gateway -> orders -> users.get_user (orders' one call), then order_created -> users
    response = http.post(f"{api}/v1/orders", json={"items": ITEMS}, headers=auth, timeout=10)
    assert response.status_code == 201, response.text
    order = response.json()
    response = http.get(f"{api}/v1/orders/{order['id']}", headers=auth, timeout=10)
    assert response.status_code == 200 and response.json()["total"] == "10.00", response.text

    def order_count():
        return http.get(f"{api}/v1/users/me", headers=auth, timeout=10).json().get("order_count")

    assert wait_until(lambda: order_count() == 1, timeout=10), order_count()

    # user_deleted -> orders (cancels the open order) and the gateway (revokes the token)
    response = http.delete(f"{api}/v1/users/{user['id']}", headers=auth, timeout=10)
    assert response.status_code == 204, response.text

    def order_status():
        with sqlite3.connect(orders_db) as db:
            (status,) = db.execute(
                "SELECT status FROM orders WHERE id = ?", (order["id"],)
            ).fetchone()
            return status

    assert wait_until(lambda: order_status() == "cancelled", timeout=10), order_status()
    assert http.get(f"{api}/v1/users/me", headers=auth, timeout=10).status_code == 401
    for name, process in processes.items():
        assert "ACCESS_REFUSED" not in process.log(), f"{name} was refused something"
