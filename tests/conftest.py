"""Fixtures shared by every tier.

Databases: each test that asks for ``users_db_uri`` runs once on SQLite (a fresh
file) and once on PostgreSQL (a throwaway database made for this run, migrated
once, emptied before each test). ``TEST_DB_BACKENDS=sqlite`` runs SQLite alone.
Broker: nameko's ``rabbit_config`` gives each test its own throwaway vhost,
made through RabbitMQ's management API; a session that collects such tests
first makes sure the API answers (:func:`pytest_collection_finish`).
"""

import os
import shutil
import subprocess
import time
import uuid
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from shared.db import engine_for
from shared.migrate import alembic_config
from shared.passwords import PasswordHasher

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = os.environ.get("TEST_DB_BACKENDS", "sqlite,postgresql").split(",")

MANAGEMENT_WAIT_SECONDS = 30
ENABLE_MANAGEMENT = ["rabbitmq-plugins", "enable", "rabbitmq_management"]

# cheap Argon2 settings so the suite hashes fast; the production defaults are
# checked in the unit tests of shared.passwords
FAST_HASHING = {"PASSWORD_HASH_MEMORY_KIB": 1024, "PASSWORD_HASH_TIME_COST": 1}


@pytest.fixture(scope="session")
def fast_hasher():
    return PasswordHasher(memory_kib=1024, time_cost=1)


def migrate(service_name, uri):
    from alembic import command

    command.upgrade(alembic_config(service_name, uri), "head")


class PostgresDatabases:
    """Throwaway PostgreSQL databases, one per service, for this test run."""

    def __init__(self, admin_url):
        self.admin_url = make_url(admin_url)
        self.suffix = uuid.uuid4().hex[:8]
        self.created = {}

    def _admin(self):
        return engine_for(self.admin_url, isolation_level="AUTOCOMMIT")

    def get(self, service_name):
        if service_name not in self.created:
            name = f"test_{service_name}_{self.suffix}"
            engine = self._admin()
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            engine.dispose()
            uri = self.admin_url.set(database=name).render_as_string(hide_password=False)
            migrate(service_name, uri)
            self.created[service_name] = uri
        return self.created[service_name]

    def drop_all(self):
        engine = self._admin()
        with engine.connect() as connection:
            for uri in self.created.values():
                name = make_url(uri).database
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_databases():
    databases = PostgresDatabases(POSTGRES_URL)
    yield databases
    databases.drop_all()


def empty_tables(uri):
    engine = engine_for(uri)
    with engine.begin() as connection:
        tables = (
            connection.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        if tables:
            names = ", ".join(f'"{table}"' for table in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_backend(request):
    return request.param


@pytest.fixture
def make_db_uri(db_backend, tmp_path, request):
    """``make_db_uri(service)``: an empty, migrated database of that service."""

    def make(service_name):
        if db_backend == "sqlite":
            uri = f"sqlite:///{tmp_path / service_name}.sqlite3"
            migrate(service_name, uri)
            return uri
        databases = request.getfixturevalue("postgres_databases")
        uri = databases.get(service_name)
        empty_tables(uri)
        return uri

    return make


@pytest.fixture
def users_db_uri(make_db_uri):
    return make_db_uri("users")


@pytest.fixture
def orders_db_uri(make_db_uri):
    return make_db_uri("orders")


@pytest.fixture
def users_session(users_db_uri):
    """A session on the users database, as the logic functions get one."""
    from nameko_sqlalchemy.database import Session
    from sqlalchemy.orm import sessionmaker

    engine = engine_for(users_db_uri)
    session = sessionmaker(bind=engine, class_=Session)()
    yield session
    session.close()
    engine.dispose()


@pytest.fixture
def web_session(web_config_port):
    """nameko's own fixture imports ``url_join``, which werkzeug 3 removed."""
    from requests import Session

    class WebSession(Session):
        def request(self, method, url, *args, **kwargs):
            url = urljoin(f"http://127.0.0.1:{web_config_port}/", url)
            return Session.request(self, method, url, *args, **kwargs)

    with WebSession() as session:
        yield session


# --- the broker's management API --------------------------------------------------------------


def management_api_answers(api_uri):
    """True if the management API at ``api_uri`` (nameko's ``--rabbit-ctl-uri``) answers 200."""
    parts = urlsplit(api_uri)
    url = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api/overview"
    try:
        response = requests.get(url, auth=(parts.username, parts.password), timeout=3)
    except requests.RequestException:
        return False
    return response.status_code == 200


def ensure_management_api(api_uri, wait_seconds=MANAGEMENT_WAIT_SECONDS):
    """Make the broker's management API answer; returns None, or one line saying what to run.

    On a fresh machine RabbitMQ may run without its management plugin. Enabling
    it (once) does not restart the broker; it is only tried for a broker on
    this machine, and never changes anything else.
    """
    if management_api_answers(api_uri):
        return None
    parts = urlsplit(api_uri)
    command = " ".join(ENABLE_MANAGEMENT)
    advice = (
        f"RabbitMQ's management API does not answer at {parts.hostname}:{parts.port or 15672} "
        f"(nameko's rabbit_config needs it): run `{command}` with RabbitMQ running, then retry"
    )
    if parts.hostname not in ("localhost", "127.0.0.1", "::1") or not shutil.which(
        ENABLE_MANAGEMENT[0]
    ):
        return advice
    try:
        enabled = subprocess.run(ENABLE_MANAGEMENT, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return advice
    if enabled.returncode != 0:  # e.g. the broker is not running, or we may not: no use waiting
        return advice
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if management_api_answers(api_uri):
            return None
        time.sleep(0.5)
    return advice


def pytest_collection_finish(session):
    """Stop at once, with one line of advice, if broker tests cannot get their vhosts.

    Only a session that collected a test using nameko's broker fixtures
    (``rabbit_config`` needs ``rabbit_manager``) checks: unit tests alone need
    no broker.
    """
    needs_broker = any(
        "rabbit_manager" in getattr(item, "fixturenames", ()) for item in session.items
    )
    if not needs_broker or session.config.option.collectonly:
        return
    problem = ensure_management_api(session.config.getoption("RABBIT_API_URI"))
    if problem:
        pytest.exit(problem, returncode=pytest.ExitCode.USAGE_ERROR)
