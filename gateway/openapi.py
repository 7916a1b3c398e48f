"""The OpenAPI 3 document of the gateway, generated from the marshmallow schemas.

The document is exact (DESIGN: "every status a route can answer, every rule the
server enforces"), so that a generated client works unchanged and a schema
fuzzer finds no input the document allows but the server refuses:

* each route carries its :class:`Api` (``@route(..., api=Api(...))``): which
  statuses it can answer beyond what every route shares, derived from what it reads
  (:func:`_statuses`): a body can be 400/413/415/422, a checked query or header
  400, a token 401, an RPC call 503/504;
* each marshmallow validator becomes JSON schema (:func:`field_rules`): lengths
  and ranges by apispec, the validator functions of :mod:`shared.schemas` by
  :data:`VALIDATOR_PATTERNS`, money by :func:`decimal_pattern`;
* every response documents ``X-Request-ID``, every error the one Error shape.

A unit test checks every route is documented, and that the document is valid OpenAPI.
"""

import re
from dataclasses import dataclass, field
from dataclasses import fields as fields_of
from decimal import Decimal
from functools import cache
from http import HTTPStatus

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields, validate

from gateway import docs
from gateway.errors import ERRORS
from gateway.http import SANE_REQUEST_ID
from gateway.schemas import (
    ErrorSchema,
)
from orders.schemas import (
    IDEMPOTENCY_KEY_MAX,
    Money,
)
from shared import schemas
from shared.schemas import ID_MAX
from users.schemas import Name

BEARER = "bearerAuth"
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
JSON = "application/json"

# --- field rules: marshmallow validators the document states ------------------------------------

# Unicode category Cc (what ``str.isprintable`` and ``unicodedata`` call control characters)
_CONTROL = r"\x00-\x1f\x7f-\x9f"
NO_CONTROL = f"^[^{_CONTROL}]*$"
# printable ASCII, not only spaces (see the report on ``printable`` in shared.schemas)
PRINTABLE = r"^[ -~]*[!-~][ -~]*$"
# the gateway refuses NUL in any string of a JSON body (gateway.http.refuse_unstorable_characters)
NO_NUL = r"^[^\x00]*$"

# validator function of shared.schemas -> the pattern that says the same
VALIDATOR_PATTERNS = {
    schemas.no_control_characters: NO_CONTROL,
    schemas.storable: NO_NUL,
    schemas.printable: PRINTABLE,
}
# where one field has several validator functions, the strictest pattern stands for all
STRICTNESS = [PRINTABLE, NO_CONTROL, NO_NUL]


def trimmed_pattern(minimum, maximum):
    """A name: trimmed, then ``minimum`` to ``maximum`` characters, no control characters.

    Spaces (some control characters among them) may stand around it.
    """
    assert minimum == 1, "a trimmed value keeps at least one character that is not a space"
    edge = rf"[^\s{_CONTROL}]"
    return rf"^\s*{edge}([^{_CONTROL}]{{0,{maximum - 2}}}{edge})?\s*$"


MONEY_MAX_LENGTH = 32  # Money refuses longer text whatever its value
MONEY = r"^[0-9]+(\.[0-9]{1,2})?$"


def decimal_pattern(minimum, maximum):
    """A pattern for decimal strings (at most two places) from ``minimum`` to ``maximum``.

    Supports the ranges money has: ``minimum`` 0 or 0.01 and ``maximum`` a power
    of ten; anything else raises, so that a new range is not silently misstated.
    Leading zeros are allowed, as :class:`orders.schemas.Money` allows them.
    """
    minimum, maximum = Decimal(minimum), Decimal(maximum)
    digits = len(str(int(maximum))) - 1
    if minimum not in (Decimal("0"), Decimal("0.01")) or maximum != 10**digits or digits < 1:
        raise ValueError(f"no decimal pattern for the range {minimum} to {maximum}")
    fraction = r"(\.[0-9]{1,2})?"
    below_max = rf"0*[1-9][0-9]{{0,{digits - 1}}}{fraction}"
    the_max = rf"0*{int(maximum)}(\.0{{1,2}})?"
    if minimum:
        below_one = r"0+\.(0[1-9]|[1-9][0-9]?)"  # 0.01 to 0.99
    else:
        below_one = rf"0+{fraction}"
    return f"^({below_max}|{the_max}|{below_one})$"


def _range_of(field_obj):
    for validator in field_obj.validators:
        if isinstance(validator, validate.Range):
            return validator
    return None


