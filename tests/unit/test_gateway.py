"""The gateway's pure parts: error mapping, request reading, settings, OpenAPI."""

import dataclasses
import io
import os
import re
import stat

import pytest
from openapi_spec_validator import validate
from werkzeug import exceptions as http
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway import openapi
from gateway.errors import BadRequest, describe
from gateway.http import client_address, read_json, request_id_from
from gateway.service import GatewayService
from gateway.settings import GatewaySettings, jwt_secret, networks
from shared.exceptions import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from shared.rpc import DependencyTimeout
from shared.settings import ConfigError, load_settings
from tests.helpers import REQUIRED_SETTINGS, settings_problems

# made once with secrets.token_urlsafe(32): what an operator is told to set
STRONG = "q3ZK0vU9bM2xW7hT1yLc8RdNf5aEgJ4sPo6iHkQeVnA"


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (BadRequest("bad"), 400, "BAD_REQUEST"),
        (AuthenticationFailed("no"), 401, "UNAUTHORIZED"),
        (Forbidden("no"), 403, "FORBIDDEN"),
        (NotFound("gone"), 404, "NOT_FOUND"),
        (Conflict("taken"), 409, "CONFLICT"),
        (InvalidInput("bad", {"email": ["x"]}), 422, "VALIDATION_ERROR"),
        (TooManyRequests("slow down", {"retry_after": 30}), 429, "TOO_MANY_REQUESTS"),
        (Unavailable("down"), 503, "UNAVAILABLE"),
        (DependencyTimeout("slow"), 504, "TIMEOUT"),
        (http.NotFound(), 404, "NOT_FOUND"),
        (http.MethodNotAllowed(["GET"]), 405, "METHOD_NOT_ALLOWED"),
        (http.RequestEntityTooLarge(), 413, "PAYLOAD_TOO_LARGE"),
        (http.UnsupportedMediaType(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (http.BadRequest(), 400, "BAD_REQUEST"),
        (http.ImATeapot(), 418, "I'M_A_TEAPOT"),
    ],
)
def test_each_failure_maps_to_its_status_and_code(exc, status, code):
    assert describe(exc)[:2] == (status, code)


def test_an_unexpected_exception_is_a_500_that_says_nothing_of_its_cause():
    assert describe(KeyError("secret internals")) == (
        500,
        "INTERNAL_ERROR",
        "internal error",
        None,
        {},
    )


def test_field_errors_travel_in_details():
    assert describe(InvalidInput("bad", {"email": ["Not an email."]}))[3] == {
        "email": ["Not an email."]
    }


def test_a_none_details_that_crossed_rpc_as_text_is_none_again():
    assert describe(NotFound("gone", "None"))[3] is None


def test_a_405_says_which_methods_are_allowed():
    assert describe(http.MethodNotAllowed(["GET", "HEAD"]))[4] == {"Allow": "GET, HEAD"}


def test_a_429_says_when_to_retry_and_a_401_which_scheme():
    assert describe(TooManyRequests("slow", {"retry_after": 42}))[4] == {"Retry-After": "42"}
    assert describe(AuthenticationFailed("no"))[4] == {"WWW-Authenticate": "Bearer"}


def request(body=b"", content_type="application/json", **kwargs):
    builder = EnvironBuilder(method="POST", data=body, content_type=content_type, **kwargs)
    return Request(builder.get_environ())


def test_read_json_reads_a_json_object():
    assert read_json(request(b'{"a": 1}')) == {"a": 1}


def test_read_json_accepts_a_json_suffix_type_and_a_charset():
    assert read_json(request(b"[1]", "application/problem+json; charset=utf-8")) == [1]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_read_json_refuses_other_content_types(content_type):
    with pytest.raises(http.UnsupportedMediaType):
        read_json(request(b'{"a": 1}', content_type))


@pytest.mark.parametrize("body", [b"", b"  ", b"{", b"\xff\xfe", b"[" * 100_000])
def test_read_json_calls_unreadable_bodies_bad_requests(body):
    with pytest.raises(BadRequest):
        read_json(request(body), max_bytes=1_000_000)


