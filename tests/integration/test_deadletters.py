"""Failing handlers: bounded delayed retries, the dead-letter queue, replay; real RabbitMQ."""

import uuid

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter

from orders.service import OrdersService
from shared import deadletters
from shared.db import find_dependency
from shared.events import event_handler
from shared.metrics import Metrics
from tests.helpers import wait_until

MAX_RETRIES = 2
QUEUE = "evt-shop-thing_happened--flaky.handle"
DEAD_LETTERS = f"{QUEUE}.dead-letter"


class Flaky:
    """A consumer whose handler fails while ``broken`` is set, and records what it applied."""

    name = "flaky"
    metrics = Metrics()
    broken = True
    failures_before_success = None  # fail this many times, then work
    attempts = []
    applied = []

    @event_handler("shop", "thing_happened")
    def handle(self, payload):
        Flaky.attempts.append(payload["event_id"])
        if Flaky.failures_before_success is not None:
            if Flaky.attempts.count(payload["event_id"]) <= Flaky.failures_before_success:
                raise RuntimeError("not yet")
        elif Flaky.broken:
            raise RuntimeError("the handler is broken")
        Flaky.applied.append(payload["event_id"])


@pytest.fixture
def flaky(container_factory, rabbit_config):
    Flaky.broken, Flaky.failures_before_success = True, None
    Flaky.attempts, Flaky.applied = [], []
    config = {**rabbit_config, "EVENT_MAX_RETRIES": MAX_RETRIES, "EVENT_RETRY_DELAY": 0.05}
    container = container_factory(Flaky, config)
    container.start()
    return container


@pytest.fixture
def dispatch(rabbit_config):
    send = event_dispatcher(rabbit_config)

    def dispatch(**data):
        payload = {"event_id": str(uuid.uuid4()), "occurred_at": "x", **data}
        send("shop", "thing_happened", payload)
        return payload

    return dispatch


def succeeded(worker_ctx, result, exc_info):
    """For ``entrypoint_waiter``: the last failing attempt may still be finishing."""
    return exc_info is None


def dead_lettered(container):
    """``events_dead_lettered_total`` of the handler's queue, as /metrics shows it."""
    registry = find_dependency(container, "metrics").registry
    return registry.get_sample_value("events_dead_lettered_total", {"queue": QUEUE})


def test_a_handler_that_always_fails_ends_in_the_dead_letter_queue_after_its_retries(
    flaky, dispatch, rabbit_config
):
    uri = rabbit_config["AMQP_URI"]
    payload = dispatch(n=1)
    assert wait_until(lambda: deadletters.count_dead_letters(uri, DEAD_LETTERS) == 1)
    assert Flaky.attempts == [payload["event_id"]] * (1 + MAX_RETRIES)
    # counted once the broker confirmed the dead letter, a moment after it is visible
    assert wait_until(lambda: dead_lettered(flaky) == 1)
    registry = find_dependency(flaky, "metrics").registry
    assert registry.get_sample_value("events_retried_total", {"queue": QUEUE}) == MAX_RETRIES
    [letter] = deadletters.list_dead_letters(uri, DEAD_LETTERS)
    assert letter["event_id"] == payload["event_id"]
    assert letter["payload"] == payload
    assert letter["retries"] == MAX_RETRIES
    assert letter["error"] == "RuntimeError: the handler is broken"
    assert letter["queue"] == QUEUE
    # listing leaves it there
    assert deadletters.count_dead_letters(uri, DEAD_LETTERS) == 1


def test_replay_after_the_fix_applies_the_event_once(flaky, dispatch, rabbit_config):
    uri = rabbit_config["AMQP_URI"]
    payload = dispatch(n=1)
    assert wait_until(lambda: deadletters.count_dead_letters(uri, DEAD_LETTERS) == 1)
    Flaky.broken = False
    with entrypoint_waiter(flaky, "handle", timeout=5, callback=succeeded):
        assert deadletters.replay(uri, DEAD_LETTERS) == 1
    assert Flaky.applied == [payload["event_id"]]
    assert deadletters.count_dead_letters(uri, DEAD_LETTERS) == 0
    assert deadletters.replay(uri, DEAD_LETTERS) == 0


