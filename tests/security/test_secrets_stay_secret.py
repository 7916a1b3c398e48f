"""A password and its hash never leave the users service: not in a response, a log line or an event.

A real consumer is bound to both events exchanges of the run's vhost before
anything happens, the run exercises every path a password travels (register,
log in, fail to log in, change it, delete the user) and then the HTTP answers,
the services' log files and every event published are searched for the
password and for any Argon2 hash.
"""

import re
import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue

pytestmark = pytest.mark.integration

HASH = re.compile(r"\$argon2(id|i|d)\$")


@pytest.fixture
def events(stack):
    """Every message published on users.events and orders.events while the test runs."""
    connection = Connection(stack.vhost.amqp_uri)
    channel = connection.channel()
    received = []
    queues = []
    for service in ("users", "orders"):
        exchange = Exchange(f"{service}.events", type="topic", durable=True)
        queue = Queue(
            f"spy-{service}-{uuid.uuid4().hex[:8]}", exchange, routing_key="#", exclusive=True
        )
        queue(channel).declare()
        queues.append(queue(channel))

    def drain():
        for queue in queues:
            while (message := queue.get(no_ack=True)) is not None:
                body = message.body
                received.append(
                    body.decode("utf-8", "replace") if isinstance(body, bytes) else body
                )
        return received

    yield drain
    connection.release()


def test_no_password_or_hash_in_any_response_log_line_or_event(stack, events):
    password = f"Secret-{uuid.uuid4().hex}"
    new_password = f"Changed-{uuid.uuid4().hex}"
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    answers = []

    def call(*args, **kwargs):
        response = stack.call(*args, **kwargs)
        answers.append(response.text + str(dict(response.headers)))
        return response

    user = call(
        "POST", "/v1/users", json={"email": email, "name": "Leak", "password": password}
    ).json()
    call("POST", "/v1/auth/token", json={"email": email, "password": password + "wrong"})
    pair = call("POST", "/v1/auth/token", json={"email": email, "password": password}).json()
    token = pair["access_token"]
    call("GET", "/v1/users/me", token)
    call("GET", f"/v1/users/{user['id']}", token)
    path = f"/v1/users/{user['id']}"
    call("PATCH", path, token, json={"password": new_password, "current_password": new_password})
    call("PATCH", path, token, json={"password": "short", "current_password": password})
    changed = call(
        "PATCH", path, token, json={"password": new_password, "current_password": password}
    )
    assert changed.status_code == 200, changed.text
    # the change ended the old tokens: log in again with the new password
    pair = call("POST", "/v1/auth/token", json={"email": email, "password": new_password}).json()
    token = pair["access_token"]
    call(
        "POST",
        "/v1/orders",
        token,
        json={"items": [{"sku": "LEAK", "quantity": 1, "unit_price": "1.00"}]},
    )
    call("DELETE", f"/v1/users/{user['id']}", token)
    # user_created, user_updated, order_created, user_deleted, order_status_changed
    deadline = time.monotonic() + 10
    while len(events()) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    published = events()
    assert len(published) >= 5, published
    assert any("user_id" in body for body in published)

    logs = stack.logs()
    assert email in logs or str(user["id"]) in logs  # the logs are the run's, and not empty
    for where, texts in (("responses", answers), ("logs", [logs]), ("events", published)):
        for text in texts:
            for secret in (password, new_password):
                assert secret not in text, f"a password in the {where}"
            assert not HASH.search(text), f"a password hash in the {where}: {text[:300]}"
            assert "password_hash" not in text, f"password_hash in the {where}"
