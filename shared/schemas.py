"""What every service's contracts are made of: loading, ids, pages, common validators.

Each service owns its contracts (what it accepts and returns) in its own
``schemas`` module (:mod:`users.schemas`, :mod:`orders.schemas`); the gateway
validates HTTP bodies with them, the services validate their RPC arguments with
them, and the OpenAPI document is generated from them.
"""

import functools
import re
import unicodedata

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.exceptions import InvalidInput


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


# what no field can hold: PostgreSQL cannot store U+0000 in text, and a lone
# surrogate (valid in JSON's \uXXXX escapes) cannot be encoded to UTF-8
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Must not contain NUL (\\u0000) or unpaired surrogate characters."


def storable(value):
    """No NUL and no lone surrogate: neither can be stored or hashed."""
    if UNSTORABLE.search(value):
        raise ValidationError(UNSTORABLE_MESSAGE)


def printable(value):
    if not value.isprintable() or not value.strip():
        raise ValidationError("Must be printable characters, not only spaces.")


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
