"""The consumer side of events: idempotency by ``event_id``, bounded retries, dead letters.

Idempotency (:func:`handle_once`): a handler records the ``event_id`` it processed
in the same transaction as its effect; a redelivered event finds its id already
there and changes nothing.

Failures (:class:`EventHandler`, used as ``@event_handler(source, event_type)``):
nameko 2.14.1 can only ack a failed message (it is lost) or requeue it (it comes
straight back, for ever). This handler does neither. For the handler's queue
``Q`` (nameko's ``evt-<source>-<event>--<service>.<method>``) it declares

- ``Q.delay``: durable, no consumer, ``x-dead-letter-exchange=<service>.retries``
  and ``x-dead-letter-routing-key=Q``. A failed message is republished there (same
  body and headers, plus ``x-retry-count``) with a per-message TTL
  (``expiration``) of ``EVENT_RETRY_DELAY * 2 ** (retries so far)`` seconds;
  when it expires RabbitMQ dead-letters it through ``<service>.retries`` to ``Q``
  alone, so the other services subscribed to the event never see the retry.
- ``Q.dead-letter``: durable, no consumer. After ``EVENT_MAX_RETRIES`` retries
  the message is published here instead, with ``x-last-error`` and
  ``x-dead-lettered-at``, logged at ERROR with its ``event_id`` and counted in
  ``events_dead_lettered_total``. :mod:`shared.deadletters` lists and
  replays them.

Both republishes, and the broker's return from ``Q.delay``, go through the
service's own durable direct exchange ``<service>.retries``, to which ``Q``,
``Q.delay`` and ``Q.dead-letter`` are bound by their own names. Never through
the default exchange: whoever may publish there reaches any queue by name (an
``rpc-<service>`` queue, past every topic permission), so no service's broker
user may, and RabbitMQ also asks that of anyone declaring a queue whose
dead-letter exchange it is. (Older releases named the delay queue ``Q.retry``
and dead-lettered it through the default exchange; a ``Q.retry`` left by one
still returns what it holds to ``Q`` and may be deleted once empty.)

The original delivery is acked only after the broker confirmed the republish;
if the republish fails, the original is requeued instead, so a message is never
lost, only possibly delivered twice (which :func:`handle_once` absorbs).

Why one retry queue with per-message TTL rather than a queue per delay: queue
arguments cannot change once declared, per-message TTLs can, so changing the
config needs no queue surgery. The cost: RabbitMQ expires messages only at the
head of a queue, so a short delay can wait behind a longer one (never shorter
than asked, never longer than the longest delay).
"""

import logging
from datetime import datetime
from weakref import WeakKeyDictionary

from kombu import Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.constants import HEADER_PREFIX, PERSISTENT
from nameko.events import EventHandler as _NamekoEventHandler
from prometheus_client import Counter
from sqlalchemy import String, bindparam, exists, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Prepared, UTCDateTime, prebuilt_insert
from shared.exceptions import InvalidInput
from shared.framework import QueueConsumer
from shared.outbox import utcnow
from shared.queues import declare_typed
from shared.settings import settings_of

log = logging.getLogger(__name__)

RETRY_COUNT_HEADER = "x-retry-count"
LAST_ERROR_HEADER = "x-last-error"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
# headers of ours and of RabbitMQ's dead-lettering, dropped when a message is replayed
DELIVERY_HEADERS = (
    RETRY_COUNT_HEADER,
    LAST_ERROR_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ORIGINAL_QUEUE_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)
MAX_RETRY_DELAY = 300.0
EVENT_ID_MAX = 36


class ProcessedEventMixin:
    """Columns of the ``processed_events`` table; each consumer maps it on its ``Base``."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def event_id_of(payload):
    """The payload's ``event_id``, or :class:`InvalidInput` if it has none usable."""
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= EVENT_ID_MAX:
        raise InvalidInput("event without a usable event_id", {"event_id": ["Missing or invalid."]})
    return event_id


def handle_once(session, model, payload, event_type, effect):
    """Apply ``effect(session)`` for the event in ``payload`` once, whatever the redelivery.

    The event's id is inserted into ``model`` (a :class:`ProcessedEventMixin`
    table) first, then ``effect`` runs in the same transaction (it must not
    commit), then both are committed together. A duplicate, sequential or
    concurrent, collides on the primary key: on PostgreSQL the second insert
    waits for the first transaction and then fails, so the effect never runs
    twice. Returns ``True`` if applied, ``False`` if it was a duplicate. If
    ``effect`` raises, nothing is recorded and the exception propagates (the
    handler's retries take over).
    """
    event_id = event_id_of(payload)
    # no look-up first: the insert itself tells a duplicate (one round trip less)
    try:
        # a prebuilt Core insert: the ORM's unit of work cost more than the statement
        session.connection().execute(
            prebuilt_insert(model.__table__),
            {"event_id": event_id, "event_type": event_type, "processed_at": utcnow()},
        )
        effect(session)
        session.commit()
    except IntegrityError:
        session.rollback()
        if session.get(model, event_id) is not None:
            session.rollback()
            return False
        raise
    except BaseException:
        session.rollback()
        raise
    return True


