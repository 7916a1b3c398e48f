"""Consumer idempotency (shared.events.handle_once) and the users' order_created effect.

Real databases (SQLite and PostgreSQL), no broker.
"""

import uuid

import eventlet
import pytest
from nameko_sqlalchemy.database import Session
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import sessionmaker

from orders.models import Order, ProcessedEvent
from shared.db import engine_for
from shared.events import EventHandler, handle_once, retry_delay
from shared.exceptions import InvalidInput
from shared.settings import ServiceSettings
from tests.helpers import settings_problems
from users import logic as users_logic
from users.models import ProcessedEvent as UsersProcessedEvent
from users.models import User


@pytest.fixture
def orders_engine(make_db_uri):
    engine = engine_for(make_db_uri("orders"))
    yield engine
    engine.dispose()


@pytest.fixture
def new_session(orders_engine):
    sessions = []

    def make():
        sessions.append(sessionmaker(bind=orders_engine, class_=Session)())
        return sessions[-1]

    yield make
    for session in sessions:
        session.close()


def event(**data):
    return {"event_id": str(uuid.uuid4()), "occurred_at": "2026-01-01T00:00:00+00:00", **data}


def add_order(session):
    """A visible effect: one row per application."""
    session.add(Order(user_id=1, status="pending", currency="EUR", total_cents=100))


def orders(session):
    session.rollback()
    return session.scalar(select(func.count()).select_from(Order))


def test_an_event_is_applied_and_its_id_recorded(new_session):
    session = new_session()
    payload = event()
    assert handle_once(session, ProcessedEvent, payload, "thing_happened", add_order) is True
    assert orders(session) == 1
    recorded = session.get(ProcessedEvent, payload["event_id"])
    assert recorded.event_type == "thing_happened"


def test_the_same_event_twice_has_one_effect(new_session):
    session = new_session()
    payload = event()
    assert handle_once(session, ProcessedEvent, payload, "thing_happened", add_order) is True
    assert handle_once(session, ProcessedEvent, dict(payload), "thing_happened", add_order) is False
    assert orders(session) == 1


def test_different_events_each_have_their_effect(new_session):
    session = new_session()
    for _ in range(3):
        handle_once(session, ProcessedEvent, event(), "thing_happened", add_order)
    assert orders(session) == 3


def test_a_failing_effect_records_nothing_so_a_retry_applies_it(new_session):
    session = new_session()
    payload = event()

    def half_done_then_fail(session):
        add_order(session)
        raise RuntimeError("the effect broke")

    with pytest.raises(RuntimeError):
        handle_once(session, ProcessedEvent, payload, "thing_happened", half_done_then_fail)
    assert orders(session) == 0
    assert session.get(ProcessedEvent, payload["event_id"]) is None
    assert handle_once(session, ProcessedEvent, payload, "thing_happened", add_order) is True
    assert orders(session) == 1


@pytest.mark.parametrize("payload", [{}, {"event_id": ""}, {"event_id": 7}, {"event_id": "x" * 37}])
def test_an_event_without_a_usable_id_is_refused(new_session, payload):
    session = new_session()
    with pytest.raises(InvalidInput):
        handle_once(session, ProcessedEvent, payload, "thing_happened", add_order)
    assert orders(session) == 0


def test_a_concurrent_redelivery_waits_for_the_first_and_changes_nothing(
    db_backend, new_session, orders_engine
):
    """Both deliveries pass the "seen?" check; the primary key decides. PostgreSQL only:
    SQLite has one writer per file, and its lock wait would stall the whole process."""
    if db_backend != "postgresql":
        pytest.skip("a real interleaving of two writers needs PostgreSQL")
    payload = event()
    first_inserted, first_may_commit = eventlet.Event(), eventlet.Event()

    def slow_effect(session):
        add_order(session)
        first_inserted.send()
        first_may_commit.wait()

    first = eventlet.spawn(
        handle_once, new_session(), ProcessedEvent, payload, "thing_happened", slow_effect
    )
    first_inserted.wait()
    second = eventlet.spawn(
        handle_once, new_session(), ProcessedEvent, payload, "thing_happened", add_order
    )
    wait_until_a_query_waits_for_a_lock(orders_engine)
    first_may_commit.send()
    assert first.wait() is True
    assert second.wait() is False
    assert orders(new_session()) == 1


def wait_until_a_query_waits_for_a_lock(engine, deadline=5.0):
    with eventlet.Timeout(deadline):
        while True:
            with engine.connect() as connection:
                waiting = connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            if waiting:
                return
            eventlet.sleep(0.02)


# --- users: order_created -------------------------------------------------------------------------


def make_user(session, email="ann@example.com"):
    user = User(email=email, name="Ann", password_hash="x", role="user", order_count=0)
    session.add(user)
    session.commit()
    return user.id


def order_count(session, user_id):
    session.rollback()
    return session.get(User, user_id).order_count


def order_created(user_id, **extra):
    return event(order_id=1, user_id=user_id, status="pending", total="1.00", **extra)


