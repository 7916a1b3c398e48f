"""The producer side of the transactional outbox.

An event is a row written in the same transaction as the change it describes
(:meth:`OutboxWriter.add`), so either both are committed or neither is. A relay
greenthread in the same service publishes committed rows to the service's nameko
events exchange, with publisher confirms, and marks them sent.

Publishing: the relay sends a whole batch on its own channel and then waits
once for the broker to confirm all of it (:class:`BatchPublisher`), instead of
one round trip per event.

Latency: a worker that wrote events rings the relay's bell when it ends (after
its commit); the relay lingers ``OUTBOX_LINGER_SECONDS`` (20 ms) so that the
commits of a busy moment go out as one batch, so an event normally leaves
within a few tens of milliseconds. The periodic sweep
only catches what the bell missed: a publish that failed while the broker was
down, or rows left by a process that crashed between commit and publish.
Delivery is at least once: a crash between publish and "mark sent" publishes the
row again, and consumers are idempotent by ``event_id``. An event the broker
refuses (a nack) stays pending and goes again on a later run, alone: the events
confirmed beside it are marked sent, and the relay backs off meanwhile.
"""

import json
import logging
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import cache
from types import SimpleNamespace

import amqp
import eventlet
from eventlet.queue import Empty, LightQueue
from kombu import Connection
from kombu.serialization import dumps
from nameko.constants import PERSISTENT
from nameko.extensions import DependencyProvider
from nameko.messaging import HeaderEncoder
from nameko.standalone.events import get_event_exchange
from prometheus_client import Counter, Gauge
from sqlalchemy import Integer, String, Text, bindparam, delete, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import UTCDateTime, find_dependency, prebuilt_insert
from shared.publishers import no_read_before_each_publish
from shared.settings import settings_of

log = logging.getLogger(__name__)


def utcnow():
    return datetime.now(UTC)


class OutboxMixin:
    """Columns of the ``outbox`` table; each service maps it on its own ``Base``."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    headers: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class OutboxWriter:
    """What a worker gets: records events in the caller's session (and transaction)."""

    def __init__(self, model, headers=None):
        """``headers``: a dict, or a function that makes it (called by the first ``add``)."""
        self.model = model
        self.insert = prebuilt_insert(model.__table__)
        self._headers = headers if headers is not None else {}
        self.written = 0

    @property
    def headers(self):
        if callable(self._headers):
            # most calls write no event: their headers are never worth making
            self._headers = self._headers()
        return self._headers

    def row(self, event_type, data):
        """The outbox row of ``event_type``, not written: ``(payload, values)``.

        ``payload`` is ``data`` plus ``event_id`` and ``occurred_at``, as it will be
        published; ``values`` are the row's columns. For a caller that writes the
        row itself, in one statement with its change (then it calls :meth:`wrote`).
        """
        payload = {
            "event_id": str(uuid.uuid4()),
            "occurred_at": utcnow().isoformat(),
            **data,
        }
        values = {
            "event_id": payload["event_id"],
            "event_type": event_type,
            "payload": json.dumps(payload),
            "headers": json.dumps(self.headers),
            "created_at": utcnow(),
            "attempts": 0,
        }
        return payload, values

    def wrote(self):
        """Count an event written: the relay is woken when the worker ends."""
        self.written += 1

    def add(self, session, event_type, data):
        """Add ``event_type`` to the outbox in ``session``; the caller commits.

        Returns the payload as it will be published (see :meth:`row`).
        """
        payload, values = self.row(event_type, data)
        # a Core insert, executed now in the caller's transaction: cheaper than an
        # ORM object flushed at commit, and the same atomicity
        session.connection().execute(self.insert, values)
        self.wrote()
        return payload


class EventsRefused(Exception):
    """The broker refused some events of a batch; they stay pending for a later run."""

    def __init__(self, sent, refused):
        super().__init__(f"the broker refused {refused} event(s) of a batch ({sent} sent)")
        self.sent = sent


@cache
def _relay_statements(outbox):
    """The relay's statements for the table ``outbox``, built once: building them
    per batch cost more CPU than PostgreSQL spent running them."""
    attempts_plus_one = outbox.c.attempts + 1
    ids = outbox.c.id.in_(bindparam("ids", expanding=True))
    return SimpleNamespace(
        pending=select(outbox.c.id, outbox.c.event_type, outbox.c.payload, outbox.c.headers)
        .where(outbox.c.sent_at.is_(None))
        .order_by(outbox.c.id)
        .limit(bindparam("batch_size"))
        .with_for_update(skip_locked=True),
        mark_sent=update(outbox)
        .where(ids)
        .values(sent_at=bindparam("now"), attempts=attempts_plus_one),
        count_try=update(outbox).where(ids).values(attempts=attempts_plus_one),
    )


