"""JSON Web Tokens: issue and check access and refresh tokens.

Pure functions of a secret and a clock: no config, no I/O. HS256 is pinned on
both sides (``algorithms=["HS256"]``), so neither ``alg: none`` nor a token
signed with another algorithm is ever accepted. Every token carries ``sub``
(the user id, a string as RFC 7519 wants), ``role``, ``exp``, ``iat``, ``jti``
and ``type``; a token of the wrong ``type`` is refused, so a refresh token never
works as an access token and the other way round.
"""

import uuid
from datetime import UTC, datetime

import jwt

from shared.exceptions import AuthenticationFailed
from shared.schemas import ID_MAX

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
TOKEN_TYPES = (ACCESS, REFRESH)
REQUIRED_CLAIMS = ("sub", "role", "exp", "iat", "jti", "type")
# the user's token version; tokens issued before the claim existed count as version 0
VERSION_CLAIM = "ver"
# PyJWT warns below this length for HMAC keys, and so do we: refuse
MIN_SECRET_BYTES = 32


def secret_problem(secret):
    """Why ``secret`` cannot sign tokens, or ``None`` if it can."""
    if not secret:
        return "is missing"
    if not isinstance(secret, str):
        return "must be a string"
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    return None


def new_jti():
    return uuid.uuid4().hex


def issue(secret, user_id, role, token_type, lifetime, now=None, jti=None, token_version=0):
    """A signed token and its claims: ``(token, claims)``.

    ``lifetime`` is a ``timedelta``; ``now`` (an aware datetime) is for tests.
    ``token_version`` is the user's version when the token was issued (claim
    ``ver``): changing the password or the role raises it, and the gateway
    refuses tokens of an older version.
    """
    if token_type not in TOKEN_TYPES:
        raise ValueError(f"unknown token type {token_type!r}")
    now = now or datetime.now(UTC)
    issued_at = int(now.timestamp())
    claims = {
        "sub": str(user_id),
        "role": role,
        "iat": issued_at,
        "exp": issued_at + int(lifetime.total_seconds()),
        "jti": jti or new_jti(),
        "type": token_type,
        VERSION_CLAIM: token_version,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), claims


def decode(secret, token, expected_type, now=None):
    """The claims of a valid token of ``expected_type``, else :class:`AuthenticationFailed`.

    Messages say what is wrong (expired, invalid, wrong type) but never why a
    signature failed.
    """
    if not isinstance(token, str) or not token:
        raise AuthenticationFailed("missing token")
    options = {"require": list(REQUIRED_CLAIMS)}
    try:
        if now is None:
            claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=options)
        else:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={**options, "verify_exp": False, "verify_iat": False},
            )
            if claims["exp"] <= int(now.timestamp()):
                raise jwt.ExpiredSignatureError("Signature has expired")
    except jwt.ExpiredSignatureError:
        raise AuthenticationFailed("token expired") from None
    except jwt.PyJWTError:
        raise AuthenticationFailed("invalid token") from None
    if claims.get("type") != expected_type:
        raise AuthenticationFailed(f"wrong token type: expected {expected_type} token")
    if not _is_user_id(claims["sub"]) or not isinstance(claims["role"], str):
        raise AuthenticationFailed("invalid token")
    return claims


def user_id_of(claims):
    return int(claims["sub"])


def token_version_of(claims):
    version = claims.get(VERSION_CLAIM, 0)
    return version if type(version) is int else -1  # a forged odd value is never current


def _is_user_id(sub):
    # an id the users table can hold: anything else was never issued by us
    return isinstance(sub, str) and sub.isdigit() and 0 < len(sub) < 20 and 0 < int(sub) <= ID_MAX
