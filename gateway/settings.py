"""The gateway's settings, and the rules its JWT secret must meet.

Outside development (``ENVIRONMENT`` other than ``development``) a missing,
short, low-entropy or example ``JWT_SECRET`` refuses to start. In development,
with no secret set, one is generated once and kept in ``JWT_SECRET_FILE``, so
local tokens survive a restart; a warning says so.
"""

import ipaddress
import logging
import math
import os
import secrets
import zlib
from collections import Counter
from dataclasses import dataclass

from shared.settings import ConfigError, Invalid, Settings, positive_whole, setting, text
from shared.tokens import MIN_SECRET_BYTES, secret_problem

log = logging.getLogger(__name__)

DEVELOPMENT = "development"
HOW_TO_SET = (
    f"set JWT_SECRET to a random string of at least {MIN_SECRET_BYTES} bytes, e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
)


# Values that stand for a secret in this repository's examples and docs: whoever
# reads the repository knows them. tests/security/test_secrets_stay_secret.py
# holds every JWT_SECRET written in an example file to this check.
PLACEHOLDER_WORDS = ("change-me", "changeme", "replace-me", "replaceme", "example", "placeholder")
EXAMPLE_SECRETS = frozenset(
    {
        "local-compose-only-jwt-secret-replace-me-0123456789abcdef",
        "change-me-to-48-random-bytes-from-secrets-token-urlsafe",
    }
)
# a secret from secrets.token_urlsafe(32) estimates at ~180 bits, 32 random hex
# characters at ~115; "a" * 32 at 0 and a 32-letter alphabet run is caught below
MIN_ESTIMATED_BITS = 100


def weak_secret_problem(secret):
    """Why ``secret`` is too guessable to sign tokens outside development, or ``None``."""
    lowered = secret.lower()
    if secret in EXAMPLE_SECRETS or any(word in lowered for word in PLACEHOLDER_WORDS):
        return "is an example value from the repository"
    if estimated_bits(secret) < MIN_ESTIMATED_BITS or _mostly_runs(secret):
        return "is low in entropy (repeated or sequential characters)"
    return None


def estimated_bits(secret):
    """A rough entropy estimate: Shannon entropy of its characters times its length,
    capped by how well it compresses (a repeated pattern compresses well)."""
    counts = Counter(secret)
    length = len(secret)
    per_char = -sum(n / length * math.log2(n / length) for n in counts.values())
    compressed_bits = 8 * max(0, len(zlib.compress(secret.encode(), 9)) - 8)
    return min(per_char * length, compressed_bits)


def _mostly_runs(secret):
    """True if most neighbours are consecutive characters ("abcdef...", "123456...")."""
    steps = [abs(ord(b) - ord(a)) for a, b in zip(secret, secret[1:], strict=False)]
    return sum(step <= 1 for step in steps) > len(steps) / 2


def jwt_secret_problem(secret, environment):
    """What is wrong with ``secret`` in ``environment``, as a sentence, or ``None``."""
    problem = secret_problem(secret)
    in_development = environment == DEVELOPMENT
    if problem is None and not in_development:
        problem = weak_secret_problem(secret)
    if problem and (secret or not in_development):
        where = "" if in_development else f" (ENVIRONMENT is {environment!r})"
        return f"JWT_SECRET {problem}{where}: {HOW_TO_SET}"
    return None


def networks(value):
    """``TRUSTED_PROXIES`` (comma-separated addresses or networks, or a list) as networks."""
    raw = ",".join(str(part) for part in value) if isinstance(value, list | tuple) else str(value)
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError as error:
        raise Invalid(f"is not a comma-separated list of addresses or networks ({error})") from None


def unchecked(value):
    return value


@dataclass(frozen=True, kw_only=True)
class GatewaySettings(Settings):
    """What the gateway reads: the shared settings, tokens, body size, proxies."""

    environment: str = setting(
        "ENVIRONMENT",
        DEVELOPMENT,
        blank_is_default=True,
        parse=text,
        doc="anything else (compose and Kubernetes say `production`) requires a strong "
        "`JWT_SECRET`",
    )
    jwt_secret: str | None = setting(
        "JWT_SECRET",
        None,
        blank_is_default=True,
        parse=unchecked,  # checked against ENVIRONMENT: see problems()
        secret=True,
        doc=f"HS256 key, {MIN_SECRET_BYTES} random bytes or more; outside development a short, "
        "low-entropy or example value refuses to start; unset in development: one is "
        "generated into `JWT_SECRET_FILE`",
    )
    jwt_secret_file: str = setting(
        "JWT_SECRET_FILE",
        "var/jwt_secret",
        blank_is_default=True,
        parse=text,
        doc="development only: where the generated secret is kept",
    )
    access_token_minutes: int = setting(
        "ACCESS_TOKEN_MINUTES", 15, parse=positive_whole, doc="access token lifetime"
    )
    refresh_token_days: int = setting(
        "REFRESH_TOKEN_DAYS", 7, parse=positive_whole, doc="refresh token lifetime"
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", 65536, parse=positive_whole, doc="largest accepted request body"
    )
    trusted_proxies: tuple = setting(
        "TRUSTED_PROXIES",
        (),
        blank_is_default=True,
        parse=networks,
        example="10.0.0.0/8,127.0.0.1",
        doc="comma-separated addresses or networks of the proxies in front of the gateway; "
        "only from them is `X-Forwarded-For` believed",
    )

    @classmethod
    def problems(cls, values):
        problem = jwt_secret_problem(values["jwt_secret"], values["environment"])
        return [problem] if problem else []


def jwt_secret(settings):
    """The secret to sign tokens with: ``JWT_SECRET``, or in development without one,
    the one kept in ``JWT_SECRET_FILE`` (made on first use).

    Raises :class:`ConfigError` if the secret cannot be used (settings not read
    through :func:`shared.settings.load_settings`, which would have refused it).
    """
    problem = jwt_secret_problem(settings.jwt_secret, settings.environment)
    if problem:
        raise ConfigError.listing("gateway", [problem])
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.jwt_secret_file
    log.warning(
        "JWT_SECRET is not set: using a development secret kept in %s. "
        "Never run like this outside development: %s",
        path,
        HOW_TO_SET,
    )
    return _development_secret(path)


def _development_secret(path):
    try:
        with open(path) as existing:
            secret = existing.read().strip()
        if secret_problem(secret) is None:
            return secret
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # readable by its owner only: the file is a signing key
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as new:
        new.write(secret + "\n")
    return secret
