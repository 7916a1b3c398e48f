"""Outside development the gateway refuses a JWT secret anyone could know or guess.

Whoever reads this repository knows every value written in its examples; a
short or repetitive secret is guessed offline from one token. Either lets
anyone mint admin tokens, so the gateway refuses to start with one.
"""

import glob
import os
import re
import secrets
import subprocess

import pytest

from gateway.settings import GatewaySettings
from tests.helpers import settings_problems
from tests.system.processes import NAMEKO, ROOT

# where the repository shows values to copy: examples, deploy files, docs
EXAMPLE_FILES = [".env.example", "README.md", "docker-compose.yml", "deploy/**/*", "docs/**/*"]
ASSIGNMENT = re.compile(r"""JWT_SECRET["']?\s*[:=]\s*["']?([^\s"'#,}]+)""")


def example_secrets():
    found = set()
    for pattern in EXAMPLE_FILES:
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            if not os.path.isfile(path):
                continue
            with open(path, errors="replace") as file:
                for value in ASSIGNMENT.findall(file.read()):
                    if not value.startswith("$"):  # ${JWT_SECRET...}: a reference, not a value
                        found.add(value)
    return sorted(found)


def production(secret):
    return settings_problems(
        GatewaySettings, {"ENVIRONMENT": "production", "JWT_SECRET": secret}, "gateway"
    )


def test_the_repository_shows_at_least_one_example_secret():
    """Else the test below would check nothing."""
    assert example_secrets()


@pytest.mark.parametrize("secret", example_secrets())
def test_every_example_secret_in_the_repository_is_refused(secret):
    problems = production(secret)
    assert problems and "set JWT_SECRET" in problems[0]


@pytest.mark.parametrize(
    "secret",
    [
        "a" * 32,
        "a" * 64,
        "abcdefghijklmnopqrstuvwxyz012345",
        "0123456789" * 4,
        "abcd" * 12,
        "passwordpasswordpasswordpassword",
        "my-jwt-secret-change-me-before-production-please",
    ],
)
def test_a_low_entropy_or_placeholder_secret_is_refused(secret):
    assert production(secret)


@pytest.mark.parametrize("make", [lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(32)])
def test_a_random_secret_of_32_bytes_or_more_is_accepted(make):
    for _ in range(20):
        assert production(make()) == []


def test_development_keeps_accepting_a_test_secret():
    development = {"ENVIRONMENT": "development", "JWT_SECRET": "t" * 40}
    assert settings_problems(GatewaySettings, development, "gateway") == []


def test_the_gateway_process_refuses_to_start_with_the_example_secret():
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "JWT_SECRET": example_secrets()[0],
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "PYTHONWARNINGS": "ignore",
    }
    started = subprocess.run(
        [NAMEKO, "run", "--config", "config/gateway.yaml", "gateway.service"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    output = started.stdout + started.stderr
    assert "JWT_SECRET" in output and "example value" in output
    assert "Traceback" not in output
