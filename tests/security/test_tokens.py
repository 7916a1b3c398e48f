"""The token matrix in one place: every forged, stale or misused token on every protected route.

The unit tests (tests/unit/test_tokens.py) prove ``shared.tokens.decode`` refuses
each kind of bad token; tests/integration/test_gateway.py tries some of them on
one route. Here each attack meets every route that needs a token, on the real
processes, and must be a 401 in the error shape, never anything else: a route
that forgot its check, or checked a token differently, shows here.
"""

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from shared import tokens
from tests.security.stack import JWT_SECRET

pytestmark = pytest.mark.integration

ITEMS = [{"sku": "SEC-1", "quantity": 1, "unit_price": "5.00"}]


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def claims_for(user_id, role="user", kind=tokens.ACCESS, **changes):
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": role,
        "type": kind,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=15)).timestamp()),
        "jti": "forged-jti",
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


def attacks(victim_id, real_token, refresh_token):
    """Every way a caller may try to get in with a token that is not a valid access token."""
    head, body, signature = real_token.split(".")
    admin_claims = claims_for(victim_id, role="admin")
    past = datetime.now(UTC) - timedelta(hours=1)
    return {
        "tampered signature": f"{head}.{body}.{signature[:-4]}AAAA",
        "payload changed to admin, old signature": f"{head}.{b64(admin_claims)}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(admin_claims)}.",
        "alg none with a signature": (
            f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(admin_claims)}.{signature}"
        ),
        "wrong key": jwt.encode(admin_claims, "another-secret-that-is-long-enough-0123456789"),
        "HS512 with the right key": jwt.encode(admin_claims, JWT_SECRET, algorithm="HS512"),
        "expired": jwt.encode(
            claims_for(victim_id, exp=int(past.timestamp()), iat=int(past.timestamp()) - 900),
            JWT_SECRET,
        ),
        "refresh token as access": refresh_token,
        "wrong type": jwt.encode(claims_for(victim_id, kind="id"), JWT_SECRET),
        "no exp": jwt.encode(claims_for(victim_id, exp=None), JWT_SECRET),
        "no sub": jwt.encode(claims_for(victim_id, sub=None), JWT_SECRET),
        "sub not a user id": jwt.encode(claims_for("1 OR 1=1"), JWT_SECRET),
        "issued in the future": jwt.encode(
            claims_for(victim_id, iat=int(datetime.now(UTC).timestamp()) + 3600), JWT_SECRET
        ),
        "empty": "",
        "garbage": "not.a.token",
        "three dots": "...",
    }


def protected_routes(user_id, order_id):
    """Every route that needs an access token, with a body where it takes one."""
    return [
        ("GET", "/v1/users/me", None),
        ("GET", f"/v1/users/{user_id}", None),
        ("GET", "/v1/users", None),
        ("PATCH", f"/v1/users/{user_id}", {"name": "Mallory"}),
        ("DELETE", f"/v1/users/{user_id}", None),
        ("POST", "/v1/orders", {"items": ITEMS}),
        ("GET", f"/v1/orders/{order_id}", None),
        ("GET", "/v1/orders", None),
        ("POST", f"/v1/orders/{order_id}/cancel", None),
        ("POST", f"/v1/orders/{order_id}/status", {"status": "paid"}),
    ]


def assert_unauthorized(response, what):
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["error"] == "UNAUTHORIZED", what
    assert set(body) == {"error", "message", "details", "request_id"}, what
    assert response.headers["WWW-Authenticate"] == "Bearer", what


@pytest.fixture(scope="module")
def victim(stack):
    user, pair = stack.user()
    order = stack.call("POST", "/v1/orders", pair["access_token"], json={"items": ITEMS}).json()
    return user, pair, order


def test_every_bad_access_token_is_401_on_every_protected_route(stack, victim):
    user, pair, order = victim
    for name, token in attacks(user["id"], pair["access_token"], pair["refresh_token"]).items():
        for method, path, body in protected_routes(user["id"], order["id"]):
            headers = {"Authorization": f"Bearer {token}"}
            response = stack.call(method, path, headers=headers, json=body)
            assert_unauthorized(response, f"{name}: {method} {path}")
    # nothing the attacks tried took effect
    assert stack.call("GET", "/v1/users/me", pair["access_token"]).json()["name"] == "Ann"
    mine = stack.call("GET", f"/v1/orders/{order['id']}", pair["access_token"]).json()
    assert mine["status"] == "pending"


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b c", "bearer\x7f"],
)
def test_a_malformed_authorization_header_is_401(stack, victim, header):
    response = stack.call("GET", "/v1/users/me", headers={"Authorization": header})
    assert_unauthorized(response, repr(header))


def test_a_refresh_token_works_once_and_its_reuse_revokes_the_successor(stack):
    _, pair = stack.user()
    first = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert first.status_code == 200, first.text
    again = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_unauthorized(again, "reused refresh token")
    successor = first.json()["refresh_token"]
    after = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": successor})
    assert_unauthorized(after, "successor of a reused refresh token")


def test_forged_refresh_tokens_are_401(stack):
    user, pair = stack.user()
    head, body, signature = pair["refresh_token"].split(".")
    claims = tokens.decode(JWT_SECRET, pair["refresh_token"], tokens.REFRESH)
    forged = {
        "access token as refresh": pair["access_token"],
        "tampered signature": f"{head}.{body}.{signature[:-4]}AAAA",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "wrong key": jwt.encode(claims, "another-secret-that-is-long-enough-0123456789"),
        "right key, unknown jti": jwt.encode({**claims, "jti": "never-issued"}, JWT_SECRET),
        "expired": jwt.encode({**claims, "exp": claims["iat"] - 1}, JWT_SECRET),
    }
    for name, token in forged.items():
        response = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": token})
        assert_unauthorized(response, name)
    # the real one still works: none of the above spent it
    response = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 200, response.text


def test_a_deleted_users_access_and_refresh_tokens_are_401_everywhere(stack):
    user, pair = stack.user()
    order = stack.call("POST", "/v1/orders", pair["access_token"], json={"items": ITEMS}).json()
    assert stack.call("DELETE", f"/v1/users/{user['id']}", pair["access_token"]).status_code == 204
    for method, path, body in protected_routes(user["id"], order["id"]):
        response = stack.call(method, path, pair["access_token"], json=body)
        assert_unauthorized(response, f"deleted user: {method} {path}")
    response = stack.call("POST", "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_unauthorized(response, "deleted user's refresh token")
    response = stack.call("POST", "/v1/auth/token", json={"email": user["email"], "password": "x"})
    assert response.status_code == 401


def test_a_valid_token_of_a_user_that_never_existed_is_401(stack):
    token = jwt.encode(claims_for(2**62), JWT_SECRET)
    assert_unauthorized(stack.call("GET", "/v1/users/me", token), "never-existing user")
