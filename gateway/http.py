"""The gateway's HTTP layer: JSON in and out, one error shape, a request id.

nameko answers an unknown path or a wrong method from its werkzeug ``Map``
before any entrypoint runs, in werkzeug's HTML. :class:`GatewayWebServer`
replaces the WSGI app (the extension point nameko documents) with
:class:`GatewayWsgiApp`, which answers those in the JSON error shape too, stamps
``X-Request-ID`` on every response and records every request in the metrics.
:class:`Route` is the entrypoint of every gateway route: it refuses oversized
bodies before a worker starts, passes the request id to the worker's context
data (where :class:`shared.logs.LoggingContext` and RPC headers pick it up) and
turns exceptions into JSON errors through :mod:`gateway.errors`.
"""

import ipaddress
import json
import logging
import re
import time
import uuid
from functools import partial

from eventlet.event import Event
from marshmallow import ValidationError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug import exceptions as http
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request, Response

from gateway.errors import EXPECTED, BadRequest, describe, error_body
from gateway.settings import GatewaySettings
from shared.exceptions import InvalidInput, Unavailable
from shared.framework import is_accepting, stop_accepting
from shared.logs import REQUEST_ID_KEY
from shared.rpc import SignatureReadOnce
from shared.schemas import ID_MAX, UNSTORABLE, UNSTORABLE_MESSAGE, load
from shared.settings import settings_of

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON = "gateway.request_id"
# a client's id is echoed into headers and logs: accept only a short, plain token
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
DEFAULT_MAX_BODY_BYTES = GatewaySettings.max_body_bytes
UNMATCHED = "<unmatched>"
# what an id in a path may be: what the Integer id columns hold (shared.schemas.ID_MAX)
MIN_ID, MAX_ID = 1, ID_MAX


def request_id_from(environ):
    sent = environ.get("HTTP_X_REQUEST_ID", "")
    return sent if SANE_REQUEST_ID.fullmatch(sent) else str(uuid.uuid4())


def json_response(data, status=200, headers=None):
    return Response(json.dumps(data), status=status, headers=headers, mimetype="application/json")


def no_content():
    return Response(status=204)


def error_response(exc, request_id):
    status, code, message, details, headers = describe(exc)
    if status >= 500 and not isinstance(exc, http.HTTPException):
        level = logging.ERROR if status == 500 else logging.WARNING
        log.log(level, "request %s failed: %s", request_id, exc, exc_info=status == 500)
    return json_response(error_body(code, message, details, request_id), status, headers)


