"""RPC with a deadline.

nameko 2.14's ``RpcProxy`` waits for a reply forever. :class:`TimedRpcProxy` is
the same long-lived dependency (one reply queue per container, not a proxy per
request) whose calls give up after ``RPC_TIMEOUT`` seconds:

- no reply in time: :class:`DependencyTimeout` (the gateway answers 504);
- the service has no running instance (``UnknownService``), the broker cannot
  be reached, or the method does not exist (a deploy in progress):
  :class:`shared.exceptions.Unavailable` (503).

Every request carries its caller's deadline (``x-rpc-deadline``): a service
that takes it later (it started late, or a broker failover delayed it) drops
it instead of acting on a call whose caller already answered 504.

Request/reply messages are transient (never written to disk) and go without
publisher confirms: an RPC lives for seconds, its caller retries on a timeout,
and the confirm round trips were a quarter of an RPC's cost. One exception:
until a target service has answered once, requests are confirmed, because that
is how nameko learns that no queue exists for it (a service never deployed:
503 at once rather than a 504 later). Once it has answered, its queue exists
and is durable, so a confirm could tell nothing more. Events never take this
path: they keep confirms and persistence (:mod:`shared.outbox`). Services use
this module's :func:`rpc` decorator for their entrypoints.

Unconfirmed requests and every reply go out through
:class:`shared.publishers.ChannelPublisher` (one ``basic_publish`` on a channel
the proxy or consumer keeps open; a call without an answer renews it), the
confirmed first requests through :class:`LeanPublisher` (kombu's producer pool,
without nameko's new ``Connection`` per message). A reply is serialised once,
not twice. A call waits, within its deadline, until its reply queue is consumed.

Expected failures of the callee (``NotFound``, ``Conflict`` ...) pass through
unchanged. The timeout runs in the calling worker's own greenthread, so nothing
is left running after it fires; the reply slot it leaves is removed.
"""

import inspect
import logging
import sys
import time
import uuid

import eventlet
import kombu.serialization
from kombu import Connection
from kombu.exceptions import ChannelError
from kombu.pools import producers
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import (
    IncorrectSignature,
    MethodNotFound,
    UnknownService,
    UnserializableValueError,
    deserialize_to_instance,
    serialize,
)
from nameko.messaging import HeaderEncoder
from nameko.rpc import Rpc as _Rpc
from nameko.rpc import RpcConsumer as _RpcConsumer
from nameko.rpc import RpcProxy, RpcReply, get_rpc_exchange

from shared.exceptions import Unavailable
from shared.framework import CONNECTION_ERRORS, QueueConsumer, ReplyListener
from shared.publishers import FAST_FAILOVER_CONNECT, FAST_FAILOVER_RETRY, ChannelPublisher
from shared.queues import declare_typed
from shared.settings import settings_of

# when the caller stops waiting (epoch seconds); a callee that gets it later drops it
DEADLINE_HEADER = "x-rpc-deadline"
# hosts' clocks differ a little: a request is dropped only this long after its deadline
DEADLINE_GRACE = 0.5
log = logging.getLogger(__name__)


# one kombu Connection per broker and option set, only as the key of its pools
_pool_keys = {}


def _producer_pool(amqp_uri, confirms, ssl, login_method, transport_options):
    key = (amqp_uri, confirms, repr(ssl), login_method)
    connection = _pool_keys.get(key)
    if connection is None:
        connection = _pool_keys[key] = Connection(
            amqp_uri,
            transport_options={**transport_options, "confirm_publish": confirms},
            ssl=ssl,
            login_method=login_method,
        )
    return producers[connection]


