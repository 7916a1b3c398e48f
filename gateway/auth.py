"""Who may do what, and which tokens this gateway instance refuses.

Plain Python, no nameko: the service calls these with what it decoded.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass

from shared.exceptions import AuthenticationFailed, Forbidden, InvalidInput, NotFound
from shared.tokens import token_version_of, user_id_of

ADMIN = "admin"
REVOKED = "token revoked: log in again"
CURRENT_PASSWORD = "current_password"  # noqa: S105 (a field name)


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request, from a checked access token."""

    user_id: int
    role: str
    issued_at: int
    token_version: int = 0

    @classmethod
    def from_claims(cls, claims):
        return cls(
            user_id=user_id_of(claims),
            role=claims["role"],
            issued_at=claims["iat"],
            token_version=token_version_of(claims),
        )

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


def check_role_change(caller, body):
    """Only an admin changes roles (anyone's, their own too)."""
    if isinstance(body, dict) and "role" in body and not caller.is_admin:
        raise Forbidden("only an admin may change a role")


def changes_to_send(caller, user_id, changes):
    """The checked ``changes`` of a PATCH, as the users service should get them.

    Whoever changes their own password proves they know the current one
    (``current_password``, which the users service verifies); an admin changing
    someone else's needs none, so theirs is not passed on.
    """
    if caller.user_id != user_id:
        return {name: value for name, value in changes.items() if name != CURRENT_PASSWORD}
    if "password" in changes and CURRENT_PASSWORD not in changes:
        raise InvalidInput(
            "invalid input", {CURRENT_PASSWORD: ["Required to change your own password."]}
        )
    return changes


class RevokedTokens:
    """Which access tokens this gateway instance must refuse, by user.

    A user's tokens carry the user's ``token_version`` (claim ``ver``). Changing
    a password or a role raises that version in the users service, which
    broadcasts it (``user_updated``); deleting a user broadcasts
    ``user_deleted``. Here each such user has a *floor*: tokens whose version is
    below it are refused (a deleted user's floor is infinite). A floor lives as
    long as a token issued before it can (the access-token lifetime plus a
    margin): after that every such token has expired and the floor has no more
    work to do.

    Broadcasts reach only a running, subscribed instance. Changes made while this
    instance was not subscribed (before it started, or while it reconnected to
    the broker) are unknown to it, but they can only concern tokens issued
    before it subscribed: such a token needs one look-up of the user's current
    version (:meth:`needs_confirmation`, then :meth:`confirm`), after which the
    broadcasts cover that user. ``margin`` (seconds) allows for clock skew
    between gateway instances: ``iat`` comes from the issuing instance's clock.
    """

    DELETED = float("inf")

    def __init__(self, ttl_seconds, margin=2, max_size=100_000, clock=time.time):
        self.ttl = ttl_seconds + margin
        self.margin = margin
        self.max_size = max_size
        self.clock = clock
        self.listening_since = None
        self._floors = OrderedDict()  # user id -> (lowest valid version, when set), oldest first
        self._confirmed = set()

    def subscribed(self):
        """The broadcast queues were (re)declared: changes before now may be unknown."""
        self.listening_since = self.clock()
        self._confirmed.clear()

    def raise_floor(self, user_id, version):
        """Refuse ``user_id``'s tokens of a version below ``version`` from now on."""
        now = self.clock()
        current = self._floors.pop(user_id, None)
        if current is not None and now - current[1] <= self.ttl:
            version = max(version, current[0])
        self._floors[user_id] = (version, now)
        self._forget_expired(now)
        if len(self._floors) > self.max_size:
            # forgetting a live floor would let its tokens through: instead,
            # act as if just subscribed, so older tokens are confirmed again
            self._floors.popitem(last=False)
            self.subscribed()

    def user_deleted(self, user_id):
        self.raise_floor(user_id, self.DELETED)

    def is_revoked(self, user_id, version):
        floor = self._floors.get(user_id)
        if floor is None or self.clock() - floor[1] > self.ttl:
            return False
        return version < floor[0]

    def needs_confirmation(self, user_id, issued_at):
        if self.listening_since is None:
            return True
        if issued_at > self.listening_since + self.margin:
            return False
        return user_id not in self._confirmed

    def confirm(self, user_id, current_version):
        """What the users service says now: its version, or ``None`` if it is gone."""
        self.raise_floor(user_id, self.DELETED if current_version is None else current_version)
        if len(self._confirmed) < self.max_size:
            self._confirmed.add(user_id)

    def _forget_expired(self, now):
        while self._floors:
            user_id, (_, since) = next(iter(self._floors.items()))
            if now - since <= self.ttl:
                break
            del self._floors[user_id]


def check_access(authorization, decode_access, revoked, current_token_version):
    """The :class:`Caller` of a request, or :class:`AuthenticationFailed`.

    ``decode_access(token)`` checks the signature, expiry and type; ``revoked``
    is this instance's :class:`RevokedTokens`; ``current_token_version(id)``
    asks the users service (``None`` for a deleted user), which happens only
    for tokens issued before this instance subscribed to changes.
    """
    caller = Caller.from_claims(decode_access(bearer_token(authorization)))
    if revoked.needs_confirmation(caller.user_id, caller.issued_at):
        revoked.confirm(caller.user_id, current_token_version(caller.user_id))
    if revoked.is_revoked(caller.user_id, caller.token_version):
        raise AuthenticationFailed(REVOKED)
    return caller
