"""The OpenAPI 3 document of the gateway, generated from the marshmallow schemas.

One entry per route in :data:`OPERATIONS`; a unit test checks the table and the
service's routes match, and that the document is valid OpenAPI.
"""

from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway.schemas import (
    ErrorSchema,
    OrderPageSchema,
    RefreshRequestSchema,
    StatusSchema,
    TokenPairSchema,
    UserPageSchema,
)
from shared.schemas import (
    CredentialsSchema,
    Money,
    OrderCreateSchema,
    OrderListQuerySchema,
    OrderSchema,
    PageQuerySchema,
    StatusChangeSchema,
    UserCreateSchema,
    UserSchema,
    UserUpdateSchema,
)

BEARER = "bearerAuth"
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
# every route can fail these ways, whatever it does
ALWAYS = (400, 413, 415, 500, 503, 504)
AUTHENTICATED = (401,)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    success: int = 200
    response: object = None
    body: object = None
    query: object = None
    errors: tuple = ()
    secure: bool = True
    headers: list = field(default_factory=list)
    content_type: str = "application/json"


IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Retries with the same key within 24 h return the first order.",
}

OPERATIONS = (
    Operation(
        "post",
        "/v1/users",
        "Register",
        "users",
        201,
        UserSchema,
        UserCreateSchema,
        errors=(403, 409, 422),
        secure=False,
    ),
    Operation(
        "post",
        "/v1/auth/token",
        "Log in: a token pair",
        "auth",
        200,
        TokenPairSchema,
        CredentialsSchema,
        errors=(401, 422, 429),
        secure=False,
    ),
    Operation(
        "post",
        "/v1/auth/refresh",
        "Swap a refresh token for a new pair",
        "auth",
        200,
        TokenPairSchema,
        RefreshRequestSchema,
        errors=(401, 422),
        secure=False,
    ),
    Operation("get", "/v1/users/me", "The caller", "users", 200, UserSchema),
    Operation(
        "get",
        "/v1/users/{user_id}",
        "A user (self or admin)",
        "users",
        200,
        UserSchema,
        errors=(404,),
    ),
    Operation(
        "get",
        "/v1/users",
        "A page of users (admin)",
        "users",
        200,
        UserPageSchema,
        query=PageQuerySchema,
        errors=(403,),
    ),
    Operation(
        "patch",
        "/v1/users/{user_id}",
        "Change name, password; role (admin)",
        "users",
        200,
        UserSchema,
        UserUpdateSchema,
        errors=(403, 404, 422),
    ),
    Operation(
        "delete",
        "/v1/users/{user_id}",
        "Delete a user; open orders are cancelled",
        "users",
        204,
        errors=(404,),
    ),
    Operation(
        "post",
        "/v1/orders",
        "Place an order",
        "orders",
        201,
        OrderSchema,
        OrderCreateSchema,
        errors=(409, 422),
        headers=[IDEMPOTENCY_KEY],
    ),
    Operation(
        "get",
        "/v1/orders/{order_id}",
        "An order (owner or admin)",
        "orders",
        200,
        OrderSchema,
        errors=(404,),
    ),
    Operation(
        "get",
        "/v1/orders",
        "The caller's orders (admin: all, or ?user_id=)",
        "orders",
        200,
        OrderPageSchema,
        query=OrderListQuerySchema,
        errors=(403,),
    ),
    Operation(
        "post",
        "/v1/orders/{order_id}/cancel",
        "Cancel a pending or paid order",
        "orders",
        200,
        OrderSchema,
        errors=(404, 409),
    ),
    Operation(
        "post",
        "/v1/orders/{order_id}/status",
        "Move an order on (admin)",
        "orders",
        200,
        OrderSchema,
        StatusChangeSchema,
        errors=(403, 404, 409, 422),
    ),
    Operation("get", "/health", "Liveness", "operations", 200, StatusSchema, secure=False),
    Operation(
        "get",
        "/ready",
        "Readiness: users and orders answer",
        "operations",
        200,
        StatusSchema,
        secure=False,
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics",
        "operations",
        200,
        secure=False,
        content_type="text/plain",
    ),
    Operation("get", "/openapi.json", "This document", "operations", 200, secure=False),
)


def _error(status):
    return {
        "description": HTTPStatus(status).phrase,
        "content": {"application/json": {"schema": "Error"}},
    }


def _operation(op):
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": ID_SCHEMA}
        for name in ("user_id", "order_id")
        if "{" + name + "}" in op.path
    ]
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    parameters.extend(op.headers)
    success = {"description": HTTPStatus(op.success).phrase}
    if op.response is not None:
        success["content"] = {op.content_type: {"schema": op.response}}
    elif op.success != 204:
        success["content"] = {op.content_type: {"schema": {"type": "string"}}}
    statuses = sorted({*ALWAYS, *op.errors, *(AUTHENTICATED if op.secure else ())})
    if op.body is None:
        statuses = [status for status in statuses if status not in (413, 415)]
    responses = {str(op.success): success, **{str(s): _error(s) for s in statuses}}
    responses["default"] = _error(500) | {"description": "Any other error, same shape"}
    operation = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method}_{op.path}".replace("/", "_").strip("_"),
        "security": [{BEARER: []}] if op.secure else [],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return operation


@cache
def document():
    """The OpenAPI document as a dict (built once per process)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="nameko-shop gateway",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Users and orders over HTTP; every error has the Error shape."},
    )
    plugin.map_to_openapi_type(Money, "string", "decimal")
    spec.components.security_scheme(
        BEARER, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.schema("Error", schema=ErrorSchema)
    by_path = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = _operation(op)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