class LeanPublisher(Publisher):
    """nameko's ``Publisher`` without its per-message set-up; safe to share.

    The same options and results (``UndeliverableMessage`` for an unroutable
    mandatory message under confirms), minus nameko's per-call kombu
    ``Connection`` and the warning for ``mandatory`` without confirms, which
    this publisher simply does not ask for: nothing could see the return.
    Retries and reconnections fail over to the next broker at once
    (:data:`FAST_FAILOVER_RETRY`).
    """

    transport_options = FAST_FAILOVER_CONNECT  # how its pooled connections (re)connect

    def __init__(self, amqp_uri, **options):
        options.setdefault("retry_policy", FAST_FAILOVER_RETRY)
        super().__init__(amqp_uri, **options)

    def publish(self, payload, **kwargs):
        publish_kwargs = dict(self.publish_kwargs)
        headers = {
            **publish_kwargs.pop("headers", {}),
            **kwargs.pop("headers", {}),
            **kwargs.pop("extra_headers", {}),
        }
        use_confirms = kwargs.pop("use_confirms", self.use_confirms)
        mandatory = kwargs.pop("mandatory", self.mandatory) and use_confirms
        options = {
            "delivery_mode": kwargs.pop("delivery_mode", self.delivery_mode),
            "priority": kwargs.pop("priority", self.priority),
            "expiration": kwargs.pop("expiration", self.expiration),
            "serializer": kwargs.pop("serializer", self.serializer),
            "compression": kwargs.pop("compression", self.compression),
            "retry": kwargs.pop("retry", self.retry),
            "retry_policy": kwargs.pop("retry_policy", self.retry_policy),
            "declare": [*self.declare, *kwargs.pop("declare", ())],
        }
        pool = _producer_pool(
            self.amqp_uri, use_confirms, self.ssl, self.login_method, self.transport_options
        )
        with pool.acquire(block=True) as producer:
            try:
                producer.publish(
                    payload,
                    headers=headers,
                    mandatory=mandatory,
                    **options,
                    **publish_kwargs,
                    **kwargs,
                )
            except ChannelError as error:
                if "NO_ROUTE" in str(error):
                    raise UndeliverableMessage() from None
                raise


@deserialize_to_instance
class DependencyTimeout(Unavailable):
    """A service did not answer within the deadline."""

    code = "TIMEOUT"


class _Deadline(BaseException):
    """Raised by ``eventlet.Timeout`` in a call; never escapes :meth:`TimedServiceProxy.call`."""


class TimedServiceProxy:
    """What a worker gets: ``proxy.method(*args, **kwargs)`` with a deadline."""

    def __init__(self, provider, worker_ctx):
        self._provider = provider
        self._worker_ctx = worker_ctx
        self._service_name = provider.target_service
        self.timeout = provider.timeout

    def __getattr__(self, method_name):
        if method_name.startswith("_"):
            raise AttributeError(method_name)

        def call(*args, **kwargs):
            return self.call(method_name, *args, timeout=None, **kwargs)

        call.__name__ = method_name
        return call

    def call(self, method_name, *args, timeout=None, **kwargs):
        """Call ``method_name`` with its own ``timeout`` (seconds) or the proxy's."""
        timeout = self.timeout if timeout is None else timeout
        target = f"{self._service_name}.{method_name}"
        reply = None
        deadline = _Deadline()
        try:
            with eventlet.Timeout(timeout, deadline):
                # a reply sent before the reply queue exists is lost (just after a start)
                self._provider.rpc_reply_listener.queue_consumer.wait_until_consuming()
                reply = self._provider.send_request(self._worker_ctx, method_name, args, kwargs)
                try:
                    result = reply.result()
                except _Deadline:
                    raise
                except Exception:
                    self._provider.answered = True  # a remote error is an answer too
                    raise
                self._provider.answered = True
                return result
        except _Deadline:
            self._forget(reply)
            # the request may have been dropped on its way (see ChannelPublisher.renew_channel)
            self._provider.channel_publisher.renew_channel()
            raise DependencyTimeout(
                f"the {self._service_name} service did not answer in time",
                {"service": self._service_name, "timeout_seconds": timeout},
            ) from None
        except UnknownService:
            raise Unavailable(
                f"the {self._service_name} service is not running",
                {"service": self._service_name},
            ) from None
        except MethodNotFound:
            raise Unavailable(
                f"the {self._service_name} service cannot answer {target} now",
                {"service": self._service_name},
            ) from None
        except CONNECTION_ERRORS:
            raise Unavailable(
                "the message broker cannot be reached", {"service": self._service_name}
            ) from None

    def _forget(self, reply):
        # the reply listener keeps an event per pending call until its reply
        # comes, which for a dead callee is never: drop ours
        if reply is None:
            return
        self._provider.rpc_reply_listener.forget(reply_event=reply.reply_event)


