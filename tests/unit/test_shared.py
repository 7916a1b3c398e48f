"""The shared building blocks on their own: settings checks, cursors, outbox relay, logs."""

import gc
import json
import logging

import pytest
from nameko_sqlalchemy.database import Session
from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from shared.db import Prepared, engine_for
from shared.exceptions import InvalidInput, Unavailable
from shared.heap import FrozenStartupHeap
from shared.logs import ContextFilter, JsonFormatter, _call, formatter
from shared.outbox import EventsRefused, OutboxWriter, count_pending, relay_pending
from shared.pagination import decode_cursor, encode_cursor
from shared.passwords import PasswordHasher
from shared.settings import ConfigError, ServiceSettings, load_settings
from users.models import OutboxEvent

GOOD = {
    "AMQP_URI": "amqp://guest:guest@localhost:5672/",
    "WEB_SERVER_ADDRESS": "0.0.0.0:8001",
    "DB_URIS": {"users:Base": "sqlite:///var/users.sqlite3"},
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "info",
    "RPC_TIMEOUT": 5,
}


def test_a_good_config_passes():
    load_settings(ServiceSettings, GOOD, "users")


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("AMQP_URI", "http://nope", "set AMQP_URI"),
        ("WEB_SERVER_ADDRESS", "8001", "set WEB_SERVER_ADDRESS"),
        ("WEB_SERVER_ADDRESS", "0.0.0.0:99999", "set WEB_SERVER_ADDRESS"),
        ("LOG_FORMAT", "xml", "set LOG_FORMAT"),
        ("LOG_LEVEL", "LOUD", "set LOG_LEVEL"),
        ("RPC_TIMEOUT", 0, "RPC_TIMEOUT must be a positive number"),
        ("DB_URIS", {}, "set USERS_DB_URI"),
        ("DB_URIS", {"users:Base": "not a url"}, "set USERS_DB_URI"),
    ],
)
def test_a_bad_value_is_refused_naming_what_to_set(key, value, says):
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings, {**GOOD, key: value}, "users")
    assert says in str(error.value)


def test_every_problem_is_reported_at_once():
    bad = {**GOOD, "AMQP_URI": None, "LOG_FORMAT": "xml"}
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings, bad, "users")
    assert "AMQP_URI" in str(error.value) and "LOG_FORMAT" in str(error.value)


@pytest.mark.parametrize("last_id", [0, 1, 2**40])
def test_a_cursor_round_trips(last_id):
    assert decode_cursor(encode_cursor(last_id)) == last_id


@pytest.mark.parametrize("cursor", ["x", "e30", "eyJhZnRlciI6ICJ4In0", "!!!", "eyJhZnRlciI6IC0xfQ"])
def test_a_forged_cursor_is_invalid_input(cursor):
    with pytest.raises(InvalidInput):
        decode_cursor(cursor)


@pytest.fixture
def session_factory(users_db_uri):
    engine = engine_for(users_db_uri)
    yield sessionmaker(bind=engine, class_=Session)
    engine.dispose()


def write_events(session_factory, count):
    writer = OutboxWriter(OutboxEvent, headers={"nameko.request_id": "r1"})
    with session_factory() as session:
        payloads = [writer.add(session, "thing_happened", {"n": n}) for n in range(count)]
        session.commit()
    return payloads


def publishing_to(published, refuse=()):
    """A ``publish_all`` that records the batch; the broker refuses the positions ``refuse``."""

    def publish_all(messages):
        published.extend(messages)
        return set(refuse)

    return publish_all


def outbox_rows(session_factory):
    with session_factory() as session:
        rows = session.execute(
            select(OutboxEvent.attempts, OutboxEvent.sent_at).order_by(OutboxEvent.id)
        ).all()
    return [(attempts, sent_at is not None) for attempts, sent_at in rows]


def test_relay_publishes_in_order_with_headers_and_marks_sent(session_factory):
    payloads = write_events(session_factory, 3)
    published = []
    sent = relay_pending(session_factory, OutboxEvent, publishing_to(published), 10)
    assert sent == 3
    assert published == [("thing_happened", p, {"nameko.request_id": "r1"}) for p in payloads]
    assert count_pending(session_factory, OutboxEvent) == 0
    assert relay_pending(session_factory, OutboxEvent, publishing_to(published), 10) == 0