def is_json(mimetype):
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def read_json(request, max_bytes=None):
    """The request's JSON body: 415 if not JSON, 413 if too large, 400 if unreadable.

    At most ``max_bytes + 1`` bytes are read, whatever the client claims, so a
    chunked upload cannot make the gateway buffer more than the limit.
    """
    if max_bytes is None:
        max_bytes = getattr(request, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if not is_json(request.mimetype):
        raise http.UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise http.RequestEntityTooLarge(f"The body is larger than {max_bytes} bytes.")
    stream = request.environ["wsgi.input"]
    raw = stream.read(length if length is not None else max_bytes + 1)
    if len(raw) > max_bytes:
        raise http.RequestEntityTooLarge(f"The body is larger than {max_bytes} bytes.")
    if not raw.strip():
        raise BadRequest("the body is empty: send a JSON object")
    try:
        body = json.loads(raw.decode(request.mimetype_params.get("charset", "utf-8")))
    except (ValueError, LookupError, RecursionError) as error:
        raise BadRequest("the body is not valid JSON", {"body": [str(error)[:200]]}) from None
    return body


def refuse_unstorable_characters(body):
    """422 if any string in ``body`` (key or value) holds NUL or a lone surrogate.

    Such input was a 500 deep in a service (a database or the password hash
    failing on it); it is refused for every route before any RPC. ``details``
    has the nested shape of every field error; a bad key is reported on its
    object (``_schema``), a bad non-object body as ``_schema``.
    """
    details = unstorable_details(body)
    if details:
        raise InvalidInput("invalid input", details)


def unstorable_details(body):
    """The nested field errors for every unstorable string in ``body`` (``{}`` if none)."""
    details = {}
    for path in _unstorable_paths(body):
        *parents, last = path or ("_schema",)
        node = details
        for key in parents:
            node = node.setdefault(key, {})
        node.setdefault(last, [UNSTORABLE_MESSAGE])
    return details


def load_body(schema, body, message="invalid input"):
    """``body`` through ``schema``; every field error at once (422), in one nested shape.

    The schema's own errors and the unstorable characters found anywhere in the
    body (:func:`refuse_unstorable_characters`) are reported together.
    """
    errors = unstorable_details(body)
    try:
        fields = load(schema, body, message)
    except InvalidInput as error:
        errors = merge_errors(errors, error.details or {})
    if errors:
        raise InvalidInput(message, errors)
    return fields


def merge_errors(first, second):
    """Two nested field-error dicts as one (lists of messages joined, without repeats)."""
    merged = dict(first)
    for key, value in second.items():
        key = str(key)  # marshmallow numbers list items; JSON will anyway
        mine = merged.get(key)
        if isinstance(mine, dict) and isinstance(value, dict):
            merged[key] = merge_errors(mine, value)
        elif isinstance(mine, list) and isinstance(value, list):
            merged[key] = mine + [message for message in value if message not in mine]
        elif mine is None:
            merged[key] = merge_errors({}, value) if isinstance(value, dict) else value
        else:
            merged[key] = value
    return merged


def _unstorable_paths(body, limit=20):
    """Paths (tuples of keys, list indexes as strings) of unstorable strings.

    Iterative, so a deeply nested body cannot exhaust the stack.
    """
    found = []
    pending = [((), body)]
    while pending and len(found) < limit:
        path, value = pending.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                found.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    found.append((*path, "_schema"))
                else:
                    pending.append(((*path, key), item))
        elif isinstance(value, list):
            pending.extend(((*path, str(index)), item) for index, item in enumerate(value))
    return found


def client_address(request, trusted_proxies=()):
    """The address a request came from, for throttling.

    The socket peer, unless the peer is one of ``trusted_proxies`` (networks):
    then the right-most ``X-Forwarded-For`` entry that is not itself a trusted
    proxy (entries to its left are the client's to write, so never believed).
    """
    peer = request.remote_addr or "unknown"
    if not trusted_proxies or not _in_networks(peer, trusted_proxies):
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    for entry in reversed([part.strip() for part in forwarded.split(",")]):
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            return peer  # garbled by someone: fall back on what we know
        if not _in_networks(address, trusted_proxies):
            return str(address)
    return peer


def _in_networks(address, networks):
    try:
        address = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(address in network for network in networks)


def load_params(schema, params, message="invalid query parameters"):
    """``params`` (query or headers) through ``schema``: 400 with the field errors if bad.

    Unlike a body (422), parameters that break the contract are a malformed request.
    """
    try:
        return schema.load(params)
    except ValidationError as error:
        raise BadRequest(message, error.normalized_messages()) from None


def load_query(schema, request):
    """The query string through ``schema`` (a repeated parameter counts once: the last)."""
    return load_params(schema, {key: values[-1] for key, values in request.args.lists()})


def request_id_of(request):
    return request.environ[REQUEST_ID_ENVIRON]


class GatewayWsgiApp(WsgiApp):
    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request_id = environ[REQUEST_ID_ENVIRON] = request_id_from(environ)
        request = Request(environ, shallow=True)
        route = UNMATCHED
        try:
            adapter = self.url_map.bind_to_environ(environ)
            rule, values = adapter.match(return_rule=True)
            route = rule.rule
            request.path_values = values
            response = rule.endpoint.handle_request(request)
        except RequestRedirect as redirect:
            response = redirect.get_response(environ)
        except http.MethodNotAllowed as exc:
            allowed = ", ".join(exc.valid_methods or ())
            exc.description = (
                f"{request.method} is not allowed on {request.path[:200]}: use {allowed}"
            )
            response = error_response(exc, request_id)
        except http.NotFound as exc:
            exc.description = f"no route {request.method} {request.path[:200]}"
            response = error_response(exc, request_id)
        except Exception as exc:  # routing errors (404, 405) and our own bugs alike
            response = error_response(exc, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        self.server.observe(request.method, route, response.status_code, started)
        return response(environ, start_response)


class ShuttingDown(Unavailable):
    """A request that reached a gateway that is stopping (503, nothing was done)."""


class GatewayWebServer(WebServer):
    """nameko's web server with :class:`GatewayWsgiApp` and a metrics hook."""

    observers = ()

    def start(self):
        # any dependency with ``observe_http(method, route, status, seconds)`` gets every request
        self.observers = [
            dependency.observe_http
            for dependency in self.container.dependencies
            if hasattr(dependency, "observe_http")
        ]
        super().start()

    def get_wsgi_app(self):
        return GatewayWsgiApp(self)

    def unregister_provider(self, provider):
        """nameko stops the entrypoints (each Route unregisters here) before it waits
        for their workers and stops the dependencies: the first route to stop closes
        the door, so no request is taken that could not be answered."""
        stop_accepting(self)
        super().unregister_provider(provider)

    @property
    def stopping(self):
        return not is_accepting(self)

    def observe(self, method, route, status, started):
        elapsed = time.perf_counter() - started
        for observer in self.observers:
            observer(method, route, status, elapsed)


class Route(SignatureReadOnce, HttpRequestHandler):
    """A gateway route: ``@route("GET", "/v1/users/<int:user_id>", api=Api(...))``."""

    server = GatewayWebServer()

    def __init__(self, method, url, api=None, expected_exceptions=EXPECTED, **kwargs):
        super().__init__(method, url, expected_exceptions=expected_exceptions, **kwargs)
        # what the OpenAPI document says of this route (gateway.openapi.Api)
        self.api = api

    def setup(self):
        super().setup()
        self.max_body_bytes = settings_of(self.container).max_body_bytes

    def handle_request(self, request):
        request.shallow = False
        request_id = request.environ[REQUEST_ID_ENVIRON]
        request.max_body_bytes = self.max_body_bytes
        try:
            length = request.content_length
            if length is not None and length > self.max_body_bytes:
                # refused before a worker starts or a byte of the body is read
                raise http.RequestEntityTooLarge(
                    f"The body is larger than {self.max_body_bytes} bytes."
                )
            if self.server.stopping:
                # accepted just before the door closed: refused before any work,
                # so a load balancer (or the client) can safely send it elsewhere
                raise ShuttingDown("the gateway is shutting down: send the request again")
            args, kwargs = self.get_entrypoint_parameters(request)
            for name, value in kwargs.items():
                if name.endswith("_id") and not MIN_ID <= value <= MAX_ID:
                    raise http.NotFound(f"no {name[:-3]} {value}: ids are 1 to {MAX_ID}")
            self.check_signature(args, kwargs)
            event = Event()
            self.container.spawn_worker(
                self,
                args,
                kwargs,
                context_data={REQUEST_ID_KEY: request_id},
                handle_result=partial(self.handle_result, event),
            )
            return self.response_from_result(event.wait())
        except Exception as exc:
            return error_response(exc, request_id)

    def response_from_exception(self, exc):
        return error_response(exc, None)


route = Route.decorator
