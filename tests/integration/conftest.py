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