def test_relay_keeps_what_the_broker_refused_and_only_that(session_factory):
    write_events(session_factory, 3)
    # the broker refused the second event: the first and third were delivered
    with pytest.raises(EventsRefused) as refusal:
        relay_pending(session_factory, OutboxEvent, publishing_to([], refuse={1}), 10)
    assert refusal.value.sent == 2
    assert outbox_rows(session_factory) == [(1, True), (1, False), (1, True)]
    resent = []
    assert relay_pending(session_factory, OutboxEvent, publishing_to(resent), 10) == 1
    assert [payload["n"] for _, payload, _ in resent] == [1]  # no duplicate of 0 or 2
    assert outbox_rows(session_factory) == [(1, True), (2, True), (1, True)]


def test_relay_keeps_everything_when_the_broker_went_away(session_factory):
    write_events(session_factory, 2)

    def broker_gone(messages):
        raise ConnectionError("broker went away")

    with pytest.raises(ConnectionError):
        relay_pending(session_factory, OutboxEvent, broker_gone, 10)
    assert count_pending(session_factory, OutboxEvent) == 2
    with session_factory() as session:
        attempts = session.scalars(select(OutboxEvent.attempts).order_by(OutboxEvent.id)).all()
    assert attempts == [1, 0]


def test_relay_sends_at_most_one_batch_per_call(session_factory):
    write_events(session_factory, 5)
    assert relay_pending(session_factory, OutboxEvent, publishing_to([]), 2) == 2
    assert count_pending(session_factory, OutboxEvent) == 3


def make_record(message="hello", **extra):
    record = logging.makeLogRecord(
        {"name": "users.logic", "levelname": "INFO", "msg": message, **extra}
    )
    ContextFilter(service="users").filter(record)
    return record


def test_json_logs_are_one_object_a_line_with_the_call_ids():
    token = _call.set({"request_id": "req-1", "call_id": "users.get_user.7"})
    try:
        line = JsonFormatter().format(make_record(duration_ms=3.5))
    finally:
        _call.reset(token)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["service"] == "users" and entry["message"] == "hello"
    assert entry["request_id"] == "req-1" and entry["call_id"] == "users.get_user.7"
    assert entry["duration_ms"] == 3.5 and entry["level"] == "INFO"
    assert entry["time"].endswith("Z")


def test_text_logs_name_the_service_and_request():
    token = _call.set({"request_id": "req-2", "call_id": "c"})
    try:
        line = formatter("text").format(make_record())
    finally:
        _call.reset(token)
    assert "users" in line and "[req-2]" in line and "hello" in line


def test_passwords_default_to_owasp_argon2id_settings():
    hashed = PasswordHasher().hash("correct horse battery")
    assert hashed.startswith("$argon2id$") and "m=19456,t=2,p=1" in hashed


def test_a_password_verifies_and_a_wrong_or_garbage_hash_does_not(fast_hasher):
    hashed = fast_hasher.hash("correct horse battery")
    assert fast_hasher.verify(hashed, "correct horse battery")
    assert not fast_hasher.verify(hashed, "wrong")
    assert not fast_hasher.verify("not a hash", "correct horse battery")


def test_expected_error_tracebacks_are_dropped_and_real_errors_kept():
    from shared.logs import DropExpectedErrorTracebacks

    drop = DropExpectedErrorTracebacks()
    expected = logging.makeLogRecord({"msg": "(expected) error handling worker %s: %s"})
    real = logging.makeLogRecord({"msg": "error handling worker %s: %s"})
    assert drop.filter(expected) is False
    assert drop.filter(real) is True


def test_an_exception_without_details_crosses_rpc_with_none_not_a_string():
    from nameko.exceptions import deserialize, serialize

    from shared.exceptions import NotFound

    error = deserialize(serialize(NotFound("user 9 not found")))
    assert type(error) is NotFound
    assert error.details is None and str(error) == "user 9 not found"
    detailed = deserialize(serialize(InvalidInput("bad", {"email": ["Not valid."]})))
    assert detailed.details == {"email": ["Not valid."]}


def test_glibc_is_told_to_give_argon2s_memory_back():
    import platform

    from shared.passwords import keep_large_blocks_mmapped

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the fix is for glibc")
    assert keep_large_blocks_mmapped() is True


def test_concurrent_hashes_are_limited_to_one_per_cpu():
    import os
    import threading
    import time

    import eventlet

    class CountingArgon2:
        """Stands in for argon2 (a library we do not own) and records overlap."""

        def __init__(self):
            self.lock = threading.Lock()
            self.running = self.most = 0

        def verify(self, password_hash, password):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.05)  # a real OS thread from eventlet's pool
            with self.lock:
                self.running -= 1
            return True

    hasher = PasswordHasher(memory_kib=1024, time_cost=1)
    hasher._argon2 = CountingArgon2()
    pool = eventlet.GreenPool()
    for _ in range(8):
        pool.spawn(hasher.verify, "hash", "password")
    pool.waitall()
    assert hasher._argon2.most == min(8, os.cpu_count() or 1)


