"""What the orders service does, as plain functions of a session.

No nameko here: a unit test calls these with a SQLite or PostgreSQL session, an
``OutboxWriter`` and a plain function for the users lookup. Every function that
changes something commits once, with its events, or raises and changes nothing.
"""

import json
import logging
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from orders.models import Customer, Order, OrderItem, ProcessedEvent, cents_to_decimal
from orders.schemas import (
    CURRENCY,
    IdempotencyKeySchema,
    OrderCreateSchema,
    OrderListQuerySchema,
    OrderSchema,
    StatusChangeSchema,
)
from shared.db import Prepared, core_connection, upsert_insert
from shared.events import event_id_of, handle_once
from shared.exceptions import Conflict, IdempotencyKeyReused, InvalidInput, NotFound
from shared.outbox import utcnow
from shared.pagination import decode_cursor, encode_cursor
from shared.schemas import load, require_id

log = logging.getLogger(__name__)
order_schema = OrderSchema()
_orders, _items, _customers = Order.__table__.c, OrderItem.__table__.c, Customer.__table__.c

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# where each status may go; everything else is a Conflict
TRANSITIONS = {
    "pending": ("paid", "cancelled"),
    "paid": ("shipped", "cancelled"),
    "shipped": ("delivered",),
    "delivered": (),
    "cancelled": (),
}
OPEN_STATUSES = ("pending", "paid")


def as_dict(order, lines):
    """The order as every caller sees it: the one mapping from stored rows to the contract.

    ``order`` has ``id``, ``user_id``, ``status``, ``currency``, ``total_cents``,
    ``created_at`` and ``updated_at`` (an ORM ``Order``, a Core row, a namespace);
    ``lines`` its items in order, each with ``sku``, ``quantity`` and
    ``unit_price_cents``. Money goes out as two-place decimal strings.
    """
    return order_schema.dump(
        {
            "id": order.id,
            "user_id": order.user_id,
            "status": order.status,
            "currency": order.currency,
            "total": cents_to_decimal(order.total_cents),
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "items": [
                {
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "unit_price": cents_to_decimal(line.unit_price_cents),
                }
                for line in lines
            ],
        }
    )


def dump(order):
    """An ORM ``Order`` with its items as a dict (see :func:`as_dict`)."""
    return as_dict(order, order.items)


def _not_found(order_id):
    return NotFound(f"order {order_id} not found")


def _get(session, order_id, user_id=None, for_update=False):
    """The order, or NotFound; also NotFound when ``user_id`` is given and is not the owner."""
    order_id = require_id(order_id, "order_id")
    owner = None if user_id is None else require_id(user_id, "user_id")
    order = session.get(Order, order_id, with_for_update=for_update or None)
    if order is None or (owner is not None and order.user_id != owner):
        # someone else's order looks exactly like no order: no existence leak
        raise _not_found(order_id)
    return order


# the statements of the hot write, built once and run on the session's Core
# connection: building them and the ORM's execution path cost more than the SQL
KEY_HOLDER = select(_orders.id, _orders.created_at).where(
    _orders.user_id == bindparam("user_id"), _orders.idempotency_key == bindparam("key")
)
CUSTOMER = (
    select(_customers.deleted_at)
    .where(_customers.user_id == bindparam("user_id"))
    # FOR SHARE on PostgreSQL: see _customer
    .with_for_update(read=True)
)
INSERT_ORDER = insert(Order.__table__).returning(_orders.id)
INSERT_ITEMS = insert(OrderItem.__table__)


def _key_holder(db, user_id, key):
    """``(id, created_at)`` of the user's order holding ``key``, or ``None``."""
    return core_connection(db).execute(KEY_HOLDER, {"user_id": user_id, "key": key}).first()


def _fresh(created_at):
    return created_at > utcnow() - IDEMPOTENCY_WINDOW


def _unknown_user():
    return InvalidInput("invalid order", {"user_id": ["Unknown user."]})


