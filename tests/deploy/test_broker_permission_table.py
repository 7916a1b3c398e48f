"""scripts/broker_setup.py's permission table, checked without a broker.

Its regexes are matched the way RabbitMQ matches them (a search, not a full
match: the table anchors them itself) against the names and routing keys each
service must use, taken from the service classes themselves, and against those
it must not. The real broker's answer is in tests/integration/test_broker_permissions.py.
"""

import importlib
import inspect
import re
import uuid
from pathlib import Path

import pytest
from nameko.events import BROADCAST, EventHandler
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.rpc import Rpc, RpcProxy

from scripts.broker_setup import RPC_EXCHANGE, SERVICES, anchored, permissions_of
from shared.services import SERVICES as LISTED
from tests.deploy.conftest import ROOT

USERS_METHODS = (
    "create_user get_user list_users update_user delete_user authenticate "
    "store_refresh_token rotate_refresh_token get_token_version health"
).split()
ORDERS_METHODS = "create_order get_order list_orders cancel_order set_status health".split()
REPLY_KEY = str(uuid.uuid4())


def service_classes():
    """{name: nameko service class} of every service of shared/services.py, from its module."""
    classes = {}
    for service in LISTED:
        module = importlib.import_module(service.module)
        (cls,) = [
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and value.__module__ == module.__name__
            and getattr(value, "name", None) == service.name
        ]
        classes[service.name] = cls
    return classes


def allows(regex, name):
    return re.search(regex, name) is not None


def permissions(service):
    return permissions_of(SERVICES[service])[0]


def topic(service, exchange, kind):
    return permissions_of(SERVICES[service])[1][exchange][kind]


def entrypoints(cls):
    for method_name, method in inspect.getmembers(cls, callable):
        for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            yield method_name, entrypoint


def test_the_table_holds_exactly_the_listed_services():
    """A service in shared/services.py without a broker user could not log in."""
    assert sorted(SERVICES) == sorted(service.name for service in LISTED)


def test_only_the_gateway_may_call_update_or_delete_user():
    assert allows(topic("gateway", RPC_EXCHANGE, "write"), "users.update_user")
    assert allows(topic("gateway", RPC_EXCHANGE, "write"), "users.delete_user")
    for service in (name for name in SERVICES if name != "gateway"):
        for method in ("update_user", "delete_user", "authenticate", "create_user"):
            assert not allows(topic(service, RPC_EXCHANGE, "write"), f"users.{method}"), service


@pytest.mark.parametrize(
    "service, allowed",
    [
        (
            "gateway",
            [f"users.{m}" for m in USERS_METHODS] + [f"orders.{m}" for m in ORDERS_METHODS],
        ),
        ("orders", ["users.get_user", REPLY_KEY]),
        ("users", [REPLY_KEY]),
    ],
)
def test_each_service_sends_exactly_its_rpc_routing_keys(service, allowed):
    write = topic(service, RPC_EXCHANGE, "write")
    every_key = (
        [f"users.{m}" for m in USERS_METHODS]
        + [f"orders.{m}" for m in ORDERS_METHODS]
        + [REPLY_KEY]
    )
    for key in every_key:
        assert allows(write, key) == (key in allowed), (service, key)
    for odd in ("users.get_user.x", "x.users.get_user", "#", "users.*", "users.", "users", ""):
        assert not allows(write, odd), (service, odd)
    # only the gateway may call any method, even one that does not exist yet
    assert allows(write, "users.get_user_x") == (service == "gateway")


def test_reply_keys_are_uuids_and_never_look_like_a_call():
    write = topic("users", RPC_EXCHANGE, "write")
    assert allows(write, REPLY_KEY)
    assert not allows(write, REPLY_KEY + "x")
    assert not allows(write, REPLY_KEY.replace("-", "."))
    assert not allows(write, REPLY_KEY.upper())


def test_a_service_binds_on_nameko_rpc_only_its_own_queue_and_reply_keys():
    assert allows(topic("users", RPC_EXCHANGE, "read"), "users.*")
    assert not allows(topic("users", RPC_EXCHANGE, "read"), "orders.*")
    assert allows(topic("orders", RPC_EXCHANGE, "read"), REPLY_KEY)
    for service in SERVICES:
        for key in ("#", "*.*", "users.authenticate", "users.#"):
            assert not allows(topic(service, RPC_EXCHANGE, "read"), key), (service, key)


