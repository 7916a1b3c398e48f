"""The orders service: orders with line items, totals, a status machine, idempotent creation.

Entrypoints translate and delegate; the logic lives in :mod:`orders.logic`.
"""

from orders import logic
from orders.dependencies import Users
from orders.models import Base, OutboxEvent

# a module import: a class imported by name would look like a second service to `nameko run`
from shared import health
from shared.db import Database
from shared.events import event_handler
from shared.exceptions import EXPECTED, Unavailable
from shared.heap import FrozenStartupHeap
from shared.logs import LoggingContext
from shared.metrics import Metrics, counter
from shared.outbox import Outbox
from shared.rpc import rpc
from shared.settings import ServiceSettings, SettingsProvider

# Unavailable is a dependency's trouble, not ours: the caller maps it to 503
RPC_EXPECTED = (*EXPECTED, Unavailable)


class OrdersService(health.OperationalEndpoints):
    name = "orders"

    settings = SettingsProvider(ServiceSettings)
    log_context = LoggingContext()
    heap = FrozenStartupHeap()
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
            self.db.session,
            self.outbox,
            self.users.exists,
            user_id,
            items,
            idempotency_key,
            autocommit=self.db.autocommit_connection,
        )
        if result["created"]:
            self.metrics.orders_created.inc()
        return result

    @rpc(expected_exceptions=EXPECTED)
    def get_order(self, order_id, user_id=None):
        return logic.get_order(self.db.autocommit_connection, order_id, user_id)

    @rpc(expected_exceptions=EXPECTED)
    def list_orders(self, user_id=None, status=None, limit=20, cursor=None):
        return logic.list_orders(self.db.autocommit_connection, user_id, status, limit, cursor)

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

    @event_handler("users", "user_created")
    def handle_user_created(self, payload):
        """The new user may order: recorded in orders' read model (once per event)."""
        return logic.record_user_created(self.db.session, payload)  # False: a duplicate

    @event_handler("users", "user_deleted")
    def handle_user_deleted(self, payload):
        """The user may no longer order; their open orders are cancelled (once per event)."""
        cancelled = logic.cancel_orders_of_deleted_user(self.db.session, self.outbox, payload)
        if cancelled:
            self.metrics.order_status_changes.labels(to="cancelled").inc(cancelled)
        return cancelled is not None  # False: a duplicate
