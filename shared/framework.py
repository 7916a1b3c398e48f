"""Where this project leans on nameko's and kombu's insides: one place, one version.

Written for nameko 2.14.1, nameko-sqlalchemy 1.5.0, kombu 5.7.0 and amqp 5.4.2
(the pins of constraints.txt). Importing this module on other versions fails
at once with what to re-check, instead of letting an upgrade break a patched
behaviour silently. Every module that patches or re-implements framework code
imports this one, so that check guards it too; tests/integration/test_framework.py
holds one test per behaviour.

Patched here:
- :class:`QueueConsumer`: nameko's consumer of every service queue, surviving an
  ack or requeue on a connection that a broker restart has just reset (nameko
  catches only amqp's ``ConnectionError``; a socket's ``ConnectionResetError``
  escaped, killed the container and with it the process). The unacked message is
  redelivered on the new connection, and handlers are idempotent.
- :class:`QueueConsumer` also lets a provider handle its messages in the consumer's
  own loop (``handles_inline``) and consume without acks (``no_ack``): the
  :class:`ReplyListener` does both, since a reply only wakes its waiting call.
- :meth:`QueueConsumer.wait_until_consuming`: an RPC caller waits (within its deadline)
  until its reply queue is consumed; nameko's web server took requests before that.
- :class:`PerConnectionQueue` and :class:`ReplyListener`: exclusive queues (RPC
  replies, BROADCAST handlers) named anew on every connection. nameko's reply
  queue was durable: once its cluster node died, redeclaring it failed, and since
  one connection consumes every queue of a service, the service stopped taking
  RPC until that node came back. :meth:`ReplyListener.forget` drops the reply
  slot of a call that gave up (nameko keeps it until a reply comes: never, for a
  dead callee).
- :func:`is_stopped` and :func:`work_in_progress`: what a container is still doing
  (for the bounded stop of :mod:`shared.cli`).
- :func:`stop_accepting` and :func:`is_accepting`: nameko's ``WebServer`` closed its
  listening socket only in its own ``stop``, after the workers were waited for and
  the dependencies (the RPC reply listener) stopped: a request accepted in between
  got a worker whose RPC could act but whose reply could never arrive, then its
  connection was killed without an answer (seen in the rolling-restart test).

Re-implemented elsewhere, beside the extension that needs it (:data:`REIMPLEMENTED`
fingerprints the upstream source each one was written from):
- ``shared.rpc``: ``LeanPublisher.publish`` (``Publisher.publish`` without a new
  connection per message), ``TimedRpcProxy.send_request`` (``MethodProxy._call``
  with a deadline), ``RpcConsumer.send_reply`` (``Responder.send_response``,
  serialising once), ``SignatureReadOnce.check_signature`` (the signature read once).
- ``shared.events``: ``EventHandler.unpack_message_headers`` (nameko's context only).
- ``shared.db``: ``Database.setup`` (two engines; nameko-sqlalchemy's makes one).
- ``gateway.http``: the WSGI app, through the documented ``get_wsgi_app`` hook.
- ``shared.shell``: ``nameko.cli.code.interact`` (piped input goes on after an error).
"""

import logging
import socket
import uuid
from contextlib import suppress
from functools import partial
from importlib.metadata import version

from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu import Queue
from kombu.exceptions import OperationalError
from nameko.messaging import QueueConsumer as _QueueConsumer
from nameko.rpc import ReplyListener as _ReplyListener

log = logging.getLogger(__name__)

WRITTEN_FOR = {
    "nameko": "2.14.1",
    "nameko-sqlalchemy": "1.5.0",
    "kombu": "5.7.0",
    "amqp": "5.4.2",
}
# sha256 (first 16 hex digits) of the upstream source each re-implementation follows
REIMPLEMENTED = {
    "nameko.rpc.MethodProxy._call": "162cdf3c92de6792",
    "nameko.rpc.Responder.send_response": "d5c3234c5e408a01",
    "nameko.amqp.publish.Publisher.publish": "dd0e87b3027e57df",
    "nameko.extensions.Entrypoint.check_signature": "568d1c1e1852f91b",
    "nameko.messaging.HeaderDecoder.unpack_message_headers": "2ce5e0693e3dde60",
    "nameko.messaging.QueueConsumer.ack_message": "b8a1614182c16380",
    "nameko.messaging.QueueConsumer.get_consumers": "9566ed8719e2f073",
    "nameko.messaging.QueueConsumer.handle_message": "47cda24e5edc9402",
    "nameko.rpc.ReplyListener.handle_message": "c10e21f1b3ea8be0",
    "nameko.rpc.ReplyListener.setup": "13e0e4ffef66593a",
    "nameko.web.server.WebServer.get_wsgi_app": "deb63ef0885442b9",
    "nameko_sqlalchemy.database.Database.setup": "d866ae0b702e46cf",
    "nameko.containers.ServiceContainer.stop": "b55f0e4703ee25b9",
}

# what a broker connection that went away raises, from the socket up
CONNECTION_ERRORS = (OperationalError, AmqpConnectionError, ConnectionError, socket.error)


def check_versions(running):
    """Refuse versions this module was not written for, saying what to re-check."""
    wrong = {name: version for name, version in running.items() if version != WRITTEN_FOR[name]}
    if wrong:
        found = ", ".join(f"{name} {version}" for name, version in sorted(wrong.items()))
        raise ImportError(
            f"shared.framework was written for {WRITTEN_FOR} but found {found}: re-check "
            "every patched behaviour listed in shared/framework.py "
            "(tests/integration/test_framework.py), then update WRITTEN_FOR"
        )


check_versions({name: version(name) for name in WRITTEN_FOR})


