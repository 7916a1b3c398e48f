"""The gateway remembers verified access tokens, but never past their expiry."""

import time
from datetime import timedelta

import pytest
from nameko.containers import ServiceContainer

from gateway.dependencies import Tokens
from gateway.service import GatewayService
from shared import tokens
from shared.exceptions import AuthenticationFailed
from tests.helpers import REQUIRED_SETTINGS

SECRET = "a-test-secret-that-is-long-enough-0123456789"


@pytest.fixture
def provider():
    config = {**REQUIRED_SETTINGS, "JWT_SECRET": SECRET, "ENVIRONMENT": "test"}
    container = ServiceContainer(GatewayService, config)  # made, not started: nothing connects
    [provider] = [d for d in container.dependencies if isinstance(d, Tokens)]
    provider.setup()
    return provider


def access_token(lifetime):
    token, _ = tokens.issue(SECRET, 7, "user", tokens.ACCESS, lifetime)
    return token


def test_a_verified_token_is_answered_from_the_cache(provider):
    token = access_token(timedelta(minutes=15))
    first = provider.decode_access(token)
    assert provider.decode_access(token) is first


def test_a_cached_token_is_refused_once_it_expires(provider):
    token = access_token(timedelta(seconds=1))
    provider.decode_access(token)
    time.sleep(2.1)
    with pytest.raises(AuthenticationFailed) as error:
        provider.decode_access(token)
    assert str(error.value) == "token expired"
    assert token not in provider._verified_access


def test_a_token_that_fails_verification_is_never_cached(provider):
    token = access_token(timedelta(minutes=15))
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            provider.decode_access(tampered)
    assert tampered not in provider._verified_access


def test_the_cache_is_bounded(provider):
    provider.VERIFIED_CACHE_SIZE = 3
    for _ in range(5):
        provider.decode_access(access_token(timedelta(minutes=15)))
    assert len(provider._verified_access) == 3
