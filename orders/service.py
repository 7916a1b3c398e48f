"""The orders service: orders with line items, totals, a status machine, idempotent creation.

Entrypoints translate and delegate; the logic lives in :mod:`orders.logic`.
"""

from nameko.web.handlers import http

from orders import logic
from orders.dependencies import Users
from orders.models import Base, OutboxEvent
from shared.config import ConfigCheck, check_database
from shared.db import Database
from shared.events import check_event_retries, event_handler
from shared.exceptions import EXPECTED, Unavailable
from shared.health import health_report, json_response
from shared.logs import LoggingContext
from shared.metrics import Metrics, counter
from shared.outbox import Outbox
from shared.rpc import rpc

# Unavailable is a dependency's trouble, not ours: the caller maps it to 503
RPC_EXPECTED = (*EXPECTED, Unavailable)


class OrdersService:
    name = "orders"

    config = ConfigCheck(check_database, check_event_retries)
    log_context = LoggingContext()
    metrics = Metrics(
        counter("orders_created_total", "Orders created (replayed idempotency keys not counted)"),
        counter("order_status_changes_total", "Orders moved to a new status", ["to"]),
    )
    db = Database(Base)
    outbox = Outbox(OutboxEvent)
    users = Users()

    @rpc(expected_exceptions=RPC_EXPECTED)
    def create_order(self, user_id, items, idempotency_key=None):
        """``{"order": order, "created": bool}``; ``created`` is False for a replayed key."""
        result = logic.create_order(
            self.db.session, self.outbox, self.users.exists, user_id, items, idempotency_key
        )
        if result["created"]:
            self.metrics.orders_created.inc()
        return result

    @rpc(expected_exceptions=EXPECTED)
    def get_order(self, order_id, user_id=None):
        return logic.get_order(self.db.read_session, order_id, user_id)

    @rpc(expected_exceptions=EXPECTED)
    def list_orders(self, user_id=None, status=None, limit=20, cursor=None):
        return logic.list_orders(self.db.session, user_id, status, limit, cursor)

    @rpc(expected_exceptions=EXPECTED)
    def cancel_order(self, order_id, user_id=None):
        order = logic.cancel_order(self.db.session, self.outbox, order_id, user_id)
        self.metrics.order_status_changes.labels(to="cancelled").inc()
        return order

    @rpc(expected_exceptions=EXPECTED)
    def set_status(self, order_id, status):
        order = logic.set_status(self.db.session, self.outbox, order_id, status)
        self.metrics.order_status_changes.labels(to=order["status"]).inc()
        return order

    @rpc
    def health(self):
        return health_report(self.name, self.db.session)

    @event_handler("users", "user_deleted")
    def handle_user_deleted(self, payload):
        """The user's pending and paid orders are cancelled (once per event)."""
        cancelled = logic.cancel_orders_of_deleted_user(self.db.session, self.outbox, payload)
        if cancelled:
            self.metrics.order_status_changes.labels(to="cancelled").inc(cancelled)
        return cancelled is not None  # False: a duplicate

    @http("GET", "/health")
    def http_health(self, request):
        """Liveness: the process serves (a database outage is not a reason to restart it)."""
        return json_response({"service": self.name, "status": "ok"})

    @http("GET", "/metrics")
    def http_metrics(self, request):
        return self.metrics.response()

    @http("GET", "/ready")
    def http_ready(self, request):
        """Readiness: the database answers."""
        report = health_report(self.name, self.db.session)
        return json_response(report, 200 if report["status"] == "ok" else 503)
