"""docker-compose.yml: compose itself accepts it, and it keeps the deployment's rules."""

import os

from tests.deploy.conftest import (
    compose_command,
    compose_environment,
    load_compose,
    path,
    read_env_file,
    run,
)

APP_SERVICES = ("users", "orders", "gateway")


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
        if name == "migrate":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_services_wait_for_healthy_dependencies_and_finished_migrations():
    services = load_compose()["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            )
            assert rule == {"condition": expected}, (name, dependency, rule)
    for name in ("users", "orders"):
        assert "migrate" in services[name]["depends_on"], name


def test_app_services_share_one_image_and_the_command_picks_the_service():
    services = load_compose()["services"]
    images = {services[name]["image"] for name in (*APP_SERVICES, "migrate")}
    assert len(images) == 1
    for name in APP_SERVICES:
        assert services[name]["command"] == [
            "nameko",
            "run",
            "--config",
            f"config/{name}.yaml",
            f"{name}.service",
        ]


def test_app_services_are_configured_for_production_by_environment_only():
    services = load_compose()["services"]
    ports = {"gateway": "8000", "users": "8001", "orders": "8002"}
    for name in APP_SERVICES:
        env = compose_environment(services[name])
        assert env["ENVIRONMENT"] == "production" and env["LOG_FORMAT"] == "json", name
        assert env["WEB_SERVER_ADDRESS"] == f"0.0.0.0:{ports[name]}", name
        assert services[name]["ports"] == [f"{ports[name]}:{ports[name]}"], name
        assert "volumes" not in services[name], f"{name} must not need files from the host"
    assert len(compose_environment(services["gateway"])["JWT_SECRET"].encode()) >= 32
