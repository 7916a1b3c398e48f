"""Each service's migrations build exactly the tables its models describe (SQLite, PostgreSQL),
and alembic's autogenerate writes a migration that runs."""

import importlib
import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import engine_for
from shared.migrate import alembic_config
from shared.services import names


def metadata_of(service_name):
    return importlib.import_module(f"{service_name}.models").Base.metadata


def differences(uri, metadata):
    engine = engine_for(uri)
    try:
        with engine.connect() as connection:
            found = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    # SQLite reports no server defaults and nothing about types that only differ by backend
    return [d for d in found if not (isinstance(d, list) and d[0][0] == "modify_default")]


@pytest.mark.parametrize("service_name", names(with_database=True))
def test_the_migrations_match_the_models(make_db_uri, service_name):
    uri = make_db_uri(service_name)  # migrated to head
    assert differences(uri, metadata_of(service_name)) == []


@pytest.mark.parametrize("service_name", names(with_database=True))
def test_autogenerate_writes_a_migration_that_runs(tmp_path, service_name):
    """What `python -m shared.migrate config/<name>.yaml revision --autogenerate` writes
    for a new service: its whole schema, from its env.py and script.py.mako, into an
    empty versions/ folder, against an empty database. It must upgrade as written."""
    source = Path(importlib.import_module(service_name).__file__).parent / "migrations"
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(source / name, scripts / name)
    uri = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    config = alembic_config(service_name, uri)
    config.set_main_option("script_location", str(scripts))

    command.revision(config, message="everything", autogenerate=True)
    (written,) = (scripts / "versions").glob("*.py")
    text = written.read_text()
    assert "op.create_table" in text
    # the project's own column types are written as the SQLAlchemy types they store
    # as: a migration imports sqlalchemy and alembic only, never the application
    assert "shared." not in text, text
    command.upgrade(config, "head")

    assert differences(uri, metadata_of(service_name)) == []


def test_a_type_of_ours_is_rendered_as_the_type_it_stores_as():
    from types import SimpleNamespace

    from sqlalchemy.dialects.postgresql import JSONB
    from sqlalchemy.types import TypeDecorator

    from shared.db import UTCDateTime
    from shared.migrations_env import render_item

    context = SimpleNamespace(imports=set())  # what render_item uses of alembic's context
    assert render_item("type", UTCDateTime(), context) == "sa.DateTime(timezone=True)"
    assert render_item("server_default", UTCDateTime(), context) is False
    assert context.imports == set()

    class OverADialectType(TypeDecorator):
        impl = JSONB
        cache_ok = True

    # alembic writes the class with its module's name: that module is imported
    assert render_item("type", OverADialectType(), context) is False
    assert context.imports == {f"import {__name__}"}