class QueueConsumer(_QueueConsumer):
    """nameko's ``QueueConsumer``; an ack or requeue on a lost connection is logged, not raised.

    A provider may also say ``handles_inline = True`` (its ``handle_message`` is
    quick and never blocks: it runs in the consumer's own loop instead of a new
    greenthread per message) and ``no_ack = True`` (its queue is consumed
    without acknowledgements; its ``handle_message`` must not ack).
    """

    def wait_until_consuming(self):
        """Return once this consumer's queues are consumed (at once, every time after the first).

        nameko starts a container's extensions side by side: the gateway's web
        server takes requests before its RPC reply queue exists, and a reply sent
        to it then is dropped (the first calls after a start answered 504). A
        consumer that failed to start is not waited for: its callers fail as they would.
        """
        with suppress(Exception):
            self._consumers_ready.wait()

    def handle_message(self, provider, body, message):
        if getattr(provider, "handles_inline", False):
            provider.handle_message(body, message)
        else:
            super().handle_message(provider, body, message)

    def get_consumers(self, consumer_cls, channel):
        """nameko's, passing each provider's ``no_ack``."""
        for provider in self._providers:
            consumer = consumer_cls(
                queues=[provider.queue],
                callbacks=[partial(self.handle_message, provider)],
                accept=self.accept,
                no_ack=getattr(provider, "no_ack", False),
            )
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[provider] = consumer
        return self._consumers.values()

    def ack_message(self, message):
        try:
            super().ack_message(message)
        except CONNECTION_ERRORS as error:
            log.warning("ack not sent, the broker connection is lost (redelivered): %s", error)

    def requeue_message(self, message):
        try:
            super().requeue_message(message)
        except CONNECTION_ERRORS as error:
            log.warning("requeue not sent, the broker connection is lost: %s", error)


class PerConnectionQueue:
    """For a consumer of an exclusive queue: a new queue name on every (re)connection.

    nameko's ``QueueConsumer`` reads ``provider.queue`` once per (re)connection
    (in ``get_consumers``). An exclusive queue dies with its connection, but
    when the connection died with its cluster node, RabbitMQ keeps the queue's
    record until that node is back: redeclaring the same name then waits, and
    since one connection consumes every queue of a service, the whole service
    stopped consuming (RPC replies included) until the node returned. A fresh
    name per connection avoids the dead record altogether.

    Subclasses say how to rename (:meth:`renamed`) and may react
    (:meth:`subscribed`), e.g. to a possible gap in what they received.
    """

    _declared_queue = None

    @property
    def queue(self):
        if self._declared_queue is None:
            return None
        queue = self.renamed(self._declared_queue)
        self.subscribed(queue)
        return queue

    @queue.setter
    def queue(self, value):
        self._declared_queue = value

    def renamed(self, queue):
        raise NotImplementedError

    def subscribed(self, queue):
        """Called with each new queue, just before it is declared and consumed."""


def with_name(queue, name, routing_key=None):
    return Queue(
        name,
        exchange=queue.exchange,
        routing_key=queue.routing_key if routing_key is None else routing_key,
        durable=False,
        exclusive=True,
        auto_delete=True,
        queue_arguments=queue.queue_arguments,
    )


class ReplyListener(PerConnectionQueue, _ReplyListener):
    """nameko's ``ReplyListener`` on :class:`QueueConsumer`, able to forget a call,
    with an exclusive reply queue named anew on each connection (nameko's was
    durable, which a dead node's record blocked for good)."""

    queue_consumer = QueueConsumer()
    # A reply only wakes the call waiting for it: no greenthread of its own, and
    # no ack (its queue is exclusive: a reply lost with the connection is a
    # timeout either way). Together a tenth of a millisecond per RPC.
    handles_inline = True
    no_ack = True

    def handle_message(self, body, message):
        """nameko's, without the ack."""
        client_event = self._reply_events.pop(message.properties.get("correlation_id"), None)
        if client_event is not None:
            client_event.send(body)

    def renamed(self, queue):
        # rpc.reply-<service>-<uuid>, routed by the uuid (what callers put in reply_to)
        reply_id = str(uuid.uuid4())
        self.routing_key = reply_id
        return with_name(queue, f"{queue.name.rsplit('-', 5)[0]}-{reply_id}", reply_id)

    def forget(self, correlation_id=None, reply_event=None):
        """Drop the reply slot of a call that stopped waiting (by id or by its event)."""
        pending = self._reply_events  # nameko 2.14.1: correlation id -> Event
        if correlation_id is not None:
            pending.pop(correlation_id, None)
        if reply_event is not None:
            for key, event in list(pending.items()):
                if event is reply_event:
                    pending.pop(key, None)

    def pending_replies(self):
        return len(self._reply_events)


def is_stopped(container):
    """True once nameko's container has finished stopping (or died)."""
    return container._died.ready()


def work_in_progress(container):
    """``(workers, threads)``: entrypoint names still running, and managed thread names."""
    workers = sorted(ctx.entrypoint.method_name for ctx in list(container._worker_threads))
    threads = sorted(str(name) for name in list(container._managed_threads.values()))
    return workers, threads


def stop_accepting(web_server):
    """Close nameko's ``WebServer`` to new connections now; open keep-alive connections
    close after their current response. Safe to call more than once."""
    if not web_server._is_accepting:
        return
    web_server._is_accepting = False
    if web_server._gt is not None:
        web_server._gt.kill()
    if web_server._sock is not None:
        web_server._sock.close()
    if web_server._serv is not None:
        web_server._serv.keepalive = False


def is_accepting(web_server):
    return web_server._is_accepting
