"""gateway.auth: who may do what, and which tokens are refused (no broker)."""

from datetime import timedelta

import pytest

from gateway import auth
from gateway.auth import Caller, RevokedTokens
from shared import tokens
from shared.exceptions import AuthenticationFailed, Forbidden, InvalidInput, NotFound

SECRET = "a-unit-test-secret-that-is-long-enough"


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


USER = Caller(user_id=1, role="user", issued_at=0)
OTHER = Caller(user_id=2, role="user", issued_at=0)
ADMIN = Caller(user_id=3, role="admin", issued_at=0)


def test_a_user_may_see_themselves_and_an_admin_anyone():
    auth.require_self_or_admin(USER, 1)
    auth.require_self_or_admin(ADMIN, 1)


def test_someone_elses_user_is_not_found_rather_than_forbidden():
    with pytest.raises(NotFound):
        auth.require_self_or_admin(OTHER, 1)


def test_someone_elses_order_is_not_found():
    with pytest.raises(NotFound):
        auth.require_owner_or_admin(OTHER, {"id": 9, "user_id": 1})
    auth.require_owner_or_admin(ADMIN, {"id": 9, "user_id": 1})


def test_admin_only_actions_are_forbidden_to_a_user():
    with pytest.raises(Forbidden):
        auth.require_admin(USER)
    auth.require_admin(ADMIN)


def test_only_an_admin_changes_a_role_even_their_own():
    with pytest.raises(Forbidden):
        auth.check_role_change(USER, {"role": "user"})
    auth.check_role_change(USER, {"name": "Ann"})
    auth.check_role_change(ADMIN, {"role": "admin"})


def test_changing_your_own_password_needs_the_current_one():
    with pytest.raises(InvalidInput) as refused:
        auth.changes_to_send(USER, 1, {"password": "new password"})
    assert "current_password" in refused.value.details
    with pytest.raises(InvalidInput):
        auth.changes_to_send(ADMIN, 3, {"password": "new password"})  # an admin's own too
    changes = {"password": "new password", "current_password": "old password"}
    assert auth.changes_to_send(USER, 1, changes) == changes


def test_an_admin_changes_someone_elses_password_without_the_current_one():
    assert auth.changes_to_send(ADMIN, 1, {"password": "new password"}) == {
        "password": "new password"
    }
    sent = {"password": "new password", "current_password": "whatever"}
    assert auth.changes_to_send(ADMIN, 1, sent) == {"password": "new password"}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "token abc"])
def test_a_missing_or_non_bearer_authorization_is_refused(header):
    with pytest.raises(AuthenticationFailed):
        auth.bearer_token(header)


def test_the_bearer_scheme_is_case_insensitive():
    assert auth.bearer_token("bearer abc") == "abc"


def test_a_deleted_user_is_refused_whatever_the_token_version():
    clock = Clock()
    revoked = RevokedTokens(ttl_seconds=900, clock=clock)
    revoked.user_deleted(1)
    assert revoked.is_revoked(1, version=0)
    assert revoked.is_revoked(1, version=10**9)
    assert not revoked.is_revoked(2, version=0)


def test_tokens_below_the_floor_are_refused_and_later_ones_pass():
    revoked = RevokedTokens(ttl_seconds=900, clock=Clock())
    revoked.raise_floor(1, 3)
    assert revoked.is_revoked(1, version=2)
    assert not revoked.is_revoked(1, version=3)


def test_a_floor_never_goes_down():
    revoked = RevokedTokens(ttl_seconds=900, clock=Clock())
    revoked.raise_floor(1, 5)
    revoked.raise_floor(1, 4)  # a late broadcast, or a look-up that raced one
    assert revoked.is_revoked(1, version=4)


def test_a_floor_is_forgotten_once_every_token_below_it_has_expired():
    clock = Clock()
    revoked = RevokedTokens(ttl_seconds=900, margin=2, clock=clock)
    revoked.raise_floor(1, 3)
    clock.now += 903
    revoked.raise_floor(2, 1)  # pruning happens on writes
    assert not revoked.is_revoked(1, version=0)
    assert len(revoked._floors) == 1


