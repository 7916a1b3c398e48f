"""See and replay the messages that event handlers gave up on.

Every :class:`shared.events.EventHandler` queue ``Q`` has a durable
``Q.dead-letter`` queue holding the messages that still failed after
``EVENT_MAX_RETRIES`` retries. Nothing consumes it; an operator looks, fixes
the handler, deploys, and replays. A replayed message goes to ``Q`` alone (the
other services subscribed to the event are not bothered) with a fresh retry
budget; handlers are idempotent by ``event_id``, so replaying an event that was
somehow applied already changes nothing.

From a shell (the config gives the broker and, through ``DB_URIS``, the service)::

    python -m shared.deadletters config/orders.yaml list
    python -m shared.deadletters config/orders.yaml replay            # every dead letter
    python -m shared.deadletters config/orders.yaml replay --event-id 3f2a...
    python -m shared.deadletters config/orders.yaml list --queue QUEUE   # one queue, by name

From ``nameko shell --config config/orders.yaml``::

    from shared.deadletters import dead_letter_queues, list_dead_letters, replay
    from orders.service import OrdersService
    for queue in dead_letter_queues(OrdersService):
        print(queue, list_dead_letters(n.config["AMQP_URI"], queue))
    replay(n.config["AMQP_URI"], queue, event_id="3f2a...")
"""

import argparse
import importlib
import inspect
import json
import re
import sys

from amqp.exceptions import NotFound as QueueNotFound
from kombu import Connection, Producer, Queue
from nameko.constants import PERSISTENT
from nameko.events import SERVICE_POOL, SINGLETON
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from shared.events import (
    DEAD_LETTERED_AT_HEADER,
    DELIVERY_HEADERS,
    LAST_ERROR_HEADER,
    ORIGINAL_QUEUE_HEADER,
    RETRY_COUNT_HEADER,
    EventHandler,
    dead_letter_queue_name,
    retries_exchange,
)

SUFFIX = ".dead-letter"
# nameko's SERVICE_POOL queue: evt-<source>-<event>--<service>.<method>
POOL_QUEUE = re.compile(r"^evt-.+--(?P<service>[^.]+)\.[^.]+$")


def dead_letter_queues(service_cls):
    """The dead-letter queue of each :class:`EventHandler` of a nameko service class."""
    queues = []
    for method_name, method in inspect.getmembers(service_cls, callable):
        for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if not isinstance(entrypoint, EventHandler):
                continue
            if entrypoint.handler_type is SERVICE_POOL:
                queue = (
                    f"evt-{entrypoint.source_service}-{entrypoint.event_type}"
                    f"--{service_cls.name}.{method_name}"
                )
            elif entrypoint.handler_type is SINGLETON:
                queue = f"evt-{entrypoint.source_service}-{entrypoint.event_type}"
            else:
                continue
            queues.append(dead_letter_queue_name(queue))
    return sorted(queues)


def _connection(amqp_uri):
    return Connection(amqp_uri, transport_options={"confirm_publish": True})


def _passive(channel, name):
    """``(queue, message_count)``, or ``(None, 0)`` if no handler ever declared it."""
    queue = Queue(name, channel=channel)
    try:
        _, message_count, _ = queue.queue_declare(passive=True)
    except QueueNotFound:
        return None, 0
    return queue, message_count


def count_dead_letters(amqp_uri, queue_name):
    with _connection(amqp_uri) as connection:
        _, message_count = _passive(connection.channel(), queue_name)
        return message_count


def _describe(message):
    headers = message.headers or {}
    try:
        payload = message.decode()
    except Exception:
        payload = message.body
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    return {
        "event_id": event_id,
        "retries": headers.get(RETRY_COUNT_HEADER),
        "error": headers.get(LAST_ERROR_HEADER),
        "dead_lettered_at": headers.get(DEAD_LETTERED_AT_HEADER),
        "queue": headers.get(ORIGINAL_QUEUE_HEADER),
        "payload": payload,
    }


