"""The body of every service's alembic ``env.py``: online migrations only."""

from alembic import context
from sqlalchemy.types import TypeDecorator

from shared.db import engine_for


def render_item(type_, obj, autogen_context):
    """How autogenerate writes a column type of ours (a ``TypeDecorator`` such as
    ``shared.db.UTCDateTime``): as the SQLAlchemy type it stores as, e.g.
    ``sa.DateTime(timezone=True)``, like the migrations written so far.

    Left to itself alembic writes ``shared.db.UTCDateTime(timezone=True)`` without
    importing ``shared``, a NameError at upgrade; and a migration that imported the
    application would break the day the class moved. The stored type is all the
    database sees. Anything else: alembic's own rendering (``False``).
    """
    if type_ != "type" or not isinstance(obj, TypeDecorator):
        return False
    impl = obj.impl_instance
    if type(impl).__module__.startswith("sqlalchemy.sql."):
        return f"sa.{impl!r}"  # the template imports sqlalchemy as sa
    # a dialect's type under ours: let alembic write our class, and import its module
    autogen_context.imports.add(f"import {type(obj).__module__}")
    return False


def run_migrations(metadata):
    engine = engine_for(context.config.attributes["db_uri"])
    with engine.connect() as connection:
        # batch mode lets ALTERs work on SQLite too
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