def test_tokens_older_than_the_subscription_need_one_confirmation():
    clock = Clock()
    revoked = RevokedTokens(ttl_seconds=900, margin=2, clock=clock)
    assert revoked.needs_confirmation(1, issued_at=clock.now - 100)  # not subscribed yet
    revoked.subscribed()
    assert revoked.needs_confirmation(1, issued_at=clock.now - 100)
    revoked.confirm(1, 0)
    assert not revoked.needs_confirmation(1, issued_at=clock.now - 100)
    assert not revoked.needs_confirmation(2, issued_at=clock.now + 10)


def test_a_resubscription_forgets_the_confirmations():
    clock = Clock()
    revoked = RevokedTokens(ttl_seconds=900, clock=clock)
    revoked.subscribed()
    revoked.confirm(1, 0)
    clock.now += 5
    revoked.subscribed()
    assert revoked.needs_confirmation(1, issued_at=clock.now - 20)


def test_overflowing_floors_fall_back_to_confirmation():
    clock = Clock()
    revoked = RevokedTokens(ttl_seconds=900, max_size=2, clock=clock)
    revoked.subscribed()
    revoked.confirm(1, 0)
    for user_id in (1, 2, 3):
        revoked.user_deleted(user_id)
    assert not revoked.is_revoked(1, version=0)  # forgotten ...
    assert revoked.needs_confirmation(1, issued_at=clock.now - 10)  # ... so checked again


def access_claims_decoder(user_id=1, role="user", issued=None, version=0):
    def decode(token):
        assert token == "the-token"
        token, _ = tokens.issue(
            SECRET,
            user_id,
            role,
            tokens.ACCESS,
            timedelta(minutes=15),
            issued,
            token_version=version,
        )
        return tokens.decode(SECRET, token, tokens.ACCESS)

    return decode


def test_check_access_asks_users_once_for_an_older_token_then_trusts_the_broadcasts():
    revoked = RevokedTokens(ttl_seconds=900)
    asked = []

    def current_version(user_id):
        asked.append(user_id)
        return 0

    revoked.subscribed()
    revoked.listening_since += 60  # subscribed after the token was issued
    for _ in range(3):
        caller = auth.check_access(
            "Bearer the-token", access_claims_decoder(), revoked, current_version
        )
    assert caller == Caller(user_id=1, role="user", issued_at=caller.issued_at)
    assert asked == [1]


def test_check_access_refuses_and_remembers_a_user_that_is_gone():
    revoked = RevokedTokens(ttl_seconds=900)
    with pytest.raises(AuthenticationFailed):
        auth.check_access("Bearer the-token", access_claims_decoder(), revoked, lambda _: None)
    assert revoked.is_revoked(1, version=0)


def test_check_access_refuses_an_older_token_after_a_change_it_missed():
    """A replica that was down when the password changed learns it from users."""
    revoked = RevokedTokens(ttl_seconds=900)
    revoked.subscribed()
    revoked.listening_since += 60
    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.check_access("Bearer the-token", access_claims_decoder(), revoked, lambda _: 1)
    assert auth.check_access(
        "Bearer the-token", access_claims_decoder(version=1), revoked, lambda _: 1
    )


def test_check_access_does_not_ask_users_for_a_token_issued_after_subscribing():
    revoked = RevokedTokens(ttl_seconds=900)
    revoked.subscribed()
    revoked.listening_since -= 60

    def current_version(user_id):
        raise AssertionError("no RPC expected")

    assert auth.check_access("Bearer the-token", access_claims_decoder(), revoked, current_version)


def test_check_access_refuses_a_revoked_token_without_asking():
    revoked = RevokedTokens(ttl_seconds=900)
    revoked.subscribed()
    revoked.listening_since -= 60
    revoked.raise_floor(1, 1)

    def current_version(user_id):
        raise AssertionError("no RPC expected")

    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.check_access("Bearer the-token", access_claims_decoder(), revoked, current_version)
