"""The project's docker-compose.yml, run for real by the compose tier (compose v1).

What the tier changes, all outside the checkout (a temporary folder):

- ``.env``: fresh random secrets (the compose file requires every one of them;
  the gateway refuses a guessable JWT secret in production) and ``IMAGE``, a
  tag of the tier's own, so a developer's ``nameko-shop:latest`` stays as it is.
- a copy of docker-compose.yml in which a published host port moves to a free
  one only if something on this machine already holds it (compose v1 adds an
  override's ``ports:`` to the base file's, so an override cannot move one).
- an override that puts Grafana in a profile of its own: there is no Grafana
  image to run where no registry is reachable.

``--project-directory`` is the checkout, so every relative path in the compose
file (build context, mounted configs) means what it means for an operator.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from shared.services import names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP_SERVICES = tuple(names())  # shared/services.py: the one list
ONE_SHOT_SERVICES = ("broker-setup", "migrate")
LONG_RUNNING_SERVICES = ("rabbitmq", "postgres", *APP_SERVICES, "prometheus")
BASE_IMAGES = (
    "python:3.11-slim-bookworm",
    "rabbitmq:3.13-management",
    "postgres:15-bookworm",
    "prom/prometheus:v2.54.1",
)
# every service's broker password, and its database's if it owns one
SECRETS = (
    "RABBITMQ_ADMIN_PASSWORD",
    *(f"{name.upper()}_RABBITMQ_PASSWORD" for name in APP_SERVICES),
    "POSTGRES_PASSWORD",
    *(f"{name.upper()}_DB_PASSWORD" for name in names(with_database=True)),
    "JWT_SECRET",
    "GRAFANA_ADMIN_PASSWORD",
)
GRAFANA_OUT = "services:\n  grafana:\n    profiles: [grafana]\n"
# `- "8000:8000"` or `- "127.0.0.1:9090:9090"` in a ports: list
PUBLISHED = re.compile(r'^(\s*- ")((?:[\d.]+:)?)(\d+)(:\d+")', re.MULTILINE)


def run(command, timeout=600, check=True, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def engine_problem():
    """Why no Docker engine can run the tier here, or None if one answers."""
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "the docker and docker-compose (v1) commands are not installed"
    result = run(["docker", "info"], timeout=30, check=False)
    if result.returncode != 0:
        return "no Docker engine answers (`docker info`): " + result.stderr.strip()[-300:]
    missing = [
        image
        for image in BASE_IMAGES
        if run(["docker", "image", "inspect", image], check=False).returncode != 0
    ]
    if missing:
        return (
            f"base images missing: {', '.join(missing)} (no registry is reachable here: "
            "build local stand-ins first, as .ci/run does)"
        )
    return None


def port_is_held(address, port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def publish_on_free_ports(compose_text):
    """The compose file with each held host port moved; and {original: used} for each port."""
    ports = {}

    def move(match):
        prefix, address, port, rest = match.groups()
        port = int(port)
        # where docker would bind it: the address given, else every interface
        held = port_is_held(address.rstrip(":") or "0.0.0.0", port)  # noqa: S104
        ports[port] = free_port() if held else port
        return f"{prefix}{address}{ports[port]}{rest}"

    return PUBLISHED.sub(move, compose_text), ports


class Stack:
    """One compose project of the tier: its files, its commands, its containers."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="compose-tier-")
        self.project = f"shoptier{uuid.uuid4().hex[:8]}"
        self.image = f"nameko-shop:{self.project}"
        with open(os.path.join(ROOT, "docker-compose.yml")) as stream:
            compose_text, self.ports = publish_on_free_ports(stream.read())
        self._write("docker-compose.yml", compose_text)
        self._write("grafana-out.yml", GRAFANA_OUT)
        values = {name: secrets.token_urlsafe(32) for name in SECRETS}
        values["IMAGE"] = self.image
        self._write(".env", "".join(f"{name}={value}\n" for name, value in values.items()))
        self.gateway_url = f"http://127.0.0.1:{self.ports[8000]}"

    def _write(self, name, text):
        with open(os.path.join(self.workdir, name), "w") as stream:
            stream.write(text)

    def compose(self, *args, timeout=600, check=True):
        command = [
            "docker-compose",
            "--project-name",
            self.project,
            "--project-directory",
            ROOT,
            "--env-file",
            os.path.join(self.workdir, ".env"),
            "--file",
            os.path.join(self.workdir, "docker-compose.yml"),
            "--file",
            os.path.join(self.workdir, "grafana-out.yml"),
            *args,
        ]
        return run(command, timeout=timeout, check=check)

    def build(self):
        """The image, from the project's Dockerfile, with the legacy builder (no registry)."""
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        run(["docker", "build", "--quiet", "--tag", self.image, ROOT], timeout=1200, env=env)

    def up(self):
        self.compose("up", "--detach", "--no-build", timeout=900)

    def remove(self):
        """Containers, networks and volumes of the project, the image and the folder."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        run(["docker", "image", "rm", "--force", self.image], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def containers(self):
        """{service: container id} of every container of the project, running or not."""
        result = run(
            ["docker", "ps", "--all", "--no-trunc"]
            + ["--filter", f"label=com.docker.compose.project={self.project}"]
            + ["--format", '{{.ID}} {{.Label "com.docker.compose.service"}}']
        )
        return {
            service: container
            for container, service in (line.split() for line in result.stdout.splitlines())
        }

    def state(self, service):
        """``docker inspect``'s State of the service's container."""
        container = self.containers()[service]
        return json.loads(run(["docker", "inspect", container]).stdout)[0]["State"]

    def restart_count(self, service):
        container = self.containers()[service]
        result = run(["docker", "inspect", "--format", "{{.RestartCount}}", container])
        return int(result.stdout)

    def wait_until_ready(self, timeout=300):
        """Seconds until every long-running service is healthy and each one-shot exited 0."""
        began = time.monotonic()
        while True:
            problems = self.not_ready()
            if not problems:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                logs = self.compose("logs", "--no-color", "--tail", "30", check=False).stdout
                raise AssertionError(f"not ready in {timeout} s: {problems}\n{logs}")
            time.sleep(2)

    def not_ready(self):
        containers = self.containers()
        problems = {}
        for service in ONE_SHOT_SERVICES + LONG_RUNNING_SERVICES:
            if service not in containers:
                problems[service] = "no container"
                continue
            state = self.state(service)
            if service in ONE_SHOT_SERVICES:
                if state["Status"] != "exited" or state["ExitCode"] != 0:
                    problems[service] = f"{state['Status']} (exit {state['ExitCode']})"
            elif state.get("Health", {}).get("Status") != "healthy":
                problems[service] = state.get("Health", {}).get("Status", state["Status"])
        return problems

    def stop(self, service, grace=30):
        """``docker stop`` the service's container: (seconds it took, its exit code).

        The grace period is longer than the 10 s the check allows, so a process
        that overran it shows as slow, not as killed on time.
        """
        container = self.containers()[service]
        began = time.monotonic()
        run(["docker", "stop", "--time", str(grace), container], timeout=grace + 30)
        seconds = time.monotonic() - began
        return seconds, self.state(service)["ExitCode"]
