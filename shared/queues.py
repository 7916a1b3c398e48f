"""Which kind of RabbitMQ queue a service's durable queues are: classic or quorum.

The ``QUEUE_TYPE`` setting (:mod:`shared.settings`) applies to every durable
queue a service consumes or parks messages in: its RPC queue, its event
handlers' queues and their delay and dead-letter queues. Reply queues and
BROADCAST queues are exclusive to one connection and stay classic (a quorum
queue cannot be exclusive).

- ``classic`` (the default): one node holds each queue. Right for one broker
  (``make run``, compose, a laptop), and what queues declared before this
  setting existed already are.
- ``quorum``: each queue is replicated on a majority of a cluster's nodes (Raft),
  so losing a node loses no message and the queue keeps serving. A publish is
  confirmed only once a majority has the message, so an event the broker cannot
  deliver to a live queue is never confirmed (and the outbox never marks it sent).
  Delay queues dead-letter *at least once* (``x-dead-letter-strategy``), which
  RabbitMQ allows only with ``x-overflow: reject-publish``.

A queue's type cannot change once it exists: declaring it with other arguments
fails with ``PRECONDITION_FAILED``, which would stop the service. So an existing
queue of the other type is *adopted* as it is, with a warning that says how to
migrate (drain it, delete it, restart: see the README's "Queue types").
"""

import logging

from amqp.exceptions import ConnectionError as AmqpConnectionError
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Queue
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
# what a quorum queue needs for its dead-lettering to lose nothing
AT_LEAST_ONCE_DEAD_LETTERING = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def typed(queue, kind, dead_letters_back=False):
    """``queue`` (a durable kombu Queue) with the arguments of queue type ``kind``.

    ``dead_letters_back``: the queue dead-letters its messages onward (a delay
    queue); as a quorum queue it then does so at least once.
    """
    arguments = {
        name: value
        for name, value in (queue.queue_arguments or {}).items()
        if name not in ("x-queue-type", *AT_LEAST_ONCE_DEAD_LETTERING)
    }
    if kind == QUORUM:
        arguments["x-queue-type"] = QUORUM
        if dead_letters_back:
            arguments.update(AT_LEAST_ONCE_DEAD_LETTERING)
    copy = Queue(
        queue.name,
        exchange=queue.exchange,
        routing_key=queue.routing_key,
        durable=True,
        auto_delete=False,
        exclusive=False,
        queue_arguments=arguments or None,
        bindings=queue.bindings,
    )
    copy.dead_letters_back = dead_letters_back
    return copy


def declare_typed(queue, kind, amqp_uri, ssl=None, dead_letters_back=False):
    """Declare ``queue`` as type ``kind`` (or adopt it as the other type if it
    already exists so); the Queue to consume and declare from then on.

    If the broker cannot be reached now, the typed queue is returned undeclared:
    the consumer declares it when it connects.
    """
    wanted = typed(queue, kind, dead_letters_back)
    other = typed(queue, QUORUM if kind == CLASSIC else CLASSIC, dead_letters_back)
    try:
        with Connection(amqp_uri, ssl=ssl, connect_timeout=5) as connection:
            for candidate in (wanted, other):
                try:
                    candidate(connection.channel()).declare()
                except PreconditionFailed:
                    continue
                if candidate is other:
                    log.warning(
                        "queue %s already exists as a %s queue: kept as it is (QUEUE_TYPE is "
                        "%s). To migrate it, stop its consumers, let it drain, delete it and "
                        "start again",
                        queue.name,
                        QUORUM if kind == CLASSIC else CLASSIC,
                        kind,
                    )
                return candidate
    except (OperationalError, AmqpConnectionError, OSError) as error:
        log.warning("cannot declare queue %s now (%s): the consumer will", queue.name, error)
        return wanted
    raise PreconditionFailed(f"queue {queue.name} exists with arguments of neither queue type")
