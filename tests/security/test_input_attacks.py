"""Hostile input on the real processes (PostgreSQL): stored and returned verbatim, or refused.

SQL injection and odd Unicode in every string field, oversized bodies, absurd
query parameters and ids. The promise: what the contract allows comes back
exactly as sent; what it forbids is a 4xx in the error shape; nothing is ever a
5xx, and nothing runs as SQL.
"""

import json
import uuid

import pytest

from gateway.http import UNSTORABLE_MESSAGE
from tests.security.stack import PASSWORD

pytestmark = pytest.mark.integration

INJECTIONS = [
    "'; DROP TABLE users; --",
    '" OR "1"="1',
    "' OR '1'='1' --",
    "Robert'); DELETE FROM orders;--",
    "%' UNION SELECT password_hash FROM users --",
    "\\'; SELECT pg_sleep(10); --",
]
# format characters (category Cf): allowed in names and passwords, not "printable" for a sku
FORMATTING = [
    "\u202eevil text\u202c",  # right-to-left override
    "\u200fRTL mark\u200f",
    "emoji \U0001f600\U0001f469\u200d\U0001f4bb",  # with a zero-width joiner
    "\ufeffBOM first",
]
PRINTABLE_UNICODE = [
    "emoji \U0001f600\U0001f4a9",
    "e\u0301\u0301\u0301 combining",
    "Z\u0351\u0360\u0361a\u0310\u0311lgo",
    "\u4e2d\u6587 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\U0001d54f\U0001d560\U0001d55d" * 3,  # outside the BMP
]
UNICODE = FORMATTING + PRINTABLE_UNICODE
# what the contract refuses in a name or sku: control characters, NUL among them
CONTROL = ["nul\x00inside", "bell\x07", "newline\nin", "\x1b[31mansi"]


def error_shape(response):
    body = response.json()
    assert set(body) == {"error", "message", "details", "request_id"}, body
    assert "Traceback" not in response.text
    return body


def assert_not_5xx(response, what):
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"


@pytest.fixture(scope="module")
def me(stack):
    user, pair = stack.user()
    return user, pair["access_token"]