def _customer(session, user_id):
    """The user's row in ``customers`` (or ``None``), share-locked for the transaction.

    The lock (``FOR SHARE`` on PostgreSQL) makes a concurrent ``user_deleted``
    handler wait for our commit; its look-up of open orders then sees the order
    we wrote, and cancels it.
    """
    return session.connection().execute(CUSTOMER, {"user_id": user_id}).first()


def _require_customer(session, user_exists, user_id):
    """Make sure, inside the open transaction, that ``user_id`` may order.

    The local read model answers without a network call. A user it has not
    heard of (their ``user_created`` is still on its way, or they predate the
    read model) is asked of the users service once, outside any transaction,
    and recorded; a tombstone written meanwhile wins over that record.
    """
    row = _customer(session, user_id)
    if row is None:
        session.rollback()  # no network call while a transaction holds locks
        if not user_exists(user_id):
            raise _unknown_user()
        remember_customer(session, user_id)
        row = _customer(session, user_id)
    if row.deleted_at is not None:
        session.rollback()
        raise _unknown_user()


def remember_customer(session, user_id):
    """Record that ``user_id`` exists, unless orders knows it already (or knows it deleted)."""
    session.execute(
        upsert_insert(session, Customer.__table__)
        .values(user_id=user_id)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )


def forget_customer(session, user_id):
    """Mark ``user_id`` deleted: a tombstone, so no later record can revive them."""
    now = utcnow()
    session.execute(
        upsert_insert(session, Customer.__table__)
        .values(user_id=user_id, deleted_at=now)
        .on_conflict_do_update(index_elements=["user_id"], set_={"deleted_at": now})
    )


def create_order(
    session, outbox, user_exists, user_id, items, idempotency_key=None, autocommit=None
):
    """Create an order for ``user_id``; ``{"order": order, "created": bool}``.

    ``created`` is ``False`` when ``idempotency_key`` was already used by this
    user within 24 hours: the first order comes back and nothing is written (an
    HTTP caller answers 201 for ``True``, 200 for ``False``). A replay with other
    ``items`` is refused (:class:`IdempotencyKeyReused`): a key names one request.
    Concurrent calls with one key race on a unique constraint, not on a read:
    exactly one insert wins and the others return the winner. After 24 hours
    the key is released and a new order is made.

    Whether the user exists comes from the ``customers`` read model; only for a
    user it does not know yet is ``user_exists(user_id)`` called (it asks the
    users service and may raise ``Unavailable``), never while the transaction
    is open. An unknown or deleted user is ``InvalidInput``.

    ``autocommit``: a Core connection in autocommit mode. On PostgreSQL the
    usual order (a known user, a new key) is then written by one statement,
    its own transaction (:func:`_create_in_one_statement`); every other case,
    and SQLite, goes through ``session``.
    """
    user_id = require_id(user_id, "user_id")
    items = load(OrderCreateSchema, {"items": items}, "invalid order")["items"]
    key = load(IdempotencyKeySchema, {"idempotency_key": idempotency_key}, "invalid order")[
        "idempotency_key"
    ]
    if autocommit is not None and autocommit.dialect.name == "postgresql":
        result = _create_in_one_statement(autocommit, outbox, user_id, items, key)
        if result is not None:
            return result
    return _create_in_session(session, outbox, user_exists, user_id, items, key)


def _create_in_session(session, outbox, user_exists, user_id, items, key):
    """:func:`create_order` on any backend, in several statements and one transaction."""
    earlier = None
    if key is not None:
        earlier = _key_holder(session, user_id, key)
        if earlier is not None and _fresh(earlier.created_at):
            session.rollback()
            return _replay(session, earlier.id, items)

    _require_customer(session, user_exists, user_id)

    try:
        if earlier is not None:
            # the key is older than the window: release it for the new order
            session.execute(
                update(Order)
                .where(
                    Order.user_id == user_id,
                    Order.idempotency_key == key,
                    Order.created_at <= utcnow() - IDEMPOTENCY_WINDOW,
                )
                .values(idempotency_key=None)
            )
        data = _insert_order(session, user_id, items, key)
        outbox.add(session, "order_created", _order_created(data))
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = _the_winner(session, user_id, key)
        if winner is None:
            raise
        return _replay(session, winner.id, items)
    # dumped before the commit: reading it back after would cost two queries
    return {"order": data, "created": True}


