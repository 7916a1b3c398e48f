"""The marshmallow contracts shared by the gateway and the services.

One definition per contract: the gateway validates HTTP bodies with the same
schema the service validates its RPC arguments with, and OpenAPI is generated
from them.
"""

import unicodedata

from marshmallow import (
    EXCLUDE,
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


def load(schema, data, message="invalid input"):
    """``schema.load(data)``, raising :class:`InvalidInput` with field errors."""
    if not isinstance(data, dict):
        raise InvalidInput(message, {"_schema": ["Expected an object."]})
    try:
        return schema.load(data)
    except ValidationError as error:
        raise InvalidInput(message, error.normalized_messages()) from None


def _no_control_characters(value):
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError("Must not contain control characters.")


class Name(fields.String):
    """A display name: trimmed, 1-100 characters, no control characters."""

    def __init__(self, **kwargs):
        super().__init__(
            validate=[validate.Length(min=1, max=NAME_MAX), _no_control_characters], **kwargs
        )

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class Password(fields.String):
    def __init__(self, **kwargs):
        super().__init__(
            validate=validate.Length(min=PASSWORD_MIN, max=PASSWORD_MAX),
            load_only=True,
            **kwargs,
        )


class UserCreateSchema(Schema):
    """Registration. Emails are stored lower-cased, so they are unique whatever the case."""

    class Meta:
        unknown = RAISE

    email = fields.Email(required=True, validate=validate.Length(max=EMAIL_MAX))
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

    @validates_schema
    def something_to_change(self, data, **kwargs):
        if not data:
            raise ValidationError("Give at least one of name, password, role.")


class CredentialsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = fields.String(required=True, validate=validate.Length(min=1, max=EMAIL_MAX))
    password = fields.String(required=True, validate=validate.Length(min=1, max=PASSWORD_MAX))

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


class IdSchema(Schema):
    id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=2**63 - 1))


def require_id(value, name="id"):
    """A positive integer id, or :class:`InvalidInput` naming the argument."""
    try:
        return IdSchema().load({"id": value})["id"]
    except ValidationError as error:
        raise InvalidInput(f"invalid {name}", {name: error.messages["id"]}) from None
