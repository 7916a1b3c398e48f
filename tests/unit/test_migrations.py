"""Each service's migrations build exactly the tables its models describe (SQLite, PostgreSQL)."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import engine_for


@pytest.mark.parametrize("service_name", ["users", "orders"])
def test_the_migrations_match_the_models(make_db_uri, service_name):
    from orders.models import Base as OrdersBase
    from users.models import Base as UsersBase

    metadata = {"users": UsersBase, "orders": OrdersBase}[service_name].metadata
    engine = engine_for(make_db_uri(service_name))  # migrated to head
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    # SQLite reports no server defaults and nothing about types that only differ by backend
    meaningful = [
        d for d in differences if not (isinstance(d, list) and d[0][0] == "modify_default")
    ]
    assert meaningful == []