class TimedRpcProxy(RpcProxy, HeaderEncoder):
    """``RpcProxy`` whose calls time out after ``RPC_TIMEOUT`` seconds (config).

    Requests go out as nameko's ``MethodProxy`` sends them (same message, same
    headers, so any nameko service answers), through one shared publisher.
    """

    rpc_reply_listener = ReplyListener()

    def setup(self):
        config = self.container.config
        self.timeout = settings_of(self.container).rpc_timeout
        # A request nobody took within the deadline must not run later: the
        # caller has given up. Every request carries its deadline
        # (DEADLINE_HEADER), which RpcConsumer checks, whatever the callee's
        # queue type; no per-message TTL is needed besides it.
        options = {"delivery_mode": NON_PERSISTENT, **self.options}
        self.answered = False
        self.exchange = get_rpc_exchange(config)
        self.publisher = LeanPublisher(
            config[AMQP_URI_CONFIG_KEY],
            serializer=options.pop(
                "serializer", config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER)
            ),
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
            **options,
        )
        # once the target has answered, requests go unconfirmed on one held channel
        self.channel_publisher = ChannelPublisher(
            config[AMQP_URI_CONFIG_KEY],
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )

    def stop(self):
        self.channel_publisher.close()
        super().stop()

    def get_dependency(self, worker_ctx):
        return TimedServiceProxy(self, worker_ctx)

    def send_request(self, worker_ctx, method_name, args, kwargs):
        """Publish one request; an ``RpcReply`` to wait on.

        The message nameko's method proxy sends (see :mod:`shared.framework`).
        """
        correlation_id = str(uuid.uuid4())
        reply_event = self.rpc_reply_listener.get_reply_event(correlation_id)
        routing_key = f"{self.target_service}.{method_name}"
        headers = {
            **self.get_message_headers(worker_ctx),
            DEADLINE_HEADER: time.time() + self.timeout,
        }
        try:
            if self.answered or not self.publisher.use_confirms:
                content_type, content_encoding, body = kombu.serialization.dumps(
                    {"args": args, "kwargs": kwargs}, self.publisher.serializer
                )
                self.channel_publisher.publish(
                    body,
                    exchange=self.exchange.name,
                    routing_key=routing_key,
                    content_type=content_type,
                    content_encoding=content_encoding,
                    reply_to=self.rpc_reply_listener.routing_key,
                    correlation_id=correlation_id,
                    headers=headers,
                )
            else:
                # until the target has answered once, a confirmed mandatory
                # publish is how nameko learns that it has no queue at all
                self.publisher.publish(
                    {"args": args, "kwargs": kwargs},
                    exchange=self.exchange,
                    routing_key=routing_key,
                    mandatory=True,
                    reply_to=self.rpc_reply_listener.routing_key,
                    correlation_id=correlation_id,
                    extra_headers=headers,
                )
        except UndeliverableMessage:
            self.rpc_reply_listener.forget(correlation_id)
            raise UnknownService(self.target_service) from None
        except BaseException:  # the deadline too: no reply will be waited for
            self.rpc_reply_listener.forget(correlation_id)
            raise
        return RpcReply(reply_event)


