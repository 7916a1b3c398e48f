"""The marshmallow contracts shared by the gateway and the services.

One definition per contract: the gateway validates HTTP bodies with the same
schema the service validates its RPC arguments with, and OpenAPI is generated
from them.
"""

import functools
import re
import unicodedata
from decimal import Context, Decimal

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from shared.exceptions import InvalidInput

ROLES = ("user", "admin")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
NAME_MAX = 100
EMAIL_MAX = 254


@functools.cache
def instance_of(schema_class):
    """One shared instance per schema class: making a Schema costs more than using it.

    (Schemas keep no state between ``load`` calls, so greenthreads can share one.)
    """
    return schema_class()


def load(schema, data, message="invalid input"):
    """``schema.load(data)``, raising :class:`InvalidInput` with field errors.

    ``schema`` is a Schema class (its shared instance is used) or an instance.
    """
    if isinstance(schema, type):
        schema = instance_of(schema)
    if not isinstance(data, dict):
        raise InvalidInput(message, {"_schema": ["Expected an object."]})
    try:
        return schema.load(data)
    except ValidationError as error:
        raise InvalidInput(message, error.normalized_messages()) from None


def no_control_characters(value):
    # Cs: a lone surrogate, which JSON can carry but UTF-8 cannot store
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValidationError("Must not contain control or unpaired surrogate characters.")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value):
    """No NUL and no lone surrogate: neither can be stored or hashed."""
    if _UNSTORABLE.search(value):
        raise ValidationError("Must not contain NUL or unpaired surrogate characters.")


class Name(fields.String):
    """A display name: trimmed, 1-100 characters, no control characters."""

    def __init__(self, **kwargs):
        super().__init__(
            validate=[validate.Length(min=1, max=NAME_MAX), no_control_characters], **kwargs
        )

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class Password(fields.String):
    def __init__(self, min_length=PASSWORD_MIN, **kwargs):
        super().__init__(
            validate=[validate.Length(min=min_length, max=PASSWORD_MAX), storable],
            load_only=True,
            **kwargs,
        )


class UserCreateSchema(Schema):
    """Registration. Emails are stored lower-cased, so they are unique whatever the case."""

    class Meta:
        unknown = RAISE

    email = fields.Email(required=True, validate=[validate.Length(max=EMAIL_MAX), storable])
    name = Name(required=True)
    password = Password(required=True)
    role = fields.String(load_default="user", validate=validate.OneOf(ROLES))

    @post_load
    def normalise_email(self, data, **kwargs):
        data["email"] = data["email"].strip().lower()
        return data


class UserUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Name()
    password = Password()
    role = fields.String(validate=validate.OneOf(ROLES))
    # proves the caller knows the password they replace (required of a user changing their own)
    current_password = Password(min_length=1)

    @validates_schema
    def something_to_change(self, data, **kwargs):
        if not set(data) - {"current_password"}:
            raise ValidationError("Give at least one of name, password, role.")
        if "current_password" in data and "password" not in data:
            raise ValidationError("Only with a new password.", "current_password")


class CredentialsSchema(Schema):
    class Meta:
        unknown = RAISE

    email = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=EMAIL_MAX), no_control_characters],
    )
    password = fields.String(
        required=True, validate=[validate.Length(min=1, max=PASSWORD_MAX), storable]
    )

    @post_load
    def normalise_email(self, data, **kwargs):
        data["email"] = data["email"].strip().lower()
        return data


class UserSchema(Schema):
    """A user as every caller sees one: never a password or its hash."""

    id = fields.Integer(required=True)
    email = fields.Email(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    order_count = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class PageQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


# ids are the Integer (32-bit) columns of both databases: one bound for every check
ID_MAX = 2**31 - 1


class IdSchema(Schema):
    id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=ID_MAX))


def require_id(value, name="id"):
    """A positive integer id, or :class:`InvalidInput` naming the argument."""
    # the common case without marshmallow (every call checks one or two ids);
    # the schema below words the errors
    if type(value) is int and 1 <= value <= ID_MAX:
        return value
    try:
        return instance_of(IdSchema).load({"id": value})["id"]
    except ValidationError as error:
        raise InvalidInput(f"invalid {name}", {name: error.messages["id"]}) from None


# --- Orders -------------------------------------------------------------------------------------
# (imports kept with the section they serve, so the section is appended whole)

ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
CURRENCY = "EUR"
ITEMS_MIN, ITEMS_MAX = 1, 100
QUANTITY_MIN, QUANTITY_MAX = 1, 1000
UNIT_PRICE_MIN, UNIT_PRICE_MAX = Decimal("0.01"), Decimal("1000000.00")
SKU_MAX = 64
IDEMPOTENCY_KEY_MAX = 255
_PLAIN_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


def printable(value):
    if not value.isprintable() or not value.strip():
        raise ValidationError("Must be printable characters, not only spaces.")


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