@pytest.mark.parametrize("name", INJECTIONS + UNICODE + ["x" * 100])
def test_a_name_comes_back_verbatim_from_registration_and_update(stack, me, name):
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    response = stack.call(
        "POST", "/v1/users", json={"email": email, "name": name, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    user, token = me
    response = stack.call("PATCH", f"/v1/users/{user['id']}", token, json={"name": name})
    assert response.status_code == 200, response.text
    assert stack.call("GET", "/v1/users/me", token).json()["name"] == name


@pytest.mark.parametrize("name", CONTROL + ["x" * 101, ""])
def test_a_name_the_contract_forbids_is_422(stack, name):
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    response = stack.call(
        "POST", "/v1/users", json={"email": email, "name": name, "password": PASSWORD}
    )
    assert response.status_code == 422, response.text
    assert "name" in error_shape(response)["details"]


@pytest.mark.parametrize("local", ["o'brien", "x'--", "a+b%c", '"quoted"', "a.b-c_d", "x" * 64])
def test_an_odd_but_valid_email_local_part_is_stored_lower_cased_and_logs_in(stack, local):
    email = f"{local}@{uuid.uuid4().hex[:8]}.example.com"
    response = stack.call(
        "POST", "/v1/users", json={"email": email, "name": "Odd", "password": PASSWORD}
    )
    assert_not_5xx(response, email)
    if response.status_code == 201:
        assert response.json()["email"] == email.lower()
        assert stack.login(email)["token_type"] == "bearer"
    else:
        assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "email",
    [
        "nul\x00@example.com",
        "'; DROP TABLE users; --@example.com",
        "\u202e@example.com",
        "x" * 250 + "@example.com",
        "a@b",
    ],
)
def test_a_hostile_email_is_refused_at_registration_and_login(stack, email):
    response = stack.call(
        "POST", "/v1/users", json={"email": email, "name": "Odd", "password": PASSWORD}
    )
    assert response.status_code == 422, response.text
    response = stack.call("POST", "/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status_code in (401, 422), response.text
    error_shape(response)


def test_a_nul_anywhere_in_a_body_is_422_naming_where_before_any_service_sees_it(stack):
    # regression: a login with NUL in the email reached PostgreSQL, which refused it: a 500
    response = stack.call(
        "POST", "/v1/auth/token", json={"email": "a\x00@example.com", "password": PASSWORD}
    )
    assert response.status_code == 422, response.text
    details = error_shape(response)["details"]
    assert set(details) == {"email"} and UNSTORABLE_MESSAGE in details["email"]


@pytest.mark.parametrize("password", INJECTIONS + UNICODE + ["p" * 128, "\U0001f600" * 8])
def test_a_password_is_taken_verbatim(stack, password):
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    response = stack.call(
        "POST", "/v1/users", json={"email": email, "name": "Pw", "password": password}
    )
    assert response.status_code == 201, response.text
    assert stack.login(email, password)["token_type"] == "bearer"
    wrong = stack.call(
        "POST", "/v1/auth/token", json={"email": email, "password": password[:-1] + "x"}
    )
    assert wrong.status_code == 401


@pytest.mark.parametrize("password", ["p" * 129, "short", "nul\x00in the password"])
def test_a_password_outside_the_limits_is_422(stack, password):
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    response = stack.call(
        "POST", "/v1/users", json={"email": email, "name": "Pw", "password": password}
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("sku", INJECTIONS + PRINTABLE_UNICODE + ["S" * 64])
def test_a_sku_comes_back_verbatim(stack, me, sku):
    _, token = me
    items = [{"sku": sku, "quantity": 1, "unit_price": "1.00"}]
    response = stack.call("POST", "/v1/orders", token, json={"items": items})
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["items"][0]["sku"] == sku
    assert stack.call("GET", f"/v1/orders/{order['id']}", token).json()["items"][0]["sku"] == sku


@pytest.mark.parametrize("sku", CONTROL + FORMATTING + ["S" * 65, "", "   "])
def test_a_sku_the_contract_forbids_is_422(stack, me, sku):
    _, token = me
    items = [{"sku": sku, "quantity": 1, "unit_price": "1.00"}]
    response = stack.call("POST", "/v1/orders", token, json={"items": items})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("key", INJECTIONS + ["K" * 255, "key with spaces", "\u00e9t\u00e9"])
def test_an_idempotency_key_is_kept_verbatim(stack, me, key):
    _, token = me
    headers = {"Idempotency-Key": key.encode("utf-8") if not key.isascii() else key}
    items = [{"sku": "IDEM", "quantity": 1, "unit_price": "1.00"}]
    first = stack.call("POST", "/v1/orders", token, json={"items": items}, headers=dict(headers))
    assert_not_5xx(first, repr(key))
    if first.status_code == 400:  # a header that is not printable text once decoded
        return
    assert first.status_code == 201, first.text
    again = stack.call("POST", "/v1/orders", token, json={"items": items}, headers=dict(headers))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # a key one character different is another order: the key was not mangled
    other = stack.call(
        "POST",
        "/v1/orders",
        token,
        json={"items": items},
        headers={"Idempotency-Key": headers["Idempotency-Key"][:-1]},
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("key", ["K" * 256, "", "tab\tkey"])
def test_an_idempotency_key_the_contract_forbids_is_400(stack, me, key):
    _, token = me
    items = [{"sku": "IDEM", "quantity": 1, "unit_price": "1.00"}]
    headers = {"Idempotency-Key": key}
    response = stack.call("POST", "/v1/orders", token, json={"items": items}, headers=headers)
    assert response.status_code == 400, response.text


def test_the_injections_ran_nothing(stack, me):
    user, token = me
    assert stack.call("GET", "/v1/users/me", token).status_code == 200
    assert stack.call("GET", "/v1/orders", token).status_code == 200


# --- sizes and numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/users"),
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/refresh"),
        ("POST", "/v1/orders"),
        ("PATCH", "/v1/users/1"),
        ("POST", "/v1/orders/1/status"),
    ],
)
def test_an_oversized_body_is_413_on_every_route_that_takes_one(stack, me, method, path):
    _, token = me
    body = json.dumps({"name": "x" * 70_000})
    headers = {"Content-Type": "application/json"}
    response = stack.call(method, path, token, data=body, headers=headers)
    assert response.status_code == 413, response.text
    assert error_shape(response)["error"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"items": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"items": [' + ",".join(['{"sku":"A","quantity":1,"unit_price":"1.00"}'] * 101) + "]}",
        '{"items": [{"sku": "A", "quantity": 1e400, "unit_price": "1.00"}]}',
        '{"items": [{"sku": "A", "quantity": 1, "unit_price": 1e400}]}',
        '{"items": [{"sku": "A", "quantity": 99999999999999999999999, "unit_price": "1"}]}',
        '{"items": [{"sku": "A", "quantity": 1, "unit_price": "NaN"}]}',
        '{"items": [{"sku": "A", "quantity": 1, "unit_price": NaN}]}',
        '{"items": [{"sku": "A", "quantity": 1, "unit_price": "1000000.01"}]}',
        # found by schemathesis: more digits than decimal's 28 was a 500
        '{"items": [{"sku": "A", "quantity": 1, "unit_price": "999999999999999999999999999999"}]}',
        '{"items": [{"sku": "A", "quantity": -1, "unit_price": "1.00"}]}',
        '{"items": {"sku": "A"}}',
        '{"items": null}',
        "\ud800",
    ],
)
def test_a_malicious_order_body_is_a_4xx(stack, me, body):
    _, token = me
    headers = {"Content-Type": "application/json"}
    response = stack.call(
        "POST", "/v1/orders", token, data=body.encode("utf-8", "surrogatepass"), headers=headers
    )
    assert 400 <= response.status_code < 500, response.text
    error_shape(response)


@pytest.mark.parametrize(
    "query",
    [
        "limit=100000000000000000000000000000",
        "limit=-1",
        "limit=0",
        "limit=abc",
        "limit=1e3",
        "limit=%00",
        "cursor=%00",
        "cursor=" + "A" * 201,
        "cursor=';DROP TABLE orders;--",
        "cursor=%F0%9F%98%80",
        "status=';DROP",
        "user_id=-5",
        "user_id=99999999999999999999999",
        "user_id=abc",
        "unknown=1",
    ],
)
def test_absurd_query_parameters_are_400(stack, me, query):
    _, token = me
    response = stack.call("GET", f"/v1/orders?{query}", token)
    assert response.status_code in (400, 403), response.text
    error_shape(response)


@pytest.mark.parametrize(
    "order_id",
    [
        "-1",
        "0",
        "abc",
        "1.5",
        "2147483648",  # one past what the Integer id columns hold
        "9223372036854775808",
        "99999999999999999999999999",
        "%00",
        "1;2",
    ],
)
def test_a_negative_non_numeric_or_out_of_range_id_is_404(stack, me, order_id):
    user, token = me
    for path in (
        f"/v1/orders/{order_id}",
        f"/v1/orders/{order_id}/cancel",
        f"/v1/users/{order_id}",
    ):
        method = "POST" if path.endswith("cancel") else "GET"
        response = stack.call(method, path, token)
        assert response.status_code == 404, f"{path}: {response.text}"
        error_shape(response)
