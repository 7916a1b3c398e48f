"""shared.framework: one test per behaviour it patches in nameko (a real RabbitMQ).

Each would fail if nameko or kombu changed what the patch relies on.
"""

import pathlib
import re
import socket
import time
import uuid

import pytest
from kombu import Connection, Queue
from nameko.messaging import QueueConsumer as NamekoQueueConsumer

from shared import framework
from shared.framework import QueueConsumer, ReplyListener

pytestmark = pytest.mark.integration


def test_other_framework_versions_are_refused_saying_what_to_recheck():
    framework.check_versions(dict(framework.WRITTEN_FOR))
    with pytest.raises(ImportError, match="re-check every patched behaviour"):
        framework.check_versions({**framework.WRITTEN_FOR, "nameko": "3.0.0"})


@pytest.fixture
def delivered(rabbit_config):
    """A real message delivered on a connection whose socket then breaks (a reset)."""
    connection = Connection(rabbit_config["AMQP_URI"])
    channel = connection.channel()
    queue = Queue(f"reset-{uuid.uuid4().hex[:8]}", channel=channel, auto_delete=True)
    queue.declare()
    connection.Producer().publish("hello", exchange="", routing_key=queue.name)
    message = None
    while message is None:
        message = queue.get(no_ack=False)
    # what a broker restart does to a connection: the socket is gone under it
    connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)
    yield message
    connection.collect()


@pytest.mark.parametrize("operation", ["ack_message", "requeue_message"])
def test_nameko_raises_on_a_reset_connection_and_the_patch_does_not(delivered, operation):
    with pytest.raises(OSError):  # what killed the container (and so the process)
        getattr(NamekoQueueConsumer(), operation)(delivered)
    getattr(QueueConsumer(), operation)(delivered)  # logged, not raised


def test_every_queue_consumer_of_the_project_is_the_patched_one():
    from gateway.dependencies import RevocationFeed
    from shared.events import EventHandler
    from shared.rpc import RpcConsumer, TimedRpcProxy

    consumers = [
        RpcConsumer.queue_consumer,
        EventHandler.queue_consumer,
        RevocationFeed.queue_consumer,
        TimedRpcProxy.rpc_reply_listener.queue_consumer,
    ]
    assert all(isinstance(consumer, QueueConsumer) for consumer in consumers)
    assert isinstance(TimedRpcProxy.rpc_reply_listener, ReplyListener)


def test_the_reply_listener_forgets_a_call_by_id_or_by_its_event():
    listener = ReplyListener()
    listener.get_reply_event("a")
    event_b = listener.get_reply_event("b")
    assert listener.pending_replies() == 2
    listener.forget("a")
    listener.forget(reply_event=event_b)
    assert listener.pending_replies() == 0


@pytest.fixture
def caller(rabbit_config, container_factory):
    """A running service with an RPC proxy, so with a reply listener."""
    from nameko.rpc import rpc

    from shared.rpc import TimedRpcProxy

    class Caller:
        name = "caller"
        other = TimedRpcProxy("other")

        @rpc
        def noop(self):
            pass

    container = container_factory(Caller, rabbit_config)
    container.start()
    return container


def reply_listener_of(container):
    return next(e for e in container.extensions if isinstance(e, ReplyListener))


def test_the_reply_queue_is_exclusive_to_its_connection(caller):
    """A durable reply queue on a dead cluster node could not be redeclared (NOT_FOUND)."""
    listener = reply_listener_of(caller)
    assert listener.queue.exclusive and listener.queue.auto_delete
    assert not listener.queue.durable
    assert listener.queue.name.startswith("rpc.reply-caller-")


def test_each_connection_gets_a_fresh_exclusive_reply_queue_and_routing_key(caller):
    """Redeclaring an exclusive queue whose node died waits for that node: a new name never does."""
    listener = reply_listener_of(caller)
    first = listener.queue  # what the consumer reads on a (re)connection
    first_key = listener.routing_key
    second = listener.queue
    assert first.name != second.name and listener.routing_key != first_key
    assert second.name == f"rpc.reply-caller-{listener.routing_key}"
    assert second.routing_key == listener.routing_key


def echo_and_caller():
    """An echo service, and a caller whose ``call`` asks it through a ``TimedRpcProxy``."""
    from nameko.rpc import rpc

    from shared.rpc import TimedRpcProxy

    class Echo:
        name = "echo"

        @rpc
        def echo(self, value):
            return value

    class Caller:
        name = "caller"
        echo = TimedRpcProxy("echo")

        @rpc
        def call(self, value):
            return self.echo.echo(value)

    return Echo, Caller