def field_rules(self, field_obj, ret, **kwargs):
    """apispec attribute function: what apispec cannot say about ``field_obj``.

    Mutates ``ret`` where apispec's own output is wrong for this API (an enum
    holding ``null``, ``x-minimum`` on a decimal string).
    """
    extra = {}
    if isinstance(field_obj, Money):
        ret.pop("x-minimum", None)
        ret.pop("x-maximum", None)
        ret.pop("format", None)
        extra["maxLength"] = MONEY_MAX_LENGTH
        bounds = _range_of(field_obj)
        if bounds is None:
            extra["pattern"] = MONEY
            extra["description"] = 'An exact amount: a decimal string like "19.99", never a number.'
        else:
            extra["pattern"] = decimal_pattern(bounds.min, bounds.max)
            extra["description"] = (
                f'A decimal string like "19.99" (at most two places), from {bounds.min} '
                f"to {bounds.max}; never a JSON number."
            )
        return extra
    if isinstance(field_obj, Name):
        # trimmed before it is checked: the length is the trimmed value's, so in the pattern
        minimum, maximum = ret.pop("minLength"), ret.pop("maxLength")
        extra["pattern"] = trimmed_pattern(minimum, maximum)
        extra["description"] = (
            f"{minimum} to {maximum} characters after trimming spaces; no control characters."
        )
        return extra
    if "enum" in ret:
        # nullable says null; the enum keeps the values, each once
        ret["enum"] = list(dict.fromkeys(value for value in ret["enum"] if value is not None))
    if isinstance(field_obj, fields.String) and not isinstance(field_obj, fields.Email):
        found = {VALIDATOR_PATTERNS.get(validator) for validator in field_obj.validators}
        if field_obj.validators:
            # an input string (it has rules): the gateway refuses NUL in any of them
            found.add(NO_NUL)
        for pattern in STRICTNESS:
            if pattern in found:
                extra["pattern"] = pattern
                break
    return extra


# --- operations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """What a route tells the document about itself: ``@route(..., api=Api(...))``.

    Its method and path come from the route; what every route shares is derived
    from what it reads (:func:`_statuses`).
    """

    summary: str
    tag: str
    success: int = 200
    response: object = None
    body: object = None
    query: object = None
    # statuses this route answers beyond what _statuses derives from what it reads
    errors: tuple = ()
    secure: bool = True
    # calls users or orders over RPC: 503 and 504 when they are down or slow
    rpc: bool = True
    headers: list = field(default_factory=list)
    content_type: str = JSON
    # other successful statuses with the same body (an idempotent replay: 200 beside 201)
    also: tuple = ()
    # path parameters other than ids: name -> schema
    path_schemas: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Operation(Api):
    """A route's :class:`Api` with its method and path, as the document lists it."""

    method: str = ""
    path: str = ""


def openapi_path(url):
    """``/v1/users/<int:user_id>`` (werkzeug) as ``/v1/users/{user_id}`` (OpenAPI)."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", url)


def operations(service_cls=None):
    """Every route of the gateway (``@route`` with ``api=``), in the order they are declared."""
    if service_cls is None:
        from gateway.service import GatewayService as service_cls  # the service imports us
    found = []
    for member in vars(service_cls).values():
        for route in getattr(member, "nameko_entrypoints", ()):
            if getattr(route, "api", None) is not None:
                found.append(
                    Operation(
                        **{f.name: getattr(route.api, f.name) for f in fields_of(Api)},
                        method=route.method.lower(),
                        path=openapi_path(route.url),
                    )
                )
    return found


IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX,
        "pattern": PRINTABLE,
    },
    "description": (
        "Retries with the same key within 24 h return the first order (200) instead of "
        "making another; the same key with a different body is 422 IDEMPOTENCY_KEY_REUSED."
    ),
}

ASSET_PARAMETER = {"asset": {"type": "string", "enum": docs.asset_names()}}


def _statuses(op):
    """Every status ``op`` can answer besides its successes."""
    statuses = {*op.errors}
    # any route refuses a body larger than MAX_BODY_BYTES before it runs
    statuses.add(413)
    if op.body is not None:
        statuses |= {400, 415, 422}
    if op.query is not None or any(header["in"] == "header" for header in op.headers):
        statuses.add(400)
    if op.secure:
        statuses.add(401)
    if op.rpc:
        statuses |= {503, 504}
    if any("{" + name + "}" in op.path for name in ("user_id", "order_id")):
        statuses.add(404)  # ids out of range, and ids that are not there
    return sorted(statuses)


def _codes(status):
    """The ``error`` codes a status comes with, from gateway.errors' table."""
    return sorted({code for known, code in ERRORS.values() if known == status})


