"""Tokens that die when they should, and login throttling shared by two gateways.

Real processes (``nameko run``): users, orders and *two* gateway replicas on one
throwaway vhost and SQLite files. Both gateways trust 127.0.0.1 as a proxy, so
a test plays a client address by sending ``X-Forwarded-For`` (each test its own
addresses, so the per-address throttle of one test never touches another).
"""

import itertools
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from tests.helpers import answers_ok, wait_until
from tests.system.processes import ServiceProcess, migrate, system_env

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new password"
ADDRESSES = (f"198.51.100.{n}" for n in itertools.count(1))  # TEST-NET-2, never routed


class Replicas:
    """users, orders and two gateways; ``call(gateway_index, ...)`` talks to one."""

    def __init__(self, env, log_dir):
        self.env = env
        self.log_dir = log_dir
        self.backends = [ServiceProcess(name, env, log_dir) for name in ("users", "orders")]
        self.gateways = [ServiceProcess("gateway", env, log_dir) for _ in range(2)]
        self.http = requests.Session()

    def start(self):
        for process in self.backends + self.gateways:
            process.start(wait=False)
        for process in self.backends + self.gateways:
            process.wait_healthy()
        for gateway in self.gateways:
            ready = wait_until(lambda g=gateway: answers_ok(f"{g.url}/ready", timeout=2), 30)
            assert ready, "a gateway never became ready"

    def stop(self):
        for process in self.gateways + self.backends:
            process.stop()

    def call(self, gateway, method, path, token=None, address=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if address:
            headers["X-Forwarded-For"] = address
        url = self.gateways[gateway].url + path
        return self.http.request(method, url, headers=headers, timeout=15, **kwargs)

    def register(self, password=PASSWORD):
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        body = {"email": email, "name": "Ann", "password": password}
        response = self.call(0, "POST", "/v1/users", json=body, address=next(ADDRESSES))
        assert response.status_code == 201, response.text
        return response.json()

    def login(self, email, password=PASSWORD, gateway=0):
        body = {"email": email, "password": password}
        response = self.call(gateway, "POST", "/v1/auth/token", json=body, address=next(ADDRESSES))
        assert response.status_code == 200, response.text
        return response.json()

    def admin(self):
        email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
        with ClusterRpcProxy({"AMQP_URI": self.env["AMQP_URI"]}, timeout=15) as rpc:
            user = rpc.users.create_user(email, "Admin", PASSWORD, role="admin")
        return user, self.login(email)


@pytest.fixture(scope="module")
def replicas(request, vhost_pipeline, tmp_path_factory):
    uri = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
    tmp_path = tmp_path_factory.mktemp("replicas")
    with vhost_pipeline.get() as vhost:
        env = system_env(
            f"{uri.scheme}://{uri.netloc}/{vhost}",
            tmp_path,
            TRUSTED_PROXIES="127.0.0.1",
            LOGIN_MAX_FAILURES="5",
            LOGIN_MAX_FAILURES_PER_ADDRESS="20",
        )
        migrate(env)
        running = Replicas(env, tmp_path)
        try:
            running.start()
            yield running
        finally:
            running.stop()


def refused_everywhere_within(replicas, token, seconds=1.0, path="/v1/users/me"):
    """True once every gateway answers 401 to ``token``, within ``seconds``."""
    deadline = time.monotonic() + seconds
    pending = set(range(len(replicas.gateways)))
    while pending and time.monotonic() < deadline:
        for gateway in list(pending):
            if replicas.call(gateway, "GET", path, token).status_code == 401:
                pending.discard(gateway)
        time.sleep(0.02)
    return not pending


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details", "request_id"}
    assert body["error"] == code
    return body


# --- password and role changes ----------------------------------------------------------------


def test_changing_your_own_password_needs_the_current_one(replicas):
    user = replicas.register()
    pair = replicas.login(user["email"])
    path = f"/v1/users/{user['id']}"
    missing = replicas.call(0, "PATCH", path, pair["access_token"], json={"password": NEW_PASSWORD})
    assert "current_password" in assert_error(missing, 422, "VALIDATION_ERROR")["details"]
    wrong = replicas.call(
        0,
        "PATCH",
        path,
        pair["access_token"],
        json={"password": NEW_PASSWORD, "current_password": "not my password"},
    )
    assert "current_password" in assert_error(wrong, 422, "VALIDATION_ERROR")["details"]
    # nothing changed: the old password still logs in, the token still works
    replicas.login(user["email"])
    assert replicas.call(1, "GET", "/v1/users/me", pair["access_token"]).status_code == 200


def test_a_password_change_ends_every_earlier_token_on_every_gateway_within_a_second(replicas):
    user = replicas.register()
    first = replicas.login(user["email"], gateway=0)
    second = replicas.login(user["email"], gateway=1)
    changed = replicas.call(
        1,
        "PATCH",
        f"/v1/users/{user['id']}",
        first["access_token"],
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    for pair in (first, second):
        assert refused_everywhere_within(replicas, pair["access_token"])
        for gateway in (0, 1):
            refreshed = replicas.call(
                gateway,
                "POST",
                "/v1/auth/refresh",
                json={"refresh_token": pair["refresh_token"]},
            )
            assert_error(refreshed, 401, "UNAUTHORIZED")
    # the user logs in again, with the new password, and that works everywhere
    fresh = replicas.login(user["email"], NEW_PASSWORD, gateway=1)
    for gateway in (0, 1):
        assert replicas.call(gateway, "GET", "/v1/users/me", fresh["access_token"]).ok


def test_an_admin_changes_someone_elses_password_without_the_current_one(replicas):
    _, admin = replicas.admin()
    user = replicas.register()
    pair = replicas.login(user["email"])
    response = replicas.call(
        0,
        "PATCH",
        f"/v1/users/{user['id']}",
        admin["access_token"],
        json={"password": NEW_PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert refused_everywhere_within(replicas, pair["access_token"])
    replicas.login(user["email"], NEW_PASSWORD)


def test_a_demoted_admin_loses_admin_rights_on_every_gateway_within_a_second(replicas):
    _, boss = replicas.admin()
    demoted, pair = replicas.admin()
    assert replicas.call(1, "GET", "/v1/users", pair["access_token"]).status_code == 200
    response = replicas.call(
        0, "PATCH", f"/v1/users/{demoted['id']}", boss["access_token"], json={"role": "user"}
    )
    assert response.status_code == 200, response.text
    assert refused_everywhere_within(replicas, pair["access_token"], path="/v1/users")
    again = replicas.login(demoted["email"], gateway=1)
    assert_error(replicas.call(1, "GET", "/v1/users", again["access_token"]), 403, "FORBIDDEN")


def test_a_gateway_that_was_down_during_the_change_catches_up(replicas):
    user = replicas.register()
    pair = replicas.login(user["email"])
    late = replicas.gateways[1]
    late.stop()
    try:
        changed = replicas.call(
            0,
            "PATCH",
            f"/v1/users/{user['id']}",
            pair["access_token"],
            json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        )
        assert changed.status_code == 200, changed.text
    finally:
        late.start()
    assert_error(replicas.call(1, "GET", "/v1/users/me", pair["access_token"]), 401, "UNAUTHORIZED")


# --- login throttling, shared by the replicas ---------------------------------------------------


def failed_login(replicas, gateway, email, address):
    body = {"email": email, "password": "wrong password!"}
    return replicas.call(gateway, "POST", "/v1/auth/token", json=body, address=address)


def test_failures_on_one_gateway_count_on_the_other(replicas):
    user = replicas.register()
    for attempt in range(5):  # spread over both replicas and several addresses
        response = failed_login(replicas, attempt % 2, user["email"], next(ADDRESSES))
        assert_error(response, 401, "UNAUTHORIZED")
    for gateway in (0, 1):  # locked, even for the right password
        body = {"email": user["email"], "password": PASSWORD}
        response = replicas.call(
            gateway, "POST", "/v1/auth/token", json=body, address=next(ADDRESSES)
        )
        assert_error(response, 429, "TOO_MANY_REQUESTS")
        assert 1 <= int(response.headers["Retry-After"]) <= 300


def test_twenty_failures_from_one_address_lock_it_for_every_email_and_no_other(replicas):
    user = replicas.register()
    sprayer = next(ADDRESSES)
    for index in range(20):  # one password tried against twenty accounts
        response = failed_login(
            replicas, index % 2, f"victim{index}-{sprayer}@example.com", sprayer
        )
        assert_error(response, 401, "UNAUTHORIZED")
    body = {"email": user["email"], "password": PASSWORD}
    for gateway in (0, 1):
        locked = replicas.call(gateway, "POST", "/v1/auth/token", json=body, address=sprayer)
        assert_error(locked, 429, "TOO_MANY_REQUESTS")
        assert int(locked.headers["Retry-After"]) >= 1
    other = replicas.call(0, "POST", "/v1/auth/token", json=body, address=next(ADDRESSES))
    assert other.status_code == 200, other.text


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(replicas, tmp_path):
    """A gateway that trusts no proxy counts the socket peer, whatever the header says."""
    env = {**replicas.env, "TRUSTED_PROXIES": ""}
    gateway = ServiceProcess("gateway", env, tmp_path).start()
    try:
        user = replicas.register()
        for index in range(20):
            body = {"email": f"spray{index}-{uuid.uuid4().hex[:6]}@example.com", "password": "x"}
            headers = {"X-Forwarded-For": next(ADDRESSES)}  # a new lie every time
            requests.post(f"{gateway.url}/v1/auth/token", json=body, headers=headers, timeout=15)
        body = {"email": user["email"], "password": PASSWORD}
        locked = requests.post(
            f"{gateway.url}/v1/auth/token",
            json=body,
            headers={"X-Forwarded-For": next(ADDRESSES)},
            timeout=15,
        )
        assert_error(locked, 429, "TOO_MANY_REQUESTS")
    finally:
        gateway.stop()


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_an_idempotency_key_reused_with_another_body_is_422_and_the_same_body_replays(replicas):
    user = replicas.register()
    token = replicas.login(user["email"])["access_token"]
    headers = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    items = [{"sku": "BOOK-1", "quantity": 1, "unit_price": "9.99"}]
    first = replicas.call(0, "POST", "/v1/orders", token, json={"items": items}, headers=headers)
    assert first.status_code == 201, first.text
    other = [{**items[0], "quantity": 2}]
    reused = replicas.call(1, "POST", "/v1/orders", token, json={"items": other}, headers=headers)
    assert_error(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    again = replicas.call(1, "POST", "/v1/orders", token, json={"items": items}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    listed = replicas.call(0, "GET", "/v1/orders", token).json()["items"]
    assert [order["id"] for order in listed] == [first.json()["id"]]
