"""QUEUE_TYPE=quorum on a real RabbitMQ: the durable queues are quorum queues and
everything still works; a queue that exists as the other type is adopted, not a crash.

(One node is enough to see the types and the at-least-once dead-lettering; the
cluster test in tests/fault/ kills nodes under load.)
"""

import uuid

import pytest
from kombu import Connection, Exchange, Queue
from nameko.testing.services import entrypoint_waiter

from shared.events import dead_letter_queue_name, retry_queue_name
from tests.integration.conftest import service_config

pytestmark = pytest.mark.integration

ITEMS = [{"sku": "BOOK-1", "quantity": 1, "unit_price": "5.00"}]
PASSWORD = "correct horse battery"
COUNT_QUEUE = "evt-orders-order_created--users.handle_order_created"


def queue_types(rabbit_manager, vhost):
    return {queue["name"]: queue.get("type") for queue in rabbit_manager.get_queues(vhost)}


@pytest.fixture
def quorum(rabbit_config, web_config, make_db_uri, container_factory):
    """users and orders with QUEUE_TYPE=quorum, each on its own HTTP port."""
    from nameko.testing.utils import find_free_port

    from orders.service import OrdersService
    from users.service import UsersService

    started = {}
    for name, service in (("users", UsersService), ("orders", OrdersService)):
        config = service_config(
            rabbit_config,
            {"WEB_SERVER_ADDRESS": f"127.0.0.1:{find_free_port()}"},
            name,
            make_db_uri(name),
            QUEUE_TYPE="quorum",
            EVENT_RETRY_DELAY=0.05,
        )
        started[name] = container_factory(service, config)
        started[name].start()
    return started


def test_every_durable_queue_is_a_quorum_queue_and_the_event_path_works(
    quorum, rpc, rabbit_manager, rabbit_config
):
    user = rpc.users.create_user(f"{uuid.uuid4().hex[:8]}@example.com", "Ann", PASSWORD)
    with entrypoint_waiter(quorum["users"], "handle_order_created", timeout=10):
        rpc.orders.create_order(user["id"], ITEMS)
    assert rpc.users.get_user(user["id"])["order_count"] == 1

    types = queue_types(rabbit_manager, rabbit_config["vhost"])
    durable = [
        "rpc-users",
        "rpc-orders",
        COUNT_QUEUE,
        retry_queue_name(COUNT_QUEUE),
        dead_letter_queue_name(COUNT_QUEUE),
    ]
    assert {name: types.get(name) for name in durable} == dict.fromkeys(durable, "quorum")
    # reply queues are exclusive to a connection: they stay classic
    assert all(kind == "classic" for name, kind in types.items() if name.startswith("rpc.reply"))


def test_a_quorum_delay_queue_dead_letters_at_least_once(quorum, rabbit_manager, rabbit_config):
    queue = next(
        q
        for q in rabbit_manager.get_queues(rabbit_config["vhost"])
        if q["name"] == retry_queue_name(COUNT_QUEUE)
    )
    arguments = queue["arguments"]
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"


@pytest.mark.parametrize("existing,wanted", [("classic", "quorum"), ("quorum", "classic")])
def test_a_queue_of_the_other_type_is_adopted_not_a_crash(
    rabbit_config,
    web_config,
    users_db_uri,
    container_factory,
    rpc,
    rabbit_manager,
    caplog,
    existing,
    wanted,
):
    from users.service import UsersService

    arguments = {"x-queue-type": "quorum"} if existing == "quorum" else None
    with Connection(rabbit_config["AMQP_URI"]) as connection:
        exchange = Exchange("nameko-rpc", type="topic", durable=True)
        Queue(
            "rpc-users", exchange, routing_key="users.*", durable=True, queue_arguments=arguments
        )(connection.channel()).declare()
    config = service_config(rabbit_config, web_config, "users", users_db_uri, QUEUE_TYPE=wanted)
    container = container_factory(UsersService, config)
    container.start()
    assert rpc.users.health()["status"] == "ok"
    assert queue_types(rabbit_manager, rabbit_config["vhost"])["rpc-users"] == existing
    assert "already exists as a" in caplog.text


def test_an_unknown_queue_type_refuses_to_start_saying_what_to_set():
    from shared.settings import ServiceSettings
    from tests.helpers import settings_problems

    config = {"DB_URIS": {"users:Base": "sqlite://"}, "QUEUE_TYPE": "mirrored"}
    problems = settings_problems(ServiceSettings, config, "users")
    assert any("set QUEUE_TYPE" in problem for problem in problems)