REQUEST_ID_HEADER = {"$ref": "#/components/headers/RequestId"}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    429: {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 0},
            "description": "seconds until the login is allowed again",
        }
    },
}
ERROR_NOTES = {
    400: "Unreadable JSON, or bad query parameters or headers (field errors in `details`).",
    422: 'Field errors in `details`, nested like the body: `{"items": {"0": {"sku": ["..."]}}}`.',
    503: "A service this route needs is down.",
    504: "A service this route needs did not answer in time.",
}


def _error(status):
    codes = ", ".join(f"`{code}`" for code in _codes(status))
    description = HTTPStatus(status).phrase + (f": {codes}" if codes else "")
    if status in ERROR_NOTES:
        description += f". {ERROR_NOTES[status]}"
    return {
        "description": description,
        "headers": {"X-Request-ID": REQUEST_ID_HEADER, **ERROR_HEADERS.get(status, {})},
        "content": {JSON: {"schema": "Error"}},
    }


def _success(op, status):
    response = {
        "description": HTTPStatus(status).phrase,
        "headers": {"X-Request-ID": REQUEST_ID_HEADER},
    }
    if status == 304:
        return response
    # one media type, or several (then a string or binary body of any of them)
    types = op.content_type if isinstance(op.content_type, tuple) else (op.content_type,)
    if op.response is not None:
        response["content"] = {media: {"schema": op.response} for media in types}
    elif op.success != 204:
        response["content"] = {media: {"schema": _raw(media)} for media in types}
    return response


def _raw(media_type):
    if media_type.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "format": "binary"}


def _operation(op):
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": ID_SCHEMA}
        for name in ("user_id", "order_id")
        if "{" + name + "}" in op.path
    ]
    parameters += [
        {"in": "path", "name": name, "required": True, "schema": schema}
        for name, schema in op.path_schemas.items()
    ]
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    parameters.extend(op.headers)
    responses = {str(status): _success(op, status) for status in (op.success, *op.also)}
    for status in _statuses(op):
        responses[str(status)] = _success(op, status) if status < 400 else _error(status)
    responses["default"] = _error(500) | {
        "description": "Any other error (a bug of ours: 500), same shape"
    }
    operation = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method}_{op.path}".replace("/", "_").strip("_"),
        "security": [{BEARER: []}] if op.secure else [],
        "responses": dict(sorted(responses.items())),
    }
    if op.description:
        operation["description"] = op.description
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": op.body}}}
    return operation


# --- rules across fields (what one field's validators cannot say) -------------------------------

# UserUpdateSchema.something_to_change: one of name, password, role. (`current_password` only
# beside a new password is said in words: an anyOf of `required`s would make generated clients
# lose the typed model, and a fuzzer's {"current_password": ...} alone is a 422 either way.)
USER_UPDATE_RULES = {
    "minProperties": 1,
    "description": "At least one of name, password, role. `current_password` only with a new "
    "password (and required when you change your own).",
}
SCHEMA_RULES = {
    "UserUpdate": USER_UPDATE_RULES,
    # these two ignore unknown properties (unknown = EXCLUDE) but the gateway still refuses
    # NUL in them: a client sends none (see the report: they should be RAISE like the rest)
    "Credentials": {"additionalProperties": False},
    "RefreshRequest": {"additionalProperties": False},
}


def _query_parameters(parameters):
    """A query parameter is absent or a string: never null, so no null default or nullable."""
    for parameter in parameters:
        if parameter.get("in") != "query":
            continue
        schema = parameter["schema"]
        schema.pop("nullable", None)
        if schema.get("default", 0) is None:
            del schema["default"]


def _finish(document):
    for name, rules in SCHEMA_RULES.items():
        document["components"]["schemas"][name].update(rules)
    for operations in document["paths"].values():
        for operation in operations.values():
            _query_parameters(operation.get("parameters", []))
    return document


@cache
def document():
    """The OpenAPI document as a dict (built once per process)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="nameko-shop gateway",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[plugin],
        info={
            "description": "Users and orders over HTTP. Every error has the Error shape; "
            "every response carries `X-Request-ID`. Money is a decimal string, never a number."
        },
    )
    plugin.map_to_openapi_type(Money, "string", None)
    plugin.converter.add_attribute_function(field_rules)
    spec.components.security_scheme(
        BEARER, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.header(
        "RequestId",
        {
            "description": "The client's X-Request-ID if it sent a sane one "
            f"(`{SANE_REQUEST_ID.pattern}`), else a new id.",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
        },
    )
    spec.components.schema("Error", schema=ErrorSchema)
    by_path = {}
    for op in operations():
        by_path.setdefault(op.path, {})[op.method] = _operation(op)
    for path, by_method in by_path.items():
        spec.path(path=path, operations=by_method)
    return _finish(spec.to_dict())