def _order_created(order):
    """The ``order_created`` event's data for ``order`` (as dumped)."""
    return {
        "order_id": order["id"],
        "user_id": order["user_id"],
        "status": order["status"],
        "items": order["items"],
        "total": order["total"],
        "currency": order["currency"],
    }


def _the_winner(db, user_id, key):
    """After a unique violation: the order of the concurrent call that won the key, or ``None``."""
    winner = _key_holder(db, user_id, key) if key is not None else None
    if winner is not None:
        log.info("a concurrent call with the same idempotency key won: order %s", winner.id)
    return winner


# PostgreSQL: the whole of a usual create as one statement, which autocommit makes
# its own transaction: one round trip instead of seven (BEGIN, key, customer, order,
# items, outbox, COMMIT). It writes only when the user is known and not deleted and
# the key is free; otherwise it writes nothing and says why. The customer's row is
# share-locked as in _customer. The order's id exists only inside the statement, so
# the outbox payload gets it there.
CREATE_IN_ONE_STATEMENT = Prepared(
    "create_order",
    text(
        """
    WITH customer AS (
        SELECT deleted_at FROM customers WHERE user_id = :user_id FOR SHARE
    ), key_holder AS (
        SELECT id, created_at FROM orders
        WHERE user_id = :user_id AND idempotency_key = :idempotency_key
    ), new_order AS (
        INSERT INTO orders
            (user_id, status, currency, total_cents, idempotency_key, created_at, updated_at)
        SELECT :user_id, :status, :currency, :total_cents, :idempotency_key, :now, :now
        WHERE EXISTS (SELECT FROM customer WHERE deleted_at IS NULL)
            AND NOT EXISTS (SELECT FROM key_holder)
        RETURNING id
    ), new_items AS (
        INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents)
        SELECT new_order.id, line.position, line.sku, line.quantity, line.unit_price_cents
        FROM new_order, jsonb_to_recordset(CAST(:lines AS jsonb)) AS line(
            position integer, sku text, quantity integer, unit_price_cents bigint
        )
    ), new_event AS (
        INSERT INTO outbox (event_id, event_type, payload, headers, created_at, attempts)
        SELECT :event_id, :event_type,
            CAST(CAST(:payload AS jsonb) || jsonb_build_object('order_id', new_order.id) AS text),
            :headers, :created_at, :attempts
        FROM new_order
    )
    SELECT
        (SELECT id FROM new_order) AS order_id,
        EXISTS (SELECT FROM customer WHERE deleted_at IS NOT NULL) AS customer_deleted,
        (SELECT id FROM key_holder) AS holder_id,
        (SELECT created_at FROM key_holder) AS holder_created_at
    """
    ),
)


def _create_in_one_statement(connection, outbox, user_id, items, key):
    """:func:`create_order` on PostgreSQL in one statement; ``None``: take the session's way.

    ``None`` for the rare cases the statement leaves alone: a user orders has
    not heard of (the users service must be asked, outside any transaction) and
    a key older than the window (it must be released first).
    """
    now = utcnow()
    lines, total_cents = _lines_and_total(items)
    data = _pending_order(None, user_id, lines, total_cents, now)  # the id comes back below
    _, event = outbox.row("order_created", _order_created(data))
    try:
        outcome = CREATE_IN_ONE_STATEMENT.run(
            connection,
            {
                "user_id": user_id,
                "status": data["status"],
                "currency": data["currency"],
                "total_cents": total_cents,
                "idempotency_key": key,
                "now": now,
                "lines": json.dumps(lines),
                **event,
            },
        ).one()
    except IntegrityError:
        winner = _the_winner(connection, user_id, key)
        if winner is None:
            raise
        return _replay(connection, winner.id, items)
    if outcome.order_id is not None:
        outbox.wrote()
        data["id"] = outcome.order_id
        return {"order": data, "created": True}
    if outcome.holder_id is not None:
        if _fresh(outcome.holder_created_at):
            return _replay(connection, outcome.holder_id, items)
        return None
    if outcome.customer_deleted:
        raise _unknown_user()
    return None  # a user orders has not heard of


