"""Login throttling, shared by every gateway replica: plain functions of a session.

Failed logins are counted per *key*: the email tried, and the client address
the gateway saw. ``per_email`` failures of one email within ``window`` seconds
lock that email for ``lockout`` seconds; ``per_address`` failures from one
address (whatever the emails: password spraying) lock that address. While a key
is locked even the right password is refused (429), so guessing gains nothing.
A success clears its email's failures, never its address's: one account the
attacker owns must not reset the spraying count.

The state lives in the users database, so two gateways count the same failures
and a restart forgets nothing. Rows older than the window are deleted as new
failures come in, so the tables stay as small as the attacks of the last window.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, insert, select

from shared.db import upsert_insert
from shared.exceptions import TooManyRequests
from shared.outbox import utcnow
from users.models import LoginFailure, LoginLock

KEY_MAX = 300


@dataclass(frozen=True)
class LoginLimits:
    """The throttle's policy; the defaults of its settings (:mod:`users.settings`)."""

    per_email: int = 5
    per_address: int = 20
    window: float = 300.0
    lockout: float = 300.0


def email_key(email):
    return f"email:{email}"[:KEY_MAX]


def address_key(address):
    return f"address:{address}"[:KEY_MAX]


def refuse_if_locked(session, keys):
    """:class:`TooManyRequests` (with ``retry_after``) if any of ``keys`` is locked."""
    now = utcnow()
    until = session.scalar(
        select(func.max(LoginLock.locked_until)).where(
            LoginLock.key.in_(keys), LoginLock.locked_until > now
        )
    )
    if until is not None:
        session.rollback()
        wait = int((until - now).total_seconds() + 0.999)
        raise TooManyRequests(
            "too many failed logins: try again later", {"retry_after": max(1, wait)}
        )


def record_failure(session, limits, keys):
    """Count one failure against each ``(key, limit)``; lock the keys that reach
    their limit. Commits."""
    now = utcnow()
    window_start = now - timedelta(seconds=limits.window)
    session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= window_start))
    session.execute(insert(LoginFailure), [{"key": key, "failed_at": now} for key, _ in keys])
    for key, limit in keys:
        failures = session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(LoginFailure.key == key, LoginFailure.failed_at > window_start)
        )
        if failures >= limit:
            _lock(session, key, now + timedelta(seconds=limits.lockout))
    session.commit()


def clear_failures(session, key):
    """Forget ``key``'s failures (a successful login). Commits."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))
    session.commit()


def _lock(session, key, until):
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))
    session.execute(
        upsert_insert(session, LoginLock.__table__)
        .values(key=key, locked_until=until)
        .on_conflict_do_update(index_elements=["key"], set_={"locked_until": until})
    )
