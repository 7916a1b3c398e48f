"""RPC with a deadline.

nameko 2.14's ``RpcProxy`` waits for a reply forever. :class:`TimedRpcProxy` is
the same long-lived dependency (one reply queue per container, not a proxy per
request) whose calls give up after ``RPC_TIMEOUT`` seconds:

- no reply in time: :class:`DependencyTimeout` (the gateway answers 504);
- the service has no running instance (``UnknownService``), the broker cannot
  be reached, or the method does not exist (a deploy in progress):
  :class:`shared.exceptions.Unavailable` (503).

A request message expires in the queue after the timeout, so a service that
starts late never acts on a call whose caller already answered 504.

Request/reply messages are transient (never written to disk) and go without
publisher confirms: an RPC lives for seconds, its caller retries on a timeout,
and the confirm round trips were a quarter of an RPC's cost. One exception:
until a target service has answered once, requests are confirmed, because that
is how nameko learns that no queue exists for it (a service never deployed:
503 at once rather than a 504 later). Once it has answered, its queue exists
and is durable, so a confirm could tell nothing more. Events never take this
path: they keep confirms and persistence (:mod:`shared.outbox`). Services use
this module's :func:`rpc` decorator for their entrypoints.

Expected failures of the callee (``NotFound``, ``Conflict`` ...) pass through
unchanged. The timeout runs in the calling worker's own greenthread, so nothing
is left running after it fires; the reply slot it leaves is removed.
"""

import logging
import socket
import warnings

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import MethodNotFound, UnknownService, deserialize_to_instance
from nameko.rpc import Responder, RpcProxy, ServiceProxy, get_rpc_exchange
from nameko.rpc import Rpc as _Rpc
from nameko.rpc import RpcConsumer as _RpcConsumer

from shared.exceptions import Unavailable

DEFAULT_TIMEOUT = 5
log = logging.getLogger(__name__)

# nameko always asks for mandatory delivery, and warns when it cannot be checked
# without confirms: that is our choice for services that have answered (above)
warnings.filterwarnings("ignore", message="Mandatory delivery was requested")

CONNECTION_ERRORS = (OperationalError, AmqpConnectionError, ConnectionError, socket.error)


@deserialize_to_instance
class DependencyTimeout(Unavailable):
    """A service did not answer within the deadline."""

    code = "TIMEOUT"


class _Deadline(BaseException):
    """Raised by ``eventlet.Timeout`` in a call; never escapes :meth:`TimedServiceProxy.call`."""


class TimedServiceProxy:
    """What a worker gets: ``proxy.method(*args, **kwargs)`` with a deadline."""

    def __init__(self, service_proxy, service_name, timeout, on_answer=None):
        self._proxy = service_proxy
        self._service_name = service_name
        self.timeout = timeout
        self._on_answer = on_answer

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
        method = getattr(self._proxy, method_name)
        reply = None
        deadline = _Deadline()
        try:
            with eventlet.Timeout(timeout, deadline):
                reply = method.call_async(*args, **kwargs)
                try:
                    result = reply.result()
                except _Deadline:
                    raise
                except Exception:
                    self._answered()  # a remote error is an answer too
                    raise
                self._answered()
                return result
        except _Deadline:
            self._forget(reply)
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

    def _answered(self):
        if self._on_answer is not None:
            self._on_answer()

    def _forget(self, reply):
        # the reply listener keeps an event per pending call until its reply
        # comes, which for a dead callee is never: drop ours
        if reply is None:
            return
        pending = self._proxy.reply_listener._reply_events
        for correlation_id, event in list(pending.items()):
            if event is reply.reply_event:
                pending.pop(correlation_id, None)


class TimedRpcProxy(RpcProxy):
    """``RpcProxy`` whose calls time out after ``RPC_TIMEOUT`` seconds (config)."""

    def setup(self):
        self.timeout = float(self.container.config.get("RPC_TIMEOUT", DEFAULT_TIMEOUT))
        # a request nobody took within the deadline expires in its queue: the
        # caller has given up, so a callee starting later must not act on it
        self.options = {
            "expiration": self.timeout,
            "delivery_mode": NON_PERSISTENT,
            **self.options,
        }
        self.answered = False

    def get_dependency(self, worker_ctx):
        options = self.options if not self.answered else {**self.options, "use_confirms": False}
        proxy = ServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, **options)
        return TimedServiceProxy(proxy, self.target_service, self.timeout, self._answered)

    def _answered(self):
        self.answered = True


class _ReplyPublisher(Publisher):
    use_confirms = False
    delivery_mode = NON_PERSISTENT


class _Responder(Responder):
    publisher_cls = _ReplyPublisher


class RpcConsumer(_RpcConsumer):
    """nameko's ``RpcConsumer``, replying with transient, unconfirmed messages."""

    def handle_result(self, message, result, exc_info):
        config = self.container.config
        responder = _Responder(
            config["AMQP_URI"],
            get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
            message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        try:
            result, exc_info = responder.send_response(result, exc_info)
            self.queue_consumer.ack_message(message)
        except CONNECTION_ERRORS as error:
            # the broker went away mid-call: the reply cannot go out, and the
            # request (unacked on the lost connection) is redelivered or has
            # expired; the caller times out and retries. Raising here would
            # kill the whole container (nameko kills it for any exception in
            # a worker's result handling), and with it the process.
            log.warning("rpc reply not sent, the broker connection is lost: %s", error)
        return result, exc_info


class Rpc(_Rpc):
    """nameko's ``Rpc`` entrypoint on :class:`RpcConsumer` (every rpc of a service must use it)."""

    rpc_consumer = RpcConsumer()


rpc = Rpc.decorator
