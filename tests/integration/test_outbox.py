"""The outbox relay against a real broker: prompt, durable through outages and crashes."""

import json
import uuid

import pytest
from kombu import Connection, Queue
from kombu.exceptions import OperationalError
from nameko.events import event_handler
from nameko.standalone.events import get_event_exchange
from nameko.testing.services import entrypoint_waiter
from nameko_sqlalchemy.database import Session
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from shared.db import engine_for, find_dependency
from shared.outbox import BatchPublisher, OutboxWriter
from tests.helpers import wait_until
from users.models import OutboxEvent
from users.service import UsersService

CLOSED_PORT_URI = "amqp://guest:guest@127.0.0.1:1/"


class Listener:
    name = "outbox_listener"
    received = []

    @event_handler("users", "user_created")
    def user_created(self, payload):
        self.received.append(payload)


@pytest.fixture
def listener(rabbit_config, container_factory):
    Listener.received = []
    container = container_factory(Listener, rabbit_config)
    container.start()
    return container


@pytest.fixture
def users_db(users_db_uri):
    engine = engine_for(users_db_uri)
    yield sessionmaker(bind=engine, class_=Session)
    engine.dispose()


def pending_events(session_factory):
    """``[(event_type, attempts)]`` of the rows not yet published."""
    with session_factory() as session:
        rows = session.execute(
            select(OutboxEvent.event_type, OutboxEvent.attempts).where(
                OutboxEvent.sent_at.is_(None)
            )
        )
        return [tuple(row) for row in rows]


def test_an_event_leaves_right_after_commit_not_at_the_next_sweep(
    users_config, container_factory, listener, rpc, users_db
):
    # with an hour between sweeps, only the post-commit bell can send it
    container = container_factory(UsersService, {**users_config, "OUTBOX_SWEEP_SECONDS": 3600})
    container.start()
    with entrypoint_waiter(listener, "user_created", timeout=5):
        user = rpc.users.create_user("ann@example.com", "Ann", "correct horse battery")
    assert Listener.received[0]["user_id"] == user["id"]
    # marked sent once the broker confirmed (just after the consumer may have it)
    assert wait_until(lambda: pending_events(users_db) == [], 5)


def test_an_event_committed_while_the_broker_is_unreachable_arrives_later(
    users_config, container_factory, listener, rpc, users_db
):
    container = container_factory(UsersService, {**users_config, "OUTBOX_SWEEP_SECONDS": 0.5})
    container.start()
    outbox = find_dependency(container, "outbox")
    broker_uri = outbox.publisher.amqp_uri
    outbox.publisher.amqp_uri = CLOSED_PORT_URI  # the relay's broker is down

    user = rpc.users.create_user("ann@example.com", "Ann", "correct horse battery")
    # committed, with its event: the user exists and the event waits in the outbox
    assert wait_until(lambda: any(attempts for _, attempts in pending_events(users_db)), 5)
    assert rpc.users.get_user(user["id"])["email"] == "ann@example.com"
    assert Listener.received == []

    outbox.publisher.amqp_uri = broker_uri  # the broker is back
    with entrypoint_waiter(listener, "user_created", timeout=15):
        pass
    assert [payload["user_id"] for payload in Listener.received] == [user["id"]]
    assert wait_until(lambda: pending_events(users_db) == [], 5)


def test_events_left_by_a_process_that_crashed_before_publishing_go_out_at_start(
    users_config, container_factory, listener, users_db
):
    # what a crash between commit and publish leaves behind: committed, unsent rows
    writer = OutboxWriter(OutboxEvent, headers={"nameko.request_id": "req-before-crash"})
    with users_db() as session:
        payload = writer.add(session, "user_created", {"user_id": 7, "user": {"id": 7}})
        session.commit()

    container = container_factory(UsersService, {**users_config, "OUTBOX_SWEEP_SECONDS": 3600})
    with entrypoint_waiter(listener, "user_created", timeout=5):
        container.start()
    assert Listener.received == [payload]
    assert wait_until(lambda: pending_events(users_db) == [], 5)


def test_relayed_events_carry_the_request_id_of_the_call_that_caused_them(
    users_config, container_factory, users_db, rabbit_config
):
    from nameko.standalone.rpc import ClusterRpcProxy

    container = container_factory(UsersService, {**users_config, "OUTBOX_SWEEP_SECONDS": 3600})
    container.start()
    context = {"request_id": "req-abc-123"}
    with ClusterRpcProxy(rabbit_config, context_data=context, timeout=10) as rpc:
        rpc.users.create_user("ann@example.com", "Ann", "correct horse battery")
    with users_db() as session:
        headers = session.scalars(select(OutboxEvent.headers)).one()
    assert json.loads(headers)["nameko.request_id"] == "req-abc-123"


@pytest.fixture
def batch_queue(rabbit_config):
    """A queue on the users event exchange that takes two messages and refuses the rest."""
    exchange = get_event_exchange("users", rabbit_config)
    queue = Queue(
        f"batch-{uuid.uuid4().hex[:8]}",
        exchange=exchange,
        routing_key="thing_happened",
        # a full queue makes the broker nack what it cannot take: a real refusal
        queue_arguments={"x-max-length": 2, "x-overflow": "reject-publish"},
    )
    with Connection(rabbit_config["AMQP_URI"]) as connection:
        queue(connection.default_channel).declare()
        yield exchange, queue, connection


def test_a_batch_is_published_in_order_and_confirmed_once(rabbit_config, batch_queue):
    exchange, queue, connection = batch_queue
    publish_all = BatchPublisher(rabbit_config["AMQP_URI"], exchange, "json")
    messages = [("thing_happened", {"n": n}, {"nameko.request_id": f"r{n}"}) for n in range(2)]
    assert publish_all(messages) == set()  # nothing refused
    received = [queue(connection.default_channel).get(no_ack=True) for _ in range(2)]
    assert [(m.payload["n"], m.headers["nameko.request_id"]) for m in received] == [
        (0, "r0"),
        (1, "r1"),
    ]
    assert all(m.properties["delivery_mode"] == 2 for m in received)  # persistent
    publish_all.close()


def test_what_the_broker_refuses_is_not_counted_as_confirmed(rabbit_config, batch_queue):
    exchange, queue, connection = batch_queue
    publish_all = BatchPublisher(rabbit_config["AMQP_URI"], exchange, "json")
    # the queue takes two: the third and fourth are refused
    assert publish_all([("thing_happened", {"n": n}, {}) for n in range(4)]) == {2, 3}
    # a refusal may be the channel's own (a quorum queue's stale leader): the next batch
    # goes on a new connection, and once there is room it is confirmed
    assert publish_all._connection is None
    queue(connection.default_channel).purge()
    assert publish_all([("thing_happened", {"n": 9}, {})]) == set()
    publish_all.close()


def test_an_unreachable_broker_raises_and_the_next_batch_reconnects(rabbit_config, batch_queue):
    exchange, _, _ = batch_queue
    publish_all = BatchPublisher(CLOSED_PORT_URI, exchange, "json")
    with pytest.raises((OperationalError, OSError)):
        publish_all([("thing_happened", {"n": 0}, {})])
    publish_all.amqp_uri = rabbit_config["AMQP_URI"]
    assert publish_all([("thing_happened", {"n": 1}, {})]) == set()
    publish_all.close()
