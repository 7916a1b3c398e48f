"""Compose, the Kubernetes base and Prometheus' scrape config hold every listed service.

Each service of shared.services with its config and port: adding a service there
and forgetting one of these files fails. So do the cluster override, the example
secrets, the package and the image (which pick up every service folder by
themselves). The broker permission table, the migration step and the broker
setup step are held to the list in test_broker_permission_table.py, test_k8s.py
and test_compose_file.py."""

import configparser
import fnmatch
import os

import pytest
import yaml
from setuptools import find_packages

from shared.services import SERVICES
from tests.deploy.conftest import ROOT, path, read_env_file

K8S = os.path.join(ROOT, "deploy", "k8s")


def load(*parts):
    with open(path(*parts)) as file:
        return yaml.safe_load(file)


def k8s_documents():
    kustomization = load("deploy", "k8s", "kustomization.yaml")
    documents = []
    for resource in kustomization["resources"]:
        with open(os.path.join(K8S, resource)) as file:
            documents.extend(d for d in yaml.safe_load_all(file) if d)
    return documents


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_compose_runs_every_service_with_its_config(service):
    compose = load("docker-compose.yml")["services"]
    assert service.name in compose
    assert service.config in compose[service.name]["command"]
    assert service.module in compose[service.name]["command"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_kubernetes_deploys_and_exposes_every_service_on_its_port(service):
    documents = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    [container] = [
        c
        for c in deployments[service.name]["spec"]["template"]["spec"]["containers"]
        if c["name"] == service.name
    ]
    assert service.config in container["command"]
    assert service.port in [port["containerPort"] for port in container["ports"]]
    # a Service reaches the container by port number or by the container port's name
    names = {port.get("name"): port["containerPort"] for port in container["ports"]}
    targets = [
        names.get(port.get("targetPort"), port.get("targetPort", port["port"]))
        for port in services[service.name]["spec"]["ports"]
    ]
    assert service.port in targets


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_prometheus_scrapes_every_service_on_its_port(service):
    jobs = {job["job_name"]: job for job in load("monitoring", "prometheus.yml")["scrape_configs"]}
    targets = [t for config in jobs[service.name]["static_configs"] for t in config["targets"]]
    assert f"{service.name}:{service.port}" in targets


def test_nothing_else_is_deployed_as_a_service_of_ours():
    """Each app container runs one of the listed services (one image, the command picks)."""
    compose = load("docker-compose.yml")["services"]
    ours = {
        name
        for name, spec in compose.items()
        if isinstance(spec.get("command"), list) and "run" in spec["command"]
    }
    assert ours == {s.name for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_cluster_override_gives_every_service_all_nodes_and_quorum_queues(service):
    overrides = load("docker-compose.cluster.yml")["services"]
    environment = overrides[service.name]["environment"]
    assert environment["QUEUE_TYPE"] == "quorum"
    assert environment["AMQP_URI"].count(";") == 2, "a failover list of the three nodes"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_example_env_holds_every_services_passwords(service):
    example = read_env_file(path(".env.example"))
    assert f"{service.name.upper()}_RABBITMQ_PASSWORD" in example
    if service.has_database:
        assert f"{service.name.upper()}_DB_PASSWORD" in example


def test_the_compose_tier_makes_a_secret_for_every_one_the_example_lists():
    from tests.compose.stack import SECRETS

    example = read_env_file(path(".env.example"))
    needed = set(example) - {"RABBITMQ_ADMIN_USER", "RABBITMQ_ERLANG_COOKIE"}
    assert needed == set(SECRETS)


def package_finder_options():
    setup = configparser.ConfigParser()
    setup.read(path("setup.cfg"))
    assert setup["options"]["packages"].strip() == "find:"
    lines = lambda value: [line.strip() for line in value.splitlines() if line.strip()]  # noqa: E731
    find = setup["options.packages.find"] if setup.has_section("options.packages.find") else {}
    data = setup["options.package_data"]
    return (
        {key: lines(value) for key, value in find.items()},
        {key: lines(value.replace(",", "\n")) for key, value in data.items()},
    )


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_package_holds_every_service_and_its_migrations(service):
    find, package_data = package_finder_options()
    packages = find_packages(ROOT, include=find.get("include", ("*",)), exclude=find["exclude"])
    assert service.name in packages
    if service.has_database:
        patterns = package_data.get("*", []) + package_data.get(service.name, [])
        folder = os.path.join(ROOT, service.name)
        for version in os.listdir(os.path.join(folder, "migrations", "versions")):
            if version.endswith(".py"):
                relative = f"migrations/versions/{version}"
                assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
        assert any(fnmatch.fnmatch("migrations/env.py", p) for p in patterns)


def test_the_package_holds_no_tests_nor_tools():
    find, _ = package_finder_options()
    packages = find_packages(ROOT, include=find.get("include", ("*",)), exclude=find["exclude"])
    assert {p.split(".")[0] for p in packages} == {"shared", *(s.name for s in SERVICES)}


def dockerignored(relative):
    """Whether .dockerignore keeps a path out of the build context (last match wins)."""
    ignored = False
    with open(path(".dockerignore")) as stream:
        for line in stream:
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            parts = relative.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            glob = pattern.removeprefix("**/")
            if any(
                fnmatch.fnmatch(prefix, pattern)
                or (glob != pattern and fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], glob))
                for prefix in prefixes
            ):
                ignored = not negated
    return ignored


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_image_gets_every_services_folder_and_config(service):
    with open(path("Dockerfile")) as stream:
        dockerfile = stream.read()
    assert "\nCOPY . ./\n" in dockerfile, "the build stage copies the whole (ignored) context"
    assert "\nCOPY config ./config\n" in dockerfile
    for relative in (f"{service.name}/service.py", service.config):
        assert not dockerignored(relative), relative
    if service.has_database:
        assert not dockerignored(f"{service.name}/migrations/env.py")


def test_the_image_context_leaves_out_tests_tools_and_local_state():
    for relative in ("tests/conftest.py", "bench/run.py", "docs/capacity.md", ".git/HEAD"):
        assert dockerignored(relative), relative
    for relative in ("var/users.sqlite3", ".venv/bin/python", "shared/__pycache__/db.pyc"):
        assert dockerignored(relative), relative
    assert not dockerignored("rabbitmq/definitions.json")
    assert dockerignored("rabbitmq/rabbitmq.conf")
