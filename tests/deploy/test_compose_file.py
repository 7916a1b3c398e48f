"""docker-compose.yml: compose itself accepts it, and it keeps the deployment's rules."""

import os
import re
from urllib.parse import urlsplit

import yaml

from shared.services import SERVICES
from tests.deploy.conftest import (
    APP_SERVICES,
    DATABASE_SERVICES,
    compose_command,
    compose_environment,
    load_compose,
    path,
    read_env_file,
    run,
)

ONE_SHOT = ("broker-setup", "migrate")
EVERY_INTERFACE = "*"  # a port published without a host address


def test_compose_parses_the_file_with_the_example_env():
    result = run([*compose_command(), "--env-file", path(".env.example"), "config", "-q"])
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    secrets = read_env_file(path(".env.example"))
    env = {key: value for key, value in os.environ.items() if key not in secrets}
    result = run([*compose_command(), "--env-file", str(empty), "config", "-q"], env=env)
    assert result.returncode != 0
    assert "set" in result.stderr and ".env" in result.stderr, result.stderr


def test_every_long_running_service_has_a_healthcheck():
    services = load_compose()["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_services_wait_for_healthy_dependencies_and_finished_one_shot_steps():
    services = load_compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert rule == {"condition": expected}, (name, dependency, rule)
    for name in DATABASE_SERVICES:
        assert "migrate" in services[name]["depends_on"], name
    # no service logs in to the broker before its broker user exists
    for name in (*APP_SERVICES, "migrate"):
        assert "broker-setup" in services[name]["depends_on"], name
    assert services["broker-setup"]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}


def test_app_services_share_one_image_and_the_command_picks_the_service():
    services = load_compose()["services"]
    images = {services[name]["image"] for name in (*APP_SERVICES, *ONE_SHOT)}
    assert len(images) == 1
    for name in APP_SERVICES:
        assert services[name]["command"] == [
            "python",
            "-m",
            "shared.cli",  # nameko run, without eventlet's deprecation banner
            "run",
            "--config",
            f"config/{name}.yaml",
            f"{name}.service",
        ]


def test_app_services_are_configured_for_production_by_environment_only():
    services = load_compose()["services"]
    ports = {service.name: service.port for service in SERVICES}
    for name in APP_SERVICES:
        env = compose_environment(services[name])
        assert env["ENVIRONMENT"] == "production" and env["LOG_FORMAT"] == "json", name
        assert env["WEB_SERVER_ADDRESS"] == f"0.0.0.0:{ports[name]}", name
        assert "volumes" not in services[name], f"{name} must not need files from the host"
    assert len(compose_environment(services["gateway"])["JWT_SECRET"].encode()) >= 32


def test_every_service_with_a_database_gets_it_made_and_migrated():
    services = load_compose()["services"]
    migrate = services["migrate"]
    configs = [part for part in migrate["command"] if part.startswith("config/")]
    assert configs == [f"config/{name}.yaml" for name in DATABASE_SERVICES]
    example = read_env_file(path(".env.example"))
    postgres = compose_environment(services["postgres"])
    for name in DATABASE_SERVICES:
        uri = urlsplit(compose_environment(migrate)[f"{name.upper()}_DB_URI"])
        assert uri.username == name and uri.path == f"/{name}", uri
        assert uri.password == example[f"{name.upper()}_DB_PASSWORD"], name
        # the init script makes a role and a database for each *_DB_PASSWORD it is given
        assert postgres[f"{name.upper()}_DB_PASSWORD"] == uri.password, name
        assert (
            compose_environment(services[name])[f"{name.upper()}_DB_URI"]
            == (compose_environment(migrate)[f"{name.upper()}_DB_URI"])
        ), name
    made = {key for key in postgres if key.endswith("_DB_PASSWORD")}
    assert made == {f"{name.upper()}_DB_PASSWORD" for name in DATABASE_SERVICES}


