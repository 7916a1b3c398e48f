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
