"""Keyset pagination with opaque cursors.

A cursor is the last id of the page, base64-wrapped so clients do not build
them; keyset (``WHERE id > :after``) stays fast at any depth, unlike OFFSET.
"""

import base64
import binascii
import json

from shared.exceptions import InvalidInput


def encode_cursor(last_id):
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor):
    """The id to continue after; ``None`` for the first page."""
    if cursor in (None, ""):
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
        if isinstance(after, int) and not isinstance(after, bool) and after >= 0:
            return after
    except (ValueError, TypeError, KeyError, binascii.Error, AttributeError):
        pass
    raise InvalidInput("invalid cursor", {"cursor": ["Not a cursor this service issued."]})


def paginate(session, statement, id_column, limit, cursor):
    """Run ``statement`` one page at a time: ``(rows, next_cursor)``."""
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(id_column > after)
    rows = session.scalars(statement.order_by(id_column).limit(limit + 1)).all()
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(getattr(rows[-1], id_column.key))
    return rows, None
