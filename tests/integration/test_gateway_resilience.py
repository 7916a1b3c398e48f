"""The gateway when its neighbours or its own instances come and go.

The neighbours here are stand-in services on the real broker (a users that
answers from a dict, an orders that never answers), not mocks of our code.
"""

import time
from datetime import UTC, datetime, timedelta

import eventlet
import pytest
import requests
from nameko.containers import ServiceContainer
from nameko.rpc import ReplyListener, rpc

from gateway.service import GatewayService
from shared import tokens
from shared.exceptions import NotFound
from shared.rpc import TimedRpcProxy
from shared.rpc import rpc as project_rpc
from tests.integration.conftest import GATEWAY_JWT_SECRET, base_url, gateway_config
from tests.integration.test_gateway import Api, assert_error


class StandInUsers:
    """A users service that knows one user: 1, an admin."""

    name = "users"
    seen_request_ids = []
    known = {
        1: {
            "id": 1,
            "email": "a@example.com",
            "name": "A",
            "role": "admin",
            "order_count": 0,
            "created_at": "2026-01-01T00:00:00+00:00",
        },
    }

    @rpc
    def get_user(self, user_id):
        if user_id not in self.known:
            raise NotFound(f"user {user_id} not found")
        return self.known[user_id]

    @rpc
    def get_token_version(self, user_id):
        if user_id not in self.known:
            raise NotFound(f"user {user_id} not found")
        return 0

    @rpc
    def health(self):
        return {"service": "users", "status": "ok", "checks": {}}


class HungOrders:
    """An orders service that takes every call and never answers in time."""

    name = "orders"

    @rpc
    def get_order(self, order_id, user_id=None):
        eventlet.sleep(30)

    @rpc
    def health(self):
        eventlet.sleep(30)


def admin_token(user_id=1, role="admin"):
    token, _ = tokens.issue(
        GATEWAY_JWT_SECRET,
        user_id,
        role,
        tokens.ACCESS,
        timedelta(minutes=15),
        datetime.now(UTC) - timedelta(seconds=30),
    )
    return token


def start(container_factory, service, config):
    container = container_factory(service, config)
    container.start()
    return container


@pytest.fixture
def config(rabbit_config):
    return gateway_config(rabbit_config, RPC_TIMEOUT=1)


def get(config, path, token=None, **headers):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(base_url(config) + path, headers=headers, timeout=10)


def test_a_service_that_is_not_running_is_503_at_once(container_factory, config):
    start(container_factory, StandInUsers, config)
    start(container_factory, GatewayService, config)
    started = time.monotonic()
    response = get(config, "/v1/orders/1", admin_token())
    body = assert_error(response, 503, "UNAVAILABLE")
    assert body["details"] == {"service": "orders"}
    assert time.monotonic() - started < 1


def test_ready_is_503_naming_the_service_that_is_down(container_factory, config):
    start(container_factory, StandInUsers, config)
    start(container_factory, GatewayService, config)
    body = assert_error(get(config, "/ready"), 503, "UNAVAILABLE")
    assert body["details"]["checks"] == {"users": "ok", "orders": "unavailable"}
    assert "orders" in body["message"]


def orders_broker_gone(gateway):
    proxy = next(
        e for e in gateway.extensions if isinstance(e, TimedRpcProxy) and e.attr_name == "orders"
    )
    # the deadline then fires while the publish is still retrying its connection
    proxy.publisher.amqp_uri = "amqp://guest:guest@127.0.0.1:1/"


@pytest.mark.parametrize(
    "trouble, status, code",
    [(None, 504, "TIMEOUT"), (orders_broker_gone, 503, "UNAVAILABLE")],
    ids=["orders hangs", "the request cannot be published"],
)
def test_a_call_that_gets_no_answer_fails_within_the_timeout_and_leaves_nothing_waiting(
    container_factory, config, trouble, status, code
):
    """A hung callee is a 504 at the deadline; a broker that cannot be reached
    at all is a 503 as soon as every address was tried (publishes fail over at
    once: shared.rpc.FAST_FAILOVER_RETRY)."""
    start(container_factory, StandInUsers, config)
    start(container_factory, HungOrders, config)
    gateway = start(container_factory, GatewayService, config)
    if trouble:
        trouble(gateway)
    started = time.monotonic()
    response = get(config, "/v1/orders/1", admin_token())
    assert_error(response, status, code)
    assert time.monotonic() - started < 2
    listener = next(e for e in gateway.extensions if isinstance(e, ReplyListener))
    assert listener.pending_replies() == 0
    assert gateway._worker_threads == {}


class OrdersHungOnTwo:
    """An orders service that answers for order 1 and never in time for order 2."""

    name = "orders"

    @rpc
    def get_order(self, order_id, user_id=None):
        if order_id == 2:
            eventlet.sleep(30)
        return {"id": order_id, "user_id": 1}