def test_replies_are_handled_in_the_consumer_loop_and_consumed_without_acks(
    rabbit_config, rabbit_manager, container_factory
):
    """No greenthread and no ack per reply: a tenth of a millisecond per RPC."""
    from nameko.testing.services import entrypoint_hook

    Echo, Caller = echo_and_caller()
    container_factory(Echo, rabbit_config).start()
    caller = container_factory(Caller, rabbit_config)
    caller.start()
    spawned = []
    spawn = caller.spawn_managed_thread

    def recording_spawn(fn, identifier=None):
        spawned.append(str(identifier))
        return spawn(fn, identifier=identifier)

    caller.spawn_managed_thread = recording_spawn
    with entrypoint_hook(caller, "call") as call:
        assert [call(n) for n in range(3)] == [0, 1, 2]
    assert not [name for name in spawned if "ReplyListener" in name]

    reply_queue = f"rpc.reply-caller-{reply_listener_of(caller).routing_key}"
    deadline = time.monotonic() + 15  # the management API's statistics lag a few seconds
    while True:
        queue = rabbit_manager.get_queue(rabbit_config["vhost"], reply_queue)
        if queue.get("consumer_details") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [consumer["ack_required"] for consumer in queue["consumer_details"]] == [False]


def test_a_call_made_before_the_reply_queue_is_consumed_waits_for_it(
    rabbit_config, container_factory, monkeypatch
):
    """nameko starts a container's extensions side by side: the gateway's web server took
    requests before its reply queue existed, and their replies were dropped (504s just
    after a start). Here the reply consumer is made slow to get ready: the call waits."""
    import eventlet
    from nameko.testing.services import entrypoint_hook

    Echo, Caller = echo_and_caller()
    container_factory(Echo, {**rabbit_config, "RPC_TIMEOUT": 3}).start()
    get_consumers = QueueConsumer.get_consumers

    def slow_get_consumers(consumer, *args, **kwargs):
        eventlet.sleep(1)  # the reply queue is declared and consumed only after this
        return get_consumers(consumer, *args, **kwargs)

    monkeypatch.setattr(QueueConsumer, "get_consumers", slow_get_consumers)
    caller = container_factory(Caller, {**rabbit_config, "RPC_TIMEOUT": 3})
    starting = eventlet.spawn(caller.start)
    eventlet.sleep(0.2)  # set up, starting: the reply consumer is not consuming yet
    with entrypoint_hook(caller, "call") as call:
        assert call("early") == "early"
    starting.wait()


def test_the_upstream_code_each_reimplementation_follows_is_unchanged():
    """A re-implemented method was written from this exact source: a change upstream means
    re-reading it (and updating the fingerprint in shared/framework.py)."""
    import hashlib
    import importlib
    import inspect

    changed = []
    for dotted, fingerprint in framework.REIMPLEMENTED.items():
        module_name, owner, method = dotted.rsplit(".", 2)
        function = getattr(getattr(importlib.import_module(module_name), owner), method)
        source = inspect.getsource(function).encode()
        if hashlib.sha256(source).hexdigest()[:16] != fingerprint:
            changed.append(dotted)
    assert changed == []


# a private name on an object the project does not own: allowed only in shared/framework.py
PRIVATE_USE = re.compile(r"\b(?!self\b|cls\b)([A-Za-z_]\w*)\._[a-z]\w*")
# documented APIs that happen to start with an underscore, and the project's own objects
NOT_FRAMEWORK = ("._mapping", "._replace", "os._exit", "._deserialize", "._asdict")


def test_no_framework_private_name_is_used_outside_the_compatibility_module():
    root = pathlib.Path(__file__).resolve().parents[2]
    found = []
    for folder in ("shared", "gateway", "users", "orders", "scripts"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "framework.py" or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                for match in PRIVATE_USE.finditer(code):
                    if not any(allowed in match.group() for allowed in NOT_FRAMEWORK):
                        found.append(f"{path.relative_to(root)}:{number}: {match.group()}")
    assert found == []


def test_a_stopping_gateway_takes_no_new_connection_and_refuses_work_it_already_took(
    rabbit_config, web_config, container_factory
):
    """nameko closed the listening socket last, after the RPC reply listener had stopped."""
    import requests

    from gateway.http import GatewayWebServer
    from gateway.service import GatewayService
    from tests.integration.conftest import gateway_config

    config = gateway_config(rabbit_config)
    container = container_factory(GatewayService, config)
    container.start()
    url = f"http://{config['WEB_SERVER_ADDRESS']}"
    session = requests.Session()  # one keep-alive connection, opened before the stop
    assert session.get(f"{url}/health", timeout=5).status_code == 200
    server = next(e for e in container.extensions if isinstance(e, GatewayWebServer))
    route = next(e for e in container.entrypoints if e.method_name == "health")
    server.unregister_provider(route)  # what nameko does first when it stops the container
    assert server.stopping
    with pytest.raises(requests.ConnectionError):  # no new connection
        requests.get(f"{url}/health", timeout=2)
    refused = session.get(f"{url}/ready", timeout=5)  # the old one: refused, nothing done
    assert refused.status_code == 503 and refused.headers["Connection"] == "close"  # eventlet's
    assert refused.json()["error"] == "UNAVAILABLE"
