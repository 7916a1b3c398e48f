"""The database dependency: nameko-sqlalchemy's provider, tuned per backend."""

import logging
import os
import re
from datetime import UTC
from functools import cache

from nameko_sqlalchemy import Database as _Database
from nameko_sqlalchemy.database import DatabaseWrapper as _DatabaseWrapper
from nameko_sqlalchemy.database import Session
from sqlalchemy import DateTime, TypeDecorator, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from shared.exceptions import Unavailable
from shared.framework import REIMPLEMENTED  # noqa: F401 (guards the versions this was written for)
from shared.settings import settings_of

log = logging.getLogger(__name__)


def engine_for(uri, **options):
    """An engine with the settings each backend needs to behave under load.

    PostgreSQL: no pre-ping (it costs a round trip per checkout); when a server
    restart kills the pooled connections, the first call that meets a dead one
    invalidates the whole pool and fails as :class:`Unavailable` (a 503 the
    client may retry), and the next calls reconnect. SQLite (the local
    default): the folder of the file is created, WAL lets readers go on while
    one writes, and a busy timeout waits for a lock instead of failing at once.
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
    else:
        engine = create_engine(url, **options)
    event.listen(engine, "handle_error", _disconnect_is_unavailable)
    return engine


def _disconnect_is_unavailable(context):
    """A lost or refused connection is :class:`Unavailable` (503, worth a retry), not a 500.

    Besides what SQLAlchemy calls a disconnect, any DBAPI ``OperationalError``:
    "the database system is shutting down" while connecting, a server that
    refuses connections, a deadlock, a lock wait that gave up (SQLite's
    "database is locked" too).
    """
    if context.is_disconnect or isinstance(context.sqlalchemy_exception, OperationalError):
        raise Unavailable(
            "the database cannot be reached", {"database": ["unreachable"]}
        ) from context.original_exception


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database(_Database):
    """``nameko_sqlalchemy.Database`` with :func:`engine_for` making the engine.

    Worker code uses ``self.db.session`` (one session per worker, closed at
    teardown; the logic functions commit it themselves) or, for a hot read or
    a write that is one statement, ``self.db.autocommit_connection``.
    """

    def setup(self):
        settings = settings_of(self.container)
        uri = settings.db_uri
        self.db_uri = uri
        # a connection for every worker nameko may run at once, plus the outbox
        # relay's: below that, busy moments open and close connections per call
        pool_size = settings.max_workers + 2
        self.engine = engine_for(uri, **{"pool_size": pool_size, **self.engine_options})
        self.Session = sessionmaker(bind=self.engine, class_=Session, **self.session_options)
        # a pool of autocommit connections, for reads and one-statement writes: no
        # BEGIN and no COMMIT or ROLLBACK round trip, and no isolation switch per
        # checkout (which costs one on PostgreSQL)
        self.autocommit_engine = engine_for(
            uri,
            **{
                "pool_size": pool_size,
                **self.engine_options,
                "isolation_level": "AUTOCOMMIT",
                # no transaction to end when a connection goes back to the pool
                "pool_reset_on_return": None,
            },
        )

    def stop(self):
        super().stop()
        self.autocommit_engine.dispose()

    def kill(self):
        super().kill()
        self.autocommit_engine.dispose()

    def get_dependency(self, worker_ctx):
        db = DatabaseWrapper(self.Session, self.autocommit_engine)
        self.dbs[worker_ctx] = db
        return db


class DatabaseWrapper(_DatabaseWrapper):
    """What a worker gets: ``session`` (a transaction) and ``autocommit_connection`` (autocommit).

    ``autocommit_connection`` is a Core connection, for a hot read of one prebuilt
    statement (or several that need no consistency between them), or a write that
    is one statement (its own transaction): without a Session it costs about a
    third less CPU. Every other write uses ``session``.
    """

    def __init__(self, Session, autocommit_engine):
        super().__init__(Session)
        self.autocommit_engine = autocommit_engine
        self._autocommit_connection = None

    @property
    def autocommit_connection(self):
        if self._autocommit_connection is None:
            self._autocommit_connection = self.autocommit_engine.connect()
        return self._autocommit_connection

    def close(self):
        """End the worker's transaction and give its connections back.

        Never raises: this runs in nameko's worker teardown, where an exception
        kills the whole container. When the database has just dropped the
        connection (a restart), the rollback fails; SQLAlchemy then invalidates
        that connection, and the pool hands out a fresh one next time.
        """
        for close in (super().close, self._close_autocommit_connection):
            try:
                close()
            except Exception as error:  # noqa: BLE001 (see above: nothing may escape)
                log.warning("closing a worker's database connection failed: %s", error)

    def _close_autocommit_connection(self):
        if self._autocommit_connection is not None:
            connection, self._autocommit_connection = self._autocommit_connection, None
            try:
                connection.close()
            except Exception:
                connection.invalidate()
                raise


def core_connection(db):
    """Where a prebuilt Core statement runs: a Session's connection, or the connection given."""
    return db.connection() if isinstance(db, OrmSession) else db