class RpcConsumer(_RpcConsumer):
    """nameko's ``RpcConsumer``, replying with transient, unconfirmed messages,
    on a service queue of the configured ``QUEUE_TYPE`` (see :mod:`shared.queues`)."""

    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        config = self.container.config
        self.queue = declare_typed(
            self.queue,
            settings_of(self.container).queue_type,
            config[AMQP_URI_CONFIG_KEY],
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
        )
        self.reply_exchange = get_rpc_exchange(config)
        self.reply_publisher = ChannelPublisher(
            config[AMQP_URI_CONFIG_KEY],
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )

    def stop(self):
        super().stop()
        self.reply_publisher.close()

    def handle_message(self, body, message):
        deadline = (message.headers or {}).get(DEADLINE_HEADER)
        if isinstance(deadline, int | float) and time.time() > deadline + DEADLINE_GRACE:
            # the caller stopped waiting (it answered 504): running it now would
            # act on a request its client was told had failed
            log.warning(
                "rpc %s dropped: its caller's deadline passed %.1f s ago",
                message.delivery_info.get("routing_key"),
                time.time() - deadline,
            )
            self.queue_consumer.ack_message(message)
            return
        super().handle_message(body, message)

    def handle_result(self, message, result, exc_info):
        try:
            result, exc_info = self.send_reply(message, result, exc_info)
            self.queue_consumer.ack_message(message)
        except CONNECTION_ERRORS as error:
            # the broker went away mid-call: the reply cannot go out, and the
            # request (unacked on the lost connection) is redelivered or has
            # expired; the caller times out and retries. Raising here would
            # kill the whole container (nameko kills it for any exception in
            # a worker's result handling), and with it the process.
            log.warning("rpc reply not sent, the broker connection is lost: %s", error)
        return result, exc_info

    def send_reply(self, message, result, exc_info):
        """nameko's ``Responder.send_response``, serialising the reply once instead of twice.

        A request without ``reply_to`` gets no reply (nameko raised ``KeyError``
        there, which killed the whole service: one odd message from anyone
        allowed to publish to the queue took a service down).
        """
        reply_to = message.properties.get("reply_to")
        if not reply_to:
            log.warning("rpc request without reply_to: ran it, sent no reply")
            return result, exc_info
        error = None if exc_info is None else serialize(exc_info[1])
        # the reply is encoded the way the request was (JSON if it did not say)
        serializer = kombu.serialization.registry.type_to_name.get(
            message.properties.get("content_type"), "json"
        )
        try:
            body = kombu.serialization.dumps({"result": result, "error": error}, serializer)
        except Exception:
            # a result that cannot be serialised becomes an error the caller can read
            exc_info = sys.exc_info()
            error = serialize(UnserializableValueError(result))
            result = None
            body = kombu.serialization.dumps({"result": None, "error": error}, serializer)
        content_type, content_encoding, data = body
        self.reply_publisher.publish(
            data,
            content_type=content_type,
            content_encoding=content_encoding,
            exchange=self.reply_exchange.name,
            routing_key=reply_to,
            correlation_id=message.properties.get("correlation_id"),
        )
        return result, exc_info


class SignatureReadOnce:
    """For an ``Entrypoint``: its method's signature is read once, not per call.

    nameko checks each call's arguments with ``inspect.getcallargs``, which was
    a tenth of a small call's CPU; binding a signature read at setup refuses
    the same calls with the same ``IncorrectSignature``.
    """

    def setup(self):
        super().setup()
        method = getattr(self.container.service_cls, self.method_name)
        self.signature = inspect.signature(method)

    def check_signature(self, args, kwargs):
        try:
            self.signature.bind(None, *args, **kwargs)  # None: the unbound method's self
        except TypeError as error:
            raise IncorrectSignature(str(error)) from None


class Rpc(SignatureReadOnce, _Rpc):
    """nameko's ``Rpc`` entrypoint on :class:`RpcConsumer` (every rpc of a service must use it)."""

    rpc_consumer = RpcConsumer()


rpc = Rpc.decorator
