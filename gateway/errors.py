"""Every failure the gateway answers, mapped to HTTP in one table.

Keys are exception classes; the most specific class in an exception's MRO wins,
so ``DependencyTimeout`` (504) beats its base ``Unavailable`` (503). Anything not
in the table is a bug of ours: 500 with a fixed message and no details (the
traceback goes to the log, never into a body).
"""

from werkzeug import exceptions as http

from shared.exceptions import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    ServiceError,
    TooManyRequests,
    Unavailable,
)
from shared.rpc import DependencyTimeout


class BadRequest(ServiceError):
    """The request cannot be read: bad JSON, bad query parameters."""

    code = "BAD_REQUEST"


ERRORS = {
    # the contract's failures, raised by us or re-raised from RPC
    BadRequest: (400, "BAD_REQUEST"),
    AuthenticationFailed: (401, "UNAUTHORIZED"),
    Forbidden: (403, "FORBIDDEN"),
    NotFound: (404, "NOT_FOUND"),
    Conflict: (409, "CONFLICT"),
    InvalidInput: (422, "VALIDATION_ERROR"),
    IdempotencyKeyReused: (422, "IDEMPOTENCY_KEY_REUSED"),
    TooManyRequests: (429, "TOO_MANY_REQUESTS"),
    Unavailable: (503, "UNAVAILABLE"),
    DependencyTimeout: (504, "TIMEOUT"),
    # raised by werkzeug while routing or reading the request
    http.BadRequest: (400, "BAD_REQUEST"),
    http.Unauthorized: (401, "UNAUTHORIZED"),
    http.Forbidden: (403, "FORBIDDEN"),
    http.NotFound: (404, "NOT_FOUND"),
    http.MethodNotAllowed: (405, "METHOD_NOT_ALLOWED"),
    http.RequestEntityTooLarge: (413, "PAYLOAD_TOO_LARGE"),
    http.UnsupportedMediaType: (415, "UNSUPPORTED_MEDIA_TYPE"),
    http.UnprocessableEntity: (422, "VALIDATION_ERROR"),
    http.TooManyRequests: (429, "TOO_MANY_REQUESTS"),
    http.ServiceUnavailable: (503, "UNAVAILABLE"),
    http.GatewayTimeout: (504, "TIMEOUT"),
}

INTERNAL = (500, "INTERNAL_ERROR", "internal error")

# what route entrypoints declare in expected_exceptions: the client's business
EXPECTED = tuple(cls for cls in ERRORS if issubclass(cls, ServiceError)) + (http.HTTPException,)


def describe(exc):
    """``(status, code, message, details, headers)`` for ``exc``; ``status`` 500 if unknown."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            status, code = ERRORS[cls]
            break
    else:
        if isinstance(exc, http.HTTPException) and exc.code and exc.code < 500:
            status, code = exc.code, exc.name.upper().replace(" ", "_")
        else:
            return (*INTERNAL, None, {})
    headers = {}
    if isinstance(exc, ServiceError):
        message, details = exc.message, exc.details
        if details == "None":
            # nameko sends exception args through str() unless they are
            # strings, lists or dicts: a None comes back as "None"
            details = None
    else:
        message, details = exc.description, None
        headers = {
            name: value for name, value in exc.get_headers() if name.lower() != "content-type"
        }
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return status, code, message, details, headers


def error_body(code, message, details, request_id):
    return {"error": code, "message": message, "details": details, "request_id": request_id}