def _lines_and_total(items):
    """The rows of ``order_items`` for ``items`` (without ``order_id``) and their total in cents."""
    lines = [
        {
            "position": position,
            "sku": item["sku"],
            "quantity": item["quantity"],
            "unit_price_cents": int(item["unit_price"] * 100),
        }
        for position, item in enumerate(items)
    ]
    return lines, sum(line["quantity"] * line["unit_price_cents"] for line in lines)


def _replay(session, order_id, items):
    """The first order made with a key, if ``items`` are what made it."""
    order = get_order(session, order_id)
    if _lines(order["items"]) != _lines(items):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different order: use a new key",
            {"idempotency_key": ["Already used with a different body."]},
        )
    return {"order": order, "created": False}


def _lines(items):
    """Items compared by value: ``"19.9"``, ``"19.90"`` and ``Decimal("19.9")`` are one price."""
    return [(item["sku"], item["quantity"], Decimal(item["unit_price"])) for item in items]


def _insert_order(session, user_id, items, key):
    """Insert the order and its items with Core statements; the order as dumped.

    The hot write: two statements (the items in one executemany), no ORM
    unit of work.
    """
    now = utcnow()
    lines, total_cents = _lines_and_total(items)
    connection = session.connection()
    order_id = connection.execute(
        INSERT_ORDER,
        {
            "user_id": user_id,
            "status": "pending",
            "currency": CURRENCY,
            "total_cents": total_cents,
            "idempotency_key": key,
            "created_at": now,
            "updated_at": now,
        },
    ).scalar_one()
    connection.execute(INSERT_ITEMS, [{**line, "order_id": order_id} for line in lines])
    return _pending_order(order_id, user_id, lines, total_cents, now)


def _pending_order(order_id, user_id, lines, total_cents, now):
    """A new order as dumped (:func:`as_dict`), from the values written for it."""
    written = SimpleNamespace(
        id=order_id,
        user_id=user_id,
        status="pending",
        currency=CURRENCY,
        total_cents=total_cents,
        created_at=now,
        updated_at=now,
    )
    return as_dict(written, [SimpleNamespace(**line) for line in lines])


# what as_dict reads of an order and of its lines
_ORDER_COLUMNS = (
    _orders.id,
    _orders.user_id,
    _orders.status,
    _orders.currency,
    _orders.total_cents,
    _orders.created_at,
    _orders.updated_at,
)
_LINE_COLUMNS = (_items.sku, _items.quantity, _items.unit_price_cents)

# built once: a Core statement skips the ORM's per-call compile work
ORDER_WITH_ITEMS = (
    select(*_ORDER_COLUMNS, *_LINE_COLUMNS)
    .select_from(Order.__table__.outerjoin(OrderItem.__table__))
    .where(_orders.id == bindparam("order_id"))
    .order_by(_items.position)
)


def get_order(db, order_id, user_id=None):
    """The order; ``NotFound`` if there is none or ``user_id`` is given and does not own it.

    The hot read: one query (the order joined to its items), no ORM objects.
    ``db`` is a Session or a Core connection (a worker's ``autocommit_connection``).
    """
    order_id = require_id(order_id, "order_id")
    owner = None if user_id is None else require_id(user_id, "user_id")
    rows = core_connection(db).execute(ORDER_WITH_ITEMS, {"order_id": order_id}).all()
    if not rows or (owner is not None and rows[0].user_id != owner):
        raise _not_found(order_id)
    # an order without items (none is ever written) still comes back, with no lines
    return as_dict(rows[0], [row for row in rows if row.sku is not None])