def find_dependency(container, attr_name):
    """The provider bound to ``container`` under ``attr_name`` (for providers that cooperate)."""
    for dependency in container.dependencies:
        if dependency.attr_name == attr_name:
            return dependency
    raise LookupError(f"{container.service_name} has no dependency named {attr_name!r}")


class Prepared:
    """A PostgreSQL statement planned once per database connection instead of every call.

    For the hot one-statement writes: a data-modifying WITH costs PostgreSQL
    more to plan than to run (measured: 0.25 ms of planning against 0.17 of
    execution for the order's), and a prepared statement skips both the parse and
    the plan. ``run(connection, params)`` sends ``EXECUTE``; the first run on a
    database connection sends ``PREPARE`` before it. SQLAlchemy keeps that
    mark in the connection's ``info``, which it clears when it reconnects, so a
    new connection (after a restart of PostgreSQL, say) prepares again.

    Values go to the driver as they are: SQLAlchemy's bind processing is
    skipped, so a statement whose columns have bind processors (a TypeDecorator
    with ``process_bind_param``) must not be prepared this way. So are its
    Python-side column defaults (``default=``, ``onupdate=``): a statement that
    would need one is refused here, naming the column to set in the statement.
    """

    def __init__(self, name, statement):
        compiled = statement.compile(dialect=postgresql.psycopg2.dialect())
        unfilled = [column.key for column in compiled.insert_prefetch + compiled.update_prefetch]
        # an onupdate inside a WITH is left as a bind without a value at all
        unfilled += [
            compiled.bind_names[bind]
            for bind in compiled.binds.values()
            if not bind.required and bind.value is None and bind.callable is None
        ]
        if unfilled:
            raise ValueError(
                f"{name}: set {', '.join(sorted(set(unfilled)))} in the statement; "
                "a prepared statement gets no Python-side column defaults"
            )
        names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", compiled.string)))
        sql = compiled.string
        for number, key in enumerate(names, 1):
            sql = sql.replace(f"%({key})s", f"${number}")
        self.name = name
        self.prepare = f"PREPARE {name} AS {sql.replace('%%', '%')}"
        self.execute = f"EXECUTE {name} ({', '.join(f'%({key})s' for key in names)})"
        # values SQLAlchemy bound itself (the 1 of ``order_count + 1``)
        self.bound = {
            compiled.bind_names[bind]: bind.value
            for bind in compiled.binds.values()
            if not bind.required
        }
        self.required = frozenset(names) - self.bound.keys()

    def run(self, connection, params):
        """The statement's result on ``connection`` (a Core connection to PostgreSQL)."""
        missing = self.required - params.keys()
        if missing:
            raise KeyError(f"{self.name} needs a value for {', '.join(sorted(missing))}")
        prepared = connection.info.setdefault("prepared_statements", set())
        if self.name not in prepared:
            connection.exec_driver_sql(self.prepare)
            prepared.add(self.name)
        return connection.exec_driver_sql(self.execute, {**self.bound, **params})


# the INSERTs that know ON CONFLICT, per backend we run on
_UPSERT_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@cache
def prebuilt_insert(table):
    """One ``insert(table)`` per table for the whole process: Core caches its compiled form."""
    return insert(table)


def upsert_insert(session, table):
    """``insert(table)`` of the session's backend, with ``on_conflict_do_nothing/_update``."""
    return _UPSERT_INSERTS[session.get_bind().dialect.name](table)


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
