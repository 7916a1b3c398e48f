"""Services in real nameko containers on the real RabbitMQ (a vhost per test)."""

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from shared import services
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


# --- the gateway end to end ------------------------------------------------------------------
# users, orders and the gateway in containers on a vhost of their own. The
# stack is module-scoped: starting three containers costs about a second, and the
# gateway tests tell their data apart by random emails instead.
from tests.conftest import BACKENDS  # noqa: E402

GATEWAY_JWT_SECRET = "integration-test-jwt-secret-of-plenty-bytes"


def gateway_config(rabbit_config, **extra):
    """The gateway's config on the test's vhost, on a free port, with a test secret."""
    from nameko.testing.utils import find_free_port

    return {
        **rabbit_config,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{find_free_port()}",
        "ENVIRONMENT": "test",
        "JWT_SECRET": GATEWAY_JWT_SECRET,
        "ACCESS_TOKEN_MINUTES": 15,
        "REFRESH_TOKEN_DAYS": 7,
        "RPC_TIMEOUT": 2,
        "MAX_BODY_BYTES": 65536,
        **extra,
    }


def base_url(config):
    return "http://" + config["WEB_SERVER_ADDRESS"]


@pytest.fixture(scope="module")
def module_rabbit_config(request, vhost_pipeline):
    """``rabbit_config`` for a whole module: one throwaway vhost."""
    from urllib.parse import urlparse

    uri = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
    with vhost_pipeline.get() as vhost:
        yield {
            "AMQP_URI": f"{uri.scheme}://{uri.netloc}/{vhost}",
            "username": uri.username,
            "vhost": vhost,
        }


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_uris(request, tmp_path_factory):
    """Empty, migrated users and orders databases for a whole module, per backend."""
    from tests.conftest import empty_tables, migrate

    uris = {}
    for service_name in services.names(with_database=True):
        if request.param == "sqlite":
            path = tmp_path_factory.mktemp(service_name) / f"{service_name}.sqlite3"
            uris[service_name] = f"sqlite:///{path}"
            migrate(service_name, uris[service_name])
        else:
            uris[service_name] = request.getfixturevalue("postgres_databases").get(service_name)
            empty_tables(uris[service_name])
    return uris


def backend_configs(rabbit_config, db_uris):
    """Configs of users and orders, each on its own free HTTP port."""
    from nameko.testing.utils import find_free_port

    return {
        name: service_config(
            rabbit_config,
            {"WEB_SERVER_ADDRESS": f"127.0.0.1:{find_free_port()}"},
            name,
            uri,
            EVENT_RETRY_DELAY=0.05,
        )
        for name, uri in db_uris.items()
    }


@pytest.fixture(scope="module")
def gateway_stack(module_rabbit_config, module_db_uris):
    """Running users, orders and gateway containers; yields the gateway's config."""
    from nameko.containers import ServiceContainer

    from gateway.service import GatewayService
    from orders.service import OrdersService
    from users.service import UsersService

    configs = backend_configs(module_rabbit_config, module_db_uris)
    gateway = gateway_config(module_rabbit_config)
    containers = [
        ServiceContainer(UsersService, configs["users"]),
        ServiceContainer(OrdersService, configs["orders"]),
        ServiceContainer(GatewayService, gateway),
    ]
    for container in containers:
        container.start()
    yield gateway
    for container in containers:
        container.kill()


@pytest.fixture(scope="module")
def module_rpc(module_rabbit_config):
    with ClusterRpcProxy(module_rabbit_config, timeout=RPC_TIMEOUT) as proxy:
        yield proxy


@pytest.fixture
def users(users_config, container_factory):
    """The users service in a real container."""
    from users.service import UsersService

    container = container_factory(UsersService, users_config)
    container.start()
    return container


@pytest.fixture
def orders(orders_config, container_factory):
    """The orders service in a real container."""
    from orders.service import OrdersService

    container = container_factory(OrdersService, orders_config)
    container.start()
    return container
