"""The gateway: the only HTTP API. It holds no data.

Each route checks the token, reads and validates the input with the shared
marshmallow contracts, calls users or orders over RPC (with a deadline) and
answers JSON; every failure becomes the one error shape through
:mod:`gateway.errors`. Who may do what is decided in :mod:`gateway.auth`.
"""

from contextlib import contextmanager
from datetime import UTC, datetime

import eventlet

from gateway import auth, docs, openapi
from gateway.dependencies import ClientAddresses, Revocations, Tokens, revocation_feed
from gateway.errors import BadRequest, error_body
from gateway.http import (
    json_response,
    load_body,
    load_params,
    load_query,
    no_content,
    read_json,
    request_id_of,
    route,
)
from gateway.metrics import HttpMetrics
from gateway.openapi import ASSET_PARAMETER, IDEMPOTENCY_KEY, Api
from gateway.schemas import (
    OrderPageSchema,
    RefreshRequestSchema,
    StatusSchema,
    TokenPairSchema,
    UserPageSchema,
)
from gateway.settings import GatewaySettings
from orders.schemas import (
    IdempotencyKeySchema,
    OrderCreateSchema,
    OrderListQuerySchema,
    OrderSchema,
    StatusChangeSchema,
)
from shared.exceptions import (
    AuthenticationFailed,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
)
from shared.heap import FrozenStartupHeap
from shared.logs import LoggingContext
from shared.metrics import Metrics
from shared.rpc import TimedRpcProxy
from shared.schemas import PageQuerySchema, instance_of
from shared.settings import SettingsProvider
from users.schemas import CredentialsSchema, UserCreateSchema, UserSchema, UserUpdateSchema

# ids out of the database's range are 404 (see gateway.http.Route)
USER_ID = "<int:user_id>"
ORDER_ID = "<int:order_id>"
READY_TIMEOUT = 1.0


