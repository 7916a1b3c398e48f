"""The whole system as real processes on a private vhost and SQLite files."""

import uuid

import pytest
import requests

from shared import services
from tests.helpers import answers_ok, wait_until
from tests.system.processes import ServiceProcess, migrate, system_env

PASSWORD = "correct horse battery"


class System:
    def __init__(self, env, log_dir):
        self.services = {name: ServiceProcess(name, env, log_dir) for name in services.names()}

    def __getitem__(self, name):
        return self.services[name]

    @property
    def api(self):
        return self.services["gateway"].url

    def start(self):
        for service in self.services.values():
            service.start(wait=False)
        for service in self.services.values():
            service.wait_healthy()
        # /health answers before a service consumes its RPC queue: the gateway's
        # /ready (users and orders answer health over RPC) says the system is up
        ready = wait_until(lambda: answers_ok(f"{self.api}/ready", timeout=2), timeout=30)
        assert ready, "the gateway never became ready"

    def stop(self):
        for service in self.services.values():
            service.stop()

    def register_and_login(self):
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        response = requests.post(
            f"{self.api}/v1/users",
            json={"email": email, "name": "Ann", "password": PASSWORD},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        tokens = requests.post(
            f"{self.api}/v1/auth/token", json={"email": email, "password": PASSWORD}, timeout=10
        ).json()
        return response.json(), {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def system_environment(rabbit_config, tmp_path):
    return system_env(rabbit_config["AMQP_URI"], tmp_path, LOG_FORMAT="json")


@pytest.fixture
def system(system_environment, tmp_path):
    migrate(system_environment)
    running = System(system_environment, tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()
