"""Helpers of the deployment checks: the repository's files and the tools that read them.

A missing tool (docker-compose, hadolint, kubernetes-validate, check-jsonschema)
fails the test when ``CI`` is set, so CI can never go green by skipping; on a
developer's machine it skips with the command that installs it.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from shared.services import names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
INSTALL_HINT = "install it with: bash scripts/install-deploy-tools.sh"
# the services, from their one list (shared/services.py): no check here names them
APP_SERVICES = tuple(names())
DATABASE_SERVICES = tuple(names(with_database=True))  # each owns a database


def queue_consumers():
    """The services with durable queues of their own: they answer RPC or handle
    events as a pool (a BROADCAST handler's queue goes with its process)."""
    from scripts.broker_setup import SERVICES as TABLE

    return tuple(
        name
        for name in APP_SERVICES
        if name in TABLE
        and (TABLE[name].answers_rpc or any(not s.broadcast for s in TABLE[name].subscribes))
    )


def path(*parts):
    return os.path.join(ROOT, *parts)


def missing_tool(reason):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure: {INSTALL_HINT})")
    pytest.skip(f"{reason}: {INSTALL_HINT}")


def find_tool(name):
    """The tool's path: next to this interpreter (the project's virtualenv) or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def tool(name):
    found = find_tool(name)
    if not found:
        missing_tool(f"{name} is not installed")
    return found


def compose_command():
    """``docker-compose`` (v1, what Debian ships) or the ``docker compose`` plugin."""
    found = find_tool("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    missing_tool("neither docker-compose nor the docker compose plugin is installed")


def run(command, timeout=120, **kwargs):
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def read_env_file(file_path):
    """KEY=value lines of a .env file (comments and blank lines ignored)."""
    values = {}
    with open(file_path) as stream:
        for line in stream:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value, env):
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` over ``env``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match):
        name, op, arg = match.group("name", "op", "arg")
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"compose needs {name}: {arg}")
        return arg or ""

    return INTERPOLATION.sub(replace, value)


def load_compose(env=None):
    """docker-compose.yml as compose reads it with .env.example as its .env."""
    with open(path("docker-compose.yml")) as stream:
        compose = yaml.safe_load(stream)
    return interpolate(compose, read_env_file(path(".env.example")) if env is None else env)


def compose_environment(service):
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def load_manifests():
    """{file name: [documents]} of every YAML file in deploy/k8s but the kustomization."""
    manifests = {}
    for name in sorted(os.listdir(K8S_DIR)):
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml":
            with open(os.path.join(K8S_DIR, name)) as stream:
                manifests[name] = [doc for doc in yaml.safe_load_all(stream) if doc]
    return manifests
