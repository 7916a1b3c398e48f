import pytest

from tests.security.stack import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The real system on PostgreSQL for one module; its logs stay for the tests to read."""
    with running_stack(tmp_path_factory.mktemp("security")) as running:
        yield running
