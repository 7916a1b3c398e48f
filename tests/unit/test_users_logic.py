"""users.logic against a real database (SQLite and PostgreSQL), no broker."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shared.exceptions import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    TooManyRequests,
)
from shared.outbox import OutboxWriter, utcnow
from users import logic
from users.logins import LoginLimits
from users.models import LoginFailure, LoginLock, OutboxEvent, User

PASSWORD = "correct horse battery"


@pytest.fixture
def outbox():
    return OutboxWriter(OutboxEvent, headers={"nameko.request_id": "req-1"})


@pytest.fixture
def create(users_session, outbox, fast_hasher):
    def create(email="ann@example.com", name="Ann", password=PASSWORD, role="user"):
        data = {"email": email, "name": name, "password": password, "role": role}
        return logic.create_user(users_session, outbox, fast_hasher, data)

    return create


def events(session):
    rows = session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()
    return [(row.event_type, json.loads(row.payload)) for row in rows]


def count_users(session):
    return session.scalar(select(func.count()).select_from(User))


def test_create_user_returns_the_public_fields_only(create):
    user = create(email="Ann@Example.COM")
    assert set(user) == {"id", "email", "name", "role", "order_count", "created_at"}
    assert user["email"] == "ann@example.com"
    assert user["role"] == "user"
    assert user["order_count"] == 0


def test_create_user_stores_an_argon2_hash_not_the_password(create, users_session):
    create()
    stored = users_session.scalars(select(User)).one()
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash


def test_create_user_records_user_created_in_the_outbox(create, users_session):
    user = create()
    [(event_type, payload)] = events(users_session)
    assert event_type == "user_created"
    assert payload["user_id"] == user["id"]
    assert payload["user"] == {
        "id": user["id"],
        "email": "ann@example.com",
        "name": "Ann",
        "role": "user",
    }
    assert payload["event_id"] and payload["occurred_at"]
    assert "password" not in json.dumps(payload)


def test_duplicate_email_in_another_case_is_a_conflict_and_writes_nothing(create, users_session):
    create(email="ann@example.com")
    with pytest.raises(Conflict) as error:
        create(email="ANN@example.com")
    assert error.value.details == {"email": ["Already registered."]}
    assert count_users(users_session) == 1
    assert len(events(users_session)) == 1


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"email": "not-an-email"}, "email"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"password": "short"}, "password"),
        ({"role": "root"}, "role"),
        ({"email": 42}, "email"),
    ],
)
def test_create_user_refuses_bad_input_with_field_errors(create, users_session, changes, field):
    arguments = {"email": "ann@example.com", "name": "Ann", "password": PASSWORD, **changes}
    with pytest.raises(InvalidInput) as error:
        create(**arguments)
    assert field in error.value.details
    assert count_users(users_session) == 0
    assert events(users_session) == []


def test_get_user_of_an_unknown_id_is_not_found(users_session):
    with pytest.raises(NotFound):
        logic.get_user(users_session, 999)


@pytest.mark.parametrize("bad_id", ["abc", -1, 0, None, 1.5, True])
def test_get_user_refuses_an_id_that_is_not_a_positive_integer(users_session, bad_id):
    with pytest.raises(InvalidInput) as error:
        logic.get_user(users_session, bad_id)
    assert "user_id" in error.value.details


def test_list_users_walks_every_page_once(create, users_session):
    created = [create(email=f"u{i}@example.com")["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = logic.list_users(users_session, limit=2, cursor=cursor)
        assert len(page["items"]) <= 2
        seen += [user["id"] for user in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created


@pytest.mark.parametrize("limit", [0, 101, "many"])
def test_list_users_refuses_a_limit_out_of_range(users_session, limit):
    with pytest.raises(InvalidInput) as error:
        logic.list_users(users_session, limit=limit)
    assert "limit" in error.value.details


def test_list_users_refuses_a_forged_cursor(users_session):
    with pytest.raises(InvalidInput) as error:
        logic.list_users(users_session, cursor="not-a-cursor")
    assert "cursor" in error.value.details


def test_update_user_changes_name_and_records_user_updated(
    create, users_session, outbox, fast_hasher
):
    user = create()
    updated = logic.update_user(users_session, outbox, fast_hasher, user["id"], {"name": "Annie"})
    assert updated["name"] == "Annie"
    event_type, payload = events(users_session)[-1]
    assert event_type == "user_updated"
    assert payload["changed"] == ["name"]
    assert payload["user"]["name"] == "Annie"


def test_update_user_password_lets_the_new_one_in(create, users_session, outbox, fast_hasher):
    user = create()
    logic.update_user(
        users_session, outbox, fast_hasher, user["id"], {"password": "another good password"}
    )
    assert (
        logic.authenticate(users_session, fast_hasher, "ann@example.com", "another good password")[
            "id"
        ]
        == user["id"]
    )
    with pytest.raises(AuthenticationFailed):
        logic.authenticate(users_session, fast_hasher, "ann@example.com", PASSWORD)
    assert "another good password" not in json.dumps(events(users_session))


@pytest.mark.parametrize("changes", [{}, {"email": "x@example.com"}, {"name": ""}])
def test_update_user_refuses_empty_or_unknown_changes(
    create, users_session, outbox, fast_hasher, changes
):
    user = create()
    with pytest.raises(InvalidInput):
        logic.update_user(users_session, outbox, fast_hasher, user["id"], changes)
    assert logic.get_user(users_session, user["id"])["name"] == "Ann"


def test_update_user_of_an_unknown_id_is_not_found(users_session, outbox, fast_hasher):
    with pytest.raises(NotFound):
        logic.update_user(users_session, outbox, fast_hasher, 12345, {"name": "X"})


def test_delete_user_removes_it_and_records_user_deleted(create, users_session, outbox):
    user = create()
    logic.delete_user(users_session, outbox, user["id"])
    with pytest.raises(NotFound):
        logic.get_user(users_session, user["id"])
    event_type, payload = events(users_session)[-1]
    assert (event_type, payload["user_id"]) == ("user_deleted", user["id"])


def test_delete_user_of_an_unknown_id_is_not_found(users_session, outbox):
    with pytest.raises(NotFound):
        logic.delete_user(users_session, outbox, 4242)


def test_authenticate_accepts_the_right_password_in_any_email_case(
    create, users_session, fast_hasher
):
    user = create()
    found = logic.authenticate(users_session, fast_hasher, "ANN@example.com", PASSWORD)
    assert found == {**user, "token_version": 0}


@pytest.mark.parametrize(
    "email, password", [("ann@example.com", "wrong password"), ("nobody@example.com", PASSWORD)]
)
def test_authenticate_fails_alike_for_wrong_password_and_unknown_email(
    create, users_session, fast_hasher, email, password
):
    create()
    with pytest.raises(AuthenticationFailed) as error:
        logic.authenticate(users_session, fast_hasher, email, password)
    assert str(error.value) == "wrong email or password"


def test_authenticate_upgrades_a_hash_made_with_weaker_settings(create, users_session, fast_hasher):
    from shared.passwords import PasswordHasher

    create()
    stronger = PasswordHasher(memory_kib=2048, time_cost=2)
    logic.authenticate(users_session, stronger, "ann@example.com", PASSWORD)
    stored = users_session.scalars(select(User)).one()
    assert "m=2048,t=2" in stored.password_hash


def test_a_deleted_users_id_is_never_given_to_the_next_user(create, users_session, outbox):
    first = create(email="first@example.com")
    logic.delete_user(users_session, outbox, first["id"])
    assert create(email="second@example.com")["id"] != first["id"]


# --- password and role changes end the user's tokens ------------------------------------------


def token_version(session, user_id):
    return session.scalar(select(User.token_version).where(User.id == user_id))


@pytest.mark.parametrize(
    "changes",
    [{"password": "a brand new password"}, {"role": "admin"}],
    ids=["password", "role"],
)
def test_a_password_or_role_change_raises_the_token_version_and_says_so(
    create, users_session, outbox, fast_hasher, changes
):
    user = create()
    logic.update_user(users_session, outbox, fast_hasher, user["id"], changes)
    assert token_version(users_session, user["id"]) == 1
    assert logic.get_token_version(users_session, user["id"]) == 1
    event_type, payload = events(users_session)[-1]
    assert (event_type, payload["token_version"]) == ("user_updated", 1)


@pytest.mark.parametrize(
    "changes", [{"name": "Annie"}, {"role": "user"}], ids=["name", "same role"]
)
def test_other_changes_keep_the_token_version(create, users_session, outbox, fast_hasher, changes):
    user = create()
    logic.update_user(users_session, outbox, fast_hasher, user["id"], changes)
    assert token_version(users_session, user["id"]) == 0


def test_the_right_current_password_lets_a_new_one_in(create, users_session, outbox, fast_hasher):
    user = create()
    changes = {"password": "a brand new password", "current_password": PASSWORD}
    logic.update_user(users_session, outbox, fast_hasher, user["id"], changes)
    assert logic.authenticate(users_session, fast_hasher, user["email"], "a brand new password")


def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failed_login(
    create, users_session, outbox, fast_hasher
):
    user = create()
    limits = LoginLimits(per_email=2)
    changes = {"password": "a brand new password", "current_password": "not the password"}
    with pytest.raises(InvalidInput) as refused:
        logic.update_user(users_session, outbox, fast_hasher, user["id"], changes, limits)
    assert "current_password" in refused.value.details
    assert token_version(users_session, user["id"]) == 0
    assert logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD)
    for _ in range(2):
        with pytest.raises(InvalidInput):
            logic.update_user(users_session, outbox, fast_hasher, user["id"], changes, limits)
    with pytest.raises(TooManyRequests):  # guessing through PATCH is throttled like a login
        logic.update_user(users_session, outbox, fast_hasher, user["id"], changes, limits)


def test_current_password_alone_is_not_a_change(create, users_session, outbox, fast_hasher):
    user = create()
    with pytest.raises(InvalidInput):
        logic.update_user(
            users_session, outbox, fast_hasher, user["id"], {"current_password": PASSWORD}
        )


def test_get_token_version_of_an_unknown_user_is_not_found(users_session):
    with pytest.raises(NotFound):
        logic.get_token_version(users_session, 999)


# --- login throttling, per email and per client address -----------------------------------------


def fail_login(session, hasher, email, address, limits):
    with pytest.raises(AuthenticationFailed):
        logic.authenticate(session, hasher, email, "wrong password!", address, limits)


def test_failures_of_one_email_lock_it_even_for_the_right_password(
    create, users_session, fast_hasher
):
    user = create()
    limits = LoginLimits(per_email=3)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # from anywhere
        fail_login(users_session, fast_hasher, user["email"], address, limits)
    with pytest.raises(TooManyRequests) as refused:
        logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, "10.0.0.9", limits)
    assert 1 <= refused.value.retry_after <= 300


def test_failures_from_one_address_lock_it_for_every_email(create, users_session, fast_hasher):
    user = create()
    limits = LoginLimits(per_address=4)
    for index in range(4):
        fail_login(users_session, fast_hasher, f"nobody{index}@example.com", "10.0.0.1", limits)
    with pytest.raises(TooManyRequests):
        logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, "10.0.0.1", limits)
    # another address is not affected
    assert logic.authenticate(
        users_session, fast_hasher, user["email"], PASSWORD, "10.0.0.2", limits
    )


def test_a_success_clears_its_emails_failures_but_not_its_addresss(
    create, users_session, fast_hasher
):
    user = create()
    limits = LoginLimits(per_email=2, per_address=3)
    fail_login(users_session, fast_hasher, user["email"], "10.0.0.1", limits)
    logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, "10.0.0.1", limits)
    fail_login(users_session, fast_hasher, user["email"], "10.0.0.1", limits)  # 1 of 2 again
    assert logic.authenticate(
        users_session, fast_hasher, user["email"], PASSWORD, "10.0.0.1", limits
    )
    fail_login(users_session, fast_hasher, "x@example.com", "10.0.0.1", limits)  # 3rd: locked
    with pytest.raises(TooManyRequests):
        logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, "10.0.0.1", limits)


def test_failures_outside_the_window_do_not_count(create, users_session, fast_hasher):
    user = create()
    limits = LoginLimits(per_email=2, window=300)
    fail_login(users_session, fast_hasher, user["email"], None, limits)
    users_session.execute(update(LoginFailure).values(failed_at=utcnow() - timedelta(seconds=301)))
    users_session.commit()
    fail_login(users_session, fast_hasher, user["email"], None, limits)
    assert logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, None, limits)


def test_a_lock_ends_after_the_lockout(create, users_session, fast_hasher):
    user = create()
    limits = LoginLimits(per_email=1, lockout=300)
    fail_login(users_session, fast_hasher, user["email"], None, limits)
    with pytest.raises(TooManyRequests):
        logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, None, limits)
    users_session.execute(update(LoginLock).values(locked_until=utcnow() - timedelta(seconds=1)))
    users_session.commit()
    assert logic.authenticate(users_session, fast_hasher, user["email"], PASSWORD, None, limits)
