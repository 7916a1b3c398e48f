"""The database dependency: nameko-sqlalchemy's provider, tuned per backend."""

import os
from datetime import UTC

from nameko_sqlalchemy import Database as _Database
from nameko_sqlalchemy.database import DB_URIS_KEY, Session
from sqlalchemy import DateTime, TypeDecorator, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from shared.config import db_uri_key


def engine_for(uri, **options):
    """An engine with the settings each backend needs to behave under load.

    PostgreSQL: pre-ping, so a pooled connection that died with a server restart
    is replaced instead of failing one request. SQLite (the local default): the
    folder of the file is created, WAL lets readers go on while one writes, and a
    busy timeout waits for a lock instead of failing at once.
    """
    url = make_url(uri)
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql://, and psycopg 3
        # blocks every greenthread under eventlet; psycopg2 cooperates.
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    return create_engine(url, **options)


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database(_Database):
    """``nameko_sqlalchemy.Database`` with :func:`engine_for` making the engine.

    Worker code uses ``self.db.session`` (one session per worker, closed at
    teardown); the logic functions commit it themselves.
    """

    def setup(self):
        uri = self.container.config[DB_URIS_KEY][db_uri_key(self.container.service_name)]
        self.db_uri = uri
        self.engine = engine_for(uri, **self.engine_options)
        self.Session = sessionmaker(bind=self.engine, class_=Session, **self.session_options)


def find_dependency(container, attr_name):
    """The provider bound to ``container`` under ``attr_name`` (for providers that cooperate)."""
    for dependency in container.dependencies:
        if dependency.attr_name == attr_name:
            return dependency
    raise LookupError(f"{container.service_name} has no dependency named {attr_name!r}")


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps the zone; SQLite stores text without one and would hand back
    naive datetimes, which then serialise without ``+00:00``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