def relay_pending(session_factory, model, publish_all, batch_size):
    """Publish up to ``batch_size`` unsent rows in order and mark them sent.

    ``publish_all(messages)`` gets ``(event_type, payload, headers)`` tuples in
    order and returns the positions of those the broker refused (an empty set:
    all confirmed); it may also raise, and then none counts as confirmed.
    Confirmed rows are marked sent, even after a refused one: they were
    delivered, and sending them again would only duplicate them. Each refused
    row counts a try and stays for a later run, and ``EventsRefused`` tells the
    caller to back off. Returns how many were sent. On PostgreSQL,
    ``SKIP LOCKED`` keeps two replicas from sending the same rows. Prebuilt
    Core statements throughout: this runs for every committed change.
    """
    statements = _relay_statements(model.__table__)
    with session_factory() as session:
        connection = session.connection()
        rows = connection.execute(statements.pending, {"batch_size": batch_size}).all()
        if not rows:
            return 0
        confirmed, refused = [], [rows[0].id]  # if publishing raises: the first counts a try
        try:
            positions = publish_all(
                [(row.event_type, json.loads(row.payload), json.loads(row.headers)) for row in rows]
            )
            confirmed = [row.id for n, row in enumerate(rows) if n not in positions]
            refused = [rows[n].id for n in positions]
        finally:
            if confirmed:
                connection.execute(statements.mark_sent, {"ids": confirmed, "now": utcnow()})
            if refused:
                connection.execute(statements.count_try, {"ids": refused})
            session.commit()
    if refused:
        raise EventsRefused(len(confirmed), len(refused))
    return len(confirmed)


class ConfirmTimeout(Exception):
    """The broker did not confirm a batch in time (unlike eventlet's Timeout, an Exception)."""


class BatchPublisher:
    """Publishes a batch of persistent messages, then waits once for all their confirms.

    Used by the relay greenthread alone: it owns one connection and one channel
    in confirm mode, so nothing else can interleave on them. Any failure closes
    the connection, and the next batch starts on a new one. Setting
    ``amqp_uri`` moves to another broker from the next batch on.
    """

    def __init__(self, amqp_uri, exchange, serializer, ssl=None, confirm_timeout=10.0):
        self._amqp_uri = amqp_uri
        self.exchange = exchange
        self.serializer = serializer
        self.ssl = ssl
        self.confirm_timeout = confirm_timeout
        self._connection = None

    @property
    def amqp_uri(self):
        return self._amqp_uri

    @amqp_uri.setter
    def amqp_uri(self, value):
        self._amqp_uri = value
        self.close()

    def close(self):
        if self._connection is not None:
            # it is dropped because it may be broken: closing it may fail too
            with suppress(Exception):
                self._connection.release()
            self._connection = None

    def _open(self):
        # kept at once: if what follows fails, close() still releases it
        self._connection = connection = Connection(self._amqp_uri, ssl=self.ssl, connect_timeout=5)
        channel = connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self.exchange(channel).declare()
        # the wait for confirms after each batch reads what the broker sent
        no_read_before_each_publish(connection.connection)
        self._channel = channel
        self._last_tag = 0  # the broker numbers a confirm-mode channel's messages 1, 2, ...

    def _on_ack(self, delivery_tag, multiple):
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag, multiple):
        self._nacked.update(self._settle(delivery_tag, multiple))

    def _settle(self, delivery_tag, multiple):
        settled = (
            {tag for tag in self._waiting if tag <= delivery_tag} if multiple else {delivery_tag}
        )
        self._waiting -= settled
        return settled

    def __call__(self, messages):
        """Publish ``(routing_key, payload, headers)`` in order.

        Returns the positions of the messages the broker refused (nacked), an
        empty set when it confirmed them all; raises if the broker cannot be
        reached or does not confirm within ``confirm_timeout``.
        """
        try:
            if self._connection is None:
                self._open()
            first = self._last_tag + 1
            self._waiting, self._nacked = set(), set()
            for routing_key, payload, headers in messages:
                # one basic_publish each, as kombu's Producer would send it, without
                # its per-message Exchange copy, property merging and checks
                content_type, content_encoding, body = dumps(payload, serializer=self.serializer)
                self._channel.basic_publish(
                    amqp.Message(
                        body,
                        content_type=content_type,
                        content_encoding=content_encoding,
                        delivery_mode=PERSISTENT,
                        application_headers=headers,
                    ),
                    exchange=self.exchange.name,
                    routing_key=routing_key,
                )
                self._last_tag += 1
                self._waiting.add(self._last_tag)
            with eventlet.Timeout(self.confirm_timeout, ConfirmTimeout(self.confirm_timeout)):
                while self._waiting:
                    self._connection.drain_events()
        except BaseException:
            self.close()
            raise
        refused = {tag - first for tag in self._nacked}
        if refused:
            # A refusal may come from the channel itself: RabbitMQ 3.10 refuses every
            # publish of a channel to a quorum queue whose first publish there came while
            # the node of its last recorded leader was down, until that node is back
            # (see shared.publishers.ChannelPublisher.renew_channel). The next batch
            # starts on a new connection and channel.
            self.close()
        return refused


