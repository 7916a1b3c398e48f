"""docker-compose.cluster.yml over docker-compose.yml: three RabbitMQ nodes that form
one cluster (rabbitmq/cluster.conf), and every service on all three with quorum queues.

Compose itself merges the two files (`docker-compose config`); the checks read
what it prints, so they see what an operator's `up` would run. Whether the nodes
really form a cluster is a matter for a Docker engine (deploy/README.md shows
the `rabbitmqctl cluster_status` check); here: that everything they need to is
wired."""

import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import (
    APP_SERVICES,
    compose_command,
    path,
    queue_consumers,
    read_env_file,
    run,
)

NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
QUEUE_CONSUMERS = queue_consumers()  # the services with durable queues of their own
FILES = ("-f", path("docker-compose.yml"), "-f", path("docker-compose.cluster.yml"))


def compose_config(env_file):
    return run([*compose_command(), "--env-file", env_file, *FILES, "config"])


@pytest.fixture(scope="module")
def merged():
    """The two files as compose merges them, with .env.example as .env."""
    result = compose_config(path(".env.example"))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def single():
    result = run([*compose_command(), "--env-file", path(".env.example"), "config"])
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def cluster_conf():
    """rabbitmq/cluster.conf as {key: value} (sysctl format, comments dropped)."""
    values = {}
    with open(path("rabbitmq", "cluster.conf")) as stream:
        for line in stream:
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def mounts(service):
    """{container path: source} of a service's volumes, as compose prints them."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            found[target] = source
    return found


def test_the_single_broker_stack_is_what_it_was(single):
    """Without the override: one broker, no cookie needed, classic queues (the default)."""
    assert [name for name in single["services"] if name.startswith("rabbitmq")] == ["rabbitmq"]
    for name in APP_SERVICES:
        environment = single["services"][name]["environment"]
        assert ";" not in environment["AMQP_URI"], name
        assert environment.get("QUEUE_TYPE", "classic") == "classic", name
    with open(path("docker-compose.yml")) as stream:
        assert "ERLANG_COOKIE" not in stream.read()


def test_compose_refuses_the_cluster_without_the_erlang_cookie(tmp_path):
    example = read_env_file(path(".env.example"))
    without = tmp_path / "no-cookie.env"
    without.write_text(
        "".join(f"{k}={v}\n" for k, v in example.items() if k != "RABBITMQ_ERLANG_COOKIE")
    )
    env = {key: value for key, value in os.environ.items() if key not in example}
    result = run([*compose_command(), "--env-file", str(without), *FILES, "config", "-q"], env=env)
    assert result.returncode != 0
    assert "RABBITMQ_ERLANG_COOKIE" in result.stderr, result.stderr


def test_three_nodes_whose_names_are_the_peer_discovery_list(merged):
    conf = cluster_conf()
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = [value for key, value in sorted(conf.items()) if ".classic_config.nodes." in key]
    services = merged["services"]
    assert sorted(listed) == sorted(f"rabbit@{services[node]['hostname']}" for node in NODES)
    # a node's host name is its service name, so the others reach it by it
    assert [services[node]["hostname"] for node in NODES] == list(NODES)
    assert conf["cluster_partition_handling"] == "pause_minority"


def test_every_node_has_the_same_config_its_own_volume_and_no_port(merged):
    services = merged["services"]
    data_volumes = set()
    for node in NODES:
        service = services[node]
        found = mounts(service)
        assert found["/etc/rabbitmq/rabbitmq.conf"].endswith("/rabbitmq/rabbitmq.conf"), node
        assert found["/etc/rabbitmq/enabled_plugins"].endswith("/rabbitmq/enabled_plugins"), node
        assert found["/etc/rabbitmq/conf.d/20-cluster.conf"].endswith("/rabbitmq/cluster.conf")
        data_volumes.add(found["/var/lib/rabbitmq"])
        assert not service.get("ports"), f"{node} publishes a port"
        assert service["healthcheck"]["test"], node
        assert service["image"] == services["rabbitmq"]["image"], node
        environment = service["environment"]
        cookie = read_env_file(path(".env.example"))["RABBITMQ_ERLANG_COOKIE"]
        assert environment["SHOP_ERLANG_COOKIE"] == cookie, node
        # RabbitMQ itself would read these (deprecated: cookie on the command line)
        assert "RABBITMQ_ERLANG_COOKIE" not in environment and "ERLANG_COOKIE" not in environment
        assert (
            environment["RABBITMQ_DEFAULT_PASS"]
            == (services["broker-setup"]["environment"]["RABBITMQ_ADMIN_PASSWORD"])
        )
    assert len(data_volumes) == 3
    # the first node keeps the single broker's volume: an existing broker grows into the cluster
    assert mounts(services["rabbitmq"])["/var/lib/rabbitmq"] == "rabbitmq-data"


def test_nodes_join_the_first_and_nothing_uses_the_broker_before_all_three_run(merged):
    services = merged["services"]
    for node in ("rabbitmq-2", "rabbitmq-3"):
        assert services[node]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    # a quorum queue gets as many members as the cluster has nodes when it is declared
    assert services["broker-setup"]["depends_on"] == {
        node: {"condition": "service_healthy"} for node in NODES
    }
    for name in (*APP_SERVICES, "migrate"):
        assert "broker-setup" in services[name]["depends_on"], name


def test_each_service_fails_over_across_all_three_nodes_as_its_own_user(merged):
    services = merged["services"]
    example = read_env_file(path(".env.example"))
    first_nodes = set()
    for name in (*APP_SERVICES, "migrate"):
        account = "users" if name == "migrate" else name
        uris = services[name]["environment"]["AMQP_URI"].split(";")
        hosts = []
        for uri in uris:
            parts = urlsplit(uri)
            assert parts.scheme == "amqp" and parts.port == 5672 and parts.path == "/shop", uri
            assert parts.username == account, name
            assert parts.password == example[f"{account.upper()}_RABBITMQ_PASSWORD"], name
            hosts.append(parts.hostname)
        assert sorted(hosts) == sorted(NODES), name
        if name != "migrate":
            first_nodes.add(hosts[0])
    # each service starts at another node: connections and queue leaders spread
    assert len(first_nodes) == min(len(NODES), len(APP_SERVICES))


def test_the_services_declare_quorum_queues(merged):
    services = merged["services"]
    for name in (*APP_SERVICES, "migrate"):
        assert services[name]["environment"]["QUEUE_TYPE"] == "quorum", name
    for name in QUEUE_CONSUMERS:
        with open(path("config", f"{name}.yaml")) as stream:
            assert "${QUEUE_TYPE:" in stream.read(), f"config/{name}.yaml does not read QUEUE_TYPE"


def test_broker_setup_gets_single_address_uris_of_the_same_accounts(merged):
    """scripts/broker_setup.py reads user, password and vhost from one URI, not a list."""
    services = merged["services"]
    setup = services["broker-setup"]["environment"]
    for name in APP_SERVICES:
        uri = setup[f"{name.upper()}_AMQP_URI"]
        assert ";" not in uri, name
        first = urlsplit(services[name]["environment"]["AMQP_URI"].split(";")[0])
        parts = urlsplit(uri)
        assert (parts.username, parts.password, parts.path) == (
            first.username,
            first.password,
            first.path,
        )
        assert parts.hostname in NODES


def cookie_script():
    """The nodes' entrypoint shell script, as the shell will get it."""
    with open(path("docker-compose.cluster.yml")) as stream:
        raw = yaml.safe_load(stream)
    entrypoint = raw["x-cluster-node"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    return entrypoint[2].replace("$$", "$")


@pytest.mark.parametrize(
    "cookie",
    ["", "change-me-erlang-cookie-shared-by-the-rabbitmq-nodes", "short-cookie"],
    ids=["unset", "the placeholder", "too short"],
)
def test_a_node_refuses_a_missing_placeholder_or_short_cookie(cookie, tmp_path):
    env = {"PATH": os.environ["PATH"], "SHOP_ERLANG_COOKIE": cookie}
    result = subprocess.run(
        ["/bin/sh", "-c", cookie_script(), "rabbitmq", "rabbitmq-server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "RABBITMQ_ERLANG_COOKIE" in result.stderr


def test_the_cookie_is_written_owner_only_then_the_image_entrypoint_runs():
    script = cookie_script()
    written = r"umask 077 && printf '%s' \"\$SHOP_ERLANG_COOKIE\" > /var/lib/rabbitmq/"
    assert re.search(written, script)
    assert script.rstrip().endswith('exec docker-entrypoint.sh "$@"')
