"""Services in real nameko containers on the real RabbitMQ (a vhost per test)."""
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from tests.conftest import FAST_HASHING

RPC_TIMEOUT = 10


def service_config(rabbit_config, web_config, service_name, db_uri, **extra):
    """A config as the service's YAML would give it, on the test's vhost and database."""
    return {
        **rabbit_config,
        **web_config,
        "DB_URIS": {f"{service_name}:Base": db_uri},
        "RPC_TIMEOUT": RPC_TIMEOUT,
        "OUTBOX_SWEEP_SECONDS": 0.5,
        **FAST_HASHING,
        **extra,
    }


@pytest.fixture
def users_config(rabbit_config, web_config, users_db_uri):
    return service_config(rabbit_config, web_config, "users", users_db_uri)


@pytest.fixture
def rpc(rabbit_config):
    """A standalone RPC client with a timeout, as `nameko shell` users have."""
    with ClusterRpcProxy(rabbit_config, timeout=RPC_TIMEOUT) as proxy:
        yield proxy


@pytest.fixture
def orders_config(rabbit_config, web_config, make_db_uri):
    """The orders service's config, on its own HTTP port so that users can run beside it.

    Failed event handlers retry after 0.05 s (then 0.1, 0.2): tests see retries
    and dead letters in well under a second.
    """
    from nameko.testing.utils import find_free_port

    return service_config(
        rabbit_config,
        web_config,
        "orders",
        make_db_uri("orders"),
        WEB_SERVER_ADDRESS=f"127.0.0.1:{find_free_port()}",
        EVENT_RETRY_DELAY=0.05,
    )
