"""The body of every service's alembic ``env.py``: online migrations only."""

from alembic import context

from shared.db import engine_for


def run_migrations(metadata):
    engine = engine_for(context.config.attributes["db_uri"])
    with engine.connect() as connection:
        # batch mode lets ALTERs work on SQLite too
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