def once_statement(name, model, effect):
    """``effect`` (a prebuilt Core ``update()``) guarded by its event's id in ``model``:
    one PostgreSQL statement, prepared as ``name`` (see :func:`handle_once_in_one_statement`)."""
    table = model.__table__
    first_time = (
        postgresql.insert(table)
        .values(
            event_id=bindparam("event_id"),
            event_type=bindparam("event_type"),
            processed_at=bindparam("processed_at"),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(table.c.event_id)
        .cte("first_time")
    )
    # a data-modifying WITH runs whether or not the outer query reads it
    guarded = effect.where(exists(first_time.select())).cte("effect")
    return Prepared(name, select(exists(first_time.select()).label("applied")).add_cte(guarded))


def handle_once_in_one_statement(connection, statement, payload, event_type, params):
    """:func:`handle_once` in one statement on PostgreSQL (``statement``: :func:`once_statement`).

    ``connection`` is in autocommit mode, so the statement is its own
    transaction: one round trip instead of four (BEGIN, the id, the effect,
    COMMIT). The effect runs with ``params`` only if the event's id was new. A
    duplicate, sequential or concurrent, meets the id already there (``ON
    CONFLICT DO NOTHING`` waits for a concurrent first transaction to end) and
    changes nothing. Returns ``True`` if applied, ``False`` if it was a duplicate.
    """
    row = statement.run(
        connection,
        {
            **params,
            "event_id": event_id_of(payload),
            "event_type": event_type,
            "processed_at": utcnow(),
        },
    ).one()
    return row.applied


# one set of counters per registry, shared by every handler of the container
_counters = WeakKeyDictionary()


def _event_counters(registry):
    if registry not in _counters:
        _counters[registry] = (
            Counter(
                "events_processed_total",
                "Events a handler applied",
                ["queue"],
                registry=registry,
            ),
            Counter(
                "events_duplicates_total",
                "Redelivered events a handler recognised by event_id and skipped",
                ["queue"],
                registry=registry,
            ),
            Counter(
                "events_retried_total",
                "Failed event deliveries sent for a delayed retry",
                ["queue"],
                registry=registry,
            ),
            Counter(
                "events_dead_lettered_total",
                "Events moved to a dead-letter queue after their last retry",
                ["queue"],
                registry=registry,
            ),
        )
    return _counters[registry]


def retry_queue_name(queue_name):
    """Where a failed message waits out its delay (``.delay``: see the module's docstring)."""
    return f"{queue_name}.delay"


def retries_exchange_name(service_name):
    """The direct exchange a service's handlers send their retries and dead letters through."""
    return f"{service_name}.retries"


def retries_exchange(service_name):
    return Exchange(retries_exchange_name(service_name), type="direct", durable=True)


def bound_to_retries(queue, exchange):
    """``queue`` as it is, plus a binding to ``exchange`` by its own name."""
    return Queue(
        queue.name,
        exchange=exchange,
        routing_key=queue.name,
        durable=queue.durable,
        auto_delete=queue.auto_delete,
        exclusive=queue.exclusive,
        queue_arguments=queue.queue_arguments,
    )


def dead_letter_queue_name(queue_name):
    return f"{queue_name}.dead-letter"


def retry_delay(base_delay, retries_so_far):
    """Seconds to wait before retry number ``retries_so_far + 1``: doubling, capped."""
    return min(base_delay * 2**retries_so_far, MAX_RETRY_DELAY)


class EventHandler(_NamekoEventHandler):
    """nameko's ``EventHandler`` with bounded, delayed retries and a dead-letter queue.

    Settings (:class:`shared.settings.ServiceSettings`): ``EVENT_MAX_RETRIES``
    (0 dead-letters at the first failure) and ``EVENT_RETRY_DELAY`` (seconds
    before the first retry; each next retry waits twice as long, at most
    ``MAX_RETRY_DELAY``). Only for ``SERVICE_POOL`` and ``SINGLETON`` handlers:
    their queues are durable.

    With a :class:`shared.metrics.Metrics` in the service, each queue counts
    events processed, duplicates (the handler returned ``False``, as
    :func:`handle_once` does for one), retries and dead letters.
    """

    queue_consumer = QueueConsumer()  # survives an ack on a reset connection
    # set by register_metrics when the service has a Metrics provider
    processed_counter = duplicates_counter = retried_counter = dead_lettered_counter = None

    def __init__(self, source_service, event_type, **kwargs):
        if kwargs.get("requeue_on_error"):
            raise ValueError("requeue_on_error would loop for ever; failures are retried instead")
        super().__init__(source_service, event_type, **kwargs)

    def setup(self):
        super().setup()
        config = self.container.config
        settings = settings_of(self.container)
        self.max_retries = settings.event_max_retries
        self.retry_delay = settings.event_retry_delay
        name = self.queue.name
        self.retries_exchange = retries_exchange(self.container.service_name)
        kind = settings.queue_type
        amqp_uri, ssl = config["AMQP_URI"], config.get("AMQP_SSL")
        self.queue = declare_typed(self.queue, kind, amqp_uri, ssl)
        self.retry_queue = declare_typed(
            Queue(
                retry_queue_name(name),
                exchange=self.retries_exchange,
                routing_key=retry_queue_name(name),
                durable=True,
                queue_arguments={
                    "x-dead-letter-exchange": self.retries_exchange.name,
                    "x-dead-letter-routing-key": name,
                },
            ),
            kind,
            amqp_uri,
            ssl,
            dead_letters_back=True,
        )
        self.dead_letter_queue = declare_typed(
            Queue(
                dead_letter_queue_name(name),
                exchange=self.retries_exchange,
                routing_key=dead_letter_queue_name(name),
                durable=True,
            ),
            kind,
            amqp_uri,
            ssl,
        )
        self.publisher = Publisher(
            config["AMQP_URI"],
            use_confirms=True,
            # a message that cannot be routed to its queue must fail, not vanish
            mandatory=True,
            delivery_mode=PERSISTENT,
            # the handler's own queue too: the way back from the delay, and for replays
            declare=[
                bound_to_retries(self.queue, self.retries_exchange),
                self.retry_queue,
                self.dead_letter_queue,
            ],
            ssl=config.get("AMQP_SSL"),
        )

    def register_metrics(self, registry):
        """Called by :class:`shared.metrics.Metrics` when the container starts."""
        counters = _event_counters(registry)
        (
            self.processed_counter,
            self.duplicates_counter,
            self.retried_counter,
            self.dead_lettered_counter,
        ) = counters
        # the series exist at 0 from the start, so an alert can compare with before
        for counter in counters:
            counter.labels(queue=self.queue.name)

    def unpack_message_headers(self, message):
        # only nameko's context (request id, call stack) reaches the worker: the
        # retry bookkeeping and RabbitMQ's x-death (with datetimes) would otherwise
        # be copied into the headers of every event the handler itself writes
        prefix = f"{HEADER_PREFIX}."
        return {
            key[len(prefix) :]: value
            for key, value in (message.headers or {}).items()
            if key.startswith(prefix)
        }

    def handle_message_processed(self, message, result=None, exc_info=None):
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            # a handler returns False for a duplicate (what handle_once answers)
            counter = self.duplicates_counter if result is False else self.processed_counter
            if counter is not None:
                counter.labels(queue=self.queue.name).inc()
            return
        try:
            self._retry_or_dead_letter(message, exc_info[1])
        except Exception:
            log.exception(
                "cannot republish failed event %s from %s; requeueing it",
                _event_id_or_none(message),
                self.queue.name,
            )
            self.queue_consumer.requeue_message(message)
        else:
            self.queue_consumer.ack_message(message)

    def _retry_or_dead_letter(self, message, error):
        headers = {
            key: value
            for key, value in (message.headers or {}).items()
            if key not in DELIVERY_HEADERS
        }
        retries = _int_or_zero((message.headers or {}).get(RETRY_COUNT_HEADER))
        event_id = _event_id_or_none(message)
        if retries < self.max_retries:
            delay = retry_delay(self.retry_delay, retries)
            headers[RETRY_COUNT_HEADER] = retries + 1
            self._republish(message, self.retry_queue.name, headers, expiration=delay)
            if self.retried_counter is not None:
                self.retried_counter.labels(queue=self.queue.name).inc()
            log.warning(
                "event %s failed in %s (%s); retry %d of %d in %.2fs",
                event_id,
                self.queue.name,
                error,
                retries + 1,
                self.max_retries,
                delay,
                extra={"event_id": event_id, "queue": self.queue.name},
            )
            return
        headers.update(
            {
                RETRY_COUNT_HEADER: retries,
                LAST_ERROR_HEADER: f"{type(error).__name__}: {error}"[:1000],
                DEAD_LETTERED_AT_HEADER: utcnow().isoformat(),
                ORIGINAL_QUEUE_HEADER: self.queue.name,
            }
        )
        self._republish(message, self.dead_letter_queue.name, headers)
        if self.dead_lettered_counter is not None:
            self.dead_lettered_counter.labels(queue=self.queue.name).inc()
        log.error(
            "event %s dead-lettered to %s after %d retries: %s",
            event_id,
            self.dead_letter_queue.name,
            retries,
            error,
            extra={"event_id": event_id, "queue": self.queue.name},
        )

    def _republish(self, message, queue_name, headers, expiration=None):
        # the body goes out byte for byte, with its content type: no re-serialising
        self.publisher.publish(
            message.body,
            exchange=self.retries_exchange.name,
            routing_key=queue_name,
            headers=headers,
            expiration=expiration,
            serializer=None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
        )


def _int_or_zero(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _event_id_or_none(message):
    try:
        payload = message.payload
    except Exception:
        return None
    return payload.get("event_id") if isinstance(payload, dict) else None


event_handler = EventHandler.decorator
