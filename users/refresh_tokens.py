"""Refresh-token state: which refresh tokens are live, as plain functions of a session.

The gateway signs tokens; this module remembers them by ``jti`` so that a
rotation holds across gateway restarts and replicas. Rotation is one
transaction: the old row is marked used with a conditional UPDATE (only one of
two racing refreshes can see ``rowcount == 1``) and the new row is inserted.
Deleting a user deletes its rows (``ON DELETE CASCADE``), so its refresh tokens
stop working at once.

Reuse of a token that was already rotated is a sign it was stolen (the thief or
the owner holds a stale copy), so, as the OAuth 2.0 security best practice
advises, every live refresh token of that user is revoked: both parties must log
in again.
"""

from datetime import UTC, datetime

from sqlalchemy import select, update

from shared.exceptions import AuthenticationFailed, InvalidInput, NotFound
from shared.outbox import utcnow
from shared.schemas import require_id
from users.logic import with_token_version
from users.models import RefreshToken, User

JTI_MAX = 64


def _jti(value, name):
    if not isinstance(value, str) or not 0 < len(value) <= JTI_MAX:
        raise InvalidInput(f"invalid {name}", {name: ["A token id of 1-64 characters."]})
    return value


def _when(value, name):
    """An aware datetime from a datetime or an ISO 8601 string (what crosses RPC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime):
        raise InvalidInput(f"invalid {name}", {name: ["An ISO 8601 date and time."]})
    # stored in UTC: SQLite compares the text, so every value must be in one zone
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def store_refresh_token(session, user_id, jti, expires_at):
    """Record a newly issued refresh token of ``user_id`` (after a login)."""
    user_id = require_id(user_id, "user_id")
    row = RefreshToken(
        jti=_jti(jti, "jti"), user_id=user_id, expires_at=_when(expires_at, "expires_at")
    )
    if session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} not found")
    session.add(row)
    session.commit()


def rotate_refresh_token(session, old_jti, new_jti, new_expires_at):
    """Spend ``old_jti`` and record ``new_jti`` in its place; returns the current user.

    Fails with :class:`AuthenticationFailed` if the old token is unknown, expired,
    already used (then every token of its user is revoked) or its user is gone.
    The user is returned as it is now (with its ``token_version``), so the next
    tokens carry its current role and version.
    """
    old_jti = _jti(old_jti, "old_jti")
    row = RefreshToken(
        jti=_jti(new_jti, "new_jti"), expires_at=_when(new_expires_at, "new_expires_at")
    )
    now = utcnow()
    spent = session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.jti == old_jti,
            RefreshToken.used_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        session.rollback()
        _revoke_family_if_reused(session, old_jti)
        raise AuthenticationFailed("refresh token is invalid, expired or already used")
    user_id = session.scalar(select(RefreshToken.user_id).where(RefreshToken.jti == old_jti))
    user = session.get(User, user_id)
    row.user_id = user_id
    session.add(row)
    session.commit()
    return with_token_version(user)


def _revoke_family_if_reused(session, jti):
    user_id = session.scalar(
        select(RefreshToken.user_id).where(
            RefreshToken.jti == jti, RefreshToken.used_at.is_not(None)
        )
    )
    if user_id is None:
        return
    revoke_user_tokens(session, user_id)


def revoke_user_tokens(session, user_id):
    """Mark every live refresh token of ``user_id`` used; returns how many."""
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount
