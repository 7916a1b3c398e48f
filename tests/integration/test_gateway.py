"""The gateway end to end: HTTP against real users, orders and gateway containers.

One stack per module and database backend (see ``gateway_stack``); each test
makes its own users with random emails, so tests never see each other's data.
"""

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests

from shared import tokens
from tests.integration.conftest import GATEWAY_JWT_SECRET, base_url

PASSWORD = "correct horse battery"
ITEMS = [{"sku": "BOOK-1", "quantity": 2, "unit_price": "19.99"}]


class Api:
    """A thin HTTP client of the gateway that makes users and logs them in."""

    def __init__(self, url, rpc):
        self.url = url
        self.rpc = rpc
        self.http = requests.Session()

    def call(self, method, path, token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def register(self, role="user"):
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        if role == "admin":
            user = self.rpc.users.create_user(email, "Admin", PASSWORD, role="admin")
        else:
            response = self.call(
                "POST", "/v1/users", json={"email": email, "name": "Ann", "password": PASSWORD}
            )
            assert response.status_code == 201, response.text
            user = response.json()
        return user

    def login(self, user):
        response = self.call(
            "POST", "/v1/auth/token", json={"email": user["email"], "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return response.json()

    def user(self, role="user"):
        user = self.register(role)
        return Who(user, self.login(user))

    def delete(self, user_id, token):
        """DELETE the user, then take the id SQLite would hand out next.

        SQLite reuses the highest rowid once it is deleted; a fresh user with a
        deleted user's id would inherit the revocation for a couple of seconds
        (see gateway.auth.RevokedUsers). The placeholder takes that id instead.
        """
        response = self.call("DELETE", f"/v1/users/{user_id}", token)
        self.register()
        return response

    def order(self, who):
        response = self.call("POST", "/v1/orders", who.token, json={"items": ITEMS})
        assert response.status_code == 201, response.text
        return response.json()


class Who:
    def __init__(self, user, pair):
        self.user = user
        self.id = user["id"]
        self.pair = pair
        self.token = pair["access_token"]


@pytest.fixture(scope="module")
def api(gateway_stack, module_rpc):
    return Api(base_url(gateway_stack), module_rpc)


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.text
    return body


# --- registration and tokens ------------------------------------------------------------------


def test_registering_returns_201_and_the_public_user(api):
    user = api.register()
    assert set(user) == {"id", "email", "name", "role", "order_count", "created_at"}
    assert user["role"] == "user"


def test_registering_a_taken_email_is_409(api):
    user = api.register()
    response = api.call(
        "POST",
        "/v1/users",
        json={"email": user["email"].upper(), "name": "B", "password": PASSWORD},
    )
    assert_error(response, 409, "CONFLICT")


def test_registering_with_bad_fields_is_422_with_field_errors(api):
    response = api.call("POST", "/v1/users", json={"email": "nope", "name": "", "password": "x"})
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert set(body["details"]) == {"email", "name", "password"}


def test_registering_as_an_admin_is_forbidden(api):
    body = {"email": f"{uuid.uuid4().hex}@example.com", "name": "M", "password": PASSWORD}
    response = api.call("POST", "/v1/users", json={**body, "role": "admin"})
    assert_error(response, 403, "FORBIDDEN")


def test_logging_in_gives_a_bearer_pair_with_the_contract_claims(api):
    who = api.user()
    assert who.pair["token_type"] == "bearer" and who.pair["expires_in"] == 900
    claims = tokens.decode(GATEWAY_JWT_SECRET, who.token, tokens.ACCESS)
    assert claims["sub"] == str(who.id) and claims["role"] == "user"
    assert tokens.decode(GATEWAY_JWT_SECRET, who.pair["refresh_token"], tokens.REFRESH)


def test_logging_in_with_a_wrong_password_or_unknown_email_is_401(api):
    user = api.register()
    wrong = api.call("POST", "/v1/auth/token", json={"email": user["email"], "password": "nope"})
    assert_error(wrong, 401, "UNAUTHORIZED")
    unknown = api.call("POST", "/v1/auth/token", json={"email": "x@y.z", "password": PASSWORD})
    assert unknown.json()["message"] == wrong.json()["message"]


def test_logging_in_without_fields_is_422(api):
    assert_error(api.call("POST", "/v1/auth/token", json={}), 422, "VALIDATION_ERROR")


def test_five_failed_logins_lock_the_email_with_429_even_for_the_right_password(api):
    user = api.register()
    for _ in range(5):
        response = api.call(
            "POST", "/v1/auth/token", json={"email": user["email"], "password": "wrong pass"}
        )
        assert response.status_code == 401
    response = api.call(
        "POST", "/v1/auth/token", json={"email": user["email"], "password": PASSWORD}
    )
    assert_error(response, 429, "TOO_MANY_REQUESTS")
    assert 0 < int(response.headers["Retry-After"]) <= 300


def test_refreshing_gives_a_new_pair_and_the_old_refresh_token_stops_working(api):
    who = api.user()
    old = who.pair["refresh_token"]
    response = api.call("POST", "/v1/auth/refresh", json={"refresh_token": old})
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert api.call("GET", "/v1/users/me", fresh["access_token"]).status_code == 200
    reused = api.call("POST", "/v1/auth/refresh", json={"refresh_token": old})
    assert_error(reused, 401, "UNAUTHORIZED")


def test_reusing_a_rotated_refresh_token_also_revokes_its_successor(api):
    who = api.user()
    old = who.pair["refresh_token"]
    fresh = api.call("POST", "/v1/auth/refresh", json={"refresh_token": old}).json()
    api.call("POST", "/v1/auth/refresh", json={"refresh_token": old})
    response = api.call("POST", "/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert_error(response, 401, "UNAUTHORIZED")


def test_a_role_change_ends_the_sessions_and_the_next_login_carries_the_role(api, module_rpc):
    who = api.user()
    module_rpc.users.update_user(who.id, {"role": "admin"})
    refreshed = api.call(
        "POST", "/v1/auth/refresh", json={"refresh_token": who.pair["refresh_token"]}
    )
    assert_error(refreshed, 401, "UNAUTHORIZED")
    pair = api.login(who.user)
    claims = tokens.decode(GATEWAY_JWT_SECRET, pair["access_token"], tokens.ACCESS)
    assert (claims["role"], claims["ver"]) == ("admin", 1)


def test_refreshing_without_a_token_is_422(api):
    assert_error(api.call("POST", "/v1/auth/refresh", json={}), 422, "VALIDATION_ERROR")


def forged(claims, secret=GATEWAY_JWT_SECRET, algorithm="HS256"):
    return jwt.encode(claims, secret, algorithm=algorithm)


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def bad_access_tokens(who):
    claims = tokens.decode(GATEWAY_JWT_SECRET, who.token, tokens.ACCESS)
    head, body, signature = who.token.split(".")
    past = datetime.now(UTC) - timedelta(hours=1)
    expired, _ = tokens.issue(
        GATEWAY_JWT_SECRET, who.id, "user", tokens.ACCESS, timedelta(minutes=15), past
    )
    return {
        "tampered signature": f"{head}.{body}.{signature[::-1]}",
        "tampered role": f"{head}.{b64({**claims, 'role': 'admin'})}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "wrong key": forged(claims, secret="another-secret-that-is-32-bytes-long!"),
        "expired": expired,
        "refresh as access": who.pair["refresh_token"],
        "garbage": "not.a.token",
    }


def test_every_bad_access_token_is_401(api):
    who = api.user()
    for name, token in bad_access_tokens(who).items():
        response = api.call("GET", "/v1/users/me", token)
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_an_access_token_is_refused_as_a_refresh_token(api):
    who = api.user()
    response = api.call("POST", "/v1/auth/refresh", json={"refresh_token": who.token})
    assert_error(response, 401, "UNAUTHORIZED")


def test_a_deleted_users_tokens_stop_working(api):
    who = api.user()
    assert api.delete(who.id, who.token).status_code == 204
    assert_error(api.call("GET", "/v1/users/me", who.token), 401, "UNAUTHORIZED")
    assert_error(api.call("GET", "/v1/orders", who.token), 401, "UNAUTHORIZED")
    refresh = api.call(
        "POST", "/v1/auth/refresh", json={"refresh_token": who.pair["refresh_token"]}
    )
    assert_error(refresh, 401, "UNAUTHORIZED")


# --- the authorization matrix -----------------------------------------------------------------
# for each route: the status for an anonymous caller, the owner (or the user
# themselves), another plain user, and an admin


def expect(anonymous, owner, other, admin):
    return {"anonymous": anonymous, "owner": owner, "other": other, "admin": admin}


MATRIX = {
    "GET /v1/users/me": expect(401, 200, 200, 200),
    "GET /v1/users/{user}": expect(401, 200, 404, 200),
    "GET /v1/users": expect(401, 403, 403, 200),
    "PATCH /v1/users/{user} name": expect(401, 200, 404, 200),
    "PATCH /v1/users/{user} role": expect(401, 403, 404, 200),
    "DELETE /v1/users/{user}": expect(401, 204, 404, 204),
    "POST /v1/orders": expect(401, 201, 201, 201),
    "GET /v1/orders/{order}": expect(401, 200, 404, 200),
    "GET /v1/orders": expect(401, 200, 200, 200),
    "POST /v1/orders/{order}/cancel": expect(401, 200, 404, 200),
    "POST /v1/orders/{order}/status": expect(401, 403, 403, 200),
}

BODIES = {
    "PATCH /v1/users/{user} name": {"name": "Renamed"},
    "PATCH /v1/users/{user} role": {"role": "user"},
    "POST /v1/orders": {"items": ITEMS},
    "POST /v1/orders/{order}/status": {"status": "paid"},
}


@pytest.fixture(scope="module")
def admin(api):
    return api.user(role="admin")


@pytest.mark.parametrize("who", ["anonymous", "owner", "other", "admin"])
@pytest.mark.parametrize("operation", sorted(MATRIX))
def test_authorization_matrix(api, admin, operation, who):
    owner = api.user()
    order = api.order(owner)
    callers = {"anonymous": None, "owner": owner, "other": api.user(), "admin": admin}
    caller = callers[who]
    method, path = operation.split()[:2]
    path = path.format(user=owner.id, order=order["id"])
    response = api.call(method, path, caller.token if caller else None, json=BODIES.get(operation))
    assert response.status_code == MATRIX[operation][who], response.text
    if response.status_code >= 400:
        assert_error(response, response.status_code, response.json()["error"])


# --- users routes ---------------------------------------------------------------------------


def test_users_me_includes_the_order_count(api):
    who = api.user()
    api.order(who)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        me = api.call("GET", "/v1/users/me", who.token).json()
        if me["order_count"] == 1:
            break
        time.sleep(0.1)
    assert me["order_count"] == 1


def test_an_admin_pages_through_users_with_a_cursor(api, admin):
    api.register()
    api.register()
    first = api.call("GET", "/v1/users?limit=1", admin.token).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = api.call("GET", f"/v1/users?limit=1&cursor={first['next_cursor']}", admin.token)
    assert second.json()["items"][0]["id"] > first["items"][0]["id"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=%21bad", "foo=1"])
def test_bad_page_parameters_are_400(api, admin, query):
    assert_error(api.call("GET", f"/v1/users?{query}", admin.token), 400, "BAD_REQUEST")


def test_updating_a_user_with_nothing_to_change_is_422(api):
    who = api.user()
    assert_error(
        api.call("PATCH", f"/v1/users/{who.id}", who.token, json={}), 422, "VALIDATION_ERROR"
    )


def test_a_new_password_works_for_the_next_login(api):
    who = api.user()
    changed = api.call(
        "PATCH",
        f"/v1/users/{who.id}",
        who.token,
        json={"password": "new password!", "current_password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    login = api.call(
        "POST", "/v1/auth/token", json={"email": who.user["email"], "password": "new password!"}
    )
    assert login.status_code == 200


def test_a_missing_user_is_404_for_an_admin(api, admin):
    assert_error(api.call("GET", "/v1/users/999999999", admin.token), 404, "NOT_FOUND")
    assert_error(api.call("DELETE", "/v1/users/999999999", admin.token), 404, "NOT_FOUND")


def test_a_non_numeric_or_out_of_range_id_is_404(api, admin):
    assert_error(api.call("GET", "/v1/users/abc", admin.token), 404, "NOT_FOUND")
    assert_error(api.call("GET", f"/v1/users/{2**64}", admin.token), 404, "NOT_FOUND")
    assert_error(api.call("DELETE", "/v1/users/0", admin.token), 404, "NOT_FOUND")
    assert_error(api.call("POST", f"/v1/orders/{2**63}/cancel", admin.token), 404, "NOT_FOUND")


def test_deleting_a_user_cancels_their_open_orders(api, admin):
    who = api.user()
    order = api.order(who)
    assert api.delete(who.id, admin.token).status_code == 204
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = api.call("GET", f"/v1/orders/{order['id']}", admin.token).json()["status"]
        if status == "cancelled":
            break
        time.sleep(0.1)
    assert status == "cancelled"


# --- orders routes --------------------------------------------------------------------------


def test_creating_an_order_returns_exact_money(api):
    order = api.order(api.user())
    assert order["status"] == "pending"
    assert order["total"] == "39.98" and order["items"][0]["unit_price"] == "19.99"


def test_the_same_idempotency_key_returns_the_first_order_with_200(api):
    who = api.user()
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.call("POST", "/v1/orders", who.token, json={"items": ITEMS}, headers=dict(headers))
    again = api.call("POST", "/v1/orders", who.token, json={"items": ITEMS}, headers=dict(headers))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


def test_a_bad_idempotency_key_is_400(api):
    who = api.user()
    response = api.call(
        "POST",
        "/v1/orders",
        who.token,
        json={"items": ITEMS},
        headers={"Idempotency-Key": "x" * 300},
    )
    assert_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{"sku": "A", "quantity": 0, "unit_price": "1.00"}],
        [{"sku": "A", "quantity": 1, "unit_price": "1.001"}],
        "nope",
    ],
)
def test_bad_order_items_are_422(api, items):
    who = api.user()
    response = api.call("POST", "/v1/orders", who.token, json={"items": items})
    assert_error(response, 422, "VALIDATION_ERROR")


def test_a_user_lists_only_their_own_orders_and_may_filter_by_status(api):
    who, other = api.user(), api.user()
    mine = api.order(who)
    api.order(other)
    listed = api.call("GET", "/v1/orders", who.token).json()
    assert [order["id"] for order in listed["items"]] == [mine["id"]]
    cancelled = api.call("GET", "/v1/orders?status=cancelled", who.token).json()
    assert cancelled == {"items": [], "next_cursor": None}


def test_a_user_asking_for_another_users_orders_is_403(api):
    who, other = api.user(), api.user()
    response = api.call("GET", f"/v1/orders?user_id={other.id}", who.token)
    assert_error(response, 403, "FORBIDDEN")


def test_an_admin_lists_one_users_orders(api, admin):
    who = api.user()
    order = api.order(who)
    listed = api.call("GET", f"/v1/orders?user_id={who.id}", admin.token).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]


def test_a_bad_status_filter_is_400(api):
    assert_error(api.call("GET", "/v1/orders?status=lost", api.user().token), 400, "BAD_REQUEST")


def test_cancelling_twice_is_409(api):
    who = api.user()
    order = api.order(who)
    assert api.call("POST", f"/v1/orders/{order['id']}/cancel", who.token).status_code == 200
    again = api.call("POST", f"/v1/orders/{order['id']}/cancel", who.token)
    assert_error(again, 409, "CONFLICT")


def test_an_admin_moves_an_order_along_and_a_skip_is_409(api, admin):
    order = api.order(api.user())
    path = f"/v1/orders/{order['id']}/status"
    paid = api.call("POST", path, admin.token, json={"status": "paid"})
    assert paid.json()["status"] == "paid"
    skip = api.call("POST", path, admin.token, json={"status": "delivered"})
    assert_error(skip, 409, "CONFLICT")
    bad = api.call("POST", path, admin.token, json={"status": "lost"})
    assert_error(bad, 422, "VALIDATION_ERROR")


def test_a_missing_order_is_404(api, admin):
    assert_error(api.call("GET", "/v1/orders/999999999", admin.token), 404, "NOT_FOUND")


# --- HTTP-level errors ----------------------------------------------------------------------


def test_an_unknown_route_is_404_in_the_error_shape(api):
    body = assert_error(api.call("GET", "/v1/nothing-here"), 404, "NOT_FOUND")
    assert body["details"] is None


def test_a_wrong_method_is_405_with_allow(api):
    response = api.call("PUT", "/v1/users")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_a_body_declared_too_large_is_413_before_it_is_read(api):
    response = api.call(
        "POST", "/v1/users", data=b"x" * 70_000, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_chunked_body_too_large_is_413(api):
    def chunks():
        for _ in range(100):
            yield b"x" * 1000

    response = api.call(
        "POST", "/v1/users", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_body_that_is_not_json_typed_is_415(api):
    response = api.call("POST", "/v1/users", data="email=a", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("body", [b"{", b"", b"\xff"])
def test_a_body_that_is_not_json_is_400(api, body):
    response = api.call(
        "POST", "/v1/users", data=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "BAD_REQUEST")


def test_a_json_body_that_is_not_an_object_is_422(api):
    assert_error(api.call("POST", "/v1/users", json=[1, 2]), 422, "VALIDATION_ERROR")


def test_the_clients_request_id_is_echoed_and_a_bad_one_replaced(api):
    kept = api.call("GET", "/health", headers={"X-Request-ID": "trace-123"})
    assert kept.headers["X-Request-ID"] == "trace-123"
    replaced = api.call("GET", "/health", headers={"X-Request-ID": "bad id\t!"})
    assert replaced.headers["X-Request-ID"] != "bad id\t!"
    assert uuid.UUID(replaced.headers["X-Request-ID"])


# --- operations -----------------------------------------------------------------------------


def test_health_and_ready_are_200_when_everything_answers(api):
    assert api.call("GET", "/health").json() == {"service": "gateway", "status": "ok"}
    ready = api.call("GET", "/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"users": "ok", "orders": "ok"}


def test_metrics_count_requests_by_route_template_and_status(api):
    who = api.user()
    api.call("GET", f"/v1/users/{who.id}", who.token)
    api.call("GET", "/no/such/route")
    text = api.call("GET", "/metrics").text
    assert 'gateway_http_requests_total{method="GET",route="/v1/users/<int:user_id>"' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "gateway_http_request_duration_seconds_bucket" in text
    # and the per-entrypoint metrics every service has, in the same scrape
    assert 'entrypoint_calls_total{entrypoint="get_user",outcome="success"' in text


def test_the_openapi_document_lists_every_route(api):
    document = api.call("GET", "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/v1/orders/{order_id}/status" in document["paths"]