def test_read_json_refuses_a_body_over_the_limit_by_its_declared_length():
    with pytest.raises(http.RequestEntityTooLarge):
        read_json(request(b"[" + b"1," * 100 + b"1]"), max_bytes=100)


def test_read_json_reads_at_most_one_byte_past_the_limit_of_an_undeclared_length():
    stream = io.BytesIO(b"x" * 10_000)
    environ = EnvironBuilder(method="POST", content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = stream
    with pytest.raises(http.RequestEntityTooLarge):
        read_json(Request(environ), max_bytes=100)
    assert stream.tell() == 101


@pytest.mark.parametrize("sent", ["abc-123", "0f4c.trace:1_x", "A" * 128])
def test_a_sane_client_request_id_is_kept(sent):
    assert request_id_from({"HTTP_X_REQUEST_ID": sent}) == sent


@pytest.mark.parametrize("sent", ["", "A" * 129, "has space", "new\nline", "<script>", "-lead"])
def test_an_insane_client_request_id_is_replaced_by_a_uuid(sent):
    replaced = request_id_from({"HTTP_X_REQUEST_ID": sent})
    assert replaced != sent and re.fullmatch(r"[0-9a-f-]{36}", replaced)


def gateway_problems(config):
    return settings_problems(GatewaySettings, config, "gateway")


def gateway_settings(config):
    return load_settings(GatewaySettings, {**REQUIRED_SETTINGS, **config}, "gateway")


def test_a_weak_secret_refuses_to_start_outside_development_saying_what_to_set():
    for secret in (None, "", "short"):
        problems = gateway_problems({"ENVIRONMENT": "production", "JWT_SECRET": secret})
        assert len(problems) == 1 and "set JWT_SECRET" in problems[0]
    with pytest.raises(ConfigError, match="set JWT_SECRET"):
        gateway_settings({"ENVIRONMENT": "production"})
    # settings made without the checks cannot sign with a missing secret either
    unchecked = dataclasses.replace(gateway_settings({}), environment="production")
    with pytest.raises(ConfigError, match="set JWT_SECRET"):
        jwt_secret(unchecked)


def test_a_strong_secret_is_used_as_it_is():
    assert gateway_problems({"ENVIRONMENT": "production", "JWT_SECRET": STRONG}) == []
    assert (
        jwt_secret(gateway_settings({"ENVIRONMENT": "production", "JWT_SECRET": STRONG})) == STRONG
    )


def test_a_short_secret_is_refused_in_development_too():
    assert gateway_problems({"ENVIRONMENT": "development", "JWT_SECRET": "short"})


def test_development_without_a_secret_generates_one_that_survives_a_restart(tmp_path, caplog):
    path = tmp_path / "var" / "jwt_secret"
    config = {"ENVIRONMENT": "development", "JWT_SECRET_FILE": str(path)}
    assert gateway_problems(config) == []
    first = jwt_secret(gateway_settings(config))
    assert len(first.encode()) >= 32
    assert jwt_secret(gateway_settings(config)) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "JWT_SECRET is not set" in caplog.text


@pytest.mark.parametrize("key", ["ACCESS_TOKEN_MINUTES", "REFRESH_TOKEN_DAYS", "MAX_BODY_BYTES"])
def test_lifetimes_and_limits_must_be_positive_numbers(key):
    assert gateway_problems({"JWT_SECRET": STRONG, key: 0})


def test_the_openapi_document_is_valid_openapi_3():
    validate(openapi.document())


def service_routes():
    """(method, OpenAPI path) of every route the gateway serves."""
    found = set()
    for attribute in vars(GatewayService).values():
        for entrypoint in getattr(attribute, "nameko_entrypoints", ()):
            if hasattr(entrypoint, "url"):
                path = re.sub(r"<(?:[^:>]+:)?([a-z_]+)>", r"{\1}", entrypoint.url)
                found |= {(method.lower(), path) for method in entrypoint.method.split(",")}
    return found


def test_every_route_of_the_service_is_in_the_document_and_nothing_else():
    paths = openapi.document()["paths"]
    documented = {(method, path) for path, ops in paths.items() for method in ops}
    assert documented == service_routes()
    assert CONTRACT_ROUTES <= documented  # DESIGN.md's table, at least


# DESIGN.md's HTTP API table
CONTRACT_ROUTES = {
    ("post", "/v1/users"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/refresh"),
    ("get", "/v1/users/me"),
    ("get", "/v1/users/{user_id}"),
    ("get", "/v1/users"),
    ("patch", "/v1/users/{user_id}"),
    ("delete", "/v1/users/{user_id}"),
    ("post", "/v1/orders"),
    ("get", "/v1/orders/{order_id}"),
    ("get", "/v1/orders"),
    ("post", "/v1/orders/{order_id}/cancel"),
    ("post", "/v1/orders/{order_id}/status"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
}


def test_every_operation_documents_the_error_shape_and_authenticated_ones_the_bearer_scheme():
    document = openapi.document()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses["default"]["content"]["application/json"]["schema"] == error
            if operation["security"]:
                assert "401" in responses, (method, path)


def test_the_document_uses_the_shared_contracts():
    schemas = openapi.document()["components"]["schemas"]
    assert {"User", "UserCreate", "Order", "OrderCreate", "Item", "Error"} <= set(schemas)
    assert "password" not in schemas["User"]["properties"]
    assert schemas["Item"]["properties"]["unit_price"]["type"] == "string"


# --- the client address, for login throttling --------------------------------------------------


def request_from(peer, forwarded=None):
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    environ = EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": peer}).get_environ()
    return Request(environ)


PROXIES = networks("10.0.0.0/8, 127.0.0.1")


def test_without_trusted_proxies_the_socket_peer_is_the_client():
    assert client_address(request_from("203.0.113.5", "198.51.100.1"), ()) == "203.0.113.5"


def test_an_untrusted_peer_cannot_claim_another_address():
    assert client_address(request_from("203.0.113.5", "198.51.100.1"), PROXIES) == "203.0.113.5"


def test_behind_trusted_proxies_the_rightmost_untrusted_forwarded_address_is_the_client():
    # the client wrote the left-most entry itself: only what our proxies appended counts
    request = request_from("127.0.0.1", "1.2.3.4, 198.51.100.7, 10.1.2.3")
    assert client_address(request, PROXIES) == "198.51.100.7"


@pytest.mark.parametrize("forwarded", ["", "not-an-address", "\xed\xa0\x80", "10.0.0.1"])
def test_a_useless_forwarded_header_falls_back_on_the_peer(forwarded):
    assert client_address(request_from("127.0.0.1", forwarded), PROXIES) == "127.0.0.1"


def test_bad_trusted_proxies_refuse_to_start_saying_what_to_set():
    problems = gateway_problems({"JWT_SECRET": STRONG, "TRUSTED_PROXIES": "10.0.0.0/33"})
    assert len(problems) == 1 and "set TRUSTED_PROXIES" in problems[0]


def test_every_field_error_of_a_body_comes_at_once_in_one_nested_shape():
    from gateway.http import UNSTORABLE_MESSAGE, load_body
    from orders.schemas import OrderCreateSchema
    from users.schemas import UserCreateSchema

    with pytest.raises(InvalidInput) as refused:
        load_body(UserCreateSchema, {"email": "not-an-email", "name": "a\x00", "password": "x"})
    details = refused.value.details
    assert set(details) == {"email", "name", "password"}
    assert UNSTORABLE_MESSAGE in details["name"]
    body = {"items": [{"sku": "ok", "quantity": 0, "unit_price": "1.00"}, {"sku": "\ud800"}]}
    with pytest.raises(InvalidInput) as refused:
        load_body(OrderCreateSchema, body)
    items = refused.value.details["items"]
    assert set(items) == {"0", "1"}  # JSON's keys, as the client reads them
    assert "quantity" in items["0"]
    assert UNSTORABLE_MESSAGE in items["1"]["sku"]
    assert {"quantity", "unit_price"} <= set(items["1"])  # missing fields, reported too
