"""The gateway's nameko dependencies: tokens, revocations, client addresses.

Each holds per-container state created in ``setup`` and hands the same object
to every worker; the logic they wrap lives in :mod:`gateway.auth` and
:mod:`shared.tokens`.
"""

import time
import uuid
from datetime import timedelta

from nameko.events import BROADCAST, EventHandler
from nameko.extensions import DependencyProvider

from gateway.auth import RevokedTokens
from gateway.http import client_address
from gateway.settings import jwt_secret
from shared import tokens
from shared.framework import PerConnectionQueue, QueueConsumer, with_name
from shared.settings import settings_of


class TokenPair:
    def __init__(self, access, refresh, expires_in):
        self.access = access
        self.refresh = refresh
        self.expires_in = expires_in

    def body(self):
        return {
            "access_token": self.access,
            "refresh_token": self.refresh,
            "token_type": "bearer",
            "expires_in": self.expires_in,
        }


class Tokens(DependencyProvider):
    """Signs and checks the gateway's JWTs with the configured secret."""

    def setup(self):
        settings = settings_of(self.container)
        self.secret = jwt_secret(settings)
        self.access_lifetime = timedelta(minutes=settings.access_token_minutes)
        self.refresh_lifetime = timedelta(days=settings.refresh_token_days)
        # access tokens already verified, by their exact text: a client sends the
        # same token for 15 minutes, so the HMAC and claim checks run once per token
        self._verified_access = {}

    def get_dependency(self, worker_ctx):
        return self

    def new_refresh_jti(self):
        return tokens.new_jti()

    def refresh_expiry(self, now):
        return now + self.refresh_lifetime

    def issue_pair(self, user, refresh_jti, now):
        """Access and refresh tokens for ``user`` (a users-service dict)."""
        version = user.get("token_version", 0)
        access, _ = tokens.issue(
            self.secret,
            user["id"],
            user["role"],
            tokens.ACCESS,
            self.access_lifetime,
            now,
            token_version=version,
        )
        refresh, _ = tokens.issue(
            self.secret,
            user["id"],
            user["role"],
            tokens.REFRESH,
            self.refresh_lifetime,
            now,
            jti=refresh_jti,
            token_version=version,
        )
        return TokenPair(access, refresh, int(self.access_lifetime.total_seconds()))

    VERIFIED_CACHE_SIZE = 10_000

    def decode_access(self, token):
        """The claims of a valid access token (see :func:`shared.tokens.decode`).

        A token that verified once is remembered until it expires; the cache
        holds at most ``VERIFIED_CACHE_SIZE`` tokens, forgetting the oldest first.
        Revocation (deleted users) is checked by the caller on every request.
        """
        claims = self._verified_access.get(token)
        if claims is not None:
            if claims["exp"] > time.time():
                return claims
            del self._verified_access[token]
        claims = tokens.decode(self.secret, token, tokens.ACCESS)
        if len(self._verified_access) >= self.VERIFIED_CACHE_SIZE:
            del self._verified_access[next(iter(self._verified_access))]
        self._verified_access[token] = claims
        return claims

    def decode_refresh(self, token):
        return tokens.decode(self.secret, token, tokens.REFRESH)


class Revocations(DependencyProvider):
    """One :class:`RevokedTokens` per container, as long-lived as the access tokens."""

    def setup(self):
        minutes = settings_of(self.container).access_token_minutes
        self.revoked = RevokedTokens(ttl_seconds=minutes * 60)

    def get_dependency(self, worker_ctx):
        return self.revoked


class ClientAddresses(DependencyProvider):
    """``client_address(request)``: the socket peer, or ``X-Forwarded-For`` when the
    peer is one of ``TRUSTED_PROXIES`` (see :func:`gateway.http.client_address`)."""

    def setup(self):
        self.trusted = settings_of(self.container).trusted_proxies

    def get_dependency(self, worker_ctx):
        return self

    def __call__(self, request):
        return client_address(request, self.trusted)


class RevocationFeed(PerConnectionQueue, EventHandler):
    """A BROADCAST handler that tells :class:`Revocations` when it (re)subscribes.

    Its queue is exclusive and auto-deleted (no reliable delivery: one queue per
    running instance, gone with it), named anew on every (re)connection to the
    broker (:class:`shared.framework.PerConnectionQueue`), which is exactly when
    events may have been missed: that is where the revocations learn it.
    """

    queue_consumer = QueueConsumer()  # survives an ack on a reset connection

    def __init__(self, source_service, event_type, **kwargs):
        super().__init__(
            source_service, event_type, handler_type=BROADCAST, reliable_delivery=False, **kwargs
        )

    def renamed(self, queue):
        # evt-<source>-<event>--<service>.<method>-<32 hex>, as nameko names it
        return with_name(queue, f"{queue.name.rsplit('-', 1)[0]}-{uuid.uuid4().hex}")

    def subscribed(self, queue):
        for dependency in self.container.dependencies:
            if isinstance(dependency, Revocations) and hasattr(dependency, "revoked"):
                dependency.revoked.subscribed()


revocation_feed = RevocationFeed.decorator
