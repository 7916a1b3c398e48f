"""The compose tier, cluster part: docker-compose.cluster.yml's three RabbitMQ nodes
really form one cluster (`rabbitmqctl cluster_status`). Only the brokers run (no
image build, about a minute); a project of its own, removed with its volumes.
Opt-in with the rest of the tier (`make compose`)."""

import json
import os
import secrets
import shutil
import tempfile
import time
import uuid

import pytest

from tests.compose.stack import ROOT, SECRETS, run

NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
RABBITMQ_IMAGE = "rabbitmq:3.13-management"


def engine_problem():
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "the docker and docker-compose (v1) commands are not installed"
    if run(["docker", "info"], timeout=30, check=False).returncode != 0:
        return "no Docker engine answers (`docker info`)"
    if run(["docker", "image", "inspect", RABBITMQ_IMAGE], check=False).returncode != 0:
        return f"base image missing: {RABBITMQ_IMAGE}"
    return None


@pytest.fixture(scope="module")
def cluster(report):
    problem = engine_problem()
    if problem:
        if os.environ.get("COMPOSE_REQUIRED") == "1":
            pytest.fail(f"cluster check cannot run: {problem}", pytrace=False)
        pytest.skip(f"cluster check cannot run: {problem}")
    workdir = tempfile.mkdtemp(prefix="compose-cluster-")
    env_file = os.path.join(workdir, ".env")
    with open(env_file, "w") as stream:
        for name in (*SECRETS, "RABBITMQ_ERLANG_COOKIE"):
            stream.write(f"{name}={secrets.token_urlsafe(32)}\n")
    project = f"shopcluster{uuid.uuid4().hex[:8]}"

    def compose(*args, timeout=600, check=True):
        return run(
            ["docker-compose", "--project-name", project, "--project-directory", ROOT]
            + ["--env-file", env_file]
            + ["--file", os.path.join(ROOT, "docker-compose.yml")]
            + ["--file", os.path.join(ROOT, "docker-compose.cluster.yml"), *args],
            timeout=timeout,
            check=check,
        )

    try:
        began = time.monotonic()
        compose("up", "--detach", "--no-build", *NODES)
        report.saw("cluster", f"`up` of the three nodes in {time.monotonic() - began:.0f} s")
        yield compose
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_three_nodes_form_one_cluster(cluster, report):
    began = time.monotonic()
    expected = sorted(f"rabbit@{node}" for node in NODES)
    while True:
        result = cluster(
            "exec",
            "-T",
            "rabbitmq-3",
            "rabbitmqctl",
            "cluster_status",
            "--formatter",
            "json",
            check=False,
        )
        status = json.loads(result.stdout) if result.returncode == 0 else {}
        if sorted(status.get("running_nodes", [])) == expected:
            break
        assert time.monotonic() - began < 240, f"no cluster of three: {result.stdout}"
        time.sleep(5)
    assert sorted(status["disk_nodes"]) == expected
    assert not status["partitions"]
    report.saw("cluster", f"three running nodes after {time.monotonic() - began:.0f} s more")