@pytest.fixture(params=["session", "autocommit"])
def record(request, users_db_uri, users_session):
    """``record(payload)``: the handler's logic as the service runs it, with or without the
    autocommit connection (on PostgreSQL the autocommit way is one statement)."""
    if request.param == "session":
        yield lambda payload: users_logic.record_order_created(users_session, payload)
        return
    engine = engine_for(users_db_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as autocommit:
        yield lambda payload: users_logic.record_order_created(users_session, payload, autocommit)
    engine.dispose()


def test_order_created_raises_the_users_order_count_once_per_event(users_session, record):
    user_id = make_user(users_session)
    first, second = order_created(user_id), order_created(user_id)
    assert record(first) is True
    assert record(first) is False
    assert record(second) is True
    assert order_count(users_session, user_id) == 2


def test_order_created_counts_only_for_its_own_user(users_session, record):
    ann = make_user(users_session)
    bob = make_user(users_session, "bob@example.com")
    record(order_created(ann))
    assert (order_count(users_session, ann), order_count(users_session, bob)) == (1, 0)


def test_order_created_for_a_deleted_user_is_absorbed(users_session, record):
    payload = order_created(424242)
    assert record(payload) is True
    assert record(payload) is False  # still recorded as processed
    assert users_session.scalar(select(func.count()).select_from(User)) == 0


def test_on_postgresql_order_created_is_one_statement_without_the_session(
    db_backend, users_db_uri, users_session
):
    if db_backend != "postgresql":
        pytest.skip("SQLite has no data-modifying WITH: it always goes through the session")
    user_id = make_user(users_session)
    engine = engine_for(users_db_uri, isolation_level="AUTOCOMMIT")
    statements = []
    sqlalchemy_events.listen(
        engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    session_statements = []
    sqlalchemy_events.listen(
        users_session.get_bind(),
        "before_cursor_execute",
        lambda *args: session_statements.append(args[2]),
    )
    with engine.connect() as autocommit:
        for _ in range(3):
            assert users_logic.record_order_created(
                users_session, order_created(user_id), autocommit
            )
    engine.dispose()
    # the connection prepares it once, then each event is one EXECUTE
    assert [statement.split()[0] for statement in statements] == ["PREPARE"] + ["EXECUTE"] * 3
    assert session_statements == []
    assert order_count(users_session, user_id) == 3


def test_on_postgresql_a_one_statement_redelivery_waits_for_the_first_and_changes_nothing(
    db_backend, users_db_uri, users_session
):
    if db_backend != "postgresql":
        pytest.skip("a real interleaving of two writers needs PostgreSQL")
    user_id = make_user(users_session)
    payload = order_created(user_id)
    engine = engine_for(users_db_uri, isolation_level="AUTOCOMMIT")
    first_inserted, first_may_commit = eventlet.Event(), eventlet.Event()

    def slow_effect(session):
        session.execute(update(User).where(User.id == user_id).values(order_count=41))
        first_inserted.send()
        first_may_commit.wait()

    first_session = sessionmaker(bind=users_session.get_bind(), class_=Session)()
    first = eventlet.spawn(
        handle_once, first_session, UsersProcessedEvent, payload, "order_created", slow_effect
    )
    first_inserted.wait()
    with engine.connect() as autocommit:
        second = eventlet.spawn(users_logic.record_order_created, None, payload, autocommit)
        wait_until_a_query_waits_for_a_lock(engine)
        first_may_commit.send()
        assert first.wait() is True
        assert second.wait() is False
    first_session.close()
    engine.dispose()
    assert order_count(users_session, user_id) == 41


@pytest.mark.parametrize("payload", [{"user_id": 1}, {"event_id": "e-2", "user_id": "one"}])
def test_a_malformed_order_created_is_refused(users_session, payload):
    with pytest.raises(InvalidInput):
        users_logic.record_order_created(users_session, payload)


# --- the retry policy -----------------------------------------------------------------------------


def test_retry_delays_double_from_the_configured_delay_up_to_a_cap():
    assert [retry_delay(1.0, n) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(1.0, 30) == 300.0


def test_requeue_on_error_is_refused_because_it_would_loop_for_ever():
    with pytest.raises(ValueError):
        EventHandler("users", "user_deleted", requeue_on_error=True)


def retry_problems(config):
    return settings_problems(ServiceSettings, {"DB_URIS": {"test:Base": "sqlite://"}, **config})


def test_the_retry_config_defaults_are_valid():
    assert retry_problems({}) == []
    assert retry_problems({"EVENT_MAX_RETRIES": 0, "EVENT_RETRY_DELAY": 0.05}) == []


@pytest.mark.parametrize(
    "config, key",
    [
        ({"EVENT_MAX_RETRIES": -1}, "EVENT_MAX_RETRIES"),
        ({"EVENT_MAX_RETRIES": "3"}, "EVENT_MAX_RETRIES"),
        ({"EVENT_MAX_RETRIES": True}, "EVENT_MAX_RETRIES"),
        ({"EVENT_RETRY_DELAY": -0.5}, "EVENT_RETRY_DELAY"),
        ({"EVENT_RETRY_DELAY": "soon"}, "EVENT_RETRY_DELAY"),
    ],
)
def test_a_bad_retry_config_is_named_with_what_to_set(config, key):
    [problem] = retry_problems(config)
    assert problem.startswith(key) and problem.endswith(f"set {key}")
