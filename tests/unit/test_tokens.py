"""shared.tokens: what a token must be to be accepted."""

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from shared import tokens
from shared.exceptions import AuthenticationFailed

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"
MINUTES_15 = timedelta(minutes=15)


def access(secret=SECRET, **kwargs):
    token, _ = tokens.issue(secret, 7, "user", tokens.ACCESS, MINUTES_15, **kwargs)
    return token


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_an_issued_access_token_decodes_to_its_claims():
    token, claims = tokens.issue(SECRET, 7, "admin", tokens.ACCESS, MINUTES_15)
    decoded = tokens.decode(SECRET, token, tokens.ACCESS)
    assert decoded == claims
    assert set(decoded) == {"sub", "role", "exp", "iat", "jti", "type", "ver"}
    assert tokens.token_version_of(decoded) == 0
    assert decoded["sub"] == "7" and tokens.user_id_of(decoded) == 7
    assert decoded["exp"] - decoded["iat"] == 900


def test_every_token_gets_its_own_jti():
    first = tokens.decode(SECRET, access(), tokens.ACCESS)
    second = tokens.decode(SECRET, access(), tokens.ACCESS)
    assert first["jti"] != second["jti"]


def test_a_tampered_signature_is_refused():
    token = access()
    head, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, f"{head}.{body}.{flipped}", tokens.ACCESS)


def test_a_tampered_payload_is_refused():
    token = access()
    head, _, signature = token.split(".")
    claims = tokens.decode(SECRET, token, tokens.ACCESS)
    forged = b64({**claims, "role": "admin"})
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, f"{head}.{forged}.{signature}", tokens.ACCESS)


def test_alg_none_is_refused():
    claims = tokens.decode(SECRET, access(), tokens.ACCESS)
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, unsigned, tokens.ACCESS)


def test_another_hmac_algorithm_is_refused_even_with_the_right_key():
    secret = SECRET * 2  # long enough for HS512, so PyJWT does not warn
    claims = tokens.decode(secret, access(secret=secret), tokens.ACCESS)
    token = jwt.encode(claims, secret, algorithm="HS512")
    with pytest.raises(AuthenticationFailed):
        tokens.decode(secret, token, tokens.ACCESS)


def test_a_token_signed_with_another_key_is_refused():
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, access(secret=OTHER_SECRET), tokens.ACCESS)


def test_an_expired_token_is_refused():
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(AuthenticationFailed, match="expired"):
        tokens.decode(SECRET, access(now=long_ago), tokens.ACCESS)


def test_a_token_is_valid_until_its_exp_and_not_after():
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    token = access(now=issued)
    assert tokens.decode(SECRET, token, tokens.ACCESS, now=issued + timedelta(minutes=14))
    with pytest.raises(AuthenticationFailed, match="expired"):
        tokens.decode(SECRET, token, tokens.ACCESS, now=issued + MINUTES_15)


def test_a_refresh_token_is_refused_as_an_access_token():
    token, _ = tokens.issue(SECRET, 7, "user", tokens.REFRESH, timedelta(days=7))
    with pytest.raises(AuthenticationFailed, match="type"):
        tokens.decode(SECRET, token, tokens.ACCESS)


def test_an_access_token_is_refused_as_a_refresh_token():
    with pytest.raises(AuthenticationFailed, match="type"):
        tokens.decode(SECRET, access(), tokens.REFRESH)


@pytest.mark.parametrize("missing", ["sub", "role", "exp", "iat", "jti", "type"])
def test_a_token_without_a_required_claim_is_refused(missing):
    claims = tokens.decode(SECRET, access(), tokens.ACCESS)
    del claims[missing]
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"), tokens.ACCESS)


@pytest.mark.parametrize("sub", ["0", "-1", "abc", ""])
def test_a_token_whose_subject_is_not_a_user_id_is_refused(sub):
    claims = {**tokens.decode(SECRET, access(), tokens.ACCESS), "sub": sub}
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"), tokens.ACCESS)


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", None])
def test_garbage_is_refused_without_a_crash(garbage):
    with pytest.raises(AuthenticationFailed):
        tokens.decode(SECRET, garbage, tokens.ACCESS)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [(None, "missing"), ("", "missing"), ("short", "shorter than 32 bytes"), (SECRET, None)],
)
def test_secret_problem_names_what_is_wrong(secret, problem):
    found = tokens.secret_problem(secret)
    assert found == problem if problem is None else problem in found