def test_replay_of_one_event_id_leaves_the_others(flaky, dispatch, rabbit_config):
    uri = rabbit_config["AMQP_URI"]
    first, second = dispatch(n=1), dispatch(n=2)
    assert wait_until(lambda: deadletters.count_dead_letters(uri, DEAD_LETTERS) == 2)
    Flaky.broken = False
    with entrypoint_waiter(flaky, "handle", timeout=5, callback=succeeded):
        assert deadletters.replay(uri, DEAD_LETTERS, event_id=second["event_id"]) == 1
    assert Flaky.applied == [second["event_id"]]
    [left] = deadletters.list_dead_letters(uri, DEAD_LETTERS)
    assert left["event_id"] == first["event_id"]


def test_a_replayed_event_that_fails_again_gets_a_fresh_retry_budget(
    flaky, dispatch, rabbit_config
):
    uri = rabbit_config["AMQP_URI"]
    payload = dispatch(n=1)
    assert wait_until(lambda: deadletters.count_dead_letters(uri, DEAD_LETTERS) == 1)
    deadletters.replay(uri, DEAD_LETTERS)
    assert wait_until(lambda: len(Flaky.attempts) == 2 * (1 + MAX_RETRIES))
    assert wait_until(lambda: deadletters.count_dead_letters(uri, DEAD_LETTERS) == 1)
    assert wait_until(lambda: dead_lettered(flaky) == 2)
    assert Flaky.applied == []
    assert deadletters.list_dead_letters(uri, DEAD_LETTERS)[0]["event_id"] == payload["event_id"]


def test_a_handler_that_recovers_within_its_retries_applies_once_without_a_dead_letter(
    flaky, dispatch, rabbit_config
):
    Flaky.failures_before_success = MAX_RETRIES
    payload = dispatch(n=1)
    assert wait_until(lambda: Flaky.applied == [payload["event_id"]])
    assert Flaky.attempts == [payload["event_id"]] * (1 + MAX_RETRIES)
    assert deadletters.count_dead_letters(rabbit_config["AMQP_URI"], DEAD_LETTERS) == 0


def test_a_retry_reaches_only_the_failing_handler_not_every_subscriber(
    flaky, dispatch, rabbit_config, container_factory
):
    class Bystander:
        name = "bystander"
        seen = []

        @event_handler("shop", "thing_happened")
        def handle(self, payload):
            Bystander.seen.append(payload["event_id"])

    bystander = container_factory(Bystander, rabbit_config)
    bystander.start()
    with entrypoint_waiter(bystander, "handle", timeout=5):
        dispatch(n=1)
    assert wait_until(
        lambda: deadletters.count_dead_letters(rabbit_config["AMQP_URI"], DEAD_LETTERS) == 1
    )
    assert len(Bystander.seen) == 1


def test_the_dead_letter_queues_of_a_service_are_named_after_its_handlers():
    assert sorted(deadletters.dead_letter_queues(OrdersService)) == [
        "evt-users-user_created--orders.handle_user_created.dead-letter",
        "evt-users-user_deleted--orders.handle_user_deleted.dead-letter",
    ]
    assert deadletters.dead_letter_queues(Flaky) == [DEAD_LETTERS]


def test_listing_a_queue_no_handler_declared_is_empty(rabbit_config):
    assert deadletters.list_dead_letters(rabbit_config["AMQP_URI"], "nothing.dead-letter") == []
    assert deadletters.count_dead_letters(rabbit_config["AMQP_URI"], "nothing.dead-letter") == 0


def test_the_command_line_lists_then_replays_a_queue(
    flaky, dispatch, rabbit_config, tmp_path, capsys
):
    uri = rabbit_config["AMQP_URI"]
    config = tmp_path / "flaky.yaml"
    config.write_text(f"AMQP_URI: {uri}\n")
    payload = dispatch(n=1)
    assert wait_until(lambda: deadletters.count_dead_letters(uri, DEAD_LETTERS) == 1)

    deadletters.main([str(config), "list", "--queue", DEAD_LETTERS])
    listed = capsys.readouterr().out
    assert f"{DEAD_LETTERS}: 1 dead letter(s)" in listed and payload["event_id"] in listed

    Flaky.broken = False
    with entrypoint_waiter(flaky, "handle", timeout=5, callback=succeeded):
        deadletters.main([str(config), "replay", "--queue", DEAD_LETTERS])
    assert f"{DEAD_LETTERS}: replayed 1" in capsys.readouterr().out
    assert Flaky.applied == [payload["event_id"]]
