"""A lone surrogate anywhere a client can put text is a 4xx, never a 500.

JSON's ``\\uXXXX`` escapes can carry half of a surrogate pair, which Python
decodes into a ``str`` that UTF-8 cannot encode: before the gateway refused it,
such a name or password failed deep in a service (the database, the password
hash) as a 500 with a traceback, an unauthenticated way to trip the 5xx alert.
Every string field of every route is tried, in bodies, query strings, headers
and paths, on the real processes over PostgreSQL.
"""

import json

import pytest

from tests.security.stack import PASSWORD

pytestmark = pytest.mark.integration

LONE = "a\ud800b"
# the UTF-8-style bytes of a surrogate, as a client can put them in a URL or a header
LONE_BYTES = b"a\xed\xa0\x80b"
LONE_PERCENT = "a%ED%A0%80b"


def assert_refused(response, what):
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text}"
    body = response.json()
    assert set(body) == {"error", "message", "details", "request_id"}, what
    assert "Traceback" not in response.text


def send_json(stack, method, path, body, token=None, headers=None):
    # json.dumps escapes the lone surrogate as \ud800, exactly as a client would send it
    headers = {"Content-Type": "application/json", **(headers or {})}
    return stack.call(method, path, token, data=json.dumps(body), headers=headers)


@pytest.fixture(scope="module")
def people(stack):
    user, pair = stack.user()
    _, admin = stack.admin()
    order = stack.call(
        "POST",
        "/v1/orders",
        pair["access_token"],
        json={"items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": "1.00"}]},
    ).json()
    return {"user": user, "pair": pair, "admin": admin["access_token"], "order": order}


def bodies(people):
    """Every route with a JSON body, and a valid body for it: ``(method, path, body, token)``."""
    user, token = people["user"], people["pair"]["access_token"]
    item = {"sku": "BOOK-1", "quantity": 1, "unit_price": "1.00"}
    return [
        ("POST", "/v1/users", {"email": "x@example.com", "name": "X", "password": PASSWORD}, None),
        ("POST", "/v1/auth/token", {"email": user["email"], "password": PASSWORD}, None),
        ("POST", "/v1/auth/refresh", {"refresh_token": people["pair"]["refresh_token"]}, None),
        (
            "PATCH",
            f"/v1/users/{user['id']}",
            {"name": "Ann", "password": PASSWORD + "!", "current_password": PASSWORD},
            token,
        ),
        ("PATCH", f"/v1/users/{user['id']}", {"role": "user"}, people["admin"]),
        ("POST", "/v1/orders", {"items": [item]}, token),
        ("POST", f"/v1/orders/{people['order']['id']}/status", {"status": "paid"}, people["admin"]),
    ]


def string_paths(body, prefix=()):
    """Paths of every string in ``body`` (and of every key)."""
    for key, value in body.items():
        yield (*prefix, key), "key"
        if isinstance(value, str):
            yield (*prefix, key), "value"
        elif isinstance(value, dict):
            yield from string_paths(value, (*prefix, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield from string_paths(item, (*prefix, key, index))


def poisoned(body, path, where):
    copy = json.loads(json.dumps(body))
    node = copy
    for step in path[:-1]:
        node = node[step]
    last = path[-1]
    if where == "key":
        node[f"{last}{LONE}"] = node.pop(last)
    else:
        node[last] = node[last][:1] + LONE
    return copy


def test_every_string_of_every_body_with_a_lone_surrogate_is_a_4xx(stack, people):
    tried = 0
    for method, path, body, token in bodies(people):
        for field, where in string_paths(body):
            response = send_json(stack, method, path, poisoned(body, field, where), token)
            assert_refused(response, f"{method} {path} {field} ({where})")
            tried += 1
    assert tried >= 25  # every field above, as a value and as a key


def test_a_lone_surrogate_as_the_whole_body_or_in_a_list_is_a_4xx(stack, people):
    token = people["pair"]["access_token"]
    assert_refused(send_json(stack, "POST", "/v1/auth/token", LONE), "a string body")
    assert_refused(send_json(stack, "POST", "/v1/orders", {"items": [LONE]}, token), "in a list")


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/users?cursor={LONE_PERCENT}",
        f"/v1/users?limit={LONE_PERCENT}",
        f"/v1/orders?cursor={LONE_PERCENT}",
        f"/v1/orders?status={LONE_PERCENT}",
        f"/v1/orders?user_id={LONE_PERCENT}",
        f"/v1/orders?limit={LONE_PERCENT}",
        f"/v1/users/{LONE_PERCENT}",
        f"/v1/orders/{LONE_PERCENT}",
        f"/v1/{LONE_PERCENT}",
    ],
)
def test_a_lone_surrogate_in_a_query_or_a_path_is_a_4xx(stack, people, path):
    assert_refused(stack.call("GET", path, people["admin"]), path)


@pytest.mark.parametrize("header", ["Idempotency-Key", "Authorization", "X-Request-ID"])
def test_a_lone_surrogate_in_a_header_is_handled(stack, people, header):
    token = people["pair"]["access_token"]
    headers = {header: LONE_BYTES}
    if header == "Authorization":
        headers[header] = b"Bearer " + LONE_BYTES
        token = None
    response = stack.call(
        "POST",
        "/v1/orders",
        token,
        json={"items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": "1.00"}]},
        headers=headers,
    )
    if header == "X-Request-ID":  # not the client's to break: replaced by a fresh id
        assert response.status_code == 201, response.text
        assert response.headers["X-Request-ID"] != LONE_BYTES.decode("latin-1")
    else:
        assert_refused(response, header)


def test_a_lone_surrogate_in_x_forwarded_for_is_ignored(stack, people):
    body = {"email": people["user"]["email"], "password": "wrong password"}
    response = stack.call(
        "POST", "/v1/auth/token", json=body, headers={"X-Forwarded-For": LONE_BYTES}
    )
    assert_refused(response, "X-Forwarded-For")
    assert response.status_code == 401
