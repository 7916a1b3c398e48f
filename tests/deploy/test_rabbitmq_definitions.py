"""rabbitmq/definitions.json loaded into the real RabbitMQ (a throwaway copy of its
vhost and user, through the management API), and its policies seen on real queues."""

import json
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
import requests
from kombu import Connection, Exchange, Producer, Queue

from tests.deploy.conftest import load_compose, path, read_env_file

pytestmark = pytest.mark.integration

# queue name (as nameko and shared/events.py name them) -> the policy it must get
EXPECTED_POLICIES = {
    "evt-users-user_created--orders.handle_user_created": "event-queues",
    "evt-users-user_created--orders.handle_user_created.retry": None,
    "evt-users-user_created--orders.handle_user_created.dead-letter": "event-dead-letter-queues",
    "rpc-orders": "rpc-queues",
    f"rpc.reply-gateway-{uuid.uuid4()}": "rpc-reply-queues",
}


def load_definitions():
    with open(path("rabbitmq", "definitions.json")) as stream:
        return json.load(stream)


def renamed(definitions, vhost, user):
    """The definitions with their one vhost and one user renamed."""
    (old_vhost,) = [item["name"] for item in definitions["vhosts"]]
    (old_user,) = [item["name"] for item in definitions["users"]]
    copy = json.loads(json.dumps(definitions))
    copy["vhosts"] = [{**item, "name": vhost} for item in copy["vhosts"]]
    copy["users"] = [{**item, "name": user} for item in copy["users"]]
    for section in ("permissions", "exchanges", "queues", "bindings", "policies"):
        for item in copy.get(section, []):
            item["vhost"] = vhost
            if item.get("user") == old_user:
                item["user"] = user
    return copy


@pytest.fixture
def management(request):
    api = urlsplit(request.config.getoption("RABBIT_API_URI"))
    base = f"{api.scheme}://{api.hostname}:{api.port}/api"
    session = requests.Session()
    session.auth = (api.username, api.password)
    return base, session


@pytest.fixture
def loaded(management):
    """(vhost, user) of the definitions loaded under throwaway names; removed after."""
    base, session = management
    suffix = uuid.uuid4().hex[:8]
    vhost, user = f"test-definitions-{suffix}", f"test-definitions-{suffix}"
    response = session.post(
        f"{base}/definitions", json=renamed(load_definitions(), vhost, user), timeout=30
    )
    try:
        assert response.status_code in (200, 201, 204), response.text
        yield vhost, user
    finally:
        session.delete(f"{base}/vhosts/{quote(vhost, safe='')}", timeout=30)
        session.delete(f"{base}/users/{quote(user, safe='')}", timeout=30)


def amqp_uri(vhost, user):
    password = read_env_file(path(".env.example"))["RABBITMQ_PASSWORD"]
    return f"amqp://{user}:{password}@127.0.0.1:5672/{quote(vhost, safe='')}"


def queue_info(management, vhost, name, want_policy, timeout=10):
    base, session = management
    url = f"{base}/queues/{quote(vhost, safe='')}/{quote(name, safe='')}"
    deadline = time.monotonic() + timeout
    while True:
        info = session.get(url, timeout=10).json()
        if info.get("policy") == want_policy or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_compose_connects_as_the_user_to_the_vhost_the_definitions_create():
    definitions = load_definitions()
    uri = urlsplit(load_compose()["services"]["users"]["environment"]["AMQP_URI"])
    assert [item["name"] for item in definitions["users"]] == [uri.username]
    assert [item["name"] for item in definitions["vhosts"]] == [uri.path.lstrip("/")]
    assert uri.password == read_env_file(path(".env.example"))["RABBITMQ_PASSWORD"]


def test_the_user_logs_in_with_the_example_password_and_policies_apply(loaded, management):
    vhost, user = loaded
    with Connection(amqp_uri(vhost, user), connect_timeout=5) as connection:
        channel = connection.channel()
        for name in EXPECTED_POLICIES:
            Queue(name, durable=True, channel=channel).declare()

    policies = {item["name"]: item["definition"] for item in load_definitions()["policies"]}
    # the queues that must get no policy last, once the broker has applied the others
    for name, policy in sorted(EXPECTED_POLICIES.items(), key=lambda item: item[1] is None):
        info = queue_info(management, vhost, name, policy)
        assert info.get("policy") == policy, (name, info.get("policy"))
        if policy:
            assert info["effective_policy_definition"] == policies[policy], name


def test_a_message_an_event_queue_drops_lands_in_the_dead_letter_queue(loaded, management):
    vhost, user = loaded
    queue_name = "evt-orders-order_created--users.handle_order_created"
    with Connection(amqp_uri(vhost, user), connect_timeout=5) as connection:
        channel = connection.channel()
        queue = Queue(queue_name, durable=True, channel=channel)
        queue.declare()
        queue_info(management, vhost, queue_name, "event-queues")
        # expires at once: the broker drops it, the policy dead-letters it
        Producer(channel, exchange=Exchange("")).publish(
            {"event_id": "x"}, routing_key=queue_name, expiration=0.001
        )
        dead_letters = Queue("dead-letters", channel=channel)
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = dead_letters.get(no_ack=True)
            time.sleep(0.1)
    assert message is not None, "nothing reached the dead-letters queue"
    assert message.headers["x-death"][0]["queue"] == queue_name