def list_orders(db, user_id=None, status=None, limit=20, cursor=None):
    """A page ``{"items": [...], "next_cursor": str | None}``, oldest first.

    One query: the page of orders (one more than ``limit``, to know whether a
    next page exists) joined to their items, no ORM objects. ``db`` is a
    Session or a Core connection, as for :func:`get_order`.
    """
    query = load(
        OrderListQuerySchema,
        {"user_id": user_id, "status": status, "limit": limit, "cursor": cursor},
        "invalid query",
    )
    page = select(*_ORDER_COLUMNS)
    if query["user_id"] is not None:
        page = page.where(_orders.user_id == query["user_id"])
    if query["status"] is not None:
        page = page.where(_orders.status == query["status"])
    after = decode_cursor(query["cursor"])
    if after is not None:
        page = page.where(_orders.id > after)
    page = page.order_by(_orders.id).limit(query["limit"] + 1).subquery()
    rows = core_connection(db).execute(
        select(page, *_LINE_COLUMNS)
        .select_from(page.outerjoin(OrderItem.__table__, _items.order_id == page.c.id))
        .order_by(page.c.id, _items.position)
    )
    orders = {}  # id -> (the order's row, its lines), in page order
    for row in rows:
        _, lines = orders.setdefault(row.id, (row, []))
        if row.sku is not None:
            lines.append(row)
    pages = list(orders.values())
    next_cursor = None
    if len(pages) > query["limit"]:
        pages = pages[: query["limit"]]
        next_cursor = encode_cursor(pages[-1][0].id)
    return {"items": [as_dict(order, lines) for order, lines in pages], "next_cursor": next_cursor}


def _change_status(session, outbox, order, new_status):
    old_status = order.status
    if new_status not in TRANSITIONS[old_status]:
        raise Conflict(
            f"order {order.id} cannot go from {old_status} to {new_status}",
            {"from": old_status, "to": new_status},
        )
    order.status = new_status
    order.updated_at = utcnow()
    outbox.add(
        session,
        "order_status_changed",
        {"order_id": order.id, "user_id": order.user_id, "from": old_status, "to": new_status},
    )


def set_status(session, outbox, order_id, status):
    """Move the order along ``pending → paid → shipped → delivered`` (or to ``cancelled``).

    An unknown status is ``InvalidInput``; a move the machine does not allow is
    ``Conflict`` naming both states. The row is locked while it changes
    (``SELECT ... FOR UPDATE`` on PostgreSQL), so two racing changes cannot
    both start from the same state.
    """
    new_status = load(StatusChangeSchema, {"status": status}, "invalid status")["status"]
    order = _get(session, order_id, for_update=True)
    try:
        _change_status(session, outbox, order, new_status)
    except Conflict:
        session.rollback()
        raise
    session.commit()
    return dump(order)


def cancel_order(session, outbox, order_id, user_id=None):
    """Cancel a ``pending`` or ``paid`` order, else ``Conflict``; owner check as ``get_order``."""
    order = _get(session, order_id, user_id, for_update=True)
    try:
        _change_status(session, outbox, order, "cancelled")
    except Conflict:
        session.rollback()
        raise
    session.commit()
    return dump(order)


def cancel_orders_of_deleted_user(session, outbox, payload):
    """Handle ``user_deleted``: cancel the user's open orders, once per event.

    Each cancelled order records ``order_status_changed``, in the same
    transaction as the cancellation and the processed ``event_id``. Returns how
    many orders were cancelled, or ``None`` for a redelivered event.
    """
    event_id_of(payload)
    user_id = require_id(payload.get("user_id"), "user_id")
    cancelled = []

    def cancel_open_orders(session):
        # first, so that an order being created for this user either commits
        # before us (and is cancelled below) or sees the tombstone
        forget_customer(session, user_id)
        open_orders = session.scalars(
            select(Order)
            .where(Order.user_id == user_id, Order.status.in_(OPEN_STATUSES))
            .order_by(Order.id)
            .with_for_update()
        ).all()
        for order in open_orders:
            _change_status(session, outbox, order, "cancelled")
            cancelled.append(order.id)

    if not handle_once(session, ProcessedEvent, payload, "user_deleted", cancel_open_orders):
        return None
    return len(cancelled)


def record_user_created(session, payload):
    """Handle ``user_created``: orders learns that the user may order, once per event.

    Returns whether the event was applied (``False`` for a duplicate).
    """
    event_id_of(payload)
    user_id = require_id(payload.get("user_id"), "user_id")
    return handle_once(
        session,
        ProcessedEvent,
        payload,
        "user_created",
        lambda session: remember_customer(session, user_id),
    )