def test_events_are_sent_only_by_their_source_and_heard_only_by_subscribers():
    assert allows(topic("users", "users.events", "write"), "user_deleted")
    assert allows(topic("orders", "orders.events", "write"), "order_status_changed")
    for service, exchange, key in [
        ("orders", "users.events", "user_deleted"),
        ("gateway", "users.events", "user_deleted"),
        ("users", "orders.events", "order_created"),
        ("users", "users.events", "order_created"),
    ]:
        assert not allows(topic(service, exchange, "write"), key), (service, exchange, key)
    assert allows(topic("gateway", "users.events", "read"), "user_updated")
    assert not allows(topic("gateway", "users.events", "read"), "user_created")
    assert not allows(topic("gateway", "orders.events", "read"), "order_created")
    assert not allows(topic("orders", "users.events", "read"), "#")


def test_no_service_may_publish_on_the_default_exchange_or_touch_another_services_queues():
    own = {
        "users": ["rpc-users", "evt-orders-order_created--users.handle_order_created"],
        "orders": ["rpc-orders", "evt-users-user_deleted--orders.handle_user_deleted.delay"],
        "gateway": [f"rpc.reply-gateway-{REPLY_KEY}"],
    }
    for service in SERVICES:
        granted = permissions(service)
        assert not any(allows(regex, "amq.default") for regex in granted.values()), service
        for other, names in own.items():
            for name in names:
                for kind in ("configure", "read", "write"):
                    assert allows(granted[kind], name) == (other == service), (service, kind, name)


def test_the_table_covers_what_the_service_classes_declare():
    """Every event handler, RPC entrypoint and RPC proxy of the code is in the table."""
    for name, cls in service_classes().items():
        service = SERVICES[name]
        subscriptions = {(s.source, s.event, s.method, s.broadcast) for s in service.subscribes}
        answers = False
        for method_name, entrypoint in entrypoints(cls):
            if isinstance(entrypoint, Rpc):
                answers = True
            elif isinstance(entrypoint, EventHandler):
                key = (
                    entrypoint.source_service,
                    entrypoint.event_type,
                    method_name,
                    entrypoint.handler_type is BROADCAST,
                )
                assert key in subscriptions, f"{name}: {key} is not in broker_setup.SERVICES"
        assert answers == service.answers_rpc, name
        called = {call.partition(".")[0] for call in service.calls}
        for attribute in vars(cls).values():
            if isinstance(attribute, RpcProxy):
                assert attribute.target_service in called, (name, attribute.target_service)


def test_the_table_allows_every_call_and_event_in_the_source_code():
    calls = {
        "gateway": re.compile(r"self\.(users|orders)\.(\w+)\("),
        "orders": re.compile(r"proxy\.()(\w+)\("),  # orders/dependencies.py calls users
    }
    for service, pattern in calls.items():
        write = topic(service, RPC_EXCHANGE, "write")
        for path in Path(ROOT, service).glob("*.py"):
            for target, method in pattern.findall(path.read_text()):
                key = f"{target or 'users'}.{method}"
                assert allows(write, key), f"{path.name}: {service} may not send {key}"
    emitted = re.compile(r"outbox\.add\(\s*\w+,\s*\"(\w+)\"")
    for service in (name for name, entry in SERVICES.items() if entry.emits):
        write = topic(service, f"{service}.events", "write")
        found = {
            event
            for path in Path(ROOT, service).glob("*.py")
            for event in emitted.findall(path.read_text())
        }
        assert found and found <= set(SERVICES[service].emits), (service, found)
        assert all(allows(write, event) for event in found)


def test_an_empty_alternative_list_allows_nothing_useful():
    assert anchored([]) == "^$"
    assert not allows(anchored([]), "user_deleted")


def test_a_failover_list_names_one_account():
    from scripts.broker_setup import account_from_uri

    one = account_from_uri("amqp://orders:pw@rabbitmq:5672/shop")
    listed = account_from_uri(
        "amqp://orders:pw@rabbitmq:5672/shop;amqp://orders:pw@rabbitmq-2:5672/shop"
    )
    assert listed == one
    with pytest.raises(ValueError):
        account_from_uri("amqp://orders:pw@a:5672/shop;amqp://users:pw@b:5672/shop")


def test_every_password_of_a_failover_list_is_hidden_in_messages():
    from scripts.run import hide_password

    shown = hide_password("amqp://u:secret1@a:5672/v;amqp://u:secret2@b:5672/v")
    assert "secret" not in shown and shown.count("***") == 2
