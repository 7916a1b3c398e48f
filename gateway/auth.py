"""Who may do what, and the gateway's memory of refused users and logins.

Plain Python, no nameko: the service calls these with what it decoded.
"""

import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from shared.exceptions import AuthenticationFailed, Forbidden, NotFound
from shared.tokens import user_id_of

ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request, from a checked access token."""

    user_id: int
    role: str
    issued_at: int

    @classmethod
    def from_claims(cls, claims):
        return cls(user_id=user_id_of(claims), role=claims["role"], issued_at=claims["iat"])

    @property
    def is_admin(self):
        return self.role == ADMIN


def bearer_token(authorization):
    """The token of an ``Authorization: Bearer <token>`` header, else 401."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send an access token: Authorization: Bearer <token>")
    return token.strip()


def require_admin(caller):
    if not caller.is_admin:
        raise Forbidden("only an admin may do this")


def require_self_or_admin(caller, user_id, what="user"):
    """Someone else's user is 404, not 403: no one learns which ids exist."""
    if not caller.is_admin and caller.user_id != user_id:
        raise NotFound(f"{what} {user_id} not found")


def require_owner_or_admin(caller, order):
    if not caller.is_admin and order["user_id"] != caller.user_id:
        raise NotFound(f"order {order['id']} not found")


def check_changes(caller, changes):
    """Only an admin changes roles (anyone's, their own too)."""
    if isinstance(changes, dict) and "role" in changes and not caller.is_admin:
        raise Forbidden("only an admin may change a role")


class RevokedUsers:
    """The users whose access tokens this gateway instance must refuse.

    Fed by ``user_deleted`` broadcasts. An entry lives as long as a token issued
    before it can (the access-token lifetime plus a margin), then every such
    token has expired and the entry has no more work to do.

    Broadcasts reach only a running, subscribed instance. Deletions while this
    instance was not subscribed (before it started, or while it reconnected to
    the broker) are unknown to it, but they can only concern tokens issued
    before it subscribed: such tokens need one confirmation from the users
    service (:meth:`needs_confirmation`), after which the broadcast covers them.
    Tokens issued after the subscription need none: a deleted user cannot get
    one. ``margin`` (seconds) allows for clock skew between gateway instances:
    ``iat`` comes from the issuing instance's clock, the revocation time from
    this one's. (A login cannot outrun a deletion: the gateway issues tokens
    only after the users service stored the refresh token, which fails for a
    deleted user.)
    """

    def __init__(self, ttl_seconds, margin=2, max_size=100_000, clock=time.time):
        self.ttl = ttl_seconds + margin
        self.margin = margin
        self.max_size = max_size
        self.clock = clock
        self.listening_since = None
        self._revoked = OrderedDict()  # user id -> time revoked, oldest first
        self._confirmed = set()

    def subscribed(self):
        """The broadcast queue was (re)declared: deletions before now may be unknown."""
        self.listening_since = self.clock()
        self._confirmed.clear()

    def revoke(self, user_id):
        now = self.clock()
        self._revoked.pop(user_id, None)
        self._revoked[user_id] = now
        self._forget_expired(now)
        if len(self._revoked) > self.max_size:
            # forgetting a live entry would let its tokens through: instead,
            # act as if just subscribed, so older tokens are confirmed again
            self._revoked.popitem(last=False)
            self.subscribed()

    def is_revoked(self, user_id, issued_at):
        revoked_at = self._revoked.get(user_id)
        if revoked_at is None or self.clock() - revoked_at > self.ttl:
            return False
        # a token issued well after the deletion belongs to a new user of a reused id
        return issued_at <= revoked_at + self.margin

    def needs_confirmation(self, user_id, issued_at):
        if self.listening_since is None:
            return True
        if issued_at > self.listening_since + self.margin:
            return False
        return user_id not in self._confirmed

    def confirm(self, user_id):
        if len(self._confirmed) < self.max_size:
            self._confirmed.add(user_id)

    def _forget_expired(self, now):
        while self._revoked:
            user_id, revoked_at = next(iter(self._revoked.items()))
            if now - revoked_at <= self.ttl:
                break
            del self._revoked[user_id]


class LoginThrottle:
    """Refuses logins for an email after repeated failures, for a while.

    ``max_failures`` failed logins within ``window`` seconds lock the email for
    ``lockout`` seconds; while locked, even the right password gets 429, so
    guessing gains nothing. A success clears the failures. Per process; at most
    ``max_keys`` emails are tracked (the oldest are forgotten first).
    """

    def __init__(
        self, max_failures=5, window=300, lockout=300, max_keys=10_000, clock=time.monotonic
    ):
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_keys = max_keys
        self.clock = clock
        self._failures = OrderedDict()  # key -> deque of failure times
        self._locked = {}  # key -> locked until

    def retry_after(self, key):
        """Seconds until ``key`` may try again; 0 if it may now."""
        until = self._locked.get(key)
        if until is None:
            return 0
        left = until - self.clock()
        if left <= 0:
            del self._locked[key]
            return 0
        return max(1, int(left + 0.999))

    def failed(self, key):
        now = self.clock()
        failures = self._failures.pop(key, None) or deque()
        failures.append(now)
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if len(failures) >= self.max_failures:
            self._locked[key] = now + self.lockout
            failures.clear()
        else:
            self._failures[key] = failures
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        if len(self._locked) > self.max_keys:
            for stale in [k for k, until in self._locked.items() if until <= now]:
                del self._locked[stale]

    def succeeded(self, key):
        self._failures.pop(key, None)


def check_access(authorization, decode_access, revoked, user_exists):
    """The :class:`Caller` of a request, or :class:`AuthenticationFailed`.

    ``decode_access(token)`` checks the signature, expiry and type;
    ``revoked`` is this instance's :class:`RevokedUsers`; ``user_exists(id)``
    asks the users service, which happens only for tokens issued before this
    instance subscribed to deletions (see :class:`RevokedUsers`).
    """
    caller = Caller.from_claims(decode_access(bearer_token(authorization)))
    if revoked.is_revoked(caller.user_id, caller.issued_at):
        raise AuthenticationFailed("token revoked: the user no longer exists")
    if revoked.needs_confirmation(caller.user_id, caller.issued_at):
        if not user_exists(caller.user_id):
            revoked.revoke(caller.user_id)
            raise AuthenticationFailed("token revoked: the user no longer exists")
        revoked.confirm(caller.user_id)
    return caller