class GatewayService:
    name = "gateway"

    settings = SettingsProvider(GatewaySettings)
    log_context = LoggingContext()
    heap = FrozenStartupHeap()
    metrics = Metrics()
    http_metrics = HttpMetrics()
    tokens = Tokens()
    revoked = Revocations()
    client_address = ClientAddresses()
    users = TimedRpcProxy("users")
    orders = TimedRpcProxy("orders")

    # --- helpers (not entrypoints) ---------------------------------------------------------

    def _caller(self, request):
        return auth.check_access(
            request.headers.get("Authorization"),
            self.tokens.decode_access,
            self.revoked,
            self._current_token_version,
        )

    def _current_token_version(self, user_id):
        """The user's token version now, or ``None`` if the user is gone."""
        try:
            return self.users.get_token_version(user_id)
        except NotFound:
            return None

    def _token_pair(self, user, refresh_jti, now):
        return json_response(self.tokens.issue_pair(user, refresh_jti, now).body())

    # --- events ----------------------------------------------------------------------------

    @revocation_feed("users", "user_deleted")
    def on_user_deleted(self, payload):
        """Refuse the deleted user's access tokens on this instance from now on."""
        self.revoked.user_deleted(int(payload["user_id"]))

    @revocation_feed("users", "user_updated")
    def on_user_updated(self, payload):
        """After a password or role change, refuse the user's older tokens here too."""
        if "token_version" in payload:
            self.revoked.raise_floor(int(payload["user_id"]), int(payload["token_version"]))

    # --- users -----------------------------------------------------------------------------

    @route(
        "POST",
        "/v1/users",
        api=Api(
            "Register",
            "users",
            201,
            UserSchema,
            UserCreateSchema,
            errors=(403, 409),
            secure=False,
            description="403 if `role` is not `user` (only an admin makes admins); 409 if the "
            "email is taken.",
        ),
    )
    def register(self, request):
        body = read_json(request)
        if isinstance(body, dict) and body.get("role", "user") != "user":
            raise Forbidden("only an admin may give a role other than user")
        fields = load_body(UserCreateSchema, body)
        user = self.users.create_user(fields["email"], fields["name"], fields["password"])
        return json_response(user, 201)

    @route(
        "POST",
        "/v1/auth/token",
        api=Api(
            "Log in: a token pair",
            "auth",
            200,
            TokenPairSchema,
            CredentialsSchema,
            errors=(401, 429),
            secure=False,
            description="429 with `Retry-After` after too many failures for the email or the "
            "client address.",
        ),
    )
    def issue_token(self, request):
        credentials = load_body(CredentialsSchema, read_json(request))
        # failures are counted (and logins refused) by the users service, per email
        # and per client address, so every gateway replica sees the same count
        user = self.users.authenticate(
            credentials["email"],
            credentials["password"],
            client_address=self.client_address(request),
        )
        now = datetime.now(UTC)
        jti = self.tokens.new_refresh_jti()
        expires = self.tokens.refresh_expiry(now).isoformat()
        try:
            self.users.store_refresh_token(user["id"], jti, expires)
        except NotFound:  # deleted since it authenticated: no tokens for it
            raise AuthenticationFailed("wrong email or password") from None
        return self._token_pair(user, jti, now)

    @route(
        "POST",
        "/v1/auth/refresh",
        api=Api(
            "Swap a refresh token for a new pair",
            "auth",
            200,
            TokenPairSchema,
            RefreshRequestSchema,
            errors=(401,),
            secure=False,
            description="The old refresh token stops working.",
        ),
    )
    def refresh_token(self, request):
        fields = load_body(RefreshRequestSchema, read_json(request))
        claims = self.tokens.decode_refresh(fields["refresh_token"])
        now = datetime.now(UTC)
        jti = self.tokens.new_refresh_jti()
        expires = self.tokens.refresh_expiry(now).isoformat()
        user = self.users.rotate_refresh_token(claims["jti"], jti, expires)
        if str(user["id"]) != claims["sub"]:
            raise AuthenticationFailed("refresh token is invalid, expired or already used")
        return self._token_pair(user, jti, now)

    @route("GET", "/v1/users/me", api=Api("The caller", "users", 200, UserSchema))
    def get_me(self, request):
        caller = self._caller(request)
        try:
            return json_response(self.users.get_user(caller.user_id))
        except NotFound:
            self.revoked.user_deleted(caller.user_id)
            raise AuthenticationFailed(auth.REVOKED) from None

    @route(
        "GET",
        f"/v1/users/{USER_ID}",
        api=Api(
            "A user (self or admin)",
            "users",
            200,
            UserSchema,
            errors=(404,),
            description="404 for anyone else's id: no one learns which ids exist.",
        ),
    )
    def get_user(self, request, user_id):
        auth.require_self_or_admin(self._caller(request), user_id)
        return json_response(self.users.get_user(user_id))

    @route(
        "GET",
        "/v1/users",
        api=Api(
            "A page of users (admin)",
            "users",
            200,
            UserPageSchema,
            query=PageQuerySchema,
            errors=(403,),
        ),
    )
    def list_users(self, request):
        auth.require_admin(self._caller(request))
        page = load_query(instance_of(PageQuerySchema), request)
        with query_errors():
            return json_response(self.users.list_users(page["limit"], page["cursor"]))

    @route(
        "PATCH",
        f"/v1/users/{USER_ID}",
        api=Api(
            "Change name, password; role (admin)",
            "users",
            200,
            UserSchema,
            UserUpdateSchema,
            errors=(403, 404, 429),
            description="Changing your own password needs `current_password` (422 without it or "
            "when wrong; 429 after too many wrong ones). Only an admin changes a role (403).",
        ),
    )
    def update_user(self, request, user_id):
        caller = self._caller(request)
        auth.require_self_or_admin(caller, user_id)
        body = read_json(request)
        auth.check_role_change(caller, body)
        changes = auth.changes_to_send(caller, user_id, load_body(UserUpdateSchema, body))
        user = self.users.update_user(user_id, changes)
        if "password" in changes or "role" in changes:
            # at once here; the user_updated broadcast tells the other instances
            version = self._current_token_version(user_id)
            if version is not None:
                self.revoked.raise_floor(user_id, version)
        return json_response(user)

    @route(
        "DELETE",
        f"/v1/users/{USER_ID}",
        api=Api("Delete a user; open orders are cancelled", "users", 204, errors=(404,)),
    )
    def delete_user(self, request, user_id):
        auth.require_self_or_admin(self._caller(request), user_id)
        self.users.delete_user(user_id)
        self.revoked.user_deleted(user_id)  # at once here; the broadcast tells the others
        return no_content()

    # --- orders ----------------------------------------------------------------------------

    @route(
        "POST",
        "/v1/orders",
        api=Api(
            "Place an order",
            "orders",
            201,
            OrderSchema,
            OrderCreateSchema,
            headers=[IDEMPOTENCY_KEY],
            also=(200,),
            description="201: a new order. 200: a replay of an `Idempotency-Key` already used "
            "with this body: the first order.",
        ),
    )
    def create_order(self, request):
        caller = self._caller(request)
        key = idempotency_key(request)
        body = read_json(request)
        load_body(OrderCreateSchema, body)
        # what the client sent, checked: orders validates it again at its own boundary
        items = body["items"]
        result = self.orders.create_order(caller.user_id, items, idempotency_key=key)
        return json_response(result["order"], 201 if result["created"] else 200)

    @route(
        "GET",
        f"/v1/orders/{ORDER_ID}",
        api=Api("An order (owner or admin)", "orders", 200, OrderSchema, errors=(404,)),
    )
    def get_order(self, request, order_id):
        caller = self._caller(request)
        order = self.orders.get_order(order_id, user_id=owner_scope(caller))
        auth.require_owner_or_admin(caller, order)
        return json_response(order)

    @route(
        "GET",
        "/v1/orders",
        api=Api(
            "The caller's orders (admin: all, or ?user_id=)",
            "orders",
            200,
            OrderPageSchema,
            query=OrderListQuerySchema,
            errors=(403,),
            description="403 if a user asks for another user's orders.",
        ),
    )
    def list_orders(self, request):
        caller = self._caller(request)
        query = load_query(instance_of(OrderListQuerySchema), request)
        if not caller.is_admin:
            if query["user_id"] not in (None, caller.user_id):
                raise Forbidden("only an admin may list another user's orders")
            query["user_id"] = caller.user_id
        with query_errors():
            return json_response(self.orders.list_orders(**query))

    @route(
        "POST",
        f"/v1/orders/{ORDER_ID}/cancel",
        api=Api("Cancel a pending or paid order", "orders", 200, OrderSchema, errors=(404, 409)),
    )
    def cancel_order(self, request, order_id):
        caller = self._caller(request)
        return json_response(self.orders.cancel_order(order_id, user_id=owner_scope(caller)))

    @route(
        "POST",
        f"/v1/orders/{ORDER_ID}/status",
        api=Api(
            "Move an order on (admin)",
            "orders",
            200,
            OrderSchema,
            StatusChangeSchema,
            errors=(403, 404, 409),
            description="pending → paid → shipped → delivered; 409 for any other move.",
        ),
    )
    def set_order_status(self, request, order_id):
        auth.require_admin(self._caller(request))
        change = load_body(StatusChangeSchema, read_json(request))
        return json_response(self.orders.set_status(order_id, change["status"]))

    # --- operations ------------------------------------------------------------------------

    @route(
        "GET",
        "/health",
        api=Api("Liveness", "operations", 200, StatusSchema, secure=False, rpc=False),
    )
    def health(self, request):
        """Liveness: the process serves; dependencies are /ready's business."""
        return json_response({"service": self.name, "status": "ok"})

    @route(
        "GET",
        "/ready",
        api=Api(
            "Readiness: users and orders answer",
            "operations",
            200,
            StatusSchema,
            errors=(503,),
            secure=False,
            rpc=False,
            description="503 names the services that did not answer in `details.checks`.",
        ),
    )
    def ready(self, request):
        """Readiness: users and orders answer ``health`` within a second, in parallel."""
        services = {"users": self.users, "orders": self.orders}
        pool = eventlet.GreenPool(len(services))
        checks = dict(pool.imap(_health_check, services.items()))
        if all(check == "ok" for check in checks.values()):
            return json_response({"service": self.name, "status": "ok", "checks": checks})
        failing = sorted(name for name, check in checks.items() if check != "ok")
        message = f"not ready: {', '.join(failing)} did not answer health in time"
        body = error_body("UNAVAILABLE", message, {"checks": checks}, request_id_of(request))
        return json_response(body, 503)

    @route(
        "GET",
        "/metrics",
        api=Api(
            "Prometheus metrics",
            "operations",
            200,
            secure=False,
            rpc=False,
            content_type="text/plain",
        ),
    )
    def prometheus_metrics(self, request):
        return self.metrics.response()

    @route(
        "GET",
        "/openapi.json",
        api=Api("This document", "operations", 200, {"type": "object"}, secure=False, rpc=False),
    )
    def openapi_document(self, request):
        return json_response(openapi.document())

    @route(
        "GET",
        "/docs",
        api=Api(
            "Interactive API documentation (HTML)",
            "operations",
            200,
            secure=False,
            rpc=False,
            content_type="text/html",
            errors=(304,),
        ),
    )
    def docs_page(self, request):
        """Swagger UI over /openapi.json; its assets come from the route below."""
        return docs.page(request)

    @route(
        "GET",
        "/docs/<asset>",
        api=Api(
            "A file of the documentation page",
            "operations",
            200,
            secure=False,
            rpc=False,
            content_type=tuple(sorted(set(docs.ASSET_TYPES.values()))),
            errors=(304, 404),
            path_schemas=ASSET_PARAMETER,
        ),
    )
    def docs_asset(self, request, asset):
        return docs.asset(request, asset)


@contextmanager
def query_errors():
    """A list call's arguments are all query parameters: what the service refuses
    (an unknown cursor) is a bad request (400), not a bad body (422)."""
    try:
        yield
    except InvalidInput as error:
        raise BadRequest(error.message, error.details) from None


def owner_scope(caller):
    """The ``user_id`` to scope an order lookup by: none for an admin."""
    return None if caller.is_admin else caller.user_id


def idempotency_key(request):
    """The ``Idempotency-Key`` header, checked (400 if it breaks the contract), or None."""
    value = request.headers.get("Idempotency-Key")
    params = {} if value is None else {"idempotency_key": value}
    return load_params(instance_of(IdempotencyKeySchema), params, "invalid Idempotency-Key header")[
        "idempotency_key"
    ]


def _health_check(item):
    name, proxy = item
    try:
        report = proxy.call("health", timeout=READY_TIMEOUT)
    except ServiceError as error:
        return name, error.code.lower()
    return name, "ok" if report.get("status") == "ok" else report.get("status", "unknown")
