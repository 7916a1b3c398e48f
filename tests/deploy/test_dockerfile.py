"""The Dockerfile: hadolint finds nothing, and every ignored rule says why."""

import re

from tests.deploy.conftest import path, run, tool


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = run([tool("hadolint"), "--no-color", "Dockerfile"])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_hadolint_ignore_gives_its_reason():
    with open(path("Dockerfile")) as stream:
        lines = stream.read().splitlines()
    for number, line in enumerate(lines, 1):
        if "hadolint ignore" in line:
            assert re.search(r"ignore=[\w,]+\s+\S", line), f"line {number} ignores without a reason"


def test_the_image_runs_as_a_numeric_non_root_user_with_a_healthcheck():
    with open(path("Dockerfile")) as stream:
        text = stream.read()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.MULTILINE)
    assert "setuptools==80.8.0" in text
