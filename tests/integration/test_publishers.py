"""shared.publishers.ChannelPublisher on a real RabbitMQ: what it sends, and how it survives
a connection or a channel that the broker took away."""

import json
import socket
import time
import uuid

import pytest
from kombu import Connection, Queue

from shared.publishers import READ_INCOMING_EVERY, ChannelPublisher

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(rabbit_config):
    """A queue on the test vhost and a way to read what reached it."""
    connection = Connection(rabbit_config["AMQP_URI"])
    channel = connection.channel()
    declared = Queue(f"publish-{uuid.uuid4().hex[:8]}", channel=channel, auto_delete=False)
    declared.declare()

    def received(count, within=5.0):
        messages, deadline = [], time.monotonic() + within
        while len(messages) < count and time.monotonic() < deadline:
            message = declared.get(no_ack=True)
            if message is None:
                time.sleep(0.02)
            else:
                messages.append(message)
        return messages

    declared.received = received
    yield declared
    declared.delete()
    connection.release()


@pytest.fixture
def publisher(rabbit_config):
    publisher = ChannelPublisher(rabbit_config["AMQP_URI"])
    yield publisher
    publisher.close()


def send(publisher, queue, number):
    publisher.publish(
        json.dumps({"n": number}),
        exchange="",
        routing_key=queue.name,
        content_type="application/json",
        content_encoding="utf-8",
        headers={"x-rpc-deadline": 1.5, "nameko.call_id_stack": ["a.b.1"]},
        reply_to="reply-key",
        correlation_id=f"id-{number}",
    )


def test_a_message_arrives_transient_with_its_headers_and_properties(publisher, queue):
    send(publisher, queue, 1)
    (message,) = queue.received(1)
    assert json.loads(message.body) == {"n": 1}
    assert message.headers == {"x-rpc-deadline": 1.5, "nameko.call_id_stack": ["a.b.1"]}
    assert message.properties["reply_to"] == "reply-key"
    assert message.properties["correlation_id"] == "id-1"
    assert message.properties["delivery_mode"] == 1  # transient: never written to disk
    assert message.content_type == "application/json"


def test_a_publish_on_a_reset_connection_reconnects_and_is_sent(publisher, queue):
    send(publisher, queue, 1)
    # what a broker restart or a dead node does to the socket under the channel
    publisher.channel.connection.sock.shutdown(socket.SHUT_RDWR)
    send(publisher, queue, 2)
    assert [json.loads(m.body)["n"] for m in queue.received(2)] == [1, 2]


def test_a_channel_the_broker_closed_is_noticed_and_reopened(publisher, queue):
    send(publisher, queue, 1)
    # publishing to an exchange that does not exist makes the broker close the channel
    publisher.publish(
        "lost",
        exchange=f"missing-{uuid.uuid4().hex[:8]}",
        routing_key="x",
        content_type="text/plain",
        content_encoding="utf-8",
    )
    time.sleep(READ_INCOMING_EVERY + 0.1)
    send(publisher, queue, 2)
    assert [json.loads(m.body)["n"] for m in queue.received(2)] == [1, 2]


def test_a_renewed_channel_is_a_new_one_on_the_same_connection(publisher, queue):
    send(publisher, queue, 1)
    first, connection = publisher.channel, publisher.channel.connection
    publisher.renew_channel()
    send(publisher, queue, 2)
    assert publisher.channel is not first and not first.is_open
    assert publisher.channel.connection is connection
    assert [json.loads(m.body)["n"] for m in queue.received(2)] == [1, 2]


def test_renewing_a_channel_whose_connection_is_gone_reconnects(publisher, queue):
    send(publisher, queue, 1)
    publisher.channel.connection.sock.shutdown(socket.SHUT_RDWR)
    publisher.renew_channel()  # the close cannot be sent: the connection is dropped instead
    send(publisher, queue, 2)
    assert [json.loads(m.body)["n"] for m in queue.received(2)] == [1, 2]
