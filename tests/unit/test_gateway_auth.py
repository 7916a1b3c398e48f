"""gateway.auth: who may do what, revoked users, login throttling (no broker)."""

from datetime import timedelta

import pytest

from gateway import auth
from gateway.auth import Caller, LoginThrottle, RevokedUsers
from shared import tokens
from shared.exceptions import AuthenticationFailed, Forbidden, NotFound

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
        auth.check_changes(USER, {"role": "user"})
    auth.check_changes(USER, {"name": "Ann"})
    auth.check_changes(ADMIN, {"role": "admin"})


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "token abc"])
def test_a_missing_or_non_bearer_authorization_is_refused(header):
    with pytest.raises(AuthenticationFailed):
        auth.bearer_token(header)


def test_the_bearer_scheme_is_case_insensitive():
    assert auth.bearer_token("bearer abc") == "abc"


def test_a_revoked_user_is_refused_for_tokens_issued_before_the_deletion():
    clock = Clock()
    revoked = RevokedUsers(ttl_seconds=900, clock=clock)
    revoked.revoke(1)
    assert revoked.is_revoked(1, issued_at=clock.now - 60)
    assert not revoked.is_revoked(2, issued_at=clock.now - 60)


def test_a_new_user_with_a_reused_id_is_not_refused():
    clock = Clock()
    revoked = RevokedUsers(ttl_seconds=900, clock=clock)
    revoked.revoke(1)
    assert not revoked.is_revoked(1, issued_at=clock.now + 60)


def test_a_revocation_is_forgotten_once_every_token_it_covers_has_expired():
    clock = Clock()
    revoked = RevokedUsers(ttl_seconds=900, margin=2, clock=clock)
    revoked.revoke(1)
    clock.now += 903
    revoked.revoke(2)  # pruning happens on writes
    assert not revoked.is_revoked(1, issued_at=clock.now - 1000)
    assert len(revoked._revoked) == 1


def test_tokens_issued_before_subscribing_need_one_confirmation():
    clock = Clock()
    revoked = RevokedUsers(ttl_seconds=900, margin=2, clock=clock)
    assert revoked.needs_confirmation(1, issued_at=clock.now - 100)  # not subscribed yet
    revoked.subscribed()
    assert revoked.needs_confirmation(1, issued_at=clock.now - 100)
    revoked.confirm(1)
    assert not revoked.needs_confirmation(1, issued_at=clock.now - 100)
    assert not revoked.needs_confirmation(2, issued_at=clock.now + 10)


def test_resubscribing_asks_for_confirmations_again():
    clock = Clock()
    revoked = RevokedUsers(ttl_seconds=900, clock=clock)
    revoked.subscribed()
    revoked.confirm(1)
    clock.now += 30
    revoked.subscribed()
    assert revoked.needs_confirmation(1, issued_at=clock.now - 20)


def test_overflowing_the_revocations_falls_back_to_confirmations_not_to_trust():
    clock = Clock()
    revoked = RevokedUsers(ttl_seconds=900, max_size=2, clock=clock)
    revoked.subscribed()
    revoked.confirm(1)
    for user_id in (1, 2, 3):
        revoked.revoke(user_id)
    assert not revoked.is_revoked(1, issued_at=clock.now - 10)  # forgotten ...
    assert revoked.needs_confirmation(1, issued_at=clock.now - 10)  # ... so checked again


def access_claims_decoder(user_id=1, role="user", issued=None):
    def decode(token):
        assert token == "the-token"
        now = issued
        token, _ = tokens.issue(SECRET, user_id, role, tokens.ACCESS, timedelta(minutes=15), now)
        return tokens.decode(SECRET, token, tokens.ACCESS)

    return decode


def test_check_access_asks_users_once_for_an_older_token_then_trusts_the_broadcasts():
    revoked = RevokedUsers(ttl_seconds=900)
    asked = []

    def user_exists(user_id):
        asked.append(user_id)
        return True

    revoked.subscribed()
    revoked.listening_since += 60  # subscribed after the token was issued
    for _ in range(3):
        caller = auth.check_access(
            "Bearer the-token", access_claims_decoder(), revoked, user_exists
        )
    assert caller == Caller(user_id=1, role="user", issued_at=caller.issued_at)
    assert asked == [1]


def test_check_access_refuses_and_remembers_a_user_that_is_gone():
    revoked = RevokedUsers(ttl_seconds=900)
    with pytest.raises(AuthenticationFailed):
        auth.check_access("Bearer the-token", access_claims_decoder(), revoked, lambda _: False)
    assert revoked.is_revoked(1, issued_at=0)


def test_check_access_does_not_ask_users_for_a_token_issued_after_subscribing():
    revoked = RevokedUsers(ttl_seconds=900)
    revoked.subscribed()
    revoked.listening_since -= 60

    def user_exists(user_id):
        raise AssertionError("no RPC expected")

    assert auth.check_access("Bearer the-token", access_claims_decoder(), revoked, user_exists)


def test_check_access_refuses_a_revoked_user_without_asking():
    revoked = RevokedUsers(ttl_seconds=900)
    revoked.subscribed()
    revoked.revoke(1)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.check_access("Bearer the-token", access_claims_decoder(), revoked, lambda _: True)


def test_five_failed_logins_in_the_window_lock_the_email():
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, window=300, lockout=300, clock=clock)
    for _ in range(4):
        throttle.failed("ann@example.com")
        assert throttle.retry_after("ann@example.com") == 0
    throttle.failed("ann@example.com")
    assert throttle.retry_after("ann@example.com") == 300
    assert throttle.retry_after("bob@example.com") == 0


def test_the_lock_ends_after_the_lockout():
    clock = Clock()
    throttle = LoginThrottle(max_failures=2, window=300, lockout=300, clock=clock)
    throttle.failed("a")
    throttle.failed("a")
    clock.now += 299.5
    assert throttle.retry_after("a") == 1
    clock.now += 1
    assert throttle.retry_after("a") == 0


def test_failures_outside_the_window_do_not_count():
    clock = Clock()
    throttle = LoginThrottle(max_failures=2, window=300, lockout=300, clock=clock)
    throttle.failed("a")
    clock.now += 301
    throttle.failed("a")
    assert throttle.retry_after("a") == 0


def test_a_successful_login_clears_the_failures():
    clock = Clock()
    throttle = LoginThrottle(max_failures=2, window=300, lockout=300, clock=clock)
    throttle.failed("a")
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 0


def test_the_throttle_tracks_a_bounded_number_of_emails():
    throttle = LoginThrottle(max_failures=5, max_keys=3, clock=Clock())
    for index in range(10):
        throttle.failed(f"user{index}@example.com")
    assert len(throttle._failures) == 3
