"""users.refresh_tokens: refresh-token rotation on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from shared.exceptions import AuthenticationFailed, InvalidInput, NotFound
from shared.outbox import OutboxWriter
from users import logic, refresh_tokens
from users.models import OutboxEvent, RefreshToken

PASSWORD = "correct horse battery"


def in_days(days):
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.fixture
def user(users_session, fast_hasher):
    data = {"email": "ann@example.com", "name": "Ann", "password": PASSWORD}
    return logic.create_user(users_session, OutboxWriter(OutboxEvent), fast_hasher, data)


@pytest.fixture
def stored(users_session, user):
    refresh_tokens.store_refresh_token(users_session, user["id"], "jti-1", in_days(7))
    return "jti-1"


def test_rotation_returns_the_user_and_makes_the_new_token_usable(users_session, user, stored):
    current = {**user, "token_version": 0}
    assert (
        refresh_tokens.rotate_refresh_token(users_session, stored, "jti-2", in_days(7)) == current
    )
    assert (
        refresh_tokens.rotate_refresh_token(users_session, "jti-2", "jti-3", in_days(7)) == current
    )


def test_a_rotated_token_cannot_be_used_again(users_session, stored):
    refresh_tokens.rotate_refresh_token(users_session, stored, "jti-2", in_days(7))
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, stored, "jti-3", in_days(7))


def test_reusing_a_rotated_token_revokes_every_token_of_its_user(users_session, stored):
    refresh_tokens.rotate_refresh_token(users_session, stored, "jti-2", in_days(7))
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, stored, "jti-3", in_days(7))
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, "jti-2", "jti-4", in_days(7))


def test_an_unknown_token_is_refused(users_session, user):
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, "never-issued", "jti-2", in_days(7))


def test_an_expired_token_is_refused(users_session, user):
    refresh_tokens.store_refresh_token(users_session, user["id"], "old", in_days(-1))
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, "old", "jti-2", in_days(7))


def test_a_failed_rotation_stores_nothing(users_session, user):
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, "never-issued", "jti-2", in_days(7))
    assert users_session.get(RefreshToken, "jti-2") is None


@pytest.mark.parametrize(
    "changes", [{"role": "admin"}, {"password": "a brand new password"}], ids=["role", "password"]
)
def test_a_role_or_password_change_ends_every_refresh_token(
    users_session, user, stored, fast_hasher, changes
):
    refresh_tokens.store_refresh_token(users_session, user["id"], "jti-other", in_days(7))
    logic.update_user(users_session, OutboxWriter(OutboxEvent), fast_hasher, user["id"], changes)
    assert users_session.scalars(select(RefreshToken)).all() == []
    for jti in (stored, "jti-other"):
        with pytest.raises(AuthenticationFailed):
            refresh_tokens.rotate_refresh_token(users_session, jti, "jti-new", in_days(7))


def test_a_name_change_keeps_the_refresh_tokens(users_session, user, stored, fast_hasher):
    logic.update_user(
        users_session, OutboxWriter(OutboxEvent), fast_hasher, user["id"], {"name": "Annie"}
    )
    assert refresh_tokens.rotate_refresh_token(users_session, stored, "jti-2", in_days(7))[
        "name"
    ] == ("Annie")


def test_rotation_returns_the_current_role_and_token_version(users_session, user, fast_hasher):
    logic.update_user(
        users_session, OutboxWriter(OutboxEvent), fast_hasher, user["id"], {"role": "admin"}
    )
    refresh_tokens.store_refresh_token(users_session, user["id"], "jti-after", in_days(7))
    rotated = refresh_tokens.rotate_refresh_token(users_session, "jti-after", "jti-2", in_days(7))
    assert (rotated["role"], rotated["token_version"]) == ("admin", 1)


def test_deleting_the_user_deletes_its_tokens(users_session, user, stored):
    logic.delete_user(users_session, OutboxWriter(OutboxEvent), user["id"])
    assert users_session.scalars(select(RefreshToken)).all() == []
    with pytest.raises(AuthenticationFailed):
        refresh_tokens.rotate_refresh_token(users_session, stored, "jti-2", in_days(7))


def test_storing_a_token_for_a_missing_user_is_not_found(users_session):
    with pytest.raises(NotFound):
        refresh_tokens.store_refresh_token(users_session, 999, "jti-1", in_days(7))


def test_expiry_times_in_any_zone_compare_as_utc(users_session, user):
    tokyo = timezone(timedelta(hours=9))
    in_an_hour_in_tokyo = datetime.now(tokyo) + timedelta(hours=1)
    refresh_tokens.store_refresh_token(users_session, user["id"], "jti-1", in_an_hour_in_tokyo)
    refresh_tokens.rotate_refresh_token(users_session, "jti-1", "jti-2", in_days(7))


@pytest.mark.parametrize(
    ("jti", "expires_at"), [("", in_days(7)), ("x" * 65, in_days(7)), ("ok", "tomorrow")]
)
def test_bad_arguments_are_invalid_input(users_session, user, jti, expires_at):
    with pytest.raises(InvalidInput):
        refresh_tokens.store_refresh_token(users_session, user["id"], jti, expires_at)