def fake_psql(tmp_path):
    """A ``psql`` on PATH that writes its -v settings, one call a line, and does nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "psql"
    script.write_text(
        '#!/bin/sh\nexec >> "$PSQL_CALLS"\n'
        'while [ $# -gt 0 ]; do [ "$1" = -v ] && printf "%s " "$2"; shift; done\necho\n'
    )
    script.chmod(0o755)
    return bin_dir


def test_the_postgres_init_script_makes_a_database_for_each_password_compose_passes(tmp_path):
    """No list of services in the script: each NAME_DB_PASSWORD is a database and a role."""
    postgres = compose_environment(load_compose()["services"]["postgres"])
    calls = tmp_path / "calls"
    env = {
        "PATH": f"{fake_psql(tmp_path)}:{os.environ['PATH']}",
        "PSQL_CALLS": str(calls),
        **postgres,
    }
    result = run(["bash", path("deploy", "postgres", "init-databases.sh")], env=env)
    assert result.returncode == 0, result.stderr
    made = sorted(
        line.split("name=")[1].split()[0]
        for line in calls.read_text().splitlines()
        if "password=" in line
    )
    assert made == sorted(DATABASE_SERVICES)


def test_the_postgres_init_script_refuses_to_make_nothing(tmp_path):
    env = {"PATH": f"{fake_psql(tmp_path)}:{os.environ['PATH']}", "POSTGRES_USER": "postgres"}
    result = run(["bash", path("deploy", "postgres", "init-databases.sh")], env=env)
    assert result.returncode == 1
    assert "NAME_DB_PASSWORD" in result.stderr


def published(service):
    """(host address, host port, container port) of each published port."""
    found = []
    for spec in service.get("ports", []):
        assert isinstance(spec, str), f"write ports as strings, got {spec!r}"
        parts = spec.split(":")
        address = parts[0] if len(parts) == 3 else EVERY_INTERFACE
        found.append((address, parts[-2], parts[-1]))
    return found


def test_only_the_gateway_api_is_published_on_every_interface():
    services = load_compose()["services"]
    assert published(services["gateway"]) == [(EVERY_INTERFACE, "8000", "8000")]
    for name in ("prometheus", "grafana"):
        assert published(services[name]), name
        assert {address for address, _, _ in published(services[name])} == {"127.0.0.1"}, name
    # the broker (AMQP, management), the database and the services' own ports
    # (metrics) stay inside the compose network
    internal = [name for name in APP_SERVICES if name != "gateway"]
    for name in ("rabbitmq", "postgres", *internal, *ONE_SHOT):
        assert published(services[name]) == [], name


def test_each_service_connects_to_the_broker_as_its_own_user():
    services = load_compose()["services"]
    setup = compose_environment(services["broker-setup"])
    example = read_env_file(path(".env.example"))
    for name in APP_SERVICES:
        uri = compose_environment(services[name])["AMQP_URI"]
        parts = urlsplit(uri)
        assert parts.username == name and parts.path == "/shop", uri
        assert parts.password == example[f"{name.upper()}_RABBITMQ_PASSWORD"], name
        # broker-setup creates exactly that user with exactly that password
        assert setup[f"{name.upper()}_AMQP_URI"] == uri, name
    broker = compose_environment(services["rabbitmq"])
    assert {key for key in setup if key.endswith("_AMQP_URI")} == {
        f"{name.upper()}_AMQP_URI" for name in APP_SERVICES
    }
    assert broker["RABBITMQ_DEFAULT_PASS"] == setup["RABBITMQ_ADMIN_PASSWORD"]
    assert broker["RABBITMQ_DEFAULT_USER"] == setup["RABBITMQ_ADMIN_USER"]


def test_every_secret_comes_from_the_env_file_and_none_is_written_here():
    with open(path("docker-compose.yml")) as stream:
        text = stream.read()
    # the cluster override (docker-compose.cluster.yml) needs one more: the Erlang cookie
    with open(path("docker-compose.cluster.yml")) as stream:
        cluster_text = stream.read()
    example = read_env_file(path(".env.example"))
    secrets = {key: value for key, value in example.items() if key != "RABBITMQ_ADMIN_USER"}
    for key, value in secrets.items():
        for name, content in (("docker-compose.yml", text), ("the cluster file", cluster_text)):
            assert value not in content, f"the value of {key} is written in {name}"
        # required: compose refuses to start without it rather than use a default
        required = r"\$\{" + key + r":\?[^}]+\}"
        assert re.search(required, text + cluster_text), f"{key} is not required from .env"
    raw = yaml.safe_load(text)
    assert "definitions.json" not in str(raw["services"]["rabbitmq"]), "no boot-time definitions"


def test_the_example_env_file_holds_placeholders_only():
    example = read_env_file(path(".env.example"))
    for key, value in example.items():
        if key != "RABBITMQ_ADMIN_USER":
            assert value.startswith("change-me"), f"{key} in .env.example is not a placeholder"
    with open(path(".gitignore")) as stream:
        assert ".env" in stream.read().split(), ".env must stay out of git"
