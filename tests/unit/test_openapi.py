"""The OpenAPI document states what the server enforces, and /docs serves its own assets."""

import re

import pytest
from marshmallow import ValidationError
from werkzeug import exceptions as http
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway import docs, openapi
from orders.schemas import ItemSchema
from shared.schemas import instance_of
from users.schemas import CredentialsSchema, UserCreateSchema, UserUpdateSchema

DOCUMENT = openapi.document()
SCHEMAS = DOCUMENT["components"]["schemas"]


def operations():
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def accepts(schema_class, data, name):
    """Whether the server's schema accepts ``data`` as far as field ``name`` goes."""
    try:
        instance_of(schema_class).load(data)
    except ValidationError as error:
        return name not in error.messages
    return True


def matches(pattern, value):
    return re.search(pattern, value) is not None


ITEM = {"sku": "A-1", "quantity": 1}
PRICES = [
    "0.01", "0.1", "0.10", "1", "19.99", "19.9", "007.50", "999999.99", "1000000", "1000000.0",
    "1000000.00", "0", "0.00", "0.001", "1000000.01", "1000001", "9999999", "1.", ".5", "-1",
    "+1", "1e3", "1,00", " 1", "1 ", "NaN", "", "0" * 31 + "1", "0" * 32 + "1",
]  # fmt: skip


@pytest.mark.parametrize("price", PRICES)
def test_the_unit_price_pattern_is_exactly_what_the_server_accepts(price):
    schema = SCHEMAS["Item"]["properties"]["unit_price"]
    documented = matches(schema["pattern"], price) and len(price) <= schema["maxLength"]
    assert documented == accepts(ItemSchema, {**ITEM, "unit_price": price}, "unit_price")


NAMES = [
    "Ann",
    " Ann ",
    "a\x85",
    "a\x85b",
    "\x1fa ",
    "a" * 100,
    "a" * 101,
    " " + "a" * 100 + "\n",
    "A\u00e9\u4e2d",
    "",
    "   ",
    "a\nb",
    "a\x7f",
    "a\x85",
    "\tAnn",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_name_pattern_is_what_the_server_accepts(name):
    schema = SCHEMAS["UserCreate"]["properties"]["name"]
    documented = matches(schema["pattern"], name)
    body = {"email": "ann@example.com", "name": name, "password": "long enough"}
    assert documented == accepts(UserCreateSchema, body, "name")


@pytest.mark.parametrize("email", ["ann@example.com", "a\x00b", "a\tb@example.com", "x"])
def test_the_login_email_pattern_is_what_the_server_accepts(email):
    schema = SCHEMAS["Credentials"]["properties"]["email"]
    documented = matches(schema["pattern"], email)
    assert documented == accepts(CredentialsSchema, {"email": email, "password": "p"}, "email")


@pytest.mark.parametrize("sku", ["A-1", " A ", "~", " ", "a\tb", "a\x00"])
def test_a_sku_the_document_allows_is_accepted(sku):
    schema = SCHEMAS["Item"]["properties"]["sku"]
    if matches(schema["pattern"], sku):
        assert accepts(ItemSchema, {**ITEM, "sku": sku, "unit_price": "1.00"}, "sku")
    else:
        assert not accepts(ItemSchema, {**ITEM, "sku": sku, "unit_price": "1.00"}, "sku")


def test_a_patch_needs_something_to_change_as_the_server_does():
    rules = SCHEMAS["UserUpdate"]
    assert rules["minProperties"] == 1
    assert not accepts(UserUpdateSchema, {}, "_schema")
    assert "current_password` only with a new password" in rules["description"]


def test_the_decimal_pattern_refuses_ranges_it_cannot_state():
    with pytest.raises(ValueError):
        openapi.decimal_pattern("1", "500")


def test_enums_hold_no_null_and_no_duplicates_and_query_parameters_are_never_null():
    def walk(node):
        if isinstance(node, dict):
            if "enum" in node:
                assert None not in node["enum"]
                assert len(node["enum"]) == len(set(node["enum"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOCUMENT)
    for _, _, operation in operations():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query":
                assert "nullable" not in parameter["schema"]
                assert parameter["schema"].get("default", "") is not None


def test_every_response_documents_the_request_id_header():
    for method, path, operation in operations():
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], (method, path, status)


def test_placing_an_order_answers_201_or_200_for_a_replay_both_with_the_order():
    responses = DOCUMENT["paths"]["/v1/orders"]["post"]["responses"]
    order = {"$ref": "#/components/schemas/Order"}
    for status in ("201", "200"):
        assert responses[status]["content"]["application/json"]["schema"] == order
    assert "IDEMPOTENCY_KEY_REUSED" in responses["422"]["description"]
    assert "409" not in responses


def test_statuses_follow_what_a_route_reads():
    paths = DOCUMENT["paths"]
    login = paths["/v1/auth/token"]["post"]["responses"]
    assert "Retry-After" in login["429"]["headers"]
    assert {"400", "401", "413", "415", "422", "429", "503", "504"} <= set(login)
    assert "403" not in login
    health = paths["/health"]["get"]["responses"]
    assert set(health) == {"200", "413", "default"}
    assert set(paths["/ready"]["get"]["responses"]) == {"200", "413", "503", "default"}
    me = paths["/v1/users/me"]["get"]["responses"]
    assert "WWW-Authenticate" in me["401"]["headers"]
    assert "400" not in me and "404" not in me
    patch = paths["/v1/users/{user_id}"]["patch"]["responses"]
    assert {"400", "401", "403", "404", "413", "415", "422", "429", "503", "504"} <= set(patch)
    for method, path, operation in operations():
        if "{user_id}" in path or "{order_id}" in path:
            assert "404" in operation["responses"], (method, path)


def request(path="/docs", **headers):
    return Request(EnvironBuilder(path=path, headers=headers).get_environ())


def test_the_docs_page_loads_its_assets_from_the_gateway_only():
    response = docs.page(request())
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/docs/") for source in sources)
    assert {source.removeprefix("/docs/") for source in sources} <= set(docs.asset_names())
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("name", docs.asset_names())
def test_every_asset_is_served_with_its_type_and_cached(name):
    response = docs.asset(request(f"/docs/{name}"), name)
    assert response.status_code == 200
    assert response.get_data()
    assert response.mimetype.split("/")[0] in ("text", "image")
    assert "max-age" in response.headers["Cache-Control"]
    again = docs.asset(
        request(f"/docs/{name}", **{"If-None-Match": response.headers["ETag"]}), name
    )
    assert again.status_code == 304


def test_an_unknown_asset_is_404():
    with pytest.raises(http.NotFound):
        docs.asset(request("/docs/../setup.cfg"), "../setup.cfg")


def test_the_document_lists_exactly_the_assets_served():
    parameter = DOCUMENT["paths"]["/docs/{asset}"]["get"]["parameters"][0]
    assert parameter["schema"]["enum"] == docs.asset_names()
