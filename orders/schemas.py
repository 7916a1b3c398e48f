"""The orders service's contracts: what it accepts and what it returns.

Money is exact: decimal strings with two places, loaded to ``Decimal``.
"""

import re
from decimal import Context, Decimal

from marshmallow import RAISE, Schema, fields, validate

from shared.schemas import ID_MAX, PageQuerySchema, printable

ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
CURRENCY = "EUR"
ITEMS_MIN, ITEMS_MAX = 1, 100
QUANTITY_MIN, QUANTITY_MAX = 1, 1000
UNIT_PRICE_MIN, UNIT_PRICE_MAX = Decimal("0.01"), Decimal("1000000.00")
SKU_MAX = 64
IDEMPOTENCY_KEY_MAX = 255
_PLAIN_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


_AMOUNT_CONTEXT = Context(prec=40)


class Money(fields.Field):
    """An exact amount with at most two decimal places, dumped as ``"19.99"``.

    Loads a decimal string of digits (``"19.99"``, ``"20"``) only: a JSON number
    is refused (DESIGN: money is a decimal string, never a float), as are signs,
    exponents, blanks, ``NaN`` and booleans. Loads to ``Decimal``.
    """

    default_error_messages = {
        "invalid": 'Not an amount: give a decimal string like "19.99".',
        "places": "At most 2 decimal places.",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        match = _PLAIN_DECIMAL.fullmatch(value) if len(value) <= 32 else None
        if match is None:
            raise self.make_error("invalid")
        if match.group(2) and len(match.group(2)) > 2:
            raise self.make_error("places")
        # the default context keeps 28 digits: a 30-digit amount would raise
        # InvalidOperation here; with room for all 32 it reaches the range check
        return Decimal(value).quantize(Decimal("0.01"), context=_AMOUNT_CONTEXT)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return f"{Decimal(value).quantize(Decimal('0.01')):f}"


class ItemSchema(Schema):
    """One line of an order."""

    class Meta:
        unknown = RAISE

    sku = fields.String(required=True, validate=[validate.Length(min=1, max=SKU_MAX), printable])
    quantity = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=QUANTITY_MIN, max=QUANTITY_MAX)
    )
    unit_price = Money(
        required=True, validate=validate.Range(min=UNIT_PRICE_MIN, max=UNIT_PRICE_MAX)
    )


class OrderCreateSchema(Schema):
    """The body of a new order; the owner and the idempotency key come from elsewhere."""

    class Meta:
        unknown = RAISE

    items = fields.List(
        fields.Nested(ItemSchema),
        required=True,
        validate=validate.Length(min=ITEMS_MIN, max=ITEMS_MAX),
    )


class IdempotencyKeySchema(Schema):
    """The ``Idempotency-Key`` a client sends: optional, 1-255 printable characters."""

    idempotency_key = fields.String(
        load_default=None,
        allow_none=True,
        validate=[validate.Length(min=1, max=IDEMPOTENCY_KEY_MAX), printable],
    )


class OrderSchema(Schema):
    """An order as every caller sees one; money as two-place decimal strings."""

    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(ORDER_STATUSES))
    items = fields.List(fields.Nested(ItemSchema), required=True)
    total = Money(required=True)
    currency = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class StatusChangeSchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(required=True, validate=validate.OneOf(ORDER_STATUSES))


class OrderListQuerySchema(PageQuerySchema):
    """``limit``, ``cursor`` and the optional filters ``user_id`` and ``status``."""

    user_id = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=ID_MAX)
    )
    status = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(ORDER_STATUSES)
    )
