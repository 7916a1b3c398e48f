"""Publishing RPC messages: the broker failover policy, and a publisher that holds its channel.

:class:`ChannelPublisher` is for what RPC sends unconfirmed and transient:
requests to a service that has answered before, and every reply. kombu's
producer pool costs per message an acquire and release, a revived producer, a
copied ``Exchange`` and an ``ensure`` wrapper (with publisher confirms off,
none of them buys anything); here a message is one ``basic_publish`` on a
channel kept open, under a lock (one frame sequence at a time on a shared
socket). A publish that meets a lost connection reconnects (failing over
through ``AMQP_URI``'s list, :data:`FAST_FAILOVER_CONNECT`) and is sent once
more; a second failure is the caller's (RPC turns it into 503).

Confirmed or persistent messages never take this path: the first request to a
service goes through kombu's producers with confirms, events through the outbox
relay's own confirm-mode channel (:class:`shared.outbox.BatchPublisher`).
"""

import logging
import time

import amqp
import eventlet
from eventlet.semaphore import Semaphore
from kombu import Connection
from nameko.constants import NON_PERSISTENT

from shared.framework import CONNECTION_ERRORS

log = logging.getLogger(__name__)

# An RPC lives for seconds: a publish that meets a dead broker node moves on to
# the next address of AMQP_URI at once. nameko's defaults wait 2 s, then 4 s,
# before each retry and each new connection; every pooled connection still on
# a killed cluster node paid that, and calls timed out for ~10 s after a node
# died while the rest of the cluster was serving.
FAST_FAILOVER_RETRY = {
    "max_retries": 4,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.3,
}
FAST_FAILOVER_CONNECT = {**FAST_FAILOVER_RETRY, "max_retries": 3}

# How often the channel's incoming frames are read (a channel or connection
# closed by the broker, a connection.blocked notice). py-amqp reads them before
# every publish, which was a tenth of a millisecond per RPC; a closed channel
# is noticed within this long instead, and a reset socket at once (the write fails).
READ_INCOMING_EVERY = 0.25
CLOSE_TIMEOUT = 1.0  # seconds to wait for the broker's close-ok of a renewed channel


def no_read_before_each_publish(amqp_connection):
    """Stop py-amqp reading incoming frames before every publish on ``amqp_connection``.

    It does that when the broker may send connection.blocked, at a tenth of a
    millisecond per message; the caller must read them some other way (a
    blocked or closed notice is then seen at its next read).
    """
    amqp_connection.client_properties.get("capabilities", {})["connection.blocked"] = False


class ChannelPublisher:
    """Unconfirmed, transient publishes on one channel kept open; greenthread-safe."""

    def __init__(self, amqp_uri, ssl=None, login_method=None):
        # (re)connected by _open_channel, with FAST_FAILOVER_CONNECT
        self.connection = Connection(amqp_uri, ssl=ssl, login_method=login_method)
        self.lock = Semaphore()
        self.channel = None
        self.last_read = 0.0

    def publish(
        self,
        body,
        *,
        exchange,
        routing_key,
        content_type,
        content_encoding,
        headers=None,
        **properties,
    ):
        """Send ``body`` (already serialised) with ``headers`` and AMQP ``properties``
        (``reply_to``, ``correlation_id`` ...)."""
        message = amqp.Message(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            delivery_mode=NON_PERSISTENT,
            application_headers=headers or {},
            **properties,
        )
        with self.lock:
            try:
                self._publish(message, exchange, routing_key)
            except CONNECTION_ERRORS as error:
                log.info("rpc publish failed (%s): reconnecting and sending it again", error)
                self._drop_channel()
                self._publish(message, exchange, routing_key)

    def _publish(self, message, exchange, routing_key):
        channel = self.channel or self._open_channel()
        now = time.monotonic()
        if now - self.last_read > READ_INCOMING_EVERY:
            self.last_read = now
            self._read_incoming()
        channel.basic_publish(message, exchange=exchange, routing_key=routing_key)

    def _open_channel(self):
        self.connection.ensure_connection(**FAST_FAILOVER_CONNECT)
        channel = self.connection.channel()
        # _read_incoming does it every READ_INCOMING_EVERY instead
        no_read_before_each_publish(channel.connection)
        self.channel = channel
        self.last_read = time.monotonic()
        return channel

    def _read_incoming(self):
        """Handle frames the broker sent (a close raises, so the publish reconnects)."""
        try:
            self.connection.drain_events(timeout=0)
        except TimeoutError:
            pass
        except amqp.exceptions.ChannelError as error:
            raise amqp.exceptions.RecoverableConnectionError(str(error)) from error
        if not self.channel.is_open:
            raise amqp.exceptions.RecoverableConnectionError("the broker closed the channel")

    def renew_channel(self):
        """Publish on a new channel from now on (the connection stays).

        RabbitMQ 3.10 (``rabbit_fifo_client``): a channel whose first publish to
        a quorum queue comes while the node of that queue's last recorded leader
        is down (just after that node died, before a new leader is recorded)
        has every later publish to that queue dropped, silently without
        confirms, until that node is back. A channel reopened after a failover
        often lands in that window. RPC calls this when a call gets no answer in
        time: one timeout is then the cost, not the whole absence of the node.
        """
        with self.lock:
            channel, self.channel = self.channel, None
            if channel is None:
                return
            closed = False
            # a broker that does not answer (a partition) must not hold the lock:
            # then the whole connection goes, and the next publish makes a new one
            with eventlet.Timeout(CLOSE_TIMEOUT, False):
                try:
                    channel.close()
                    closed = True
                except CONNECTION_ERRORS + (amqp.exceptions.AMQPError,):
                    pass
            if not closed:
                self._drop_channel()

    def _drop_channel(self):
        self.channel = None
        self.connection.collect()  # drop the broken connection without talking to it

    def close(self):
        with self.lock:
            self.channel = None
            self.connection.release()
