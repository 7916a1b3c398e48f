"""The gateway's config: checked at start-up, and the JWT secret resolved.

Outside development (``ENVIRONMENT`` other than ``development``) a missing or
weak ``JWT_SECRET`` refuses to start. In development, with no secret set, one is
generated once and kept in ``JWT_SECRET_FILE`` (default ``var/jwt_secret``), so
local tokens survive a restart; a warning says so.
"""

import logging
import os
import secrets

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


def check_gateway(config, service_name):
    """Problems with the gateway's own keys (for :class:`shared.config.ConfigCheck`)."""
    problems = check_positive_ints(
        config, "ACCESS_TOKEN_MINUTES", "REFRESH_TOKEN_DAYS", "MAX_BODY_BYTES"
    )
    secret = config.get("JWT_SECRET")
    problem = secret_problem(secret)
    in_development = environment(config) == DEVELOPMENT
    if problem and (secret or not in_development):
        where = "" if in_development else f" (ENVIRONMENT is {environment(config)!r})"
        problems.append(f"JWT_SECRET {problem}{where}: {HOW_TO_SET}")
    return problems


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
