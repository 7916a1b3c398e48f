"""A worker's database teardown survives a connection the database has just dropped.

nameko runs ``DatabaseWrapper.close`` in the worker's teardown, where an
exception kills the whole container: a PostgreSQL restart under load used to
take the orders service down for good (its rollback failed on the dead
connection). Here the server ends the worker's own connections
(``pg_terminate_backend``, on a throwaway database: nothing else is touched).
"""

from sqlalchemy import text

from shared.db import DatabaseWrapper, engine_for
from tests.conftest import POSTGRES_URL
from users.models import Base  # noqa: F401 (the throwaway database is the users schema)


def terminate(pids):
    admin = engine_for(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for pid in pids:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


def test_closing_a_worker_whose_connections_were_dropped_raises_nothing(postgres_databases):
    from sqlalchemy.orm import sessionmaker

    uri = postgres_databases.get("users")
    engine = engine_for(uri)
    autocommit_engine = engine_for(uri, isolation_level="AUTOCOMMIT")
    db = DatabaseWrapper(sessionmaker(bind=engine), autocommit_engine)
    session_pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()  # a transaction
    read_pid = db.autocommit_connection.execute(text("SELECT pg_backend_pid()")).scalar()
    terminate([session_pid, read_pid])

    db.close()  # must not raise

    # and the next worker's transaction gets a working connection from the pool
    again = DatabaseWrapper(sessionmaker(bind=engine), autocommit_engine)
    assert again.session.execute(text("SELECT 1")).scalar() == 1
    again.close()
    engine.dispose()
    autocommit_engine.dispose()
