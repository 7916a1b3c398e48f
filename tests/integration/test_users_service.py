"""The users service in a real container on a real RabbitMQ, on SQLite and PostgreSQL."""

import time
import uuid

import pytest
import requests
from nameko.events import event_handler
from nameko.testing.services import entrypoint_waiter

from shared.exceptions import AuthenticationFailed, Conflict, InvalidInput, NotFound
from tests.helpers import wait_until

PASSWORD = "correct horse battery"


class EventListener:
    """A real consumer of every users event, as another service would be."""

    name = "listener"
    received = []

    @event_handler("users", "user_created")
    def user_created(self, payload):
        self.received.append(("user_created", payload))

    @event_handler("users", "user_updated")
    def user_updated(self, payload):
        self.received.append(("user_updated", payload))

    @event_handler("users", "user_deleted")
    def user_deleted(self, payload):
        self.received.append(("user_deleted", payload))


@pytest.fixture
def listener(rabbit_config, container_factory):
    EventListener.received = []
    container = container_factory(EventListener, rabbit_config)
    container.start()
    return container


def create(rpc, email="ann@example.com", **overrides):
    arguments = {"email": email, "name": "Ann", "password": PASSWORD, **overrides}
    return rpc.users.create_user(**arguments)


def test_create_get_update_delete_round_trip(users, rpc):
    user = create(rpc)
    assert rpc.users.get_user(user["id"]) == user
    updated = rpc.users.update_user(user["id"], {"name": "Annie"})
    assert updated["name"] == "Annie"
    assert rpc.users.delete_user(user["id"]) is None
    with pytest.raises(NotFound):
        rpc.users.get_user(user["id"])


def test_results_are_plain_dicts_without_secrets(users, rpc):
    user = create(rpc)
    assert isinstance(user, dict)
    assert user["created_at"].endswith("+00:00")
    assert not {"password", "password_hash"} & set(user)


