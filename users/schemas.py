"""The users service's contracts: what it accepts and what it returns."""

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from shared.schemas import no_control_characters, storable

ROLES = ("user", "admin")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
NAME_MAX = 100
EMAIL_MAX = 254


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