def list_dead_letters(amqp_uri, queue_name, limit=100):
    """Up to ``limit`` dead letters of ``queue_name``, oldest first; they stay in the queue.

    Messages are fetched unacknowledged and returned to the queue when the
    channel closes, so listing never removes anything.
    """
    with _connection(amqp_uri) as connection:
        channel = connection.channel()
        queue, _ = _passive(channel, queue_name)
        if queue is None:
            return []
        found = []
        while len(found) < limit:
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            found.append(_describe(message))
        channel.close()
        return found


def replay(amqp_uri, queue_name, event_id=None, limit=None, service_name=None):
    """Send dead letters of ``queue_name`` back to their handler's queue; how many went.

    All of them, or only the one(s) with ``event_id``. They go through the
    ``<service>.retries`` exchange of ``service_name`` (by default the service
    named in the queue's name), to which the handler's queue is bound here by
    its own name, as the handler itself binds it. Each message is acked in
    the dead-letter queue only after the broker confirmed its republish, so a
    crash mid-way duplicates (harmless: handlers are idempotent) but never loses.
    """
    if not queue_name.endswith(SUFFIX):
        raise ValueError(f"{queue_name!r} is not a dead-letter queue (…{SUFFIX})")
    target = queue_name[: -len(SUFFIX)]
    if service_name is None:
        match = POOL_QUEUE.match(target)
        if match is None:
            raise ValueError(f"{queue_name!r} names no service: pass service_name")
        service_name = match["service"]
    exchange = retries_exchange(service_name)
    replayed = 0
    with _connection(amqp_uri) as connection:
        channel = connection.channel()
        queue, message_count = _passive(channel, queue_name)
        if queue is None:
            return 0
        # the handler binds its queue so too; a queue from before that still needs it
        exchange(channel).declare()
        channel.queue_bind(target, exchange.name, routing_key=target)
        producer = Producer(channel)
        # look at each message present now once; what arrives meanwhile waits
        for _ in range(message_count):
            if limit is not None and replayed >= limit:
                break
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            if event_id is not None and _describe(message)["event_id"] != event_id:
                continue  # left unacked: back in the queue when the channel closes
            headers = {
                k: v for k, v in (message.headers or {}).items() if k not in DELIVERY_HEADERS
            }
            producer.publish(
                message.body,
                exchange=exchange.name,
                routing_key=target,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=PERSISTENT,
                mandatory=True,
            )
            message.ack()
            replayed += 1
        channel.close()
    return replayed


def _service_class(config):
    from shared.migrate import service_name_of

    service_name = service_name_of(config)
    module = importlib.import_module(f"{service_name}.service")
    for value in vars(module).values():
        if inspect.isclass(value) and getattr(value, "name", None) == service_name:
            return value
    raise SystemExit(f"no nameko service named {service_name!r} in {module.__name__}")


def main(argv=None):
    from shared.migrate import load_config

    parser = argparse.ArgumentParser(
        prog="python -m shared.deadletters", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", help="the service's YAML config")
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("--queue", help="one dead-letter queue (default: all of the service's)")
    parser.add_argument("--event-id", help="replay only this event")
    parser.add_argument("--limit", type=int, default=100, help="list at most this many per queue")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except OSError as error:
        parser.error(f"cannot read the config {args.config!r}: {error.strerror}")
    amqp_uri = config["AMQP_URI"]
    queues = [args.queue] if args.queue else dead_letter_queues(_service_class(config))
    for queue in queues:
        if args.action == "list":
            print(f"{queue}: {count_dead_letters(amqp_uri, queue)} dead letter(s)")
            for letter in list_dead_letters(amqp_uri, queue, args.limit):
                print("  " + json.dumps(letter, default=str))
        else:
            count = replay(amqp_uri, queue, event_id=args.event_id)
            print(f"{queue}: replayed {count}")


if __name__ == "__main__":
    sys.exit(main())
