"""docker-compose.yml run without Docker: the same commands and environment, on this machine.

Hosts become 127.0.0.1, the databases throwaway PostgreSQL databases made by the
compose init script (deploy/postgres/init-databases.sh), the broker nameko's
throwaway vhost, the ports free ones. The migration step runs first, as compose
runs it; then every app service must pass its own compose healthcheck. This
proves the commands, variable names, ports and healthchecks, not the image.
"""

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
from nameko.testing.utils import find_free_port
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL
from tests.deploy.conftest import (
    APP_SERVICES,
    DATABASE_SERVICES,
    ROOT,
    compose_environment,
    load_compose,
    path,
    run,
)

pytestmark = pytest.mark.integration

BIN = os.path.dirname(sys.executable)
HEALTHY_WITHIN = 60
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def native(command):
    """A compose command as this machine runs it: the virtualenv's python and nameko."""
    first = {"python": sys.executable, "nameko": os.path.join(BIN, "nameko")}
    return [first.get(command[0], command[0]), *command[1:]]


def available(name):
    return importlib.util.find_spec(f"{name}.service") is not None


@pytest.fixture
def databases():
    """Throwaway databases and roles made by the compose init script; dropped after."""
    admin = make_url(POSTGRES_URL)
    suffix = uuid.uuid4().hex[:8]
    names = {service: f"{service}_{suffix}" for service in DATABASE_SERVICES}
    compose = load_compose()["services"]
    passwords = {
        service: compose_environment(compose["postgres"])[f"{service.upper()}_DB_PASSWORD"]
        for service in names
    }
    psql_env = {
        **os.environ,
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "POSTGRES_USER": admin.username or "postgres",
        "SERVICE_DATABASES": " ".join(names.values()),
        **{f"{names[s].upper()}_DB_PASSWORD": passwords[s] for s in names},
    }
    if admin.password:
        psql_env["PGPASSWORD"] = admin.password
    result = run(["bash", path("deploy", "postgres", "init-databases.sh")], env=psql_env)
    try:
        assert result.returncode == 0, result.stderr
        yield names
    finally:
        for name in names.values():
            for sql in (
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{name}"',
            ):
                run(
                    ["psql", "-q", "-U", psql_env["POSTGRES_USER"], "-d", "postgres", "-c", sql],
                    env=psql_env,
                )


def mapped_env(service, rabbit_config, databases, ports):
    """The service's compose environment, pointed at this machine."""
    env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    env["PYTHONWARNINGS"] = "ignore"
    for key, value in compose_environment(service).items():
        if key == "AMQP_URI":
            value = rabbit_config["AMQP_URI"]
        elif key.endswith("_DB_URI"):
            url = make_url(value)
            name = databases[url.database]
            admin = make_url(POSTGRES_URL)
            value = url.set(
                host=admin.host or "127.0.0.1",
                port=admin.port or 5432,
                database=name,
                username=name,
            ).render_as_string(hide_password=False)
        elif key == "WEB_SERVER_ADDRESS":
            value = f"127.0.0.1:{ports[value.rpartition(':')[2]]}"
        elif key == "JWT_SECRET":
            value = secrets.token_urlsafe(48)  # the gateway refuses the example's placeholder
        env[key] = value
    return env


def compose_port(service):
    """The port the service listens on in compose (none is published but the gateway's)."""
    return compose_environment(service)["WEB_SERVER_ADDRESS"].rpartition(":")[2]


def healthcheck(service, ports):
    """The service's compose healthcheck command, on its free port."""
    command = native(service["healthcheck"]["test"][1:])
    for compose_port, free_port in ports.items():
        command = [part.replace(f":{compose_port}/", f":{free_port}/") for part in command]
    return command


def wait_healthy(name, check, process):
    deadline = time.monotonic() + HEALTHY_WITHIN
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{name} exited with {process.returncode}"
        if run(check, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} not healthy after {HEALTHY_WITHIN} s")


def test_compose_services_migrate_start_and_become_healthy(rabbit_config, databases, tmp_path):
    compose = load_compose()["services"]
    names = [name for name in APP_SERVICES if available(name)]
    ports = {compose_port(compose[name]): find_free_port() for name in APP_SERVICES}

    migrate = compose["migrate"]
    result = run(
        native(migrate["command"]),
        env=mapped_env(migrate, rabbit_config, databases, ports),
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in DATABASE_SERVICES:
        assert f"{name}: database at" in result.stdout, result.stdout

    processes = {}
    try:
        for name in names:
            log = open(tmp_path / f"{name}.log", "w")  # closed with the process, below
            processes[name] = (
                subprocess.Popen(
                    native(compose[name]["command"]),
                    env=mapped_env(compose[name], rabbit_config, databases, ports),
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        for name in names:
            try:
                wait_healthy(name, healthcheck(compose[name], ports), processes[name][0])
            except AssertionError:
                processes[name][1].flush()
                raise AssertionError((tmp_path / f"{name}.log").read_text()[-3000:]) from None
        # readiness too: each service with a database reaches it as its own role
        for name in names:
            if name in DATABASE_SERVICES:
                port = ports[compose_port(compose[name])]
                response = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                assert response.status_code == 200, (name, response.text)
    finally:
        for process, _log in processes.values():
            process.send_signal(signal.SIGTERM)
        for process, log in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
    assert set(names) == set(APP_SERVICES), f"only {names} exist yet"