def test_a_database_that_refuses_connections_is_unavailable_not_a_crash():
    from sqlalchemy import text

    from shared.exceptions import Unavailable

    engine = engine_for("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(Unavailable) as error:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    assert error.value.details == {"database": ["unreachable"]}
    engine.dispose()


def test_a_huge_amount_is_out_of_range_not_a_crash():
    from orders.schemas import OrderCreateSchema
    from shared.schemas import load

    item = {"sku": "A", "quantity": 1, "unit_price": "9" * 30}
    with pytest.raises(InvalidInput) as error:
        load(OrderCreateSchema, {"items": [item]})
    assert "unit_price" in error.value.details["items"][0]


def test_a_started_service_has_its_startup_heap_frozen_until_it_stops(container_factory):
    class Service:
        name = "heap_test"
        heap = FrozenStartupHeap()

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    container = container_factory(Service, {})
    container.start()
    # everything alive at start is out of the collector's way
    assert gc.get_freeze_count() > 10_000
    container.stop()
    # what the stopped container held can be collected again
    assert gc.get_freeze_count() == 0


# --- prepared statements (PostgreSQL) ---------------------------------------------------------

COUNT_UP = Prepared(
    "count_up_test",
    text("SELECT CAST(:start AS integer) + :step AS total, :start AS start").bindparams(step=1),
)


@pytest.fixture
def postgres_autocommit(db_backend, users_db_uri):
    if db_backend != "postgresql":
        pytest.skip("prepared statements are for PostgreSQL's one-statement writes")
    engine = engine_for(users_db_uri, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def test_a_prepared_statement_is_prepared_once_per_connection(postgres_autocommit):
    sent = []
    event.listen(postgres_autocommit, "before_cursor_execute", lambda *args: sent.append(args[2]))
    with postgres_autocommit.connect() as connection:
        assert [COUNT_UP.run(connection, {"start": n}).one().total for n in (1, 41)] == [2, 42]
    with postgres_autocommit.connect() as connection:  # the same pooled connection
        assert COUNT_UP.run(connection, {"start": 7}).one() == (8, 7)
    assert [statement.split()[0] for statement in sent] == ["PREPARE"] + ["EXECUTE"] * 3


def test_a_prepared_statement_comes_back_after_its_connection_was_killed(postgres_autocommit):
    """The server forgets what a dead connection prepared; the new connection prepares again."""
    with postgres_autocommit.connect() as connection:
        COUNT_UP.run(connection, {"start": 1})
        backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    killer = engine_for(postgres_autocommit.url, poolclass=NullPool)
    with killer.connect() as connection:  # not from the pool: that would be the same one
        connection.exec_driver_sql(f"SELECT pg_terminate_backend({backend})")
    with pytest.raises(Unavailable), postgres_autocommit.connect() as connection:
        COUNT_UP.run(connection, {"start": 1})
    with postgres_autocommit.connect() as connection:
        assert COUNT_UP.run(connection, {"start": 2}).one().total == 3


def test_a_prepared_statement_refuses_a_missing_value_naming_it(postgres_autocommit):
    with postgres_autocommit.connect() as connection, pytest.raises(KeyError, match="start"):
        COUNT_UP.run(connection, {})


def test_a_statement_needing_a_python_side_column_default_is_refused_naming_it():
    """users.updated_at has onupdate=utcnow: SQLAlchemy computes it only when it
    executes the statement itself, so a prepared one would write NULL there."""
    from sqlalchemy import bindparam, update

    from shared.events import once_statement
    from users.models import ProcessedEvent, User

    users = User.__table__
    forgets_updated_at = (
        update(users).where(users.c.id == bindparam("user_id")).values(order_count=0)
    )
    with pytest.raises(ValueError, match="updated_at"):
        once_statement("forgets_updated_at", ProcessedEvent, forgets_updated_at)
    with pytest.raises(ValueError, match="processed_at"):  # an INSERT's default= too
        Prepared("no_time", insert(ProcessedEvent.__table__).values(event_id="e", event_type="t"))
    sets_it = forgets_updated_at.values(updated_at=bindparam("now"))
    assert once_statement("sets_updated_at", ProcessedEvent, sets_it).required >= {"now"}
