"""Failures say what failed: a refused database login, piped shell errors, a missing argument."""

import json
import os
import subprocess
import sys
import time

from tests.conftest import POSTGRES_URL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(command, env=None, stdin=None, timeout=60):
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_migrate_stops_at_once_when_postgres_refuses_the_role(rabbit_config):
    # PostgreSQL refuses a role that does not exist at once, whatever the auth method
    wrong = POSTGRES_URL.replace("postgresql://postgres@", "postgresql://no_such_role:pw@", 1)
    assert "no_such_role" in wrong
    started = time.monotonic()
    result = run(
        [sys.executable, "-m", "scripts.wait_and_migrate", "config/users.yaml"],
        env={"AMQP_URI": rabbit_config["AMQP_URI"], "USERS_DB_URI": wrong, "LOG_FORMAT": "json"},
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 15  # not the 120 s wait for a server that is down
    records = [json.loads(line) for line in (result.stdout + result.stderr).splitlines()]
    assert records[-1]["level"] == "ERROR" and records[-1]["refused"] is True
    assert 'role "no_such_role" does not exist' in records[-1]["message"]
    assert "pw@" not in result.stderr  # the password is hidden


def test_a_piped_shell_shows_each_error_and_goes_on(rabbit_config):
    result = run(
        [sys.executable, "-m", "shared.cli", "shell", "--config", "config/users.yaml"],
        env={
            "AMQP_URI": rabbit_config["AMQP_URI"],
            "PYTHONSTARTUP": "shared/shell.py",
            "RPC_TIMEOUT": "2",
        },
        stdin='n.rpc.users.get_user(999)\nprint("after the error")\n',
    )
    assert "UnknownService" in result.stderr  # no users service runs in this vhost
    assert "after the error" in result.stdout, result.stderr
    assert result.returncode == 1  # a script learns that a line failed
    assert "Eventlet is deprecated" not in result.stderr


def test_make_replay_without_service_prints_its_usage():
    result = run(["make", "--no-print-directory", "replay"], env={"SERVICE": ""})
    assert result.returncode != 0
    assert "usage: make replay SERVICE=" in result.stderr
    assert "Traceback" not in result.stderr
