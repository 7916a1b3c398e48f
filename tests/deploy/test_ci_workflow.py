"""The GitHub Actions workflow: valid against its schema, and runs what .ci/run runs."""

import yaml

from tests.deploy.conftest import path, run, tool

WORKFLOW = ".github/workflows/ci.yml"


def test_the_workflow_matches_the_github_workflow_schema():
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", WORKFLOW]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_make_test_against_rabbitmq_and_postgres():
    with open(path(WORKFLOW)) as stream:
        job = yaml.safe_load(stream)["jobs"]["test"]
    assert "management" in job["services"]["rabbitmq"]["image"]
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    commands = [step.get("run", "") for step in job["steps"]]
    assert "make test" in commands and "make lint" in commands
    assert "bash scripts/install-deploy-tools.sh" in commands


GITLAB = ".gitlab-ci.yml"


def test_the_gitlab_pipeline_matches_the_gitlab_ci_schema():
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", GITLAB])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gitlab_pipeline_lints_tests_against_the_brokers_and_builds_the_image():
    with open(path(GITLAB)) as stream:
        pipeline = yaml.safe_load(stream)
    test = pipeline["test"]
    services = {service["alias"]: service["name"] for service in test["services"]}
    assert "management" in services["rabbitmq"]
    assert services["postgres"].startswith("postgres:")
    # the services are reached by alias, so the tests must be pointed there
    assert "@rabbitmq:5672" in test["variables"]["PYTEST_ADDOPTS"]
    assert "@postgres:5432" in test["variables"]["TEST_POSTGRES_URL"]
    assert test["script"] == ["make lint", "make test"]
    build = pipeline["build-image"]
    assert build["variables"]["DOCKER_BUILDKIT"] == "0"
    assert any(line.startswith("docker build") for line in build["script"])
