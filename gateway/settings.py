"""The gateway's config: checked at start-up, and the JWT secret resolved.

Outside development (``ENVIRONMENT`` other than ``development``) a missing,
short, low-entropy or example ``JWT_SECRET`` refuses to start. In development,
with no secret set, one is generated once and kept in ``JWT_SECRET_FILE``
(default ``var/jwt_secret``), so local tokens survive a restart; a warning says so.
"""

import ipaddress
import logging
import math
import os
import secrets
import zlib
from collections import Counter

from shared.config import ConfigError, check_positive_ints
from shared.tokens import MIN_SECRET_BYTES, secret_problem

log = logging.getLogger(__name__)

DEVELOPMENT = "development"
DEFAULT_SECRET_FILE = "var/jwt_secret"  # noqa: S105 (a path, not a secret)
HOW_TO_SET = (
    f"set JWT_SECRET to a random string of at least {MIN_SECRET_BYTES} bytes, e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
)


def environment(config):
    return str(config.get("ENVIRONMENT") or DEVELOPMENT)


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


def check_gateway(config, service_name):
    """Problems with the gateway's own keys (for :class:`shared.config.ConfigCheck`)."""
    problems = check_positive_ints(
        config, "ACCESS_TOKEN_MINUTES", "REFRESH_TOKEN_DAYS", "MAX_BODY_BYTES"
    )
    problems += trusted_proxies_problems(config)
    secret = config.get("JWT_SECRET")
    problem = secret_problem(secret)
    in_development = environment(config) == DEVELOPMENT
    if problem is None and not in_development:
        problem = weak_secret_problem(secret)
    if problem and (secret or not in_development):
        where = "" if in_development else f" (ENVIRONMENT is {environment(config)!r})"
        problems.append(f"JWT_SECRET {problem}{where}: {HOW_TO_SET}")
    return problems


def trusted_proxies(config):
    """``TRUSTED_PROXIES`` (comma-separated addresses or networks) as networks."""
    raw = config.get("TRUSTED_PROXIES") or ""
    if isinstance(raw, list | tuple):
        raw = ",".join(str(part) for part in raw)
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in str(raw).split(",")
        if part.strip()
    )


def trusted_proxies_problems(config):
    try:
        trusted_proxies(config)
    except ValueError as error:
        return [
            f"TRUSTED_PROXIES is not a comma-separated list of addresses or networks ({error}): "
            "set TRUSTED_PROXIES, e.g. 10.0.0.0/8,127.0.0.1"
        ]
    return []


def jwt_secret(config):
    """The secret to sign tokens with; raises :class:`ConfigError` if there is none."""
    secret = config.get("JWT_SECRET")
    problems = check_gateway({"JWT_SECRET": secret, "ENVIRONMENT": environment(config)}, "")
    if problems:
        raise ConfigError("config error in the gateway service:\n  - " + problems[0])
    if secret:
        return secret
    path = config.get("JWT_SECRET_FILE") or DEFAULT_SECRET_FILE
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