def count_pending(session_factory, model):
    with session_factory() as session:
        return session.scalar(select(func.count()).where(model.sent_at.is_(None)))


def purge_sent(session_factory, model, older_than):
    """Delete rows sent before ``older_than`` ago; they only served as a record."""
    with session_factory() as session:
        result = session.execute(delete(model).where(model.sent_at < utcnow() - older_than))
        session.commit()
        return result.rowcount


class Outbox(DependencyProvider, HeaderEncoder):
    """Gives workers an :class:`OutboxWriter` and runs the relay greenthread.

    ``database_attr`` names the service's :class:`shared.db.Database` dependency,
    whose engine the relay uses. Settings (:class:`shared.settings.ServiceSettings`):
    ``OUTBOX_SWEEP_SECONDS``, ``OUTBOX_BATCH_SIZE``, ``OUTBOX_RETENTION_HOURS``,
    ``OUTBOX_LINGER_SECONDS`` (how long the relay waits after a bell so that the
    events of a busy moment go out as one batch).
    """

    MAX_BACKOFF = 5.0

    def __init__(self, model, database_attr="db"):
        self.model = model
        self.database_attr = database_attr

    def setup(self):
        config = self.container.config
        settings = settings_of(self.container)
        self.sweep_seconds = settings.outbox_sweep_seconds
        self.linger_seconds = settings.outbox_linger_seconds
        self.batch_size = settings.outbox_batch_size
        self.retention = timedelta(hours=settings.outbox_retention_hours)
        self.exchange = get_event_exchange(self.container.service_name, config)
        self.publisher = BatchPublisher(
            config["AMQP_URI"],
            self.exchange,
            serializer=self.container.serializer,
            ssl=config.get("AMQP_SSL"),
        )
        self._bell = LightQueue(maxsize=1)
        self._relay_thread = None
        self.published_counter = None

    def start(self):
        database = find_dependency(self.container, self.database_attr)
        self.session_factory = database.Session
        self._relay_thread = self.container.spawn_managed_thread(
            self._relay_forever, identifier="outbox_relay"
        )
        # rows a previous process committed but never published go out first
        self.wake()

    def stop(self):
        if self._relay_thread is not None:
            self._relay_thread.kill()
            self._relay_thread = None
        self.publisher.close()

    kill = stop

    def get_dependency(self, worker_ctx):
        return OutboxWriter(self.model, lambda: self.get_message_headers(worker_ctx))

    def worker_teardown(self, worker_ctx):
        # teardown runs after the entrypoint returned, so its commit is done
        writer = getattr(worker_ctx.service, self.attr_name, None)
        if writer is not None and writer.written:
            self.wake()

    def wake(self):
        """Ask the relay to run now (a no-op if it is already asked)."""
        if self._bell.empty():
            self._bell.put_nowait(None)

    def relay_once(self):
        """Send everything pending, batch after batch; returns how many were sent."""
        total = 0
        while True:
            try:
                sent = relay_pending(
                    self.session_factory, self.model, self.publisher, self.batch_size
                )
            except EventsRefused as refusal:
                self._count_published(refusal.sent)
                raise
            self._count_published(sent)
            total += sent
            if sent < self.batch_size:
                return total

    def _count_published(self, sent):
        if self.published_counter is not None:
            self.published_counter.inc(sent)

    def pending(self):
        return count_pending(self.session_factory, self.model)

    def register_metrics(self, registry):
        """Called by :class:`shared.metrics.Metrics`: the backlog and what was published."""
        self.published_counter = Counter(
            "outbox_published_total", "Events the outbox relay published", registry=registry
        )
        Gauge(
            "outbox_backlog", "Events committed but not yet published", registry=registry
        ).set_function(self._pending_or_nan)

    def _pending_or_nan(self):
        # a scrape must not fail because the database is away: NaN says "unknown"
        try:
            return self.pending()
        except Exception:
            return float("nan")

    def _relay_forever(self):
        backoff = 0.0
        last_purge = 0.0
        while True:
            try:
                self._bell.get(timeout=backoff or self.sweep_seconds)
                # let the commits of a busy moment gather: one batch, one confirm
                eventlet.sleep(self.linger_seconds)
            except Empty:
                pass
            try:
                self.relay_once()
                if backoff:
                    log.info("outbox relay recovered: events are being published again")
                backoff = 0.0
                now = eventlet.hubs.get_hub().clock()
                if now - last_purge > 3600:
                    purge_sent(self.session_factory, self.model, self.retention)
                    last_purge = now
            except Exception as error:  # the broker or the database is away: retry later
                if not backoff:
                    log.warning("outbox relay cannot publish yet (%s); will retry", error)
                backoff = min(max(backoff * 2, 0.5), self.MAX_BACKOFF)