def test_list_users_pages_with_an_opaque_cursor(users, rpc):
    ids = [create(rpc, email=f"u{i}@example.com")["id"] for i in range(3)]
    first = rpc.users.list_users(limit=2)
    second = rpc.users.list_users(limit=2, cursor=first["next_cursor"])
    assert [u["id"] for u in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None


def test_errors_arrive_as_the_same_class_with_field_errors(users, rpc):
    create(rpc)
    with pytest.raises(Conflict) as conflict:
        create(rpc, email="ANN@example.com")
    assert conflict.value.details == {"email": ["Already registered."]}
    with pytest.raises(InvalidInput) as invalid:
        create(rpc, email="nope", password="short")
    assert set(invalid.value.details) == {"email", "password"}
    with pytest.raises(NotFound):
        rpc.users.update_user(999, {"name": "X"})
    with pytest.raises(InvalidInput):
        rpc.users.get_user("abc")


def test_authenticate_answers_the_user_or_refuses(users, rpc):
    user = create(rpc)
    assert rpc.users.authenticate("Ann@Example.com", PASSWORD)["id"] == user["id"]
    with pytest.raises(AuthenticationFailed):
        rpc.users.authenticate("ann@example.com", "not the password")


def test_health_over_rpc_and_http(users, rpc, web_config_port):
    assert rpc.users.health()["status"] == "ok"
    base = f"http://127.0.0.1:{web_config_port}"
    assert requests.get(f"{base}/health", timeout=5).json()["status"] == "ok"
    ready = requests.get(f"{base}/ready", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


def test_events_are_published_as_the_contract_says(users, listener, rpc):
    with entrypoint_waiter(listener, "user_created", timeout=5):
        user = create(rpc)
    with entrypoint_waiter(listener, "user_updated", timeout=5):
        rpc.users.update_user(user["id"], {"password": "a brand new secret"})
    with entrypoint_waiter(listener, "user_deleted", timeout=5):
        rpc.users.delete_user(user["id"])

    kinds = [kind for kind, _ in EventListener.received]
    assert kinds == ["user_created", "user_updated", "user_deleted"]
    created, updated, deleted = (payload for _, payload in EventListener.received)
    for payload in (created, updated, deleted):
        assert payload["user_id"] == user["id"]
        assert len(payload["event_id"]) == 36 and payload["occurred_at"]
    assert created["user"] == {
        "id": user["id"],
        "email": "ann@example.com",
        "name": "Ann",
        "role": "user",
    }
    assert updated["changed"] == ["password"]
    text = repr(EventListener.received)
    assert "a brand new secret" not in text and "argon2" not in text


def test_a_refused_call_publishes_nothing(users, listener, rpc):
    with entrypoint_waiter(listener, "user_created", timeout=5):
        create(rpc)
    with pytest.raises(Conflict):
        create(rpc)
    with pytest.raises(InvalidInput):
        create(rpc, email="second@example.com", name="")
    # one more success: if the refused calls had published, they would arrive first
    with entrypoint_waiter(listener, "user_created", timeout=5):
        create(rpc, email="third@example.com")
    emails = [payload["user"]["email"] for _, payload in EventListener.received]
    assert emails == ["ann@example.com", "third@example.com"]


def test_each_call_is_logged_once_with_its_request_id_outcome_and_duration(
    users, rabbit_config, caplog
):
    import logging

    from nameko.standalone.rpc import ClusterRpcProxy

    from shared.logs import ContextFilter

    caplog.handler.addFilter(ContextFilter(service="users"))
    with caplog.at_level(logging.INFO, logger="calls"):
        with ClusterRpcProxy(
            rabbit_config, context_data={"request_id": "req-42"}, timeout=10
        ) as rpc:
            with pytest.raises(NotFound):
                rpc.users.get_user(999)
        # nameko logs a call just after it replied
        [record] = wait_until(lambda: [r for r in caplog.records if r.name == "calls"])
    assert record.entrypoint == "users.get_user"
    assert record.outcome == "expected_error" and record.error == "NotFound"
    assert record.request_id == "req-42" and record.call_id.startswith("users.get_user.")
    assert record.duration_ms >= 0


@pytest.mark.parametrize("properties", [{}, {"content_type": None}], ids=["no reply_to", "bare"])
def test_a_request_without_reply_to_gets_no_reply_and_kills_nothing(
    users, rpc, rabbit_config, properties
):
    """nameko's responder raised KeyError on it, which killed the whole service."""
    import json

    from kombu import Connection, Exchange

    with Connection(rabbit_config["AMQP_URI"]) as connection:
        producer = connection.Producer()
        body = json.dumps({"args": [], "kwargs": {}})
        publish = {"content_type": "application/json", **properties}
        if publish["content_type"] is None:
            del publish["content_type"]
        producer.publish(
            body,
            exchange=Exchange("nameko-rpc", type="topic", durable=True),
            routing_key="users.health",
            serializer=None,
            **publish,
        )
    time.sleep(0.5)  # the request runs; a dying container would be gone by now
    assert rpc.users.health()["status"] == "ok"
    assert rpc.users.health()["status"] == "ok"


def test_a_request_whose_callers_deadline_passed_is_dropped_not_run(users, rpc, rabbit_config):
    """The caller answered 504 already: running the call now would act behind its back."""
    import json

    from kombu import Connection, Exchange

    from shared.rpc import DEADLINE_HEADER

    email = f"late-{uuid.uuid4().hex[:8]}@example.com"
    body = {"args": [email, "Late", PASSWORD], "kwargs": {}}
    with Connection(rabbit_config["AMQP_URI"]) as connection:
        connection.Producer().publish(
            json.dumps(body),
            exchange=Exchange("nameko-rpc", type="topic", durable=True),
            routing_key="users.create_user",
            content_type="application/json",
            serializer=None,
            headers={DEADLINE_HEADER: time.time() - 5},
        )
    time.sleep(0.5)
    assert rpc.users.health()["status"] == "ok"  # it was taken off the queue ...
    with pytest.raises(AuthenticationFailed):  # ... and never created the user
        rpc.users.authenticate(email, PASSWORD)
