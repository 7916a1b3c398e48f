"""Request and response shapes that only the gateway has (the rest is :mod:`shared.schemas`)."""

from marshmallow import RAISE, Schema, fields, validate

from orders.schemas import OrderSchema
from users.schemas import UserSchema

TOKEN_MAX = 4096


class RefreshRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=TOKEN_MAX))


class TokenPairSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})


class ErrorSchema(Schema):
    """The body of every error."""

    error = fields.String(required=True, metadata={"example": "NOT_FOUND"})
    message = fields.String(required=True)
    details = fields.Raw(allow_none=True, metadata={"description": "field errors, or null"})
    request_id = fields.String(required=True)


class UserPageSchema(Schema):
    items = fields.List(fields.Nested(UserSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class OrderPageSchema(Schema):
    items = fields.List(fields.Nested(OrderSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class StatusSchema(Schema):
    service = fields.String(required=True, metadata={"example": "gateway"})
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String())
