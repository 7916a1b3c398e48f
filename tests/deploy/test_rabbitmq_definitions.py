"""rabbitmq/definitions.json: no users or secrets in it, and, loaded by scripts/broker_setup.py
into the real RabbitMQ (a throwaway vhost and throwaway users), its policies seen on real queues."""

import json
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
from kombu import Connection, Exchange, Producer, Queue

from shared.events import retries_exchange_name
from tests.deploy.conftest import APP_SERVICES, load_compose, path
from tests.integration.broker_accounts import BrokerAccounts

# queue name (as nameko and shared/events.py name them) -> (who declares it, its policy)
EXPECTED_POLICIES = {
    "evt-users-user_created--orders.handle_user_created": ("orders", "event-queues"),
    "evt-users-user_created--orders.handle_user_created.delay": ("orders", None),
    "evt-users-user_created--orders.handle_user_created.dead-letter": (
        "orders",
        "event-dead-letter-queues",
    ),
    "rpc-orders": ("orders", "rpc-queues"),
    f"rpc.reply-gateway-{uuid.uuid4()}": ("gateway", "rpc-reply-queues"),
}


def load_definitions():
    with open(path("rabbitmq", "definitions.json")) as stream:
        return json.load(stream)


def test_the_definitions_hold_no_user_no_password_and_no_permission():
    definitions = load_definitions()
    assert not definitions.get("users") and not definitions.get("permissions")
    assert not definitions.get("topic_permissions")
    text = json.dumps(definitions).lower()
    assert "password" not in text and "hash" not in text


def test_compose_connects_to_the_vhost_the_definitions_create():
    (vhost,) = [item["name"] for item in load_definitions()["vhosts"]]
    for name in APP_SERVICES:
        uri = urlsplit(load_compose()["services"][name]["environment"]["AMQP_URI"])
        assert uri.path.lstrip("/") == vhost, name


@pytest.fixture(scope="module")
def broker(request):
    accounts = BrokerAccounts(request.config.getoption("RABBIT_API_URI"))
    operator = f"{accounts.vhost}-operator"
    try:
        accounts.create()
        # an operator of this vhost only: may read the dead-letters queue, nothing else
        vhost = quote(accounts.vhost, safe="")
        password = uuid.uuid4().hex
        accounts.management.call("PUT", f"users/{operator}", {"password": password, "tags": ""})
        accounts.management.call(
            "PUT",
            f"permissions/{vhost}/{operator}",
            {"configure": "^$", "write": "^$", "read": "^dead-letters$"},
        )
        accounts.operator_uri = f"amqp://{operator}:{password}@127.0.0.1:5672/{vhost}"
        yield accounts
    finally:
        accounts.delete()
        accounts.management.session.delete(
            f"{accounts.management.base}/users/{quote(operator, safe='')}", timeout=10
        )


def queue_info(broker, name, want_policy, timeout=10):
    url = f"queues/{quote(broker.vhost, safe='')}/{quote(name, safe='')}"
    deadline = time.monotonic() + timeout
    while True:
        info = broker.management.call("GET", url).json()
        if info.get("policy") == want_policy or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_policies_apply_to_the_queues_the_services_declare(broker):
    for name, (service, _) in EXPECTED_POLICIES.items():
        with broker.connection(service) as connection:
            Queue(name, durable=True, channel=connection.channel()).declare()

    policies = {item["name"]: item["definition"] for item in load_definitions()["policies"]}
    # the queues that must get no policy last, once the broker has applied the others
    ordered = sorted(EXPECTED_POLICIES.items(), key=lambda item: item[1][1] is None)
    for name, (_, policy) in ordered:
        info = queue_info(broker, name, policy)
        assert info.get("policy") == policy, (name, info.get("policy"))
        if policy:
            assert info["effective_policy_definition"] == policies[policy], name


def test_a_message_an_event_queue_drops_lands_in_the_dead_letter_queue(broker):
    queue_name = "evt-orders-order_created--users.handle_order_created"
    retries = Exchange(retries_exchange_name("users"), type="direct", durable=True)
    with broker.connection("users") as connection:
        channel = connection.channel()
        # bound to users.retries by its own name, as the handler binds it
        Queue(queue_name, retries, routing_key=queue_name, durable=True, channel=channel).declare()
        queue_info(broker, queue_name, "event-queues")
        # expires at once: the broker drops it, the policy dead-letters it
        Producer(channel, exchange=retries).publish(
            {"event_id": "x"}, routing_key=queue_name, expiration=0.001
        )
    with Connection(broker.operator_uri, connect_timeout=5) as connection:
        dead_letters = Queue("dead-letters", channel=connection.channel())
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = dead_letters.get(no_ack=True)
            time.sleep(0.1)
    assert message is not None, "nothing reached the dead-letters queue"
    assert message.headers["x-death"][0]["queue"] == queue_name
