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

Expected failures of the callee (``NotFound``, ``Conflict`` ...) pass through
unchanged. The timeout runs in the calling worker's own greenthread, so nothing
is left running after it fires; the reply slot it leaves is removed.
"""

import socket

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko.exceptions import MethodNotFound, UnknownService, deserialize_to_instance
from nameko.rpc import RpcProxy

from shared.exceptions import Unavailable

DEFAULT_TIMEOUT = 5

CONNECTION_ERRORS = (OperationalError, AmqpConnectionError, ConnectionError, socket.error)


@deserialize_to_instance
class DependencyTimeout(Unavailable):
    """A service did not answer within the deadline."""

    code = "TIMEOUT"


class _Deadline(BaseException):
    """Raised by ``eventlet.Timeout`` in a call; never escapes :meth:`TimedServiceProxy.call`."""


class TimedServiceProxy:
    """What a worker gets: ``proxy.method(*args, **kwargs)`` with a deadline."""

    def __init__(self, service_proxy, service_name, timeout):
        self._proxy = service_proxy
        self._service_name = service_name
        self.timeout = timeout

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
                return reply.result()
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
        self.options = {"expiration": self.timeout, **self.options}

    def get_dependency(self, worker_ctx):
        return TimedServiceProxy(
            super().get_dependency(worker_ctx), self.target_service, self.timeout
        )