def test_a_call_without_an_answer_sends_the_next_requests_on_a_new_channel(
    container_factory, config
):
    """RabbitMQ 3.10 may drop every publish of a channel to a quorum queue whose leader
    moved (shared.publishers.ChannelPublisher.renew_channel): a timeout renews it."""
    start(container_factory, StandInUsers, config)
    start(container_factory, OrdersHungOnTwo, config)
    gateway = start(container_factory, GatewayService, config)
    proxy = next(e for e in gateway.extensions if getattr(e, "target_service", "") == "orders")
    assert get(config, "/v1/orders/1", admin_token()).status_code == 200
    get(config, "/v1/orders/1", admin_token())  # answered before: on the held channel
    channel = proxy.channel_publisher.channel
    assert channel is not None
    assert_error(get(config, "/v1/orders/2", admin_token()), 504, "TIMEOUT")
    assert get(config, "/v1/orders/1", admin_token()).status_code == 200
    assert proxy.channel_publisher.channel is not channel


class LateOrders:
    """An orders service (on the project's rpc entrypoint) that notes every call it runs."""

    name = "orders"
    calls = []

    @project_rpc
    def get_order(self, order_id, user_id=None):
        LateOrders.calls.append(order_id)
        return {}


def test_a_call_that_timed_out_in_the_queue_is_never_run_later(container_factory, config):
    LateOrders.calls = []
    orders = start(container_factory, LateOrders, config)
    orders.stop()  # its durable queue stays, with nobody consuming it
    start(container_factory, StandInUsers, config)
    start(container_factory, GatewayService, config)
    assert_error(get(config, "/v1/orders/1", admin_token()), 504, "TIMEOUT")
    # the caller's deadline (RPC_TIMEOUT, 1 s, in the request's header) is well past
    time.sleep(1.0)
    start(container_factory, LateOrders, config)
    time.sleep(0.5)
    assert LateOrders.calls == []


def test_ready_gives_up_on_a_hung_service_after_a_second(container_factory, config):
    start(container_factory, StandInUsers, config)
    start(container_factory, HungOrders, config)
    start(container_factory, GatewayService, config | {"RPC_TIMEOUT": 5})
    started = time.monotonic()
    body = assert_error(get(config, "/ready"), 503, "UNAVAILABLE")
    assert body["details"]["checks"] == {"users": "ok", "orders": "timeout"}
    assert time.monotonic() - started < 2


def test_the_request_id_travels_with_the_rpc_calls(container_factory, config):
    class RecordingUsers(StandInUsers):
        from shared.logs import LoggingContext

        log_context = LoggingContext()

        @rpc
        def get_user(self, user_id):
            from shared.logs import current_request_id

            StandInUsers.seen_request_ids.append(current_request_id())
            return StandInUsers.known[1]

    StandInUsers.seen_request_ids = []
    start(container_factory, RecordingUsers, config)
    start(container_factory, GatewayService, config)
    response = get(config, "/v1/users/me", admin_token(), **{"X-Request-ID": "trace-abc-123"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "trace-abc-123"
    assert set(StandInUsers.seen_request_ids) == {"trace-abc-123"}


def test_a_crash_behind_the_gateway_is_a_500_that_tells_nothing(container_factory, config):
    class BrokenUsers(StandInUsers):
        @rpc
        def get_user(self, user_id):
            raise KeyError("internal detail")

    start(container_factory, BrokenUsers, config)
    start(container_factory, GatewayService, config)
    response = get(config, "/v1/users/1", admin_token())
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert body["message"] == "internal error" and body["details"] is None
    assert "internal detail" not in response.text and "KeyError" not in response.text


def test_outside_development_a_gateway_without_a_secret_refuses_to_start(
    container_factory, config, caplog
):
    container = container_factory(
        GatewayService, {**config, "ENVIRONMENT": "production", "JWT_SECRET": None}
    )
    with pytest.raises(SystemExit):
        container.start()
    assert "set JWT_SECRET" in caplog.text  # logged once, in the process's log format


# --- deletions across gateway instances ------------------------------------------------------


@pytest.fixture
def second_gateway(gateway_stack, module_rabbit_config):
    """Start another gateway instance on the stack's broker; yields a starter."""
    containers = []

    def start_second():
        config = gateway_config(module_rabbit_config)
        container = ServiceContainer(GatewayService, config)
        container.start()
        containers.append(container)
        return Api(base_url(config), None)

    yield start_second
    for container in containers:
        container.kill()


@pytest.fixture
def api(gateway_stack, module_rpc):
    return Api(base_url(gateway_stack), module_rpc)


def test_a_deletion_reaches_every_running_gateway_within_a_second(api, second_gateway):
    other_instance = second_gateway()
    who = api.user()
    assert other_instance.call("GET", "/v1/orders", who.token).status_code == 200
    assert api.delete(who.id, who.token).status_code == 204
    deadline = time.monotonic() + 1
    while other_instance.call("GET", "/v1/orders", who.token).status_code != 401:
        assert time.monotonic() < deadline, "the other gateway still accepts the token"
        time.sleep(0.05)


def test_a_user_deleted_while_a_gateway_was_down_is_refused_when_it_starts(api, second_gateway):
    deleted, alive = api.user(), api.user()
    assert api.delete(deleted.id, deleted.token).status_code == 204
    late_instance = second_gateway()
    assert_error(late_instance.call("GET", "/v1/orders", deleted.token), 401, "UNAUTHORIZED")
    assert late_instance.call("GET", "/v1/orders", alive.token).status_code == 200
